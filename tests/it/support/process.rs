//! The real `jwt-gateway` binary as a child process, for what only the binary shows: exit codes,
//! signal handling and the log it writes to stderr.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_jwt-gateway");

/// A loopback port free right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `jwt-gateway run` on `<dir>/gateway.yaml`, its stderr kept in `<dir>/stderr.log`; killed
/// when dropped so that a failing test leaves no gateway behind.
pub struct GatewayProcess {
    child: Child,
    stderr: PathBuf,
}

impl GatewayProcess {
    /// Writes `yaml` into `dir` and starts the binary on it with `env` set. `JWT_GATEWAY_CONFIG`
    /// is removed so that only `-c` names the config.
    pub fn spawn(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        GatewayProcess::start(Command::new(BIN), dir, yaml, env)
    }

    /// The same, confined to the first CPU by `taskset` (util-linux), as a container limited to
    /// one CPU would be.
    pub fn spawn_on_one_cpu(dir: &Path, yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "0", BIN]);
        GatewayProcess::start(taskset, dir, yaml, env)
    }

    fn start(mut command: Command, dir: &Path, yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let stderr = dir.join("stderr.log");
        let child = command
            .args(["run", "-c", config.to_str().expect("UTF-8 temp path")])
            .env_remove("JWT_GATEWAY_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("create stderr.log"))
            .spawn()
            .expect("start jwt-gateway");
        GatewayProcess { child, stderr }
    }

    /// What the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `probe` (`/healthz` or `/readyz`) on the admin port until it answers 200; panics
    /// with the log after 10 s.
    pub async fn wait_until_ok(&self, admin: u16, probe: &str) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        for _ in 0..200 {
            let answer = client
                .get(format!("http://127.0.0.1:{admin}{probe}"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{probe} never answered 200:\n{}", self.log());
    }

    /// Sends SIGTERM (not `Child::kill`, which is SIGKILL and would skip the drain).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGHUP: reload the config file.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, which: &str) {
        let kill = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
    }

    /// Waits for the process to exit on its own; panics with the log after 10 s.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running 10 s after SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

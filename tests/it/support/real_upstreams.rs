//! Real upstream servers for the differential tests: the software that sits behind a gateway in
//! production, started as child processes on 127.0.0.1 ephemeral ports, each with a private temp
//! folder, and killed when dropped.
//!
//! - **nginx** (Debian's `nginx`, 1.22) with its defaults, `merge_slashes on` among them: the
//!   `admin` locations (`= /admin`, `/admin/`) and a `default` location `/`.
//! - **wsgiref**, CPython's own WSGI server (`tests/fixtures/wsgi_echo.py`): the CGI-style view
//!   of headers, where `X_Auth_Subject` and `X-Auth-Subject` are both `HTTP_X_AUTH_SUBJECT`.
//!   CPython 3.11's `wsgiref/simple_server.py` (read in 3.11.7, the `python3` here, and 3.11.2,
//!   Debian 12's; the file is the same) does *not* drop header names holding `_`: its
//!   `get_environ` maps every name with `replace('-', '_').upper()` and joins a second header of
//!   the same key after a `,`. So the bypass of issue 13 is shown with this real server.
//! - **Tomcat** (Debian's `tomcat10`, 10.1) with a one-JSP webapp (`tests/fixtures/tomcat/`):
//!   the servlet container that removes `;` parameters from each segment before mapping.
//!
//! Each server writes every request, as its application saw it, as one JSON line of the shape of
//! [`Resolved`] into `requests.jsonl` in its folder. A request to `/__fence?n=<k>` is recorded
//! too (as handler `fence`) and never reported: [`RealUpstream::seen`] sends one and waits for
//! its line, so that every request answered before is on disk when the records are read (nginx
//! writes its log line only after the response has gone out).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::process::free_port;
use super::raw_exchange;

/// The `server_name` of the readiness server beside the config a front nginx is given.
const READY_HOST: &str = "ready.jwt-gateway.test";

/// Where Debian's `tomcat10` puts Tomcat (`CATALINA_HOME`).
const TOMCAT_HOME: &str = "/usr/share/tomcat10";

/// The headers nginx records (it can only log the `$http_*` variables it is asked for): those the
/// differential tests look for, by their HTTP names.
const NGINX_LOGGED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "connection",
    "upgrade",
    "http2-settings",
    "forwarded",
    "x-auth-subject",
    "x-auth-roles",
    "x-request-id",
    "x-custom-thing",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-original-host",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Nginx,
    Wsgiref,
    Tomcat,
    /// nginx in front of the gateway (see [`RealUpstream::nginx_front`]): it records nothing.
    NginxFront,
}

/// One request as the upstream's application resolved it.
#[derive(Clone, Deserialize)]
pub struct Resolved {
    /// What served it: nginx's `location` (`admin` or `default`), Tomcat's servlet mapping
    /// (`secure` for `/secure/*`, `catch-all`), or `app` for the WSGI application.
    pub handler: String,
    /// The path the application works on: nginx's `$uri` (decoded, dot segments resolved,
    /// slashes merged), WSGI's `PATH_INFO` (decoded), Tomcat's `getServletPath()` +
    /// `getPathInfo()` (`;` parameters removed, decoded, normalized).
    pub path: String,
    /// The request target as it arrived: nginx's `$request_uri`, the WSGI request line's target,
    /// Tomcat's `getRequestURI()` (no query).
    pub target: String,
    pub query: String,
    pub method: String,
    /// The server and its version, as it reports itself.
    pub server: String,
    headers: BTreeMap<String, String>,
    #[serde(skip)]
    kind: Kind,
}

/// Leaves out the headers nginx logged empty, so failure messages show what arrived.
impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("server", &self.server)
            .field("handler", &self.handler)
            .field("path", &self.path)
            .field("target", &self.target)
            .field("query", &self.query)
            .field("method", &self.method)
            .field("headers", &self.headers())
            .finish()
    }
}

impl Resolved {
    /// The request header `name` as the application reads it: `$http_<name>` for nginx, the
    /// `HTTP_<NAME>` environ key for WSGI (so `X_Auth_Subject` and `X-Auth-Subject` are one),
    /// `getHeader(name)` for Tomcat. `None` when absent or empty (nginx logs an unset variable as
    /// an empty string).
    pub fn header(&self, name: &str) -> Option<&str> {
        let key = match self.kind {
            Kind::Wsgiref => format!("HTTP_{}", name.replace('-', "_").to_ascii_uppercase()),
            Kind::Nginx | Kind::Tomcat | Kind::NginxFront => name.to_ascii_lowercase(),
        };
        if self.kind == Kind::Nginx {
            assert!(
                NGINX_LOGGED_HEADERS.contains(&key.as_str()),
                "nginx does not record {name}: add it to NGINX_LOGGED_HEADERS"
            );
        }
        self.headers
            .get(&key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty header or environ key the application saw, for failure messages.
    pub fn headers(&self) -> BTreeMap<&str, &str> {
        self.headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// A real server listening on `addr`, recording what it resolves; killed when dropped.
pub struct RealUpstream {
    pub addr: SocketAddr,
    kind: Kind,
    child: Mutex<Child>,
    dir: tempfile::TempDir,
    fences: AtomicU64,
}

impl RealUpstream {
    /// nginx with Debian's defaults (`merge_slashes on`, `underscores_in_headers off`): the
    /// `admin` locations (`= /admin` and `/admin/`, the subtree a segment-aware `path_prefix:
    /// /admin` guards; nginx's plain `location /admin` would take `/administrator` too) and the
    /// `default` location `/` answer which of them matched.
    ///
    /// nginx's `return` cannot JSON-escape a variable, only `log_format escape=json` can: so the
    /// record is the access-log line, and the response body says only which location answered.
    /// `master_process off` keeps nginx one process, so that killing the child leaves no worker
    /// holding the port; it also never switches user, so no `user` directive is needed as root.
    pub fn nginx() -> RealUpstream {
        RealUpstream::start_on_free_port(Kind::Nginx, |dir, port| {
            let d = dir.display();
            let logged: Vec<String> = NGINX_LOGGED_HEADERS
                .iter()
                .map(|name| format!(r#""{name}":"$http_{}""#, name.replace('-', "_")))
                .collect();
            let conf = format!(
                r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  log_format record escape=json '{{"handler":"$handler","path":"$uri","target":"$request_uri","query":"$args","method":"$request_method","server":"nginx/$nginx_version","headers":{{{headers}}}}}';
  server {{
    listen 127.0.0.1:{port};
    access_log {d}/requests.jsonl record;
    default_type application/json;
    location = /admin {{ set $handler admin; return 200 '{{"handler":"admin"}}'; }}
    location /admin/ {{ set $handler admin; return 200 '{{"handler":"admin"}}'; }}
    location / {{ set $handler default; return 200 '{{"handler":"default"}}'; }}
    location = /__fence {{ set $handler fence; return 200 '{{"handler":"fence"}}'; }}
  }}
}}
"#,
                headers = logged.join(",")
            );
            spawn_nginx(dir, &conf)
        })
    }

    /// nginx in front of the gateway: `http(dir, port)` is the body of the `http {}` block,
    /// listening on 127.0.0.1:`port`, inside the same process settings as [`RealUpstream::nginx`]
    /// (one process, temp paths and logs in `dir`). It records nothing: it is ready once it
    /// accepts connections, and `seen` does not apply.
    pub fn nginx_front(http: impl Fn(&Path, u16) -> String) -> RealUpstream {
        RealUpstream::start_on_free_port(Kind::NginxFront, |dir, port| {
            let d = dir.display();
            let conf = format!(
                r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  access_log {d}/access.log;
{http}
  # Answers only for this instance: a port some other server took meanwhile never looks ready.
  server {{
    listen 127.0.0.1:{port};
    server_name {READY_HOST};
    location = /__ready {{ return 200 "{d}"; }}
  }}
}}
"#,
                http = http(dir, port)
            );
            spawn_nginx(dir, &conf)
        })
    }

    /// CPython's `wsgiref.simple_server` running `tests/fixtures/wsgi_echo.py`, which binds port
    /// 0 itself and prints the port it got.
    pub fn wsgiref() -> RealUpstream {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wsgi_echo.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(dir.path().join("requests.jsonl"));
        command.stdout(Stdio::piped());
        let mut child = spawn(command, dir.path(), "python3", "Debian's python3 package");
        let stdout = child.stdout.take().expect("piped stdout");
        // The first line is the port; read it on a thread so a hung interpreter cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wsgi_echo.py printed no port ({line:?}):\n{}",
                read_logs(dir.path())
            );
        };
        let upstream = RealUpstream {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            kind: Kind::Wsgiref,
            child: Mutex::new(child),
            dir,
            fences: AtomicU64::new(0),
        };
        upstream
            .wait_until_ready(Duration::from_secs(10))
            .unwrap_or_else(|why| panic!("{why}"));
        upstream
    }

    /// Apache Tomcat 10.1 from Debian's `tomcat10`, run as a private instance: `CATALINA_BASE`
    /// is the temp folder (its own `server.xml` with one HTTP/1.1 connector on loopback, no
    /// shutdown port; Debian's default `conf/web.xml`), and the ROOT context is the echo webapp.
    /// Started by `java` directly, so the child is the JVM itself and dies with it.
    pub fn tomcat() -> RealUpstream {
        let home = Path::new(TOMCAT_HOME);
        assert!(
            home.join("bin/bootstrap.jar").exists(),
            "Tomcat 10 is not installed in {TOMCAT_HOME}: tests/run.sh installs Debian's tomcat10 package"
        );
        RealUpstream::start_on_free_port(Kind::Tomcat, |dir, port| {
            for sub in ["conf", "logs", "temp", "work", "webapps", "app/WEB-INF"] {
                std::fs::create_dir_all(dir.join(sub)).expect("Tomcat base folders");
            }
            std::fs::copy(home.join("etc/web.xml"), dir.join("conf/web.xml"))
                .expect("copy Debian's default conf/web.xml");
            std::fs::write(
                dir.join("app/echo.jsp"),
                include_str!("../../fixtures/tomcat/echo.jsp"),
            )
            .expect("write echo.jsp");
            std::fs::write(
                dir.join("app/WEB-INF/web.xml"),
                include_str!("../../fixtures/tomcat/web.xml"),
            )
            .expect("write WEB-INF/web.xml");
            let server_xml = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="10000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" autoDeploy="false" deployOnStartup="false" unpackWARs="false">
        <Context path="" docBase="{app}" reloadable="false">
          <JarScanner scanClassPath="false" scanManifest="false"/>
        </Context>
      </Host>
    </Engine>
  </Service>
</Server>
"#,
                app = dir.join("app").display()
            );
            std::fs::write(dir.join("conf/server.xml"), server_xml).expect("write server.xml");
            let mut command = Command::new("java");
            command
                // A short-lived test server: the C1 compiler alone starts it fastest.
                .args(["-Xmx256m", "-XX:TieredStopAtLevel=1"])
                .arg(format!("-Dcatalina.home={TOMCAT_HOME}"))
                .arg(format!("-Dcatalina.base={}", dir.display()))
                .arg(format!("-Djava.io.tmpdir={}", dir.join("temp").display()))
                .arg(format!(
                    "-Decho.record={}",
                    dir.join("requests.jsonl").display()
                ))
                .arg("-cp")
                .arg(format!(
                    "{TOMCAT_HOME}/bin/bootstrap.jar:{TOMCAT_HOME}/bin/tomcat-juli.jar"
                ))
                .args(["org.apache.catalina.startup.Bootstrap", "start"])
                .stdout(log_file(dir, "stdout.log"));
            spawn(
                command,
                dir,
                "java",
                "Debian's default-jre-headless (a dependency of tomcat10)",
            )
        })
    }

    /// nginx and Tomcat cannot report a port they picked: they get one that was free a moment
    /// ago, and another if something took it before they bound it.
    fn start_on_free_port(kind: Kind, launch: impl Fn(&Path, u16) -> Child) -> RealUpstream {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let child = launch(dir.path(), port);
            let upstream = RealUpstream {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                kind,
                child: Mutex::new(child),
                dir,
                fences: AtomicU64::new(0),
            };
            // Tomcat compiles the JSP on its first request, and a JVM starts slowly on a busy
            // machine (1.5 s measured on an idle one): generous, but bounded.
            let within = match kind {
                Kind::Tomcat => Duration::from_secs(60),
                Kind::Nginx | Kind::Wsgiref | Kind::NginxFront => Duration::from_secs(10),
            };
            match upstream.wait_until_ready(within) {
                Ok(()) => return upstream,
                Err(why) => failures.push(why),
            }
        }
        panic!("{kind:?} did not start:\n{}", failures.join("\n---\n"));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server wrote to its logs so far, for failure messages.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Every request the server has recorded, in order.
    pub fn seen(&self) -> Vec<Resolved> {
        let n = self.fences.fetch_add(1, Ordering::SeqCst) + 1;
        self.fence(n, Duration::from_secs(10))
            .unwrap_or_else(|why| panic!("{why}"));
        self.records()
            .into_iter()
            .filter(|r| r.handler != "fence")
            .collect()
    }

    /// How many requests reached the server: every refusal test asserts it did not grow.
    pub fn requests(&self) -> usize {
        self.seen().len()
    }

    /// The last request the server recorded; panics if there is none.
    pub fn last(&self) -> Resolved {
        self.seen()
            .pop()
            .unwrap_or_else(|| panic!("{:?} has recorded no request", self.kind))
    }

    /// Sends `request` (raw bytes, ending with `Connection: close`) straight to the server,
    /// bypassing the gateway, and returns what the server resolved: the control showing what
    /// this server does with such a request when nothing stands in front of it.
    pub fn direct(&self, request: &str) -> Resolved {
        let before = self.requests();
        let answer = raw_exchange(self.addr, request.as_bytes(), Duration::from_secs(10));
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            before + 1,
            "{:?} recorded no request for {request:?}; it answered {answer:?}",
            self.kind
        );
        seen.last().cloned().expect("one more record")
    }

    fn records(&self) -> Vec<Resolved> {
        let text = std::fs::read_to_string(self.record_path()).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut record: Resolved = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{:?} record {line:?}: {e}", self.kind));
                record.kind = self.kind;
                record
            })
            .collect()
    }

    fn record_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// Requests `/__fence?n=<n>` and waits until its record is on disk.
    fn fence(&self, n: u64, within: Duration) -> Result<(), String> {
        self.still_running()?;
        let request =
            format!("GET /__fence?n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let deadline = Instant::now() + within;
        let answer = raw_exchange(self.addr, request.as_bytes(), within);
        let query = format!("n={n}");
        while Instant::now() < deadline {
            if self
                .records()
                .iter()
                .any(|r| r.handler == "fence" && r.query == query)
            {
                return Ok(());
            }
            self.still_running()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!(
            "{:?} did not record fence {n}; it answered {answer:?}:\n{}",
            self.kind,
            read_logs(self.dir.path())
        ))
    }

    /// Polls until the server accepts connections and records a fence; fails as soon as the
    /// server exits (a port taken meanwhile, say), or when `within` has passed.
    fn wait_until_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            self.still_running()?;
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                if self.kind == Kind::NginxFront {
                    return self.answers_ready(deadline);
                }
                let n = self.fences.fetch_add(1, Ordering::SeqCst) + 1;
                let left = deadline.saturating_duration_since(Instant::now());
                return self.fence(n, left.max(Duration::from_secs(1)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{:?} did not listen on {} within {within:?}:\n{}",
                    self.kind,
                    self.addr,
                    read_logs(self.dir.path())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the front's `/__ready` until it names this instance's folder.
    fn answers_ready(&self, deadline: Instant) -> Result<(), String> {
        let request =
            format!("GET /__ready HTTP/1.1\r\nHost: {READY_HOST}\r\nConnection: close\r\n\r\n");
        let marker = self.dir.path().display().to_string();
        loop {
            self.still_running()?;
            let answer = raw_exchange(self.addr, request.as_bytes(), Duration::from_secs(2));
            if answer.starts_with("HTTP/1.1 200") && answer.ends_with(&marker) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nginx on {} did not answer as this instance ({answer:?}):\n{}",
                    self.addr,
                    read_logs(self.dir.path())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn still_running(&self) -> Result<(), String> {
        let mut child = self.child.lock().expect("child");
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{:?} exited ({status}):\n{}",
                self.kind,
                read_logs(self.dir.path())
            )),
            Err(e) => Err(format!("{:?}: cannot wait on the child: {e}", self.kind)),
        }
    }
}

impl Drop for RealUpstream {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Debian's nginx on `conf`, written into `dir` as `nginx.conf`.
fn spawn_nginx(dir: &Path, conf: &str) -> Child {
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(log_file(dir, "stdout.log"));
    spawn(command, dir, "nginx", "Debian's nginx package")
}

/// Starts `command` with its stderr in `dir`; a missing program fails naming its package.
fn spawn(mut command: Command, dir: &Path, program: &str, package: &str) -> Child {
    command
        .stdin(Stdio::null())
        .stderr(log_file(dir, "stderr.log"));
    match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{program} is not installed: tests/run.sh installs {package}")
        }
        Err(e) => panic!("could not start {program}: {e}"),
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// The logs a server left in its folder, for failure messages.
fn read_logs(dir: &Path) -> String {
    ["stderr.log", "stdout.log", "error.log"]
        .iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).ok()?;
            (!text.trim().is_empty()).then(|| format!("== {name}\n{text}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

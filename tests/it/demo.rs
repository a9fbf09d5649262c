//! `jwt-gateway demo` as a new user runs it: the printed commands give 200, 200, 401 and 403.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{free_port, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_repo_config_with_its_stand_ins() {
    let repo_yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml")).unwrap();
    let (public, admin) = (free_port(), free_port());
    let yaml = repo_yaml
        .replace("\"0.0.0.0:8443\"", &format!("\"127.0.0.1:{public}\""))
        .replace("\"127.0.0.1:9901\"", &format!("\"127.0.0.1:{admin}\""));
    assert_ne!(
        yaml, repo_yaml,
        "the repo config names the ports this test moves"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guide = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            text.push_str(&line);
            text.push('\n');
            if line.contains("Stop with Ctrl-C") {
                break;
            }
        }
        text
    });
    let guide = tokio::time::timeout(Duration::from_secs(30), guide)
        .await
        .expect("demo printed its guide")
        .unwrap();
    let token_url = |user: &str| {
        guide
            .split_whitespace()
            .find(|w| w.contains(&format!("/token?user={user}")))
            .map(|w| w.trim_end_matches(')').to_string())
            .unwrap_or_else(|| panic!("no token command for {user} in\n{guide}"))
    };
    let ca_path = guide
        .split_whitespace()
        .skip_while(|w| *w != "--cacert")
        .nth(1)
        .expect("--cacert")
        .to_string();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(
            "api.example.com",
            format!("127.0.0.1:{public}").parse().unwrap(),
        )
        .resolve("localhost", format!("127.0.0.1:{public}").parse().unwrap())
        .build()
        .unwrap();
    let mint = |user: &str| {
        let url = token_url(user);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let (alice, bob) = (mint("alice").await, mint("bob").await);
    let url = |host: &str, path: &str| format!("https://{host}:{public}{path}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .get(url("api.example.com", "/orders/7"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let echo: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(echo["headers"]["x-auth-subject"], "alice");
            assert_eq!(echo["upstream"], "demo echo");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice never got 200 (last {})",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        client
            .get(url("localhost", "/status"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(url("api.example.com", "/orders/7"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(url("api.example.com", "/orders/7"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let _ = child.kill();
    let _ = child.wait();
}

//! A real Prometheus (Debian's package) scrapes a running gateway, and PromQL sees the traffic.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::process::free_port;
use crate::support::yaml::basic;
use crate::support::Rig;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(port: u16, promql: &str) -> Option<f64> {
    let mut url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/api/v1/query")).ok()?;
    url.query_pairs_mut().append_pair("query", promql);
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let body: Value = serde_json::from_str(&text).ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_promql_sees_the_traffic() {
    let rig = Rig::start(basic).await;
    let gw = &rig.gw;
    let token = rig.token();
    for _ in 0..7 {
        assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    }
    assert_eq!(gw.get("/api/x", None).await.status(), 401);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: jwt-gateway\n    static_configs:\n      - targets: [\"{}\"]\n",
            gw.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus must be installed (tests/run.sh installs Debian's prometheus)");
    let _prometheus = KillOnDrop(child);

    let deadline = Instant::now() + Duration::from_secs(40);
    let allowed = loop {
        let got = query(
            port,
            r#"sum(gateway_auth_decisions_total{route="api",decision="allow"})"#,
        )
        .await;
        if got == Some(7.0) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see the traffic (last answer {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(allowed, Some(7.0));
    assert_eq!(query(port, r#"up{job="jwt-gateway"}"#).await, Some(1.0));
    assert_eq!(
        query(port, r#"gateway_requests_total{route="api",code="401"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        query(port, r#"gateway_jwks_keys{provider="test"}"#).await,
        Some(1.0)
    );
    let p99 = query(port, r#"histogram_quantile(0.99, sum by (le) (gateway_token_validation_duration_seconds_bucket))"#).await;
    assert!(
        p99.is_some_and(|v| v > 0.0 && v < 1.0),
        "validation p99 {p99:?}"
    );
    rig.stop().await;
}

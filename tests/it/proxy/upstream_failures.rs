//! An upstream that refuses, resets or stalls: 502, 502, 504, each counted by kind.

use std::time::{Duration, Instant};

use super::closed_port;
use crate::support::yaml::{anonymous, server, Config};
use crate::support::{metric, TestGateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reset_and_slow_upstreams() {
    let upstream = Upstream::start().await;
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let gw = TestGateway::start(
        Config::new()
            .server(server().limits("request_timeout: 1s, upstream_connect_timeout: 1s"))
            .route(anonymous("refused", "/refused", &refused))
            .route(anonymous("up", "/up", &upstream.url()).strip_prefix("/up")),
    )
    .await;
    let errors = |m: &str, route: &str, kind: &str| {
        metric(
            m,
            &format!(r#"gateway_upstream_errors_total{{kind="{kind}",route="{route}"}}"#),
        )
        .unwrap_or(0.0)
    };

    let r = gw.get("/refused/x", None).await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "bad_gateway");
    let m = gw.metrics().await;
    assert_eq!(errors(&m, "refused", "connect"), 1.0, "{m}");

    let r = gw.get("/up/reset", None).await;
    assert_eq!(r.status(), 502);
    assert_eq!(upstream.last().unwrap().path_and_query, "/reset");
    let m = gw.metrics().await;
    assert_eq!(
        errors(&m, "up", "reset") + errors(&m, "up", "protocol"),
        1.0,
        "{m}"
    );

    let started = Instant::now();
    let r = gw.get("/up/slow/3000", None).await;
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 after {:?}, request_timeout is 1s",
        started.elapsed()
    );
    let m = gw.metrics().await;
    assert_eq!(errors(&m, "up", "timeout"), 1.0, "{m}");

    // A healthy answer afterwards: the pool recovered, and nothing more was counted.
    assert_eq!(gw.get("/up/slow/10", None).await.status(), 200);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"gateway_requests_total{code="502",route="up"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"gateway_requests_total{code="504",route="up"}"#),
        Some(1.0)
    );
    assert_eq!(errors(&m, "up", "timeout"), 1.0);
    gw.stop().await;
}

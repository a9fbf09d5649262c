//! Connection lifetimes: the connection caps at accept. Timeouts are short and every bound is
//! generous: these tests pin what happens, never how fast.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::raw;
use crate::support::{metric, TestGateway, Upstream};

/// A plaintext gateway with one anonymous route `/public` to `upstream` and these `limits`.
fn yaml(upstream: &str, limits: &str) -> String {
    format!(
        r#"
server:
  insecure_plaintext: true
  limits: {{ {limits} }}
routes:
  - name: public
    match: {{ path_prefix: /public }}
    upstream: "{upstream}"
    auth: anonymous
"#
    )
}

async fn gauge(gw: &TestGateway, series: &str) -> f64 {
    metric(&gw.metrics().await, series).unwrap_or_else(|| panic!("no series {series}"))
}

async fn open_connections_become(gw: &TestGateway, n: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if gauge(gw, "gateway_open_connections").await == n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_at_accept() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "max_connections: 2, max_connections_per_ip: 2",
    ))
    .await;
    assert_eq!(
        gauge(&gw, r#"gateway_connections_refused_total{reason="global"}"#).await,
        0.0
    );
    let held = [
        TcpStream::connect(gw.addr).await.unwrap(),
        TcpStream::connect(gw.addr).await.unwrap(),
    ];
    assert!(open_connections_become(&gw, 2.0, Duration::from_secs(5)).await);

    let refused = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        refused.status, 0,
        "refused at accept, unanswered: {refused:?}"
    );
    assert_eq!(
        upstream.requests(),
        0,
        "a refused connection's request reached the upstream"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="per_ip"}"#
        ),
        Some(0.0)
    );
    assert_eq!(metric(&text, "gateway_open_connections"), Some(2.0));

    drop(held);
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    let r = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "closed connections free their slots");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_refuses_at_accept() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "max_connections: 10, max_connections_per_ip: 1",
    ))
    .await;
    let held = TcpStream::connect(gw.addr).await.unwrap();
    assert!(open_connections_become(&gw, 1.0, Duration::from_secs(5)).await);
    let refused = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        refused.status, 0,
        "refused at accept, unanswered: {refused:?}"
    );
    assert_eq!(upstream.requests(), 0);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="per_ip"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(0.0)
    );
    drop(held);
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_frees_its_slot() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        &yaml(
            &upstream.url(),
            "max_connections: 1, max_connections_per_ip: 1",
        )
        .replace(
            "insecure_plaintext: true",
            "tls: { cert_file: gateway.crt, key_file: gateway.key }",
        ),
    )
    .await;
    let plain = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_ne!(plain.status, 200, "{plain:?}");
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    assert_eq!(
        gw.get("/public/a", None).await.status(),
        200,
        "the one slot is free again"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(0.0)
    );
    gw.stop().await;
}

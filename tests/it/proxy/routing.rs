//! Route matching: exact and wildcard hosts (case-insensitive, port ignored), methods, first match
//! wins, and a JSON 404 for requests no route takes.

use super::raw;
use crate::support::yaml::{anonymous, Config};
use crate::support::{TestGateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_method_and_first_match_routing() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let c = Upstream::start().await;
    let (a_url, b_url, c_url) = (a.url(), b.url(), c.url());
    let gw = TestGateway::start(
        Config::new()
            .route(
                anonymous("exact-host", "/orders", &a_url)
                    .host("api.example.com")
                    .methods("GET, HEAD"),
            )
            .route(anonymous("wildcard-host", "/orders", &b_url).host("*.example.com"))
            .route(anonymous("any-host-post", "/orders", &c_url).methods("POST"))
            .route(anonymous("first", "/first", &a_url))
            .route(anonymous("second", "/first/second", &b_url)),
    )
    .await;
    let upstreams = [("a", &a), ("b", &b), ("c", &c)];
    let mut failures = Vec::new();
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("GET", "api.example.com", "/orders/1", Some("a")),
        ("HEAD", "api.example.com", "/orders/1", Some("a")),
        ("GET", "API.Example.COM:8443", "/orders", Some("a")),
        ("GET", "api.example.com.", "/orders", Some("a")),
        ("GET", "eu.example.com", "/orders/2", Some("b")),
        ("GET", "a.b.example.com", "/orders", Some("b")),
        // the wildcard needs a label in front of the suffix
        ("GET", "example.com", "/orders", None),
        ("GET", "evilexample.com", "/orders", None),
        ("GET", "api.example.com.evil.test", "/orders", None),
        // methods: the exact-host route is GET/HEAD only, the next one takes the POST
        ("POST", "api.example.com", "/orders", Some("b")),
        ("DELETE", "api.example.com", "/orders", Some("b")),
        ("POST", "other.test", "/orders", Some("c")),
        ("DELETE", "other.test", "/orders", None),
        // segment-aware prefixes
        ("GET", "api.example.com", "/ordersX", None),
        // first match wins, even over a longer prefix further down
        ("GET", "other.test", "/first/second/x", Some("a")),
        ("GET", "other.test", "/nothing", None),
        ("GET", "other.test", "/", None),
    ];
    for (method, host, path, want) in cases {
        let before: Vec<usize> = upstreams.iter().map(|(_, u)| u.requests()).collect();
        let r = raw(
            gw.addr,
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let hits: Vec<&str> = upstreams
            .iter()
            .zip(&before)
            .filter(|((_, u), b)| u.requests() > **b)
            .map(|((n, _), _)| *n)
            .collect();
        let ok = match want {
            Some(name) => r.status == 200 && hits == [*name],
            None => {
                r.status == 404
                    && hits.is_empty()
                    && r.header("content-type") == Some("application/json")
                    && (*method == "HEAD" || r.json()["error"] == "not_found")
            }
        };
        if !ok {
            failures.push(format!(
                "{method} {host} {path}: expected {want:?}, got {} with upstreams {hits:?}",
                r.status
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_requests_total{code="404",route="none"}"#),
        "unrouted requests are counted under route=\"none\""
    );
    gw.stop().await;
}

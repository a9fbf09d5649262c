//! The contract's metric families after real traffic: present with their labels, counting exactly
//! the requests sent; the verified-token cache observed through the hit/miss histogram.

use crate::support::yaml::basic;
use crate::support::{metric, Rig, SigningKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_counts_exactly_the_requests_sent() {
    let rig = Rig::start(basic).await;
    let gw = &rig.gw;
    let token = rig.token();
    for _ in 0..5 {
        assert_eq!(
            gw.get("/api/orders/42?x=1", Some(&token)).await.status(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(gw.get("/public/a/b", None).await.status(), 200);
    }
    assert_eq!(gw.get("/api/orders/42", None).await.status(), 401);
    assert_eq!(gw.get("/nowhere/secret-path-123", None).await.status(), 404);
    assert_eq!(
        gw.get("/api/%2e%2e/x", None).await.status(),
        404,
        "normalized to /x: no route"
    );

    let m = gw.metrics().await;
    let v = |s: &str| metric(&m, s);
    assert_eq!(
        v(r#"gateway_requests_total{code="200",route="api"}"#),
        Some(5.0)
    );
    assert_eq!(
        v(r#"gateway_requests_total{code="401",route="api"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"gateway_requests_total{code="200",route="public"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(r#"gateway_requests_total{code="404",route="none"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"gateway_request_duration_seconds_count{route="api"}"#),
        Some(6.0)
    );
    assert_eq!(
        v(r#"gateway_auth_decisions_total{decision="allow",reason="ok",route="api"}"#),
        Some(5.0)
    );
    assert_eq!(
        v(r#"gateway_auth_decisions_total{decision="deny",reason="missing_token",route="api"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"gateway_token_validation_duration_seconds_count{cache="miss",provider="test"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"gateway_token_validation_duration_seconds_count{cache="hit",provider="test"}"#),
        Some(4.0)
    );
    assert_eq!(
        v(r#"gateway_upstream_duration_seconds_count{route="api"}"#),
        Some(5.0)
    );
    assert_eq!(
        v(r#"gateway_jwks_refresh_total{provider="test",result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(v(r#"gateway_jwks_keys{provider="test"}"#), Some(1.0));
    assert!(v(r#"gateway_jwks_last_success_timestamp_seconds{provider="test"}"#).unwrap() > 1.7e9);
    assert_eq!(v("gateway_token_cache_entries"), Some(1.0));
    assert_eq!(v(r#"gateway_revocations{backend="memory"}"#), Some(0.0));
    assert!(m.contains(&format!(
        "gateway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    for family in [
        "gateway_upstream_errors_total",
        "gateway_config_reloads_total",
        "gateway_revocation_sync_total",
        "gateway_rate_limited_total",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} counter")),
            "{family} is declared"
        );
    }
    // Microsecond buckets exist for the hot path; the timings themselves are the benches' job.
    assert!(m.contains(
        r#"gateway_token_validation_duration_seconds_bucket{cache="hit",provider="test",le="0.000001"}"#
    ));
    assert_eq!(
        v(
            r#"gateway_token_validation_duration_seconds_bucket{cache="hit",provider="test",le="+Inf"}"#
        ),
        Some(4.0)
    );
    for line in m.lines().filter(|l| l.contains("route=")) {
        assert!(
            !line.contains("orders/42")
                && !line.contains("secret-path")
                && !line.contains("route=\"/"),
            "raw path in {line}"
        );
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_never_evict_verified_ones() {
    let rig = Rig::start(|i, u| basic(i, u).section("token_cache: { max_entries: 2 }")).await;
    let gw = &rig.gw;
    let token = rig.token();
    assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    let other = SigningKey::p256("k1");
    for i in 0..200 {
        let mut c = rig.claims();
        c["jti"] = serde_json::json!(format!("forged-{i}"));
        assert_eq!(
            gw.get("/api/x", Some(&other.mint("ES256", &c)))
                .await
                .status(),
            401
        );
    }
    assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"gateway_token_validation_duration_seconds_count{cache="hit",provider="test"}"#
        ),
        Some(1.0),
        "still cached after the flood"
    );
    assert_eq!(metric(&m, "gateway_token_cache_entries"), Some(1.0));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_stops_working_when_it_expires() {
    let rig =
        Rig::start(|i, u| basic(i, u).edit_provider("test", |p| p.line("clock_skew: 0s"))).await;
    let gw = &rig.gw;
    let mut c = rig.claims();
    c["exp"] = serde_json::json!(crate::support::now() + 2);
    let token = rig.mint(&c);
    assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    assert_eq!(
        gw.get("/api/x", Some(&token)).await.status(),
        200,
        "served from the cache"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let r = gw.get("/api/x", Some(&token)).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("expired"));
    rig.stop().await;
}

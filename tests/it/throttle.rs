//! `auth_failures_per_minute`: brute force gets 429 with Retry-After, per client IP.

use crate::support::{basic_yaml, claims, metric, Issuer, TestGateway, TestKey, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_limit_get_429_per_client() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let yaml = basic_yaml(&issuer, &upstream, "ES256").replace(
        "  insecure_plaintext: true\n",
        "  insecure_plaintext: true\n  trusted_proxies: [\"127.0.0.1\"]\n  limits:\n    auth_failures_per_minute: 3\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let good = key.mint("ES256", &claims(&issuer.iss(), "orders-api"));
    let send = |token: &'static str, from: &'static str| {
        let client = gw.client();
        let url = gw.url("/api/x");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .header("x-forwarded-for", from)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            send("garbage.token.here", "198.51.100.1").await.status(),
            401
        );
    }
    let r = send("garbage.token.here", "198.51.100.1").await;
    assert_eq!(r.status(), 429);
    let retry: u32 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let good: &'static str = Box::leak(good.into_boxed_str());
    assert_eq!(
        send(good, "198.51.100.1").await.status(),
        429,
        "blocked before any signature check"
    );
    assert_eq!(
        send(good, "198.51.100.2").await.status(),
        200,
        "another client is not affected"
    );
    assert_eq!(upstream.requests(), 1);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"gateway_rate_limited_total{route="api"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, r#"gateway_requests_total{code="429",route="api"}"#),
        Some(2.0)
    );
    gw.stop().await;
}

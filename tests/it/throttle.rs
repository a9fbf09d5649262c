//! `auth_failures_per_minute`: brute force gets 429 with Retry-After, per client IP.

use crate::support::yaml::{basic, server};
use crate::support::{metric, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_limit_get_429_per_client() {
    let rig = Rig::start(|i, u| {
        basic(i, u).server(
            server()
                .line(r#"trusted_proxies: ["127.0.0.1"]"#)
                .limits("auth_failures_per_minute: 3"),
        )
    })
    .await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let good = rig.token();
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
    rig.stop().await;
}

/// IPv6 clients share a budget per /64 (one host routinely holds a whole /64), IPv4 clients per
/// address. Tests can only listen on loopback, so the client addresses arrive as
/// `X-Forwarded-For` hops from a trusted 127.0.0.1; the key is the nearest untrusted hop walking
/// from the right, and a malformed hop falls back to the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_budget_per_64_behind_trusted_proxies() {
    let rig = Rig::start(|i, u| {
        basic(i, u).server(
            server()
                .line(r#"trusted_proxies: ["127.0.0.1", "10.0.0.0/8"]"#)
                .limits("auth_failures_per_minute: 2"),
        )
    })
    .await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let good = rig.token();
    let send = async |token: &str, xff: &str| -> u16 {
        gw.client()
            .get(gw.url("/api/x"))
            .bearer_auth(token)
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let bad = "garbage.token.here";
    assert_eq!(send(bad, "2001:db8:1:2::1").await, 401);
    assert_eq!(send(bad, "2001:db8:1:2:ffff:ffff:ffff:ffff").await, 401);
    assert_eq!(
        send(&good, "2001:db8:1:2:aaaa::9").await,
        429,
        "a third address of the same /64 draws on the same budget"
    );
    assert_eq!(
        send(&good, "2001:db8:1:2::77, 10.0.0.5").await,
        429,
        "through a trusted hop"
    );
    assert_eq!(
        send(&good, "2001:db8:1:3::1, 2001:db8:1:2::8").await,
        429,
        "what the client wrote on the left does not pick the key"
    );
    assert_eq!(
        upstream.requests(),
        0,
        "no refused request reached the upstream"
    );

    assert_eq!(
        send(&good, "2001:db8:1:3::1").await,
        200,
        "the next /64 is another client"
    );
    assert_eq!(
        send(&good, "2001:db8:1:2::5, unknown").await,
        200,
        "a malformed hop: the peer is the key, not the throttled /64 left of it"
    );

    // IPv4: per address.
    assert_eq!(send(bad, "198.51.100.1").await, 401);
    assert_eq!(send(bad, "198.51.100.1").await, 401);
    assert_eq!(send(&good, "198.51.100.1").await, 429);
    assert_eq!(
        send(&good, "198.51.100.2").await,
        200,
        "the neighbour address"
    );
    assert_eq!(upstream.requests(), 3);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"gateway_rate_limited_total{route="api"}"#),
        Some(4.0)
    );
    rig.stop().await;
}

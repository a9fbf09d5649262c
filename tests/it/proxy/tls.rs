//! TLS termination with ALPN (HTTP/1.1 and HTTP/2), h2c with prior knowledge, and HSTS.

use http::Version;
use serde_json::Value;

use crate::support::yaml::{public_and_api, server};
use crate::support::{Pki, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_over_tls_negotiated_by_alpn() {
    let rig = Rig::start(|i, u| public_and_api(i, u).server(server().hsts("1h"))).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    assert!(gw.base().starts_with("https://"));

    let r = gw.client().get(gw.url("/public/one")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=3600");
    let seen = upstream.last().unwrap();
    assert_eq!(seen.path_and_query, "/public/one");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    let h2 = gw.h2_client();
    let r = h2
        .post(gw.url("/public/two?x=1"))
        .body(vec![7u8; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2, "ALPN must pick h2");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=3600");
    let echo: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(echo["path"], "/public/two?x=1");
    assert_eq!(echo["body_len"], 70_000);
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        echo["headers"]["x-forwarded-host"],
        format!("127.0.0.1:{}", gw.addr.port()),
        "HTTP/2 :authority becomes X-Forwarded-Host"
    );

    // Several streams on the one HTTP/2 connection at once.
    let urls: Vec<String> = (0..8).map(|i| gw.url(&format!("/public/s{i}"))).collect();
    let answers = futures_join(urls.iter().map(|u| h2.get(u).send())).await;
    for a in answers {
        let a = a.unwrap();
        assert_eq!((a.status().as_u16(), a.version()), (200, Version::HTTP_2));
    }

    // The name in the certificate works too, and the gateway's own answers carry HSTS.
    let r = gw
        .client()
        .get(format!("https://api.example.com:{}/api/x", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=3600");
    assert_eq!(upstream.requests(), 10);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_trusting_the_ca_and_a_plaintext_client_get_nothing() {
    let rig = Rig::start(|i, u| public_and_api(i, u).server(server().tls())).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let other_ca = Pki::new();
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&other_ca.ca_der).unwrap()])
        .build()
        .unwrap();
    assert!(stranger.get(gw.url("/public/x")).send().await.is_err());
    let plain = super::raw_get(gw.addr, "localhost", "/public/x").await;
    assert_eq!(plain.status, 0, "no HTTP answer on a TLS port: {plain:?}");
    assert_eq!(upstream.requests(), 0);

    let r = gw.get("/public/x", None).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "no HSTS unless hsts_max_age is set"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_over_plaintext_without_hsts() {
    let rig = Rig::start(public_and_api).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let r = gw
        .h2_client()
        .get(gw.url("/public/h2c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2);
    assert!(r.headers().get("strict-transport-security").is_none());
    let seen = upstream.last().unwrap();
    assert_eq!(seen.path_and_query, "/public/h2c");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");

    let r = gw.get("/public/h1", None).await;
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_11));
    assert!(r.headers().get("strict-transport-security").is_none());
    rig.stop().await;
}

/// Awaits every future (they run concurrently on the client's connection).
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

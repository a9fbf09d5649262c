//! Hot reload: a changed file is picked up, a broken one drops nothing, in-flight requests finish
//! on the config they started with, and unchanged providers keep their keys and cached tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::yaml::{anonymous, basic, server, Config};
use crate::support::{metric, Issuer, Rig, Upstream};

fn hits(m: &str, cache: &str) -> f64 {
    metric(
        m,
        &format!(
            r#"gateway_token_validation_duration_seconds_count{{cache="{cache}",provider="test"}}"#
        ),
    )
    .unwrap_or(0.0)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `basic`, and an anonymous route `/added`.
fn with_added_route(issuer: &Issuer, upstream: &Upstream) -> Config {
    basic(issuer, upstream).route(anonymous("added", "/added", &upstream.url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_and_a_broken_one_drops_nothing() {
    let rig = Rig::start(basic).await;
    let (gw, issuer, upstream) = (&rig.gw, &rig.issuer, &rig.upstream);
    let stop = CancellationToken::new();
    tokio::spawn(jwt_gateway::reload::watch_config(
        gw.gateway.clone(),
        gw.config_path(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.get("/added/x", None).await.status(), 404);

    std::fs::write(gw.config_path(), with_added_route(issuer, upstream).yaml()).unwrap();
    eventually("the new route serves", async || {
        gw.get("/added/x", None).await.status() == 200
    })
    .await;
    assert_eq!(
        metric(
            &gw.metrics().await,
            r#"gateway_config_reloads_total{result="ok"}"#
        ),
        Some(1.0)
    );

    // Traffic runs while a broken config lands: not one request may fail.
    let token = rig.token();
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (client, url, token, failures, sent) = (
            gw.client(),
            gw.url("/api/x"),
            token.clone(),
            failures.clone(),
            sent.clone(),
        );
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let ok = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        gw.config_path(),
        "server:\n  insecure_plaintext: true\nroutes: [oops\n",
    )
    .unwrap();
    traffic.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 20);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a broken reload dropped requests"
    );
    eventually("the refusal is counted", async || {
        metric(
            &gw.metrics().await,
            r#"gateway_config_reloads_total{result="error"}"#,
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        gw.get("/added/x", None).await.status(),
        200,
        "the previous config keeps serving"
    );
    stop.cancel();
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let rig = Rig::start(with_added_route).await;
    let (gw, issuer, upstream) = (&rig.gw, &rig.issuer, &rig.upstream);
    let slow = {
        let (client, url) = (gw.client(), gw.url("/added/slow/800"));
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let without = basic(issuer, upstream).yaml();
    let compiled = jwt_gateway::config::compile_str(&without, gw.dir.path()).unwrap();
    gw.gateway.reload(compiled).await.unwrap();
    assert_eq!(
        gw.get("/added/x", None).await.status(),
        404,
        "new requests see the new config"
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_providers_keep_keys_and_cache_changed_ones_start_fresh() {
    let rig = Rig::start(basic).await;
    let (gw, issuer, upstream) = (&rig.gw, &rig.issuer, &rig.upstream);
    let token = rig.token();
    assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    let fetches = issuer.jwks_hits();
    let m = gw.metrics().await;
    assert_eq!((hits(&m, "miss"), hits(&m, "hit")), (1.0, 0.0));

    // Only routes change: the provider keeps its keys and the token stays cached.
    let added = with_added_route(issuer, upstream).yaml();
    let compiled = jwt_gateway::config::compile_str(&added, gw.dir.path()).unwrap();
    gw.gateway.reload(compiled).await.unwrap();
    assert_eq!(gw.get("/api/x", Some(&token)).await.status(), 200);
    let m = gw.metrics().await;
    assert_eq!((hits(&m, "miss"), hits(&m, "hit")), (1.0, 1.0));
    assert_eq!(
        issuer.jwks_hits(),
        fetches,
        "no refetch for an unchanged provider"
    );

    // The provider's settings change: its cached tokens must be verified again under them.
    let changed = basic(issuer, upstream).edit_provider("test", |p| p.audiences(&["billing-api"]));
    let compiled = jwt_gateway::config::compile_str(&changed.yaml(), gw.dir.path()).unwrap();
    gw.gateway.reload(compiled).await.unwrap();
    let r = gw.get("/api/x", Some(&token)).await;
    assert_eq!(
        r.status(),
        401,
        "the new audience rule applies to a token cached before"
    );
    assert!(hits(&gw.metrics().await, "miss") >= 2.0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_tls_certificate() {
    let rig = Rig::start(|i, u| basic(i, u).server(server().tls())).await;
    let gw = &rig.gw;
    let trusting = |ca_der: &rustls_pki_types::CertificateDer<'static>| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(ca_der).unwrap()])
            .http1_only()
            .build()
            .unwrap()
    };
    let url = gw.url("/public/x");
    assert_eq!(
        trusting(&gw.pki.ca_der)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let rotated = crate::support::Pki::new();
    std::fs::write(gw.dir.path().join("gateway.crt"), &rotated.cert_pem).unwrap();
    std::fs::write(gw.dir.path().join("gateway.key"), &rotated.key_pem).unwrap();
    let config = jwt_gateway::config::load(&gw.config_path()).unwrap();
    gw.gateway.reload(config).await.unwrap();

    assert_eq!(
        trusting(&rotated.ca_der)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "new connections get the new certificate"
    );
    assert!(
        trusting(&gw.pki.ca_der).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
    rig.stop().await;
}

//! The admin listener: `/healthz` while alive, `/readyz` only once every provider has keys.

use std::time::Duration;

use super::eventually;
use crate::support::yaml::{protected, provider, Config};
use crate::support::{Backends, Issuer, Rig, TestGateway, Upstream};

/// Provider `test` trusting `issuer`, and `/api` behind it.
fn api_config(issuer: &Issuer, upstream: &Upstream) -> Config {
    Config::new()
        .provider(provider(issuer))
        .route(protected("api", "/api", &upstream.url()))
}

async fn readyz(gw: &TestGateway) -> u16 {
    gw.admin_get("/readyz").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_follow_the_keys() {
    let rig = Rig::start(api_config).await;
    let gw = &rig.gw;
    assert_eq!(gw.admin_get("/healthz").await.0, 200);
    let ready = async {
        for _ in 0..100 {
            if readyz(gw).await == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(ready.await, "ready once the JWKS is fetched");
    let (_, body) = gw.admin_get("/readyz").await;
    assert!(body.contains(r#""test":"ready""#), "{body}");
    // Never on the public listener.
    assert_eq!(gw.get("/readyz", None).await.status(), 404);
    assert_eq!(gw.get("/metrics", None).await.status(), 404);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_issuer_fails() {
    let backends = Backends::es256().await;
    backends.issuer.set_status(500);
    let rig = backends.gateway(api_config).await;
    let (gw, issuer) = (&rig.gw, &rig.issuer);
    let issuer_probe = issuer.clone();
    assert!(
        eventually(Duration::from_secs(5), || issuer_probe.jwks_hits() > 0).await,
        "the gateway asks for keys at start"
    );
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""test":"no_usable_keys""#), "{body}");
    assert_eq!(gw.admin_get("/healthz").await.0, 200, "alive all the same");

    // The refresher retries; once the issuer answers, the gateway turns ready.
    issuer.set_status(200);
    let mut became_ready = false;
    for _ in 0..80 {
        if readyz(gw).await == 200 {
            became_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(became_ready, "ready after the issuer recovered");
    rig.stop().await;
}

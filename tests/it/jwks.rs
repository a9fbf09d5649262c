//! Keys over time: rotation, unknown-kid floods, outages, garbage, removal, unusable entries,
//! OIDC discovery and readiness, against a real JWKS server whose answers change mid-test.
//! `min_refresh` is 1s in these configs, so a test waits just over a second before it may expect
//! a refetch.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::support::keys::{b64, random_id};
use crate::support::yaml::{every_rule, protected, provider, Config};
use crate::support::{claims, metric, Backends, Issuer, Rig, SigningKey, Upstream, Want};

/// Just past `min_refresh` (1s), so the next unknown kid may refetch.
const PAST_MIN_REFRESH: Duration = Duration::from_millis(1100);

/// The gateway on `every_rule` with algorithms `algorithms`, its issuer publishing `keys`.
async fn rig(keys: &[(&SigningKey, &'static str)], algorithms: &str) -> Rig {
    Rig::with_keys(keys, |i, u| {
        every_rule(i, u).edit_provider("test", |p| p.algorithms(algorithms))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_new_kid_works_on_its_first_request() {
    let old = SigningKey::p256("2024-01");
    let new = SigningKey::p256("2024-02");
    let rig = rig(&[(&old, "ES256")], "ES256").await;
    let old_token = rig.token_of(&old, "ES256");
    assert_eq!(rig.status(&old_token).await, 200);

    // The IdP publishes the new key next to the old one and starts signing with it.
    rig.issuer.set_keys(&[(&old, "ES256"), (&new, "ES256")]);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    let hits = rig.issuer.jwks_hits();
    assert_eq!(
        rig.status(&rig.token_of(&new, "ES256")).await,
        200,
        "new kid on its first request"
    );
    assert_eq!(
        rig.issuer.jwks_hits(),
        hits + 1,
        "exactly one refetch for the unknown kid"
    );
    assert_eq!(rig.status(&old_token).await, 200, "old key still published");
    assert_eq!(rig.status(&rig.token_of(&new, "ES256")).await, 200);
    assert_eq!(rig.issuer.jwks_hits(), hits + 1, "known kids cost no fetch");

    // The old key is retired: its tokens, cached or fresh, stop at the next refresh.
    rig.issuer.set_keys(&[(&new, "ES256")]);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    let newer = SigningKey::p256("2024-03");
    rig.denied(
        Want::Invalid("unknown_kid"),
        "unpublished kid, triggers the refresh",
        &rig.token_of(&newer, "ES256"),
    )
    .await;
    rig.denied(
        Want::Invalid("unknown_kid"),
        "cached token of the retired key",
        &old_token,
    )
    .await;
    assert_eq!(rig.status(&rig.token_of(&new, "ES256")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_is_bounded_by_min_refresh() {
    let key = SigningKey::p256("real");
    let rig = rig(&[(&key, "ES256")], "ES256").await;
    assert_eq!(rig.status(&rig.token_of(&key, "ES256")).await, 200);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    let hits_before = rig.issuer.jwks_hits();
    let client = rig.gw.h2_client();
    let url = rig.gw.url("/api/x");
    let iss = rig.issuer.iss();
    let suffix = random_id();
    for wave in 0..2 {
        let mut requests = JoinSet::new();
        for i in 0..300 {
            let token = key
                .with_kid(&format!("flood-{wave}-{i}-{suffix}"))
                .mint("ES256", &claims(&iss, "orders-api"));
            let (client, url) = (client.clone(), url.clone());
            requests.spawn(async move {
                client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
        while let Some(done) = requests.join_next().await {
            let status = done.expect("task").expect("request");
            assert_eq!(status, 401, "wave {wave}");
        }
    }
    let fetches = rig.issuer.jwks_hits() - hits_before;
    assert!(
        fetches <= 2,
        "600 unknown kids caused {fetches} JWKS fetches"
    );
    assert_eq!(rig.upstream.requests(), 1, "only the control got through");
    let m = rig.gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"gateway_auth_decisions_total{decision="deny",reason="unknown_kid",route="api"}"#
        ),
        Some(600.0)
    );
    assert_eq!(rig.status(&rig.token_of(&key, "ES256")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_outage_keeps_known_keys_and_unknown_kids_get_503() {
    let key = SigningKey::p256("k1");
    let next = SigningKey::p256("k2");
    let rig = rig(&[(&key, "ES256")], "ES256").await;
    let cached = rig.token_of(&key, "ES256");
    assert_eq!(rig.status(&cached).await, 200);

    rig.issuer.set_status(500);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    rig.denied(
        Want::Unavailable,
        "unknown kid while the JWKS answers 500",
        &rig.token_of(&next, "ES256"),
    )
    .await;
    assert_eq!(rig.status(&cached).await, 200, "cached token, known key");
    assert_eq!(
        rig.status(&rig.token_of(&key, "ES256")).await,
        200,
        "fresh token, known key"
    );
    rig.denied(
        Want::Unavailable,
        "unknown kid again, within min_refresh of the failed fetch",
        &rig.token_of(&next, "ES256"),
    )
    .await;
    let (ready, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(ready, 200, "known keys within max_stale keep /readyz 200");
    let m = rig.gw.metrics().await;
    assert!(
        metric(
            &m,
            r#"gateway_jwks_refresh_total{provider="test",result="error"}"#
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Recovery: the IdP is back with the new key.
    rig.issuer.set_keys(&[(&key, "ES256"), (&next, "ES256")]);
    rig.issuer.set_status(200);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    assert_eq!(rig.status(&rig.token_of(&next, "ES256")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_jwks_keeps_known_keys() {
    let key = SigningKey::p256("k1");
    let rig = rig(&[(&key, "ES256")], "ES256").await;
    assert_eq!(rig.status(&rig.token_of(&key, "ES256")).await, 200);
    // Not JSON, then JSON without a usable key (other shapes are covered by parse_jwks tests
    // and the Wycheproof key sets; each case here costs a min_refresh wait).
    let garbage: [&[u8]; 2] = [
        b"<html>maintenance</html>",
        br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    ];
    for (i, body) in garbage.iter().enumerate() {
        rig.issuer.set_raw_body(Some(body));
        tokio::time::sleep(PAST_MIN_REFRESH).await;
        rig.denied(
            Want::Unavailable,
            &format!("unknown kid after garbage #{i}"),
            &rig.token_of(&SigningKey::p256(&format!("unknown-{i}")), "ES256"),
        )
        .await;
        assert_eq!(
            rig.status(&rig.token_of(&key, "ES256")).await,
            200,
            "known key after garbage #{i}"
        );
    }
    let (ready, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(ready, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_stops_validating_even_cached_tokens() {
    let stays = SigningKey::p256("stays");
    let goes = SigningKey::p256("goes");
    let rig = rig(&[(&stays, "ES256"), (&goes, "ES256")], "ES256").await;
    let cached = rig.token_of(&goes, "ES256");
    assert_eq!(rig.status(&cached).await, 200);
    assert_eq!(rig.status(&cached).await, 200, "served from the cache");
    let m = rig.gw.metrics().await;
    assert!(
        m.contains(
            r#"gateway_token_validation_duration_seconds_count{cache="hit",provider="test"} 1"#
        ),
        "the second request was a cache hit"
    );

    rig.issuer.set_keys(&[(&stays, "ES256")]);
    tokio::time::sleep(PAST_MIN_REFRESH).await;
    rig.denied(
        Want::Invalid("unknown_kid"),
        "an unknown kid triggers the refresh",
        &rig.token_of(&SigningKey::p256("trigger"), "ES256"),
    )
    .await;
    rig.denied(
        Want::Invalid("unknown_kid"),
        "cached token of the removed key",
        &cached,
    )
    .await;
    rig.denied(
        Want::Invalid("unknown_kid"),
        "fresh token of the removed key",
        &rig.token_of(&goes, "ES256"),
    )
    .await;
    assert_eq!(rig.status(&rig.token_of(&stays, "ES256")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_entries_are_skipped_and_the_rest_load() {
    let good_ec = SigningKey::p256("good-ec");
    let good_rsa = SigningKey::rsa("good-rsa");
    let enc = SigningKey::rsa_other("enc");
    let with_d = SigningKey::p256("with-d");
    let p384 = SigningKey::p384("p384");
    let okp = SigningKey::ed25519("okp");
    let jwk = |k: &SigningKey, alg: Option<&str>, edit: &dyn Fn(&mut Value)| {
        let mut j = k.jwk();
        if let Some(a) = alg {
            j["alg"] = json!(a);
        }
        edit(&mut j);
        j
    };
    let small_n = {
        let mut n = vec![0xc5u8; 128];
        n[127] = 0x01;
        b64(n)
    };
    let entries = vec![
        json!({"kty": "oct", "kid": "oct", "k": b64([7u8; 32]), "alg": "HS256"}),
        json!({"kty": "oct", "kid": "oct-public"}),
        jwk(&enc, Some("RS256"), &|j| j["use"] = json!("enc")),
        jwk(&enc, None, &|j| {
            j["kid"] = json!("enc-ops");
            j.as_object_mut().expect("object").remove("use");
            j["key_ops"] = json!(["encrypt"]);
        }),
        json!({"kty": "RSA", "kid": "rsa-1024", "alg": "RS256", "n": small_n, "e": "AQAB"}),
        jwk(&good_ec, Some("ES256"), &|j| {
            j["kid"] = json!("short-x");
            let x = j["x"].as_str().expect("x").to_string();
            j["x"] = json!(&x[..x.len() - 2]);
        }),
        jwk(&p384, Some("ES384"), &|_| {}),
        jwk(&p384, None, &|j| j["kid"] = json!("p384-no-alg")),
        jwk(&good_ec, Some("ES384"), &|j| {
            j["kid"] = json!("curve-mismatch")
        }),
        jwk(&with_d, Some("ES256"), &|j| j["d"] = json!(b64([1u8; 32]))),
        jwk(&okp, Some("EdDSA"), &|_| {}),
        json!({"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64([1u8; 57])}),
        json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": b64([1u8; 66]), "y": b64([1u8; 66])}),
        json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
        json!({"kty": 7, "kid": "kty-number"}),
        json!("not an object"),
        jwk(&good_ec, Some("ES256"), &|_| {}),
        jwk(&good_rsa, Some("RS256"), &|_| {}),
        jwk(&good_rsa, Some("RS256"), &|j| j["kid"] = json!("good-ec")),
    ];
    let backends = Backends::start(&[]).await;
    backends.issuer.set_jwks(json!({ "keys": entries }));
    let rig = backends
        .gateway(|i, u| every_rule(i, u).edit_provider("test", |p| p.algorithms("RS256, ES256")))
        .await;
    assert_eq!(rig.status(&rig.token_of(&good_ec, "ES256")).await, 200);
    assert_eq!(rig.status(&rig.token_of(&good_rsa, "RS256")).await, 200);
    let m = rig.gw.metrics().await;
    assert_eq!(
        metric(&m, r#"gateway_jwks_keys{provider="test"}"#),
        Some(2.0),
        "only the two good keys load (a later duplicate kid is skipped)"
    );
    let (ready, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(ready, 200);

    let refused: Vec<(SigningKey, &str, &str)> = vec![
        (enc.clone(), "RS256", "use: enc"),
        (enc.with_kid("enc-ops"), "RS256", "key_ops without verify"),
        (good_rsa.with_kid("rsa-1024"), "RS256", "RSA 1024"),
        (good_ec.with_kid("short-x"), "ES256", "short EC coordinate"),
        (
            good_ec.with_kid("curve-mismatch"),
            "ES256",
            "alg ES384 on P-256",
        ),
        (with_d.clone(), "ES256", "entry with d"),
        (good_ec.with_kid("oct"), "ES256", "oct key"),
        (good_ec.with_kid("ed448"), "ES256", "Ed448"),
        (good_ec.with_kid("p521"), "ES256", "P-521"),
    ];
    for (key, alg, what) in refused {
        rig.denied(Want::Invalid("unknown_kid"), what, &rig.token_of(&key, alg))
            .await;
    }
    // Algorithms outside the allow-list are refused before a key is looked at.
    rig.denied(
        Want::Invalid("alg_not_allowed"),
        "ES384 key, ES384 not allowed",
        &rig.token_of(&p384, "ES384"),
    )
    .await;
    rig.denied(
        Want::Invalid("alg_not_allowed"),
        "EdDSA key, EdDSA not allowed",
        &rig.token_of(&okp, "EdDSA"),
    )
    .await;
}

/// Provider `test` finding its keys through `issuer`'s OIDC discovery, and `/api` behind it.
fn discovery_config(issuer: &Issuer, upstream: &Upstream) -> Config {
    Config::new()
        .provider(provider(issuer).discovery())
        .route(protected("api", "/api", &upstream.url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reads_jwks_uri() {
    let rig = Rig::start(discovery_config).await;
    let r = rig.gw.get("/api/x", Some(&rig.token())).await;
    assert_eq!(r.status(), 200);
    assert!(
        rig.issuer.jwks_hits() >= 1,
        "keys came from the discovered jwks_uri"
    );
    let (ready, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(ready, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_naming_another_issuer_is_refused() {
    let backends = Backends::es256().await;
    let evil = Issuer::start(&[(&backends.keys[0].0, "ES256")]).await;
    {
        let mut state = backends.issuer.state.lock().expect("issuer state");
        state.discovery = json!({"issuer": "https://evil.example", "jwks_uri": evil.jwks_url()});
    }
    let rig = backends.gateway(discovery_config).await;
    rig.denied(
        Want::Unavailable,
        "discovery document names another issuer",
        &rig.token(),
    )
    .await;
    let (ready, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(ready, 503);
    assert_eq!(evil.jwks_hits(), 0, "its jwks_uri was never fetched");
    assert_eq!(rig.issuer.jwks_hits(), 0);
    let m = rig.gw.metrics().await;
    assert!(
        metric(
            &m,
            r#"gateway_jwks_refresh_total{provider="test",result="error"}"#
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_keys_exist() {
    let backends = Backends::es256().await;
    backends.issuer.set_status(503);
    let rig = backends.gateway(every_rule).await;
    let gw = &rig.gw;
    let (ready, body) = gw.admin_get("/readyz").await;
    assert_eq!(ready, 503, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ready, body) = gw.admin_get("/readyz").await;
    assert_eq!(ready, 503, "still no keys after a failed fetch: {body}");
    rig.issuer.set_status(200);
    let mut waited = Duration::ZERO;
    loop {
        let (ready, _) = gw.admin_get("/readyz").await;
        if ready == 200 {
            break;
        }
        assert!(
            waited < Duration::from_secs(3),
            "/readyz did not turn 200 after the JWKS recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(rig.status(&rig.token()).await, 200);
}

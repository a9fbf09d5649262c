//! Revocation: the admin API, enforcement on cached tokens, the file backend across restarts,
//! and a fleet sharing a real Redis (including Redis dying and coming back empty).

use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::{
    claims, metric, now, test_provider_yaml, Issuer, TestGateway, TestKey, Upstream,
};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

fn set_admin_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("JWT_GATEWAY_TEST_ADMIN_TOKEN", ADMIN_TOKEN));
}

fn yaml(issuer: &Issuer, upstream: &Upstream, revocation: &str) -> String {
    set_admin_env();
    format!(
        r#"
server:
  insecure_plaintext: true
admin:
  token_env: JWT_GATEWAY_TEST_ADMIN_TOKEN
providers:
{provider}routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ providers: [test] }}
revocation:
{revocation}
"#,
        provider = test_provider_yaml(issuer, "ES256"),
        up = upstream.url(),
    )
}

async fn admin(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", gw.admin));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.expect("admin call");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post_revocation(gw: &TestGateway, body: Value, token: Option<&str>) -> (u16, Value) {
    admin(gw, reqwest::Method::POST, "/revocations", Some(body), token).await
}

/// Revokes the token carrying claims `c` by its `jti`, until its `exp`.
async fn revoke_jti(gw: &TestGateway, c: &Value) -> (u16, Value) {
    post_revocation(
        gw,
        json!({"jti": c["jti"], "exp": c["exp"]}),
        Some(ADMIN_TOKEN),
    )
    .await
}

async fn delete_revocation(gw: &TestGateway, id: &str, token: Option<&str>) -> u16 {
    let path = format!("/revocations/{id}");
    admin(gw, reqwest::Method::DELETE, &path, None, token)
        .await
        .0
}

/// Listing needs no token: only changes are guarded.
async fn list_revocations(gw: &TestGateway) -> Value {
    admin(gw, reqwest::Method::GET, "/revocations", None, None)
        .await
        .1
}

async fn status_of(gw: &TestGateway, token: &str) -> u16 {
    gw.get("/api/x", Some(token)).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_and_a_well_formed_body() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&issuer, &upstream, "  backend: memory")).await;
    let body = json!({"jti": "abc", "exp": now() + 60});

    assert_eq!(post_revocation(&gw, body.clone(), None).await.0, 401);
    assert_eq!(
        post_revocation(&gw, body.clone(), Some("wrong")).await.0,
        401
    );
    for bad in [
        json!({"jti": "abc"}),
        json!({"jti": 5, "exp": 1}),
        json!({"jti": "a", "exp": 1, "x": 2}),
        json!([1]),
        json!({"sub": "u", "exp": 3}),
    ] {
        assert_eq!(post_revocation(&gw, bad, Some(ADMIN_TOKEN)).await.0, 400);
    }
    let list = list_revocations(&gw).await;
    assert_eq!(list, json!([]), "refused calls changed nothing");

    let (status, entry) = post_revocation(&gw, body, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 201);
    assert_eq!(entry["jti"], "abc");
    let id = entry["id"].as_str().expect("id").to_string();
    assert_eq!(delete_revocation(&gw, &id, None).await, 401);
    assert_eq!(delete_revocation(&gw, &id, Some(ADMIN_TOKEN)).await, 204);
    assert_eq!(delete_revocation(&gw, &id, Some(ADMIN_TOKEN)).await, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_even_when_cached() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&issuer, &upstream, "  backend: memory")).await;
    let c = claims(&issuer.iss(), "orders-api");
    let token = key.mint("ES256", &c);
    assert_eq!(status_of(&gw, &token).await, 200);
    assert_eq!(status_of(&gw, &token).await, 200, "now cached");
    let seen = upstream.requests();

    let (status, entry) = revoke_jti(&gw, &c).await;
    assert_eq!(status, 201);
    let r = gw.get("/api/x", Some(&token)).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("revoked"));
    assert_eq!(
        upstream.requests(),
        seen,
        "a revoked token never reaches the upstream"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"gateway_auth_decisions_total{decision="deny",reason="revoked",route="api"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"gateway_revocations{backend="memory"}"#),
        Some(1.0)
    );

    // "Log out everywhere": tokens of alice issued before now are refused, newer ones pass.
    let other = key.mint("ES256", &claims(&issuer.iss(), "orders-api"));
    assert_eq!(status_of(&gw, &other).await, 200);
    let (status, _) = admin(
        &gw,
        reqwest::Method::POST,
        "/revocations",
        Some(json!({"sub": "alice", "not_before": now() + 1})),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(status_of(&gw, &other).await, 401);
    let mut fresh = claims(&issuer.iss(), "orders-api");
    fresh["iat"] = json!(now() + 2);
    fresh["nbf"] = json!(now());
    assert_eq!(
        status_of(&gw, &key.mint("ES256", &fresh)).await,
        200,
        "issued after not_before"
    );

    let id = entry["id"].as_str().unwrap();
    assert_eq!(delete_revocation(&gw, id, Some(ADMIN_TOKEN)).await, 204);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_survives_a_restart_and_compacts_expired_entries() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.jsonl");
    let section = format!("  backend: memory\n  file: {}", file.display());
    let c = claims(&issuer.iss(), "orders-api");
    let token = key.mint("ES256", &c);

    let gw = TestGateway::start(&yaml(&issuer, &upstream, &section)).await;
    assert_eq!(revoke_jti(&gw, &c).await.0, 201);
    assert_eq!(
        post_revocation(
            &gw,
            json!({"jti": "long-gone", "exp": 1000}),
            Some(ADMIN_TOKEN)
        )
        .await
        .0,
        201
    );
    assert_eq!(status_of(&gw, &token).await, 401);
    gw.stop().await;

    let gw = TestGateway::start(&yaml(&issuer, &upstream, &section)).await;
    assert_eq!(
        status_of(&gw, &token).await,
        401,
        "the revocation survived the restart"
    );
    let list = list_revocations(&gw).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the expired entry was compacted away: {list}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("long-gone"));
    gw.stop().await;
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_revocations_through_redis_and_survives_redis_restarts() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let mut redis = RedisServer::start();
    let section = format!("  backend: redis\n  redis_url: \"{}\"", redis.url());
    let a = TestGateway::start(&yaml(&issuer, &upstream, &section)).await;
    let b = TestGateway::start(&yaml(&issuer, &upstream, &section)).await;
    wait_for(
        "both instances connect",
        Duration::from_secs(5),
        async || {
            a.admin_get("/readyz").await.1.contains("connected")
                && b.admin_get("/readyz").await.1.contains("connected")
        },
    )
    .await;

    let c1 = claims(&issuer.iss(), "orders-api");
    let t1 = key.mint("ES256", &c1);
    assert_eq!(status_of(&b, &t1).await, 200);
    let (status, _) = revoke_jti(&a, &c1).await;
    assert_eq!(status, 201);
    let took = wait_for(
        "B refuses the token revoked through A",
        Duration::from_secs(1),
        async || status_of(&b, &t1).await == 401,
    )
    .await;
    eprintln!("revocation reached the other instance in {took:?}");

    // Redis dies: writes are refused (503, nothing stored), known revocations keep holding.
    redis.kill();
    let c2 = claims(&issuer.iss(), "orders-api");
    let t2 = key.mint("ES256", &c2);
    let (status, _) = revoke_jti(&a, &c2).await;
    assert_eq!(status, 503);
    for _ in 0..20 {
        assert_eq!(status_of(&a, &t1).await, 401);
        assert_eq!(status_of(&b, &t1).await, 401);
    }
    assert_eq!(
        status_of(&a, &t2).await,
        200,
        "the refused revocation was not applied"
    );
    wait_for(
        "B reports Redis unreachable",
        Duration::from_secs(5),
        async || b.admin_get("/readyz").await.1.contains("unreachable"),
    )
    .await;
    assert!(
        metric(
            &b.metrics().await,
            r#"gateway_revocation_sync_total{result="error"}"#
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Redis returns empty: the instances write back what they know; a third instance sees it.
    redis.restart();
    wait_for("A and B reconnect", Duration::from_secs(10), async || {
        a.admin_get("/readyz").await.1.contains("connected")
            && b.admin_get("/readyz").await.1.contains("connected")
    })
    .await;
    let c = TestGateway::start(&yaml(&issuer, &upstream, &section)).await;
    wait_for(
        "a new instance learns the revocation from Redis",
        Duration::from_secs(5),
        async || status_of(&c, &t1).await == 401,
    )
    .await;
    let (status, _) = revoke_jti(&b, &c2).await;
    assert_eq!(status, 201);
    wait_for(
        "A refuses the token revoked through B",
        Duration::from_secs(1),
        async || status_of(&a, &t2).await == 401,
    )
    .await;
    for gw in [a, b, c] {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_command_drives_the_admin_api() {
    let key = TestKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&issuer, &upstream, "  backend: memory")).await;
    let admin_url = format!("http://{}", gw.admin);
    let cmd = |token_env: &'static str, args: Vec<String>| {
        let admin_url = admin_url.clone();
        tokio::task::spawn_blocking(move || revoke_cmd(&admin_url, token_env, &args))
    };
    let exp = (now() + 600).to_string();
    let out = cmd(
        "JWT_GATEWAY_TEST_ADMIN_TOKEN",
        vec![
            "add".into(),
            "--jti".into(),
            "cli-jti".into(),
            "--exp".into(),
            exp,
        ],
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["jti"], "cli-jti");
    let id = entry["id"].as_str().unwrap().to_string();

    let list = cmd("UNSET_VAR_FOR_TEST", vec!["list".into()])
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("cli-jti"));
    let refused = cmd("UNSET_VAR_FOR_TEST", vec!["remove".into(), id.clone()])
        .await
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "no token: the admin API answers 401"
    );
    let removed = cmd("JWT_GATEWAY_TEST_ADMIN_TOKEN", vec!["remove".into(), id])
        .await
        .unwrap();
    assert!(removed.status.success());
    gw.stop().await;
}

fn revoke_cmd(admin_url: &str, token_env: &str, args: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jwt-gateway"))
        .args(["revoke", "--admin", admin_url, "--token-env", token_env])
        .args(args)
        .env("JWT_GATEWAY_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run jwt-gateway revoke")
}

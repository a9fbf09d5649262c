//! Revocation: the admin API, enforcement on cached tokens, the file backend across restarts,
//! and a fleet sharing a real Redis (including Redis dying and coming back empty).

use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::yaml::{protected, provider, Config};
use crate::support::{claims, metric, now, Issuer, Rig, SigningKey, TestGateway, Upstream};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

fn set_admin_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("JWT_GATEWAY_TEST_ADMIN_TOKEN", ADMIN_TOKEN));
}

/// Provider `test` trusting `issuer`, `/api` behind it, and the revocation `backend` (the lines
/// under `revocation:`), with no admin token.
fn without_admin_token(issuer: &Issuer, upstream: &Upstream, backend: &str) -> Config {
    Config::new()
        .provider(provider(issuer))
        .route(protected("api", "/api", &upstream.url()))
        .revocation(backend)
}

/// `without_admin_token`, and the admin API behind `ADMIN_TOKEN`.
fn revocation_config(issuer: &Issuer, upstream: &Upstream, backend: &str) -> Config {
    set_admin_env();
    without_admin_token(issuer, upstream, backend).admin("token_env: JWT_GATEWAY_TEST_ADMIN_TOKEN")
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

async fn list_revocations(gw: &TestGateway) -> Value {
    let (status, list) = admin(
        gw,
        reqwest::Method::GET,
        "/revocations",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list
}

async fn status_of(gw: &TestGateway, token: &str) -> u16 {
    gw.get("/api/x", Some(token)).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_and_a_well_formed_body() {
    let rig = Rig::start(|i, u| revocation_config(i, u, "backend: memory")).await;
    let (gw, issuer) = (&rig.gw, &rig.issuer);
    let body = json!({"jti": "abc", "exp": now() + 60});

    assert_eq!(post_revocation(gw, body.clone(), None).await.0, 401);
    assert_eq!(
        post_revocation(gw, body.clone(), Some("wrong")).await.0,
        401
    );
    for bad in [
        json!({"jti": "abc"}),
        json!({"jti": 5, "exp": 1}),
        json!({"jti": "a", "exp": 1, "x": 2}),
        json!([1]),
        json!({"sub": "u", "exp": 3}),
    ] {
        assert_eq!(post_revocation(gw, bad, Some(ADMIN_TOKEN)).await.0, 400);
    }
    assert_eq!(
        post_revocation(
            gw,
            json!({"sub": "alice", "not_before": now(), "iss": format!("{}/", issuer.iss())}),
            Some(ADMIN_TOKEN)
        )
        .await
        .0,
        400,
        "iss names no configured provider (a trailing-slash typo)"
    );
    let list = list_revocations(gw).await;
    assert_eq!(list, json!([]), "refused calls changed nothing");

    let (status, entry) = post_revocation(gw, body, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 201);
    assert_eq!(entry["jti"], "abc");
    let id = entry["id"].as_str().expect("id").to_string();
    for token in [None, Some("wrong")] {
        let (status, body) = admin(gw, reqwest::Method::GET, "/revocations", None, token).await;
        assert_eq!(status, 401, "listing needs the admin token too");
        assert!(!body.to_string().contains("abc"), "{body}");
    }
    assert_eq!(delete_revocation(gw, &id, None).await, 401);
    assert_eq!(delete_revocation(gw, &id, Some(ADMIN_TOKEN)).await, 204);
    assert_eq!(delete_revocation(gw, &id, Some(ADMIN_TOKEN)).await, 404);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_even_when_cached() {
    let rig = Rig::start(|i, u| revocation_config(i, u, "backend: memory")).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let c = rig.claims();
    let token = rig.mint(&c);
    assert_eq!(status_of(gw, &token).await, 200);
    assert_eq!(status_of(gw, &token).await, 200, "now cached");
    let seen = upstream.requests();

    let (status, entry) = revoke_jti(gw, &c).await;
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
    let other = rig.token();
    assert_eq!(status_of(gw, &other).await, 200);
    let (status, _) = admin(
        gw,
        reqwest::Method::POST,
        "/revocations",
        Some(json!({"sub": "alice", "not_before": now() + 1})),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(status_of(gw, &other).await, 401);
    let mut fresh = rig.claims();
    fresh["iat"] = json!(now() + 2);
    fresh["nbf"] = json!(now());
    assert_eq!(
        status_of(gw, &rig.mint(&fresh)).await,
        200,
        "issued after not_before"
    );

    let id = entry["id"].as_str().unwrap();
    assert_eq!(delete_revocation(gw, id, Some(ADMIN_TOKEN)).await, 204);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_survives_a_restart_and_compacts_expired_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.jsonl");
    let section = format!("backend: memory\nfile: {}", file.display());
    let rig = Rig::start(|i, u| revocation_config(i, u, &section)).await;
    let c = rig.claims();
    let token = rig.mint(&c);

    let gw = &rig.gw;
    assert_eq!(revoke_jti(gw, &c).await.0, 201);
    assert_eq!(
        post_revocation(
            gw,
            json!({"jti": "long-gone", "exp": 1000}),
            Some(ADMIN_TOKEN)
        )
        .await
        .0,
        201
    );
    assert_eq!(status_of(gw, &token).await, 401);

    let rig = rig.restart().await;
    let gw = &rig.gw;
    assert_eq!(
        status_of(gw, &token).await,
        401,
        "the revocation survived the restart"
    );
    let list = list_revocations(gw).await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the expired entry was compacted away: {list}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("long-gone"));
    rig.stop().await;
}

/// A token passes until `exp` plus the provider's `clock_skew` (30s by default): its jti entry must
/// not be compacted away at `exp`, or a restart in that window lets the revoked token back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jti_entry_outlives_exp_while_the_skew_still_admits_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.jsonl");
    let section = format!("backend: memory\nfile: {}", file.display());
    let rig = Rig::start(|i, u| revocation_config(i, u, &section)).await;
    let mut c = rig.claims();
    c["exp"] = json!(now() - 5);
    let token = rig.mint(&c);

    assert_eq!(status_of(&rig.gw, &token).await, 200, "within the 30s skew");
    let (status, entry) =
        post_revocation(&rig.gw, json!({"token": token}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["exp"], c["exp"]);

    let rig = rig.restart().await;
    let seen = rig.upstream.requests();
    assert_eq!(status_of(&rig.gw, &token).await, 401, "kept past exp");
    assert_eq!(rig.upstream.requests(), seen);
    rig.stop().await;
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
    let mut redis = RedisServer::start();
    let section = format!("backend: redis\nredis_url: \"{}\"", redis.url());
    let rig = Rig::start(|i, u| revocation_config(i, u, &section)).await;
    let a = &rig.gw;
    let b = rig.another().await;
    wait_for(
        "both instances connect",
        Duration::from_secs(5),
        async || {
            a.admin_get("/readyz").await.1.contains("connected")
                && b.admin_get("/readyz").await.1.contains("connected")
        },
    )
    .await;

    let c1 = rig.claims();
    let t1 = rig.mint(&c1);
    assert_eq!(status_of(&b, &t1).await, 200);
    let (status, _) = revoke_jti(a, &c1).await;
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
    let c2 = rig.claims();
    let t2 = rig.mint(&c2);
    let (status, _) = revoke_jti(a, &c2).await;
    assert_eq!(status, 503);
    for _ in 0..20 {
        assert_eq!(status_of(a, &t1).await, 401);
        assert_eq!(status_of(&b, &t1).await, 401);
    }
    assert_eq!(
        status_of(a, &t2).await,
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
    let c = rig.another().await;
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
        async || status_of(a, &t2).await == 401,
    )
    .await;
    for gw in [b, c] {
        gw.stop().await;
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_command_drives_the_admin_api() {
    let rig = Rig::start(|i, u| revocation_config(i, u, "backend: memory")).await;
    let gw = &rig.gw;
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

    let list = cmd("JWT_GATEWAY_TEST_ADMIN_TOKEN", vec!["list".into()])
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("cli-jti"));
    let unlisted = cmd("UNSET_VAR_FOR_TEST", vec!["list".into()])
        .await
        .unwrap();
    assert_eq!(unlisted.status.code(), Some(2), "no token: no list");
    assert!(!String::from_utf8_lossy(&unlisted.stdout).contains("cli-jti"));
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
    rig.stop().await;
}

fn revoke_cmd(admin_url: &str, token_env: &str, args: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jwt-gateway"))
        .args(["revoke", "--admin", admin_url, "--token-env", token_env])
        .args(args)
        .env("JWT_GATEWAY_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run jwt-gateway revoke")
}

/// Two providers (`test` for `a`, `other` for `b`) trusted by one route.
fn two_issuer_config(a: &Issuer, b: &Issuer, upstream: &Upstream, backend: &str) -> Config {
    revocation_config(a, upstream, backend)
        .provider(provider(b).name("other"))
        .edit_route("api", |r| r.providers(&["test", "other"]))
}

/// A token of `sub` at `iss`, signed by `key`, and its claims.
fn token_for(key: &SigningKey, iss: &Issuer, sub: &str) -> (String, Value) {
    let mut c = claims(&iss.iss(), "orders-api");
    c["sub"] = json!(sub);
    (key.mint("ES256", &c), c)
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools, a dependency of redis-server)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 13: `revoke add --sub alice --not-before "$(date +%s)"` must also catch a token minted in
/// that same second (`iat == not_before`), cached or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_subject_revocation_covers_its_own_second() {
    let rig = Rig::start(|i, u| revocation_config(i, u, "backend: memory")).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let t = now();
    let mut same = rig.claims();
    same["iat"] = json!(t);
    let same = rig.mint(&same);
    let mut later = rig.claims();
    later["iat"] = json!(t + 1);
    let later = rig.mint(&later);
    assert_eq!(
        status_of(gw, &same).await,
        200,
        "cached before the revocation"
    );

    let (status, _) = post_revocation(
        gw,
        json!({"sub": "alice", "not_before": t}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    let seen = upstream.requests();
    assert_eq!(status_of(gw, &same).await, 401, "iat == not_before");
    assert_eq!(upstream.requests(), seen, "the upstream saw nothing");
    assert_eq!(status_of(gw, &later).await, 200, "issued a second later");
    rig.stop().await;
}

/// `iss` scopes an entry to one provider; entries without it (old file lines included) hold for
/// every provider, and the scoping survives a restart of the file backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_revocations_hold_only_for_their_issuer_and_survive_a_restart() {
    let kb = SigningKey::p256("k1");
    let b = Issuer::start(&[(&kb, "ES256")]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.jsonl");
    // A line written before entries could carry `iss`: it must still load, for every provider.
    std::fs::write(
        &file,
        format!(
            "{}\n",
            json!({"op": "add", "entry": {"id": "old1", "sub": "bob", "not_before": now() + 5, "created_at": 1}})
        ),
    )
    .unwrap();
    let section = format!("backend: memory\nfile: {}", file.display());
    let rig = Rig::start(|a, u| two_issuer_config(a, &b, u, &section)).await;
    let (ka, a) = (rig.key(), &rig.issuer);
    let (alice_a, _) = token_for(ka, a, "alice");
    let (alice_b, alice_b_claims) = token_for(&kb, &b, "alice");
    let (bob_a, _) = token_for(ka, a, "bob");
    let (bob_b, _) = token_for(&kb, &b, "bob");

    let gw = &rig.gw;
    assert_eq!(
        status_of(gw, &bob_a).await,
        401,
        "old unscoped line, issuer a"
    );
    assert_eq!(
        status_of(gw, &bob_b).await,
        401,
        "old unscoped line, issuer b"
    );
    assert_eq!(status_of(gw, &alice_a).await, 200);
    assert_eq!(status_of(gw, &alice_b).await, 200);
    let seen = rig.upstream.requests();

    let (status, entry) = post_revocation(
        gw,
        json!({"sub": "alice", "iss": a.iss(), "not_before": now() + 5}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(entry["iss"], json!(a.iss()));
    // The jti of b's token, scoped to a: it must not touch b's token.
    let (status, _) = post_revocation(
        gw,
        json!({"jti": alice_b_claims["jti"], "exp": alice_b_claims["exp"], "iss": a.iss()}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(status_of(gw, &alice_a).await, 401, "scoped to a");
    assert_eq!(rig.upstream.requests(), seen, "the upstream saw nothing");
    assert_eq!(
        status_of(gw, &alice_b).await,
        200,
        "b's alice is someone else"
    );

    let rig = rig.restart().await;
    let gw = &rig.gw;
    assert_eq!(list_revocations(gw).await.as_array().map(Vec::len), Some(3));
    let seen = rig.upstream.requests();
    assert_eq!(status_of(gw, &alice_a).await, 401, "after the restart");
    assert_eq!(status_of(gw, &bob_b).await, 401);
    assert_eq!(rig.upstream.requests(), seen);
    assert_eq!(status_of(gw, &alice_b).await, 200);
    rig.stop().await;
}

/// `{"token": ...}`: verified like the proxy verifies it, revoked by `jti` for its issuer until its
/// `exp`; everything that does not verify is a 400 that stores nothing and never echoes the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_token_is_verified_and_revoked_by_its_jti() {
    let rig = Rig::start(|i, u| revocation_config(i, u, "backend: memory")).await;
    let (gw, issuer, upstream) = (&rig.gw, &rig.issuer, &rig.upstream);
    let c = rig.claims();
    let token = rig.mint(&c);
    let sibling = rig.token();
    assert_eq!(status_of(gw, &token).await, 200, "now cached");

    let forged = SigningKey::p256("k1").mint("ES256", &c);
    let mut no_jti = rig.claims();
    no_jti.as_object_mut().unwrap().remove("jti");
    let no_jti = rig.mint(&no_jti);
    let mut expired = rig.claims();
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let expired = rig.mint(&expired);
    let mut stranger = rig.claims();
    stranger["iss"] = json!("https://stranger.example");
    let stranger = rig.mint(&stranger);
    for (bad, why) in [
        (&forged, "signature"),
        (&no_jti, "jti"),
        (&expired, "expired"),
        (&stranger, "does not verify"),
        (&"not.a.token".to_string(), "does not verify"),
    ] {
        let (status, body) = post_revocation(gw, json!({"token": bad}), Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 400, "{why}: {body}");
        let text = body.to_string();
        let description = body["error_description"].as_str().unwrap_or("");
        assert!(
            description.contains(why) || why == "signature",
            "{why}: {text}"
        );
        let signature = bad.rsplit('.').next().unwrap();
        assert!(
            !text.contains(bad.as_str()) && (signature.len() < 16 || !text.contains(signature)),
            "the token is never echoed: {text}"
        );
    }
    assert_eq!(
        post_revocation(gw, json!({"token": token}), None).await.0,
        401
    );
    assert_eq!(list_revocations(gw).await, json!([]), "400s stored nothing");

    let (status, entry) = post_revocation(gw, json!({"token": token}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["jti"], c["jti"]);
    assert_eq!(entry["exp"], c["exp"]);
    assert_eq!(entry["iss"], json!(issuer.iss()));
    assert!(entry.get("token").is_none() && !entry.to_string().contains(&token));
    let seen = upstream.requests();
    assert_eq!(status_of(gw, &token).await, 401, "revoked while cached");
    assert_eq!(upstream.requests(), seen, "the upstream saw nothing");
    assert_eq!(status_of(gw, &sibling).await, 200, "only that token");
    assert_eq!(list_revocations(gw).await.as_array().map(Vec::len), Some(1));
    rig.stop().await;
}

/// Scoped entries travel through Redis like any other; entries Redis holds from before `iss`
/// existed still load and hold for every provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_and_old_entries_travel_through_redis() {
    let kb = SigningKey::p256("k1");
    let b = Issuer::start(&[(&kb, "ES256")]).await;
    let redis = RedisServer::start();
    let old = json!({"id": "old1", "sub": "bob", "not_before": now() + 5, "created_at": 1});
    redis_cli(
        &redis,
        &["HSET", "jwt-gateway:revocations", "old1", &old.to_string()],
    );
    let section = format!("backend: redis\nredis_url: \"{}\"", redis.url());
    let rig = Rig::start(|a, u| two_issuer_config(a, &b, u, &section)).await;
    let (ka, a) = (rig.key(), &rig.issuer);
    let one = &rig.gw;
    let two = rig.another().await;
    wait_for(
        "both instances connect",
        Duration::from_secs(5),
        async || {
            one.admin_get("/readyz").await.1.contains("connected")
                && two.admin_get("/readyz").await.1.contains("connected")
        },
    )
    .await;
    let mint = |key: &SigningKey, iss: &Issuer, sub: &str| token_for(key, iss, sub).0;
    assert_eq!(
        status_of(&two, &mint(ka, a, "bob")).await,
        401,
        "old entry, a"
    );
    assert_eq!(
        status_of(&two, &mint(&kb, &b, "bob")).await,
        401,
        "old entry, b"
    );

    let (carol_a, carol_b) = (mint(ka, a, "carol"), mint(&kb, &b, "carol"));
    let alice_a = mint(ka, a, "alice");
    assert_eq!(status_of(&two, &alice_a).await, 200);
    let (status, _) = post_revocation(
        one,
        json!({"sub": "carol", "iss": b.iss(), "not_before": now() + 5}),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 201);
    let (status, entry) = post_revocation(one, json!({"token": alice_a}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 201);
    let seen = rig.upstream.requests();
    wait_for(
        "the other instance applies both",
        Duration::from_secs(1),
        async || status_of(&two, &carol_b).await == 401 && status_of(&two, &alice_a).await == 401,
    )
    .await;
    assert_eq!(rig.upstream.requests(), seen, "the upstream saw nothing");
    assert_eq!(
        status_of(&two, &carol_a).await,
        200,
        "carol of a is untouched"
    );
    let stored = redis_cli(
        &redis,
        &[
            "HGET",
            "jwt-gateway:revocations",
            entry["id"].as_str().unwrap(),
        ],
    );
    assert!(stored.contains(&a.iss()), "Redis holds the scope: {stored}");
    assert!(!stored.contains(&alice_a), "never the token: {stored}");
    two.stop().await;
    rig.stop().await;
}

/// Without `admin.token_env` every call under `/revocations`, listing included, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_nothing_under_revocations_is_served() {
    let rig = Rig::start(|i, u| without_admin_token(i, u, "backend: memory")).await;
    assert!(!rig.config.yaml().contains("token_env"));
    let gw = &rig.gw;
    for token in [None, Some(ADMIN_TOKEN)] {
        let (status, _) = admin(gw, reqwest::Method::GET, "/revocations", None, token).await;
        assert_eq!(status, 401);
        let body = json!({"sub": "alice", "not_before": now()});
        assert_eq!(post_revocation(gw, body, token).await.0, 401);
    }
    assert!(gw.gateway.revocations.entries().is_empty());
    rig.stop().await;
}

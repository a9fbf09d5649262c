//! The access log, read the way an operator's log shipper reads it: the real binary runs with
//! `log: {format: json}`, its stderr is parsed line by line, and every request has exactly one
//! `access` line with its route, status, decision, reason, subject, `jti` and request id. No line
//! anywhere carries a token, a part of one, or a secret.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::keys::b64;
use crate::support::process::{free_port, GatewayProcess};
use crate::support::yaml::{anonymous, protected, provider, server, Config};
use crate::support::{claims, Issuer, SigningKey, Upstream};

const HMAC_SECRET: &str = "audit-hmac-secret-6b1f0e2c9d8a7b6c5d4e3f2a1b0c";
const ADMIN_SECRET: &str = "audit-admin-secret-0f1e2d3c4b5a69788796a5b4";

/// The binary on `port` (admin on `admin`, its token in `JWTGW_AUDIT_ADMIN`) logging JSON; provider
/// `test` takes RS256 from `issuer` and HS256 with the secret in `JWTGW_AUDIT_HS`; `/api` behind it
/// forwards `sub`, `/public` is anonymous.
fn audit_config(port: u16, admin: u16, issuer: &Issuer, upstream: &Upstream) -> Config {
    let up = upstream.url();
    Config::new()
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .admin("token_env: JWTGW_AUDIT_ADMIN")
        .section("log: { level: info, format: json }")
        .provider(
            provider(issuer)
                .algorithms("RS256, HS256")
                .line("shared_secret_env: JWTGW_AUDIT_HS"),
        )
        .route(protected("api", "/api", &up).forward("sub", "X-Auth-Subject"))
        .route(
            protected("browser", "/browser", &up)
                .auth_line(r#"token_from: ["query:access_token", "cookie:at"]"#),
        )
        .route(anonymous("public", "/public", &up))
}

/// What one request should leave in the access log.
struct Expect {
    request_id: String,
    route: &'static str,
    method: &'static str,
    path: &'static str,
    status: u64,
    decision: &'static str,
    reason: &'static str,
    sub: &'static str,
    jti: &'static str,
}

impl Expect {
    /// Let through on the `api` route with a verified token.
    fn allowed(
        request_id: impl Into<String>,
        method: &'static str,
        path: &'static str,
        sub: &'static str,
        jti: &'static str,
    ) -> Expect {
        Expect {
            request_id: request_id.into(),
            route: "api",
            method,
            path,
            status: 200,
            decision: "allow",
            reason: "ok",
            sub,
            jti,
        }
    }

    /// Refused with 401 on the `api` route: no subject or `jti` is logged for a token that
    /// did not verify.
    fn denied(
        request_id: impl Into<String>,
        method: &'static str,
        path: &'static str,
        reason: &'static str,
    ) -> Expect {
        Expect {
            request_id: request_id.into(),
            route: "api",
            method,
            path,
            status: 401,
            decision: "deny",
            reason,
            sub: "",
            jti: "",
        }
    }

    /// No token was checked: an anonymous route, no route at all, or refused before routing.
    fn unchecked(
        request_id: impl Into<String>,
        route: &'static str,
        method: &'static str,
        path: &'static str,
        status: u64,
    ) -> Expect {
        Expect {
            request_id: request_id.into(),
            route,
            method,
            path,
            status,
            decision: "none",
            reason: "none",
            sub: "",
            jti: "",
        }
    }
}

async fn send(request: reqwest::RequestBuilder, status: u16) -> reqwest::Response {
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), status);
    r
}

/// The id the gateway generated for a request that came without one.
fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_access_line_per_request_and_never_a_secret() {
    let rsa = SigningKey::rsa("audit-rsa");
    let hmac = SigningKey::hmac(HMAC_SECRET.as_bytes());
    let issuer = Issuer::start(&[(&rsa, "RS256")]).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut gateway = GatewayProcess::spawn(
        dir.path(),
        &audit_config(port, admin, &issuer, &upstream).yaml(),
        &[
            ("JWTGW_AUDIT_HS", HMAC_SECRET),
            ("JWTGW_AUDIT_ADMIN", ADMIN_SECRET),
        ],
    );
    gateway.wait_until_ok(admin, "/readyz").await;

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut c = claims(&issuer.iss(), "orders-api");
    c["jti"] = json!("jti-audit-rs");
    let rs_token = rsa.mint("RS256", &c);
    let mut c = claims(&issuer.iss(), "orders-api");
    c["sub"] = json!("bob");
    c["jti"] = json!("jti-audit-hs");
    let hs_token = hmac.mint("HS256", &c);
    // The RS256 token with another signature: refused as bad_signature.
    let (signed, _) = rs_token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", b64(vec![7u8; 256]));

    let mut expect = Vec::new();
    let r = send(
        client
            .get(format!("{base}/api/orders/1"))
            .bearer_auth(&rs_token)
            .header("x-request-id", "audit-allow-1"),
        200,
    )
    .await;
    assert_eq!(r.headers()["x-request-id"], "audit-allow-1");
    expect.push(Expect::allowed(
        "audit-allow-1",
        "GET",
        "/api/orders/1",
        "alice",
        "jti-audit-rs",
    ));

    let r = send(
        client
            .post(format!("{base}/api/./orders/%7e2?q=secret-query"))
            .bearer_auth(&hs_token)
            .body("x"),
        200,
    )
    .await;
    expect.push(Expect::allowed(
        request_id(&r),
        "POST",
        "/api/orders/~2",
        "bob",
        "jti-audit-hs",
    ));

    // Tokens in a URL or a cookie (auth.token_from) stay out of the log like header ones.
    for request in [
        client.get(format!("{base}/browser/q?access_token={rs_token}&page=2")),
        client
            .get(format!("{base}/browser/c"))
            .header("cookie", format!("theme=dark; at={hs_token}")),
    ] {
        let r = send(request, 200).await;
        let (path, sub, jti) = match r.url().path() {
            "/browser/q" => ("/browser/q", "alice", "jti-audit-rs"),
            _ => ("/browser/c", "bob", "jti-audit-hs"),
        };
        expect.push(Expect {
            route: "browser",
            ..Expect::allowed(request_id(&r), "GET", path, sub, jti)
        });
    }

    let r = send(
        client
            .get(format!("{base}/api/orders/2"))
            .bearer_auth(&forged),
        401,
    )
    .await;
    expect.push(Expect::denied(
        request_id(&r),
        "GET",
        "/api/orders/2",
        "bad_signature",
    ));

    let r = send(client.get(format!("{base}/api/orders/3")), 401).await;
    expect.push(Expect::denied(
        request_id(&r),
        "GET",
        "/api/orders/3",
        "missing_token",
    ));

    let r = send(
        client.get(format!("{base}/nowhere")).bearer_auth(&rs_token),
        404,
    )
    .await;
    // The normalized path is logged once the stages have read it, matched or not.
    expect.push(Expect::unchecked(
        request_id(&r),
        "none",
        "GET",
        "/nowhere",
        404,
    ));

    send(
        client
            .delete(format!("{base}/public/x"))
            .header("x-request-id", "audit-anon-1"),
        200,
    )
    .await;
    expect.push(Expect::unchecked(
        "audit-anon-1",
        "public",
        "DELETE",
        "/public/x",
        200,
    ));

    // Refused by the first stage (proxy/shape.rs), before any path is read: logged all the same.
    let raw = crate::support::raw_exchange(
        format!("127.0.0.1:{port}").parse().unwrap(),
        b"CONNECT /api/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: audit-connect-1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    expect.push(Expect::unchecked(
        "audit-connect-1",
        "none",
        "CONNECT",
        "",
        400,
    ));

    // A mutating admin call, so the admin secret has been presented at least once.
    send(
        client
            .post(format!("http://127.0.0.1:{admin}/revocations"))
            .bearer_auth(ADMIN_SECRET)
            .header("content-type", "application/json")
            .body(
                json!({"jti": "jti-audit-revoked", "exp": crate::support::now() + 600}).to_string(),
            ),
        201,
    )
    .await;
    assert_eq!(upstream.requests(), 5);

    gateway.sigterm();
    assert_eq!(gateway.exit_status().await.code(), Some(0));

    let log = gateway.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{log}"
    );
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(
        access.len(),
        expect.len(),
        "one access line per request:\n{log}"
    );
    for (line, want) in access.iter().zip(&expect) {
        let what = format!("{} {}: {line}", want.method, want.path);
        assert_eq!(line["request_id"], want.request_id.as_str(), "{what}");
        assert_eq!(line["route"], want.route, "{what}");
        assert_eq!(line["method"], want.method, "{what}");
        assert_eq!(line["path"], want.path, "{what}");
        assert_eq!(line["status"], want.status, "{what}");
        assert_eq!(line["decision"], want.decision, "{what}");
        assert_eq!(line["reason"], want.reason, "{what}");
        assert_eq!(line["sub"], want.sub, "{what}");
        assert_eq!(line["jti"], want.jti, "{what}");
        assert_eq!(line["client"], "127.0.0.1", "{what}");
        assert!(line["duration_ms"].as_f64().is_some(), "{what}");
        assert!(line["upstream_ms"].as_f64().is_some(), "{what}");
    }

    let mut secrets = vec![
        HMAC_SECRET.to_string(),
        ADMIN_SECRET.to_string(),
        "secret-query".to_string(),
    ];
    for token in [&rs_token, &hs_token, &forged] {
        secrets.push(token.to_string());
        secrets.extend(token.split('.').map(str::to_string));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log carries {secret:?}:\n{log}"
        );
    }
}

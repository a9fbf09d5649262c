//! The contract's status table for tokens, every algorithm, Bearer parsing and claims forwarding,
//! against the real gateway with a real JWKS issuer and a recording upstream on 127.0.0.1.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use crate::support::denials::decisions;
use crate::support::yaml::{basic, every_rule, secret_env, server, Config};
use crate::support::{
    expect_denied, now, raw_exchange, Backends, Issuer, Rig, SigningKey, Upstream, Want,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_401_with_realm() {
    let rig = Rig::start(every_rule).await;
    let gw = &rig.gw;
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        Want::NoToken,
        "no Authorization",
        gw.get("/api/orders", None),
    )
    .await;
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        Want::NoToken,
        "Basic is not a bearer token",
        send(
            gw.client()
                .get(gw.url("/api/orders"))
                .header(AUTHORIZATION, "Basic dXNlcjpwYXNz"),
        ),
    )
    .await;
    let token = rig.token();
    for query in ["access_token", "token", "jwt"] {
        expect_denied(
            gw,
            &rig.upstream,
            "api",
            Want::NoToken,
            "token in the query string is ignored",
            gw.get(&format!("/api/orders?{query}={token}"), None),
        )
        .await;
    }
    // The same token in the header is fine: the refusals above were about where it was.
    rig.allowed("/api/orders", &token, "control").await;
}

/// Sends a request built by the test; a transport error fails the test.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request to gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let rig = Rig::start(every_rule).await;
    let token = rig.token();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = rig
            .gw
            .client()
            .get(rig.gw.url("/api/x"))
            .header(AUTHORIZATION, format!("{scheme} {token}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "scheme {scheme}");
    }
    assert_eq!(rig.upstream.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_is_400_invalid_request() {
    let rig = Rig::start(every_rule).await;
    let gw = &rig.gw;
    let token = rig.token();
    // Leading and trailing whitespace is not part of a field value (RFC 9110 5.5), so it is
    // not a case here: the HTTP parser removes it before the gateway looks.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"Bearer".to_vec(), "scheme without a token"),
        (b"Bearer ".to_vec(), "scheme and a space"),
        (format!("Bearer {token} extra").into_bytes(), "two words"),
        (format!("Bearer\t{token}").into_bytes(), "tab separator"),
        (format!("Bearer {token},x").into_bytes(), "comma"),
        (format!("Bearer \"{token}\"").into_bytes(), "quoted token"),
        (format!("Bearer  {token}x y").into_bytes(), "space inside"),
        (
            format!("Bearer {token}!").into_bytes(),
            "character outside b64token",
        ),
        (
            [b"Bearer ".as_slice(), token.as_bytes(), b"\xc3\xa9"].concat(),
            "non-ASCII byte",
        ),
    ];
    // Twice: the second time the valid token is in the verified cache, which the gateway asks
    // before scanning the token's characters; a near-copy of a cached token must still be a 400.
    for round in ["uncached", "with the token cached"] {
        if round != "uncached" {
            let ok = gw.client().get(gw.url("/api/x")).bearer_auth(&token);
            assert_eq!(ok.send().await.unwrap().status(), 200);
        }
        for (value, what) in &cases {
            let mut headers = HeaderMap::new();
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("sendable header value"),
            );
            expect_denied(
                gw,
                &rig.upstream,
                "api",
                Want::BadRequest,
                &format!("{what}, {round}"),
                send(gw.client().get(gw.url("/api/x")).headers(headers)),
            )
            .await;
        }
    }
    assert_eq!(rig.upstream.requests(), 1, "only the valid token passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_400() {
    let rig = Rig::start(every_rule).await;
    let gw = &rig.gw;
    let token = rig.token();
    for second in [format!("Bearer {token}"), "Basic dXNlcjpwYXNz".to_string()] {
        let mut headers = HeaderMap::new();
        headers.append(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("hv"),
        );
        headers.append(AUTHORIZATION, HeaderValue::from_str(&second).expect("hv"));
        expect_denied(
            gw,
            &rig.upstream,
            "api",
            Want::BadRequest,
            "two Authorization headers (client)",
            send(gw.client().get(gw.url("/api/x")).headers(headers)),
        )
        .await;
    }
    // On the wire, exactly as a hand-written client would send it.
    let before = decisions(gw, "deny", "malformed", "api").await;
    let request = format!(
        "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let addr = gw.addr;
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(addr, request.as_bytes(), Duration::from_secs(5))
    })
    .await
    .expect("raw exchange");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer error=\"invalid_request\""),
        "{answer}"
    );
    assert_eq!(rig.upstream.requests(), 0);
    assert_eq!(
        decisions(gw, "deny", "malformed", "api").await,
        before + 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_over_max_token_bytes_is_400() {
    let backends = Backends::es256().await;
    let at_limit = backends.token();
    let limit = at_limit.len();
    let rig = backends
        .gateway(|i, u| {
            every_rule(i, u).server(server().limits(&format!("max_token_bytes: {limit}")))
        })
        .await;
    let r = rig.gw.get("/api/x", Some(&at_limit)).await;
    assert_eq!(r.status(), 200, "a token of exactly max_token_bytes passes");
    let mut c = rig.claims();
    c["pad"] = json!("x".repeat(8));
    let over = rig.mint(&c);
    assert!(over.len() > limit);
    rig.denied(Want::BadRequest, "token over max_token_bytes", &over)
        .await;
    // Far over the default limit too (8192), with a header well under max_header_bytes.
    let mut c = rig.claims();
    c["pad"] = json!("x".repeat(9000));
    rig.denied(Want::BadRequest, "token of 12 KB", &rig.mint(&c))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_401_with_their_reason() {
    let rig = Rig::start(every_rule).await;
    let iss = rig.issuer.iss();
    let now = now();
    let valid = rig.token();

    // Bad signature: the last signature byte changed (still canonical base64url).
    let (input, sig) = valid.rsplit_once('.').expect("three parts");
    let mut sig_bytes = base64_decode(sig);
    sig_bytes[10] ^= 0x01;
    let forged = format!("{input}.{}", crate::support::keys::b64(&sig_bytes));
    rig.denied_at(
        "api",
        "/api/x",
        Want::Invalid("bad_signature"),
        "bad signature",
        &forged,
    )
    .await;

    // A kid the issuer does not publish, even after the refetch it triggers.
    let stranger = SigningKey::p256("not-published");
    rig.denied_at(
        "api",
        "/api/x",
        Want::Invalid("unknown_kid"),
        "unknown kid",
        &stranger.mint("ES256", &rig.claims()),
    )
    .await;

    // RS256 is not in this provider's allow-list.
    rig.denied_at(
        "api",
        "/api/x",
        Want::Invalid("alg_not_allowed"),
        "alg not allowed",
        &SigningKey::rsa("k1").mint("RS256", &rig.claims()),
    )
    .await;

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = rig.claims();
        edit(&mut c);
        rig.mint(&c)
    };
    let cases: Vec<(&str, &str, Want, String)> = vec![
        (
            "expired beyond clock_skew",
            "/api/x",
            Want::Invalid("expired"),
            with(&|c| c["exp"] = json!(now - 60)),
        ),
        (
            "nbf in the future beyond clock_skew",
            "/api/x",
            Want::Invalid("not_yet_valid"),
            with(&|c| c["nbf"] = json!(now + 120)),
        ),
        (
            "iat in the future beyond clock_skew",
            "/api/x",
            Want::Invalid("not_yet_valid"),
            with(&|c| c["iat"] = json!(now + 120)),
        ),
        (
            "wrong issuer",
            "/api/x",
            Want::Invalid("issuer"),
            with(&|c| c["iss"] = json!(format!("{iss}/other"))),
        ),
        (
            "issuer differing only in a trailing slash",
            "/api/x",
            Want::Invalid("issuer"),
            with(&|c| c["iss"] = json!(format!("{iss}/"))),
        ),
        (
            "audience outside the provider's audiences",
            "/api/x",
            Want::Invalid("audience"),
            with(&|c| c["aud"] = json!(["other-api"])),
        ),
        (
            "no audience at all",
            "/api/x",
            Want::Invalid("audience"),
            with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
        ),
        (
            "provider audience but not the route's audience",
            "/billing/x",
            Want::Invalid("audience"),
            with(&|_| {}),
        ),
        (
            "missing required claim sub",
            "/api/x",
            Want::Invalid("missing_claim"),
            with(&|c| {
                c.as_object_mut().expect("object").remove("sub");
            }),
        ),
        (
            "missing required claim iat",
            "/api/x",
            Want::Invalid("missing_claim"),
            with(&|c| {
                c.as_object_mut().expect("object").remove("iat");
            }),
        ),
        (
            "missing required claim exp",
            "/api/x",
            Want::Invalid("missing_claim"),
            with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
        ),
    ];
    for (what, path, want, token) in cases {
        let route = if path.starts_with("/billing") {
            "billing"
        } else {
            "api"
        };
        rig.denied_at(route, path, want, what, &token).await;
    }

    // Inside clock_skew (30s) the same checks pass; audience via the route's narrower one.
    rig.allowed(
        "/api/x",
        &with(&|c| c["exp"] = json!(now - 5)),
        "exp 5s ago",
    )
    .await;
    rig.allowed("/api/x", &with(&|c| c["nbf"] = json!(now + 5)), "nbf in 5s")
        .await;
    rig.allowed("/api/x", &with(&|c| c["iat"] = json!(now + 5)), "iat in 5s")
        .await;
    rig.allowed(
        "/billing/x",
        &with(&|c| c["aud"] = json!(["x", "billing-api"])),
        "route audience in an array",
    )
    .await;
    rig.allowed("/api/x", &valid, "control").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_typ_mismatch_is_401() {
    let rig = Rig::start(|i, u| {
        every_rule(i, u).edit_provider("test", |p| p.line(r#"require_typ: "at+jwt""#))
    })
    .await;
    let c = rig.claims();
    for typ in [json!("JWT"), json!("at+jwt+x"), json!(null)] {
        let token = rig.mint_with(json!({ "typ": typ }), &c);
        rig.denied_at(
            "api",
            "/api/x",
            Want::Invalid("malformed"),
            &format!("typ {typ}"),
            &token,
        )
        .await;
    }
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        let token = rig.mint_with(json!({ "typ": typ }), &c);
        rig.allowed("/api/x", &token, typ).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_lacking_role_or_scope_is_403() {
    let rig = Rig::start(every_rule).await;
    let mut c = rig.claims();
    c["realm_access"] = json!({"roles": ["user"]});
    rig.denied_at(
        "api",
        "/api/x",
        Want::Forbidden,
        "role missing",
        &rig.mint(&c),
    )
    .await;
    c["realm_access"] = json!({"roles": "orders.read.all"});
    rig.denied_at(
        "api",
        "/api/x",
        Want::Forbidden,
        "role as a longer word",
        &rig.mint(&c),
    )
    .await;
    let mut c = rig.claims();
    c.as_object_mut().expect("object").remove("realm_access");
    rig.denied_at(
        "api",
        "/api/x",
        Want::Forbidden,
        "roles claim absent",
        &rig.mint(&c),
    )
    .await;

    for scope in [
        json!("orders:readwrite"),
        json!("profile orders:read:all"),
        json!("Orders:Read"),
        json!(["orders:readwrite"]),
        json!(""),
    ] {
        let mut c = rig.claims();
        c["scope"] = scope.clone();
        rig.denied_at(
            "scoped",
            "/scoped/x",
            Want::Forbidden,
            &format!("scope {scope}"),
            &rig.mint(&c),
        )
        .await;
    }
    for scope in [
        json!("orders:read"),
        json!("profile orders:read"),
        json!(["orders:read"]),
    ] {
        let mut c = rig.claims();
        c["scope"] = scope.clone();
        rig.allowed("/scoped/x", &rig.mint(&c), &format!("scope {scope}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unavailable_is_503_with_retry_after() {
    let backends = Backends::es256().await;
    backends.issuer.set_status(500);
    let rig = backends.gateway(every_rule).await;
    rig.denied(
        Want::Unavailable,
        "JWKS down before any key was had",
        &rig.token(),
    )
    .await;
    let (status, _) = rig.gw.admin_get("/readyz").await;
    assert_eq!(status, 503);
}

fn base64_decode(text: &str) -> Vec<u8> {
    jwt_gateway::auth::token::b64_decode(text).expect("canonical base64url")
}

// ---------------------------------------------------------------------------------------------
// Algorithms

/// 64 bytes: enough for HS512 (RFC 7518 3.2 wants a key at least as long as the hash).
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One key per algorithm family, HMAC over `SECRET` included.
struct EveryFamily {
    rsa: SigningKey,
    p256: SigningKey,
    p384: SigningKey,
    ed: SigningKey,
    hmac: SigningKey,
}

impl EveryFamily {
    fn new() -> EveryFamily {
        EveryFamily {
            rsa: SigningKey::rsa("rsa"),
            p256: SigningKey::p256("ec256"),
            p384: SigningKey::p384("ec384"),
            ed: SigningKey::ed25519("ed"),
            hmac: SigningKey::hmac(SECRET),
        }
    }

    /// An issuer and upstream; the JWKS holds the RSA key without `alg` (so it serves RS* and
    /// PS*) and the others bound to their algorithm.
    async fn backends(&self) -> Backends {
        let backends = Backends::start(&[]).await;
        let mut jwks = Issuer::jwks_of(&[
            (&self.p256, "ES256"),
            (&self.p384, "ES384"),
            (&self.ed, "EdDSA"),
        ]);
        jwks["keys"]
            .as_array_mut()
            .expect("keys")
            .insert(0, self.rsa.jwk());
        backends.issuer.set_jwks(jwks);
        backends
    }

    /// Every algorithm the gateway implements, with the key that signs it.
    fn signers(&self) -> [(&SigningKey, &'static str); 12] {
        [
            (&self.rsa, "RS256"),
            (&self.rsa, "RS384"),
            (&self.rsa, "RS512"),
            (&self.rsa, "PS256"),
            (&self.rsa, "PS384"),
            (&self.rsa, "PS512"),
            (&self.p256, "ES256"),
            (&self.p384, "ES384"),
            (&self.ed, "EdDSA"),
            (&self.hmac, "HS256"),
            (&self.hmac, "HS384"),
            (&self.hmac, "HS512"),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_accepted_when_allowed() {
    let keys = EveryFamily::new();
    let var = secret_env(std::str::from_utf8(SECRET).expect("ASCII secret"));
    let rig = keys
        .backends()
        .await
        .gateway(|i, u| {
            every_rule(i, u).edit_provider("test", |p| {
                p.algorithms(
                    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512",
                )
                .line(&format!("shared_secret_env: {var}"))
            })
        })
        .await;
    for (i, (key, alg)) in keys.signers().iter().enumerate() {
        let r = rig.gw.get("/api/x", Some(&rig.token_of(key, alg))).await;
        let status = r.status();
        assert_eq!(status, 200, "{alg}: {}", r.text().await.unwrap_or_default());
        assert_eq!(rig.upstream.requests(), i + 1);
    }
    assert_eq!(decisions(&rig.gw, "allow", "ok", "api").await, 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_refused_when_not_in_the_allow_list() {
    let keys = EveryFamily::new();
    // Only ES256, and no shared secret: every other algorithm is refused before any key is tried.
    let rig = keys.backends().await.gateway(every_rule).await;
    let refused: Vec<_> = keys
        .signers()
        .into_iter()
        .filter(|&(_, alg)| alg != "ES256")
        .collect();
    assert_eq!(refused.len(), 11);
    for (key, alg) in refused {
        rig.denied(
            Want::Invalid("alg_not_allowed"),
            alg,
            &rig.token_of(key, alg),
        )
        .await;
    }
    assert_eq!(
        rig.status(&rig.token_of(&keys.p256, "ES256")).await,
        200,
        "the allowed algorithm still works"
    );

    // The same family is not enough: a provider of RS256 refuses PS256 and RS512 from its key.
    let rig2 = Rig::with_keys(&[(&keys.rsa, "RS256")], |i, u| {
        every_rule(i, u).edit_provider("test", |p| p.algorithms("RS256"))
    })
    .await;
    for alg in ["PS256", "RS512"] {
        rig2.denied(
            Want::Invalid("alg_not_allowed"),
            alg,
            &rig2.token_of(&keys.rsa, alg),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs_secret_under_32_bytes_is_refused_by_config() {
    let err = refusal_with_secret(every_rule, "HS256", 31).await;
    assert!(err.contains("shared_secret_env"), "{err}");
}

/// Why the gateway will not start on `shape` with provider `test` allowing only `alg` and a
/// shared secret of `len` bytes.
async fn refusal_with_secret(
    shape: fn(&Issuer, &Upstream) -> Config,
    alg: &str,
    len: usize,
) -> String {
    let var = secret_env(&"x".repeat(len));
    let started = Backends::start(&[])
        .await
        .try_gateway(|i, u| {
            shape(i, u).edit_provider("test", |p| {
                p.algorithms(alg).line(&format!("shared_secret_env: {var}"))
            })
        })
        .await;
    started
        .err()
        .unwrap_or_else(|| panic!("a {len}-byte secret for {alg} is refused"))
}

// ---------------------------------------------------------------------------------------------
// Claims forwarding

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_rendered_into_headers() {
    let rig = Rig::start(every_rule).await;
    let mut c = rig.claims();
    c["groups"] = json!(["eng", "ops"]);
    c["n"] = json!(42);
    c["flag"] = json!(true);
    c["obj"] = json!({"a": 1, "b": ["x", "y"], "c": {"d": null}});
    c["sub"] = json!("José, Jr.");
    let seen = rig.allowed("/api/x", &rig.mint(&c), "claims").await;
    let h = |name: &str| {
        let all: Vec<&str> = seen
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII"))
            .collect();
        assert_eq!(all.len(), 1, "{name} once: {all:?}");
        all[0].to_string()
    };
    assert_eq!(
        seen.headers["x-auth-subject"].as_bytes(),
        "José, Jr.".as_bytes(),
        "a string travels as it is, commas and UTF-8 included"
    );
    assert_eq!(h("x-auth-roles"), "orders.read,user");
    assert_eq!(h("x-auth-groups"), "eng,ops");
    assert_eq!(h("x-auth-n"), "42");
    assert_eq!(h("x-auth-flag"), "true");
    assert_eq!(h("x-auth-obj"), r#"{"a":1,"b":["x","y"],"c":{"d":null}}"#);
    assert!(
        seen.headers.get("authorization").is_none(),
        "strip is the default"
    );

    // Numbers and floats as JSON text; an absent claim sends no header (and no spoofed one).
    let mut c = rig.claims();
    c["n"] = json!(1.5);
    c["flag"] = json!(false);
    let r = rig
        .gw
        .client()
        .get(rig.gw.url("/api/x"))
        .bearer_auth(rig.mint(&c))
        .header("X-Auth-Groups", "admins")
        .header("X-Auth-Subject", "mallory")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = rig.upstream.last().expect("seen");
    assert_eq!(seen.headers["x-auth-n"], "1.5");
    assert_eq!(seen.headers["x-auth-flag"], "false");
    // Arrays of scalars are joined; arrays holding arrays or objects travel as compact JSON.
    for (value, rendered) in [
        (json!([1, "a", true, 2.5]), "1,a,true,2.5"),
        (json!([["a", "b"], "c"]), r#"[["a","b"],"c"]"#),
        (json!([{"k": "v,w"}]), r#"[{"k":"v,w"}]"#),
        (json!([]), ""),
    ] {
        let mut c = rig.claims();
        c["groups"] = value.clone();
        let seen = rig
            .allowed("/api/x", &rig.mint(&c), &value.to_string())
            .await;
        assert_eq!(seen.headers["x-auth-groups"], rendered, "{value}");
    }
    assert!(seen.headers.get("x-auth-groups").is_none(), "spoof removed");
    assert_eq!(seen.headers.get_all("x-auth-subject").iter().count(), 1);
    assert_eq!(seen.headers["x-auth-subject"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_claims_deny_as_malformed() {
    let rig = Rig::start(every_rule).await;
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "groups",
            "comma inside an array element",
            json!(["a,b", "c"]),
        ),
        (
            "groups",
            "control character in an array element",
            json!(["a\u{7}"]),
        ),
        ("sub", "newline in a string", json!("alice\r\nX-Admin: 1")),
        ("sub", "NUL in a string", json!("ali\u{0}ce")),
        ("sub", "DEL in a string", json!("ali\u{7f}ce")),
        ("sub", "leading space (HTTP would trim it)", json!(" alice")),
        ("sub", "trailing tab (HTTP would trim it)", json!("alice\t")),
        (
            "groups",
            "element with surrounding space",
            json!(["a", " b"]),
        ),
        (
            "realm_access",
            "control character in a forwarded role",
            json!({"roles": ["orders.read", "x\u{1b}y"]}),
        ),
    ];
    for (claim, what, value) in cases {
        let mut c = rig.claims();
        c[claim] = value;
        rig.denied_at(
            "api",
            "/api/x",
            Want::Invalid("malformed"),
            what,
            &rig.mint(&c),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_token_keeps_authorization_and_strip_removes_it() {
    let rig = Rig::start(every_rule).await;
    let token = rig.token();
    let seen = rig.allowed("/fwd/x", &token, "forward").await;
    assert_eq!(
        seen.headers["authorization"].to_str().expect("ASCII"),
        format!("Bearer {token}")
    );
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    let seen = rig.allowed("/api/x", &token, "strip").await;
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_removed_on_anonymous_routes() {
    let rig = Rig::start(every_rule).await;
    let r = rig
        .gw
        .client()
        .get(rig.gw.url("/public/x"))
        .header("X-Auth-Subject", "mallory")
        .header("x-auth-roles", "admin")
        .header("X-AUTH-OBJ", "{}")
        .header("X-Unrelated", "kept")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let seen = rig.upstream.last().expect("seen");
    for name in ["x-auth-subject", "x-auth-roles", "x-auth-obj"] {
        assert!(seen.headers.get(name).is_none(), "{name} must be removed");
    }
    assert_eq!(seen.headers["x-unrelated"], "kept");
    // An anonymous route with a token: the token is not looked at, nothing is injected.
    let r = rig.gw.get("/public/x", Some(&rig.token())).await;
    assert_eq!(r.status(), 200);
    assert!(rig
        .upstream
        .last()
        .expect("seen")
        .headers
        .get("x-auth-subject")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs512_needs_a_secret_as_long_as_its_hash() {
    // 48 bytes are too short for HS512.
    let err = refusal_with_secret(basic, "HS512", 48).await;
    assert!(err.contains("needs at least 64"), "{err}");
}

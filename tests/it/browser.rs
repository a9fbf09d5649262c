//! Clients beyond curl (contract section E): tokens from a cookie or a query parameter, optional
//! authentication, CORS answered by the gateway, and RFC 9728 resource metadata. Each test
//! checks what the recording upstream saw, and that a refused request never reached it.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::support::yaml::{anonymous, protected, provider, server, Config};
use crate::support::{expect_denied, Issuer, Rig, TestGateway, Upstream, Want};

/// `/api` takes its token from cookie `at`, the header or query `access_token`, forwards `sub`;
/// `/public` is anonymous.
fn browser_sources(issuer: &Issuer, upstream: &Upstream) -> Config {
    let up = upstream.url();
    Config::new()
        .provider(provider(issuer))
        .route(anonymous("public", "/public", &up))
        .route(
            protected("api", "/api", &up)
                .auth_line(r#"token_from: [header, "cookie:at", "query:access_token"]"#)
                .forward("sub", "X-Auth-Subject"),
        )
}

/// `GET path` without an `Authorization` header is answered 200 by the upstream, once.
async fn allowed_without_header(rig: &Rig, path: &str, what: &str) -> crate::support::Seen {
    let before = rig.upstream.requests();
    let r = rig.client().get(rig.gw.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        status,
        200,
        "{what}: {}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(rig.upstream.requests(), before + 1, "{what}");
    rig.upstream.last().unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request to gateway")
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_str(&response.text().await.unwrap()).expect("JSON body")
}

fn cookie_values(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_cookie_token_is_verified_and_removed_before_forwarding() {
    let rig = Rig::start(browser_sources).await;
    let token = rig.token();
    let before = rig.upstream.requests();
    let r = rig
        .client()
        .get(rig.gw.url("/api/x"))
        .header("cookie", format!("theme=dark; at={token}; lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.upstream.requests(), before + 1);
    let seen = rig.upstream.last().unwrap();
    assert_eq!(cookie_values(&seen.headers), ["theme=dark; lang=en"]);
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert!(seen.headers.get("authorization").is_none());

    // Only the token cookie: nothing is left to forward.
    let r = rig
        .client()
        .get(rig.gw.url("/api/x"))
        .header("cookie", format!("at=\"{token}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a quoted cookie value (RFC 6265) is the token"
    );
    assert!(rig.upstream.last().unwrap().headers.get("cookie").is_none());

    // A cookie that is not a token is the token's fault: 401, not a header error.
    expect_denied(
        &rig.gw,
        &rig.upstream,
        "api",
        Want::Invalid("malformed"),
        "a garbage token cookie",
        send(
            rig.client()
                .get(rig.gw.url("/api/x"))
                .header("cookie", "at=not a token"),
        ),
    )
    .await;
    expect_denied(
        &rig.gw,
        &rig.upstream,
        "api",
        Want::NoToken,
        "other cookies only",
        send(
            rig.client()
                .get(rig.gw.url("/api/x"))
                .header("cookie", "theme=dark"),
        ),
    )
    .await;
}

#[tokio::test]
async fn a_query_token_is_removed_from_the_target_and_the_rest_kept_byte_for_byte() {
    let rig = Rig::start(browser_sources).await;
    let token = rig.token();
    let seen = allowed_without_header(
        &rig,
        &format!("/api/x?a=%2F%2e&access_token={token}&b=1+2;c"),
        "query token",
    )
    .await;
    assert_eq!(seen.path_and_query, "/api/x?a=%2F%2e&b=1+2;c");
    assert_eq!(seen.headers["x-auth-subject"], "alice");

    // The name is read as a form decodes it, so `%61ccess_token` is the same parameter.
    let seen = allowed_without_header(
        &rig,
        &format!("/api/x?%61ccess_token={token}"),
        "encoded name",
    )
    .await;
    assert_eq!(seen.path_and_query, "/api/x");
}

#[tokio::test]
async fn two_token_sources_at_once_are_refused_and_nothing_is_forwarded() {
    let rig = Rig::start(browser_sources).await;
    let token = rig.token();
    let client = rig.client();
    let cases = [
        (
            "header and cookie",
            client
                .get(rig.gw.url("/api/x"))
                .bearer_auth(&token)
                .header("cookie", format!("at={token}")),
        ),
        (
            "cookie and query",
            client
                .get(rig.gw.url(&format!("/api/x?access_token={token}")))
                .header("cookie", format!("at={token}")),
        ),
        (
            "the parameter twice",
            client.get(
                rig.gw
                    .url(&format!("/api/x?access_token={token}&access_token={token}")),
            ),
        ),
        (
            "the parameter again after a semicolon",
            client.get(rig.gw.url(&format!(
                "/api/x?x=1;access_token={token}&access_token={token}"
            ))),
        ),
        (
            "the cookie twice",
            client
                .get(rig.gw.url("/api/x"))
                .header("cookie", format!("at={token}; at=other")),
        ),
    ];
    for (what, request) in cases {
        expect_denied(
            &rig.gw,
            &rig.upstream,
            "api",
            Want::BadRequest,
            what,
            send(request),
        )
        .await;
    }
}

#[tokio::test]
async fn sources_a_route_does_not_list_are_ignored() {
    // The default `[header]`: a cookie or query token is not a credential, and stays as sent.
    let rig = Rig::start(|i, u| {
        Config::new()
            .provider(provider(i))
            .route(protected("api", "/api", &u.url()))
    })
    .await;
    let token = rig.token();
    expect_denied(
        &rig.gw,
        &rig.upstream,
        "api",
        Want::NoToken,
        "a query token on a header-only route",
        send(
            rig.client()
                .get(rig.gw.url(&format!("/api/x?access_token={token}"))),
        ),
    )
    .await;
}

#[tokio::test]
async fn a_forwarded_token_keeps_its_cookie_and_http2_cookie_fields_are_joined() {
    let rig = Rig::start(|i, u| {
        Config::new().provider(provider(i)).route(
            protected("api", "/api", &u.url())
                .auth_line(r#"token_from: ["cookie:at"]"#)
                .forward_token(),
        )
    })
    .await;
    let token = rig.token();
    // HTTP/2 lets a client split `cookie` (RFC 9113 8.2.3); HTTP/1.1 upstreams need one field.
    let r = rig
        .gw
        .h2_client()
        .get(rig.gw.url("/api/x"))
        .header("cookie", "a=1")
        .header("cookie", format!("at={token}"))
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let seen = rig.upstream.last().unwrap();
    assert_eq!(
        cookie_values(&seen.headers),
        [format!("a=1; at={token}; b=2")]
    );
}

/// `/news` identifies a signed-in reader and serves anyone else anonymously.
fn optional_news(issuer: &Issuer, upstream: &Upstream) -> Config {
    Config::new().provider(provider(issuer)).route(
        protected("news", "/news", &upstream.url())
            .auth_line("optional: true")
            .forward("sub", "X-Auth-Subject"),
    )
}

#[tokio::test]
async fn optional_auth_passes_without_a_token_and_still_refuses_a_bad_one() {
    let rig = Rig::start(optional_news).await;
    let before = rig.upstream.requests();
    let r = rig
        .client()
        .get(rig.gw.url("/news/today"))
        .header("x-auth-subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.upstream.requests(), before + 1);
    let seen = rig.upstream.last().unwrap();
    assert!(
        seen.headers.get("x-auth-subject").is_none(),
        "an anonymous request's claim headers are stripped"
    );

    let seen = rig.allowed("/news/today", &rig.token(), "signed in").await;
    assert_eq!(seen.headers["x-auth-subject"], "alice");

    let mut expired = rig.claims();
    expired["exp"] = serde_json::json!(crate::support::now() - 600);
    rig.denied_at(
        "news",
        "/news/today",
        Want::Invalid("expired"),
        "an expired token on an optional route",
        &rig.mint(&expired),
    )
    .await;
}

#[tokio::test]
async fn optional_auth_with_rules_is_a_config_error() {
    let issuer = Issuer::start(&[]).await;
    let upstream = Upstream::start().await;
    let config = optional_news(&issuer, &upstream);
    let yaml = config.to_string().replace(
        "optional: true",
        "optional: true\n      require: [{claim: scope, any_of: [read]}]",
    );
    let err = TestGateway::try_start(yaml).await.err().expect("refused");
    assert!(err.contains("optional"), "{err}");
}

/// `/api` as a single-page app on `https://app.example.com` calls it: credentials, a custom
/// header, one exposed response header.
fn spa(issuer: &Issuer, upstream: &Upstream) -> Config {
    let up = upstream.url();
    Config::new()
        .provider(provider(issuer))
        .route(protected("api", "/api", &up).methods("GET, PUT").line(
            "cors: { allow_origins: [\"https://app.example.com\"], allow_methods: [GET, PUT], \
                     allow_headers: [authorization, x-client], expose_headers: [x-request-id], \
                     allow_credentials: true, max_age: 10m }",
        ))
        .route(protected("plain", "/plain", &up))
}

#[tokio::test]
async fn a_preflight_is_answered_by_the_gateway_without_a_token() {
    let rig = Rig::start(spa).await;
    let before = rig.upstream.requests();
    let r = rig
        .client()
        .request(reqwest::Method::OPTIONS, rig.gw.url("/api/orders"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization, x-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "authorization, x-client");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["vary"], "Origin");
    assert_eq!(rig.upstream.requests(), before, "the upstream saw nothing");

    // Another origin gets no permission, and still no upstream request.
    let r = rig
        .client()
        .request(reqwest::Method::OPTIONS, rig.gw.url("/api/orders"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("access-control-allow-methods").is_none());
    assert_eq!(rig.upstream.requests(), before);

    // Without `cors`, a preflight is a request like any other: it needs a token.
    expect_denied(
        &rig.gw,
        &rig.upstream,
        "plain",
        Want::NoToken,
        "a preflight on a route without cors",
        send(
            rig.client()
                .request(reqwest::Method::OPTIONS, rig.gw.url("/plain/x"))
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "GET"),
        ),
    )
    .await;
}

#[tokio::test]
async fn cors_headers_come_on_every_response_of_the_route_denials_included() {
    let rig = Rig::start(spa).await;
    let from_app = |req: reqwest::RequestBuilder| req.header("origin", "https://app.example.com");
    let r = from_app(rig.client().get(rig.gw.url("/api/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
    assert_eq!(r.headers()["vary"], "Origin");

    let r = from_app(
        rig.client()
            .get(rig.gw.url("/api/x"))
            .bearer_auth(rig.token()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let body = json(r).await;
    assert_eq!(body["path"], "/api/x", "the upstream answered");

    let r = rig
        .client()
        .get(rig.gw.url("/api/x"))
        .header("origin", "https://evil.example")
        .bearer_auth(rig.token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "CORS is the browser's check, not a credential"
    );
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.headers()["vary"], "Origin");
}

#[tokio::test]
async fn any_origin_with_credentials_is_a_config_error() {
    let issuer = Issuer::start(&[]).await;
    let upstream = Upstream::start().await;
    let yaml = Config::new()
        .provider(provider(&issuer))
        .route(
            protected("api", "/api", &upstream.url())
                .line("cors: { allow_origins: [\"*\"], allow_credentials: true }"),
        )
        .to_string();
    let err = TestGateway::try_start(yaml).await.err().expect("refused");
    assert!(err.contains("allow_credentials"), "{err}");
}

#[tokio::test]
async fn resource_metadata_is_served_and_named_in_every_challenge() {
    let rig = Rig::start(|i, u| {
        crate::support::yaml::basic(i, u).server(server().line(
            "resource_metadata: { resource: \"https://api.example.com/api\", \
             authorization_servers: [\"https://idp.example.com\"], scopes_supported: [orders.read] }",
        ))
    })
    .await;
    let r = rig
        .client()
        .get(rig.gw.url("/.well-known/oauth-protected-resource/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc = json(r).await;
    assert_eq!(doc["resource"], "https://api.example.com/api");
    assert_eq!(doc["authorization_servers"][0], "https://idp.example.com");
    assert_eq!(doc["scopes_supported"][0], "orders.read");

    let url = "https://api.example.com/.well-known/oauth-protected-resource/api";
    let before = rig.upstream.requests();
    let r = rig.gw.get("/api/x", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"jwt-gateway\", resource_metadata=\"{url}\"").as_str()
    );
    let mut no_role = rig.claims();
    no_role["realm_access"] = serde_json::json!({"roles": []});
    let r = rig.gw.get("/api/x", Some(&rig.mint(&no_role))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer error=\"insufficient_scope\", resource_metadata=\"{url}\"").as_str()
    );
    let r = rig.gw.get("/api/x", Some("garbage")).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .ends_with(&format!(", resource_metadata=\"{url}\"")));
    assert_eq!(rig.upstream.requests(), before);
}

//! Section C of the contract end to end: the gateway as a decision service beside a proxy that
//! keeps its own routing. Debian's nginx runs `deploy/forward-auth/nginx.conf` (the shipped file,
//! its addresses replaced) in front of a recording upstream, with a tap between nginx and the
//! decision listener that keeps every byte nginx sent there; Traefik/Caddy and Envoy HTTP
//! decisions go over HTTP/1.1 and h2c; Envoy's gRPC `Authorization/Check` is called by the
//! generated tonic client on `envoy-types`' messages. Each denial is compared with what proxy
//! mode answers for the same request on the same gateway, and asserts the upstream saw nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use http::HeaderMap;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::{raw, RawResponse};
use crate::support::denials::decisions;
use crate::support::grpc::{within, GrpcClient};
use crate::support::real_upstreams::RealUpstream;
use crate::support::yaml::{anonymous, protected, provider, server, Config};
use crate::support::{metric, now, Issuer, Rig, Upstream};

const SHORT: Duration = Duration::from_secs(10);

/// The nginx integration as shipped: the test runs this very file.
const NGINX_SNIPPET: &str = include_str!("../../deploy/forward-auth/nginx.conf");

/// Provider `test`; `/public` anonymous; `/api` wants role `orders.read` and forwards `sub` and
/// the roles; `/admin` wants role `admin` (which the rig's tokens lack) and forwards `sub` and
/// `groups` (which they lack too); `/reads` takes GET only; `/t` is host `tenant.example.com`'s;
/// `/decide` has no upstream. A body limit far below what nginx lets through.
fn shape(issuer: &Issuer, upstream: &Upstream) -> Config {
    shape_with(issuer, upstream, "forward_auth: {}")
}

fn shape_with(issuer: &Issuer, upstream: &Upstream, forward_auth: &str) -> Config {
    let up = upstream.url();
    Config::new()
        .server(server().limits("max_body_bytes: 1000"))
        .section(forward_auth)
        .provider(provider(issuer))
        .route(anonymous("public", "/public", &up))
        .route(
            protected("api", "/api", &up)
                .require_any("realm_access.roles", &["orders.read"])
                .forward("sub", "X-Auth-Subject")
                .forward("realm_access.roles", "X-Auth-Roles"),
        )
        .route(
            protected("admin", "/admin", &up)
                .require_any("realm_access.roles", &["admin"])
                .forward("sub", "X-Auth-Subject")
                .forward("groups", "X-Auth-Groups"),
        )
        .route(anonymous("reads", "/reads", &up).methods("GET"))
        .route(anonymous("tenant", "/t", &up).host("tenant.example.com"))
        .route(
            protected("decide", "/decide", &up)
                .decisions_only()
                .forward("sub", "X-Auth-Subject"),
        )
}

fn decision_addr(rig: &Rig) -> SocketAddr {
    rig.gw
        .decisions
        .expect("a forward_auth section starts the decision listener")
}

fn expired(rig: &Rig) -> String {
    let mut claims = rig.claims();
    claims["iat"] = json!(now() - 7200);
    claims["nbf"] = json!(now() - 7200);
    claims["exp"] = json!(now() - 3600);
    rig.mint(&claims)
}

// ---------------------------------------------------------------------------------------------
// Answers, and proxy mode's for the same request.

/// A response, reduced to what a decision and proxy mode are compared on.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Status, challenge and body agree with proxy mode's refusal `proxied`.
    fn same_refusal_as(&self, proxied: &Answer, what: &str) {
        assert_ne!(proxied.status, 200, "{what}: proxy mode admitted it");
        assert_eq!(self.status, proxied.status, "{what}: status ({self:?})");
        assert_eq!(
            self.header("www-authenticate"),
            proxied.header("www-authenticate"),
            "{what}: challenge"
        );
        assert_eq!(self.json(), proxied.json(), "{what}: body");
    }
}

/// HTTP/1.1 or h2c (prior knowledge), plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    H1,
    H2c,
}

fn client(wire: Wire) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(SHORT);
    match wire {
        Wire::H1 => b.http1_only(),
        Wire::H2c => b.http2_prior_knowledge(),
    }
    .build()
    .expect("client")
}

/// `GET` of `target` on the decision listener with `headers`.
async fn decide(rig: &Rig, wire: Wire, target: &str, headers: &[(&str, &str)]) -> Answer {
    decide_as(rig, wire, "GET", target, headers).await
}

async fn decide_as(
    rig: &Rig,
    wire: Wire,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let method = http::Method::from_bytes(method.as_bytes()).expect("method");
    let url = format!("http://{}{target}", decision_addr(rig));
    let mut req = client(wire).request(method, url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    Answer::of(req.send().await.expect("decision request")).await
}

/// Proxy mode's answer to `GET path` with `token`, on the same gateway.
async fn proxied(rig: &Rig, path: &str, token: Option<&str>) -> Answer {
    let mut req = rig.client().get(rig.gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Answer::of(req.send().await.expect("proxied request")).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The headers Traefik's `forwardAuth` sends for `GET https://api.example.com{uri}`.
fn traefik_headers<'a>(uri: &'a str, auth: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-uri", uri),
    ];
    if let Some(a) = auth {
        h.push(("authorization", a));
    }
    h
}

/// The headers the nginx snippet's `/_auth` location sends for `GET {uri}` (besides `Host`).
fn nginx_headers<'a>(uri: &'a str, auth: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("x-original-method", "GET"), ("x-original-uri", uri)];
    if let Some(a) = auth {
        h.push(("authorization", a));
    }
    h
}

// ---------------------------------------------------------------------------------------------
// nginx in front, running the shipped snippet.

/// A TCP relay that keeps every byte its clients sent: what nginx's decision requests carried.
struct Tap {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap addr");
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let log = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.split();
                    let (mut from_server, mut to_server) = server.split();
                    let upward = async {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    log.lock().expect("tap").extend_from_slice(&buf[..n]);
                                    if to_server.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let downward = async {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(upward, downward);
                });
            }
        });
        Tap { addr, sent }
    }

    /// What clients sent since the last call.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.sent.lock().expect("tap"))
    }
}

/// `deploy/forward-auth/nginx.conf` with its placeholder addresses replaced: nginx listens on
/// `port`, asks `decisions`, forwards to `app`. Each placeholder must be there exactly once, so
/// an edit of the shipped file cannot leave the test running something else.
fn nginx_conf(port: u16, decisions: SocketAddr, app: SocketAddr) -> String {
    let mut conf = NGINX_SNIPPET.to_string();
    for (from, to) in [
        ("server 127.0.0.1:9902;", format!("server {decisions};")),
        ("server 127.0.0.1:8080;", format!("server {app};")),
        ("listen 80;", format!("listen 127.0.0.1:{port};")),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "deploy/forward-auth/nginx.conf should hold `{from}` once"
        );
        conf = conf.replace(from, &to);
    }
    // The client body limit is the site's own policy, outside the snippet.
    format!("client_max_body_size 8m;\n{conf}")
}

/// The gateway on `shape`, nginx in front of its upstream asking it through the tap.
struct Front {
    rig: Rig,
    nginx: RealUpstream,
    tap: Tap,
}

impl Front {
    async fn start() -> Front {
        Front::start_with(shape).await
    }

    /// nginx in front of a gateway of `shape` instead of the default one.
    async fn start_with(shape: fn(&Issuer, &Upstream) -> Config) -> Front {
        let rig = Rig::start(shape).await;
        let tap = Tap::start(decision_addr(&rig)).await;
        let (decisions, app) = (tap.addr, rig.upstream.addr);
        let nginx = tokio::task::spawn_blocking(move || {
            RealUpstream::nginx_front(|_, port| nginx_conf(port, decisions, app))
        })
        .await
        .expect("nginx started");
        Front { rig, nginx, tap }
    }

    /// `method target` through nginx with `headers` (and a body), on a fresh connection.
    async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        within(SHORT, target, raw(self.nginx.addr, bytes)).await
    }

    async fn get(&self, target: &str, token: Option<&str>) -> RawResponse {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.send("GET", target, &headers, b"").await
    }
}

/// What nginx's `auth_request` makes of a decision's status: 2xx passes, 401 and 403 are
/// relayed, anything else is a 500.
fn through_auth_request(status: u16) -> u16 {
    match status {
        200..=299 => 200,
        401 | 403 => status,
        _ => 500,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_tokens_subject_and_never_a_forged_one() {
    let front = Front::start().await;
    let rig = &front.rig;
    let token = rig.token();
    let auth = bearer(&token);
    let r = front
        .send(
            "GET",
            "/api/orders?page=2",
            &[
                ("Authorization", &auth),
                ("X-Auth-Subject", "mallory"),
                ("X-Auth-Roles", "admin"),
                ("X-Request-Id", "fa-nginx-1"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", front.nginx.logs());
    assert_eq!(rig.upstream.requests(), 1);
    let seen = rig.upstream.last().expect("seen upstream");
    assert_eq!(seen.path_and_query, "/api/orders?page=2");
    assert_eq!(seen.headers.get_all("x-auth-subject").iter().count(), 1);
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers["x-auth-roles"], "orders.read,user");
    // The client's id, kept by the gateway and passed on by nginx from the decision.
    assert_eq!(seen.headers["x-request-id"], "fa-nginx-1");

    // An anonymous route: the decision sets no claim header, and nginx sends none of its own.
    let r = front
        .send(
            "GET",
            "/public/x",
            &[("X-Auth-Subject", "mallory"), ("X-Auth-Roles", "admin")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(rig.upstream.requests(), 2);
    let seen = rig.upstream.last().expect("seen upstream");
    assert_eq!(seen.path_and_query, "/public/x");
    assert_eq!(seen.headers.get("x-auth-subject"), None, "{seen:?}");
    assert_eq!(seen.headers.get("x-auth-roles"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_relays_the_challenges_and_forwards_no_refused_request() {
    let front = Front::start().await;
    let rig = &front.rig;

    let r = front.get("/api/x", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="jwt-gateway""#)
    );

    let r = front.get("/api/x", Some(&expired(rig))).await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token", error_description=""#),
        "{r:?}"
    );

    // Valid, but without role `admin`: the snippet's error_page gives the 403 its challenge.
    let r = front.get("/admin/x", Some(&rig.token())).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope""#)
    );

    assert_eq!(
        rig.upstream.requests(),
        0,
        "a refusal never reaches the upstream"
    );
}

/// Each path reaches the decision as the client wrote it (`$request_uri`), and gets the status
/// proxy mode gives it on the same gateway: as a raw decision, and through nginx as far as
/// `auth_request` can carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_path_tricks_are_judged_on_the_original_uri_as_in_proxy_mode() {
    let front = Front::start().await;
    let rig = &front.rig;
    let token = rig.token();
    let auth = bearer(&token);
    // Each path with proxy mode's answer for a token with role `orders.read` but not `admin`;
    // the loop checks the table against proxy mode first, so it documents, never decides.
    let paths = [
        ("/admin", 403),
        ("//admin", 403),
        ("/x/../admin", 403),
        ("/ADMIN", 400),
        ("/admin;x", 403),
        ("/admin/x;y", 403),
        ("/public/%2e%2e/admin", 403),
        ("/public/%2E%2E/admin/x", 403),
        ("/public/..;/admin", 400),
        ("/public/..%2fadmin", 400),
        ("/public/x", 200),
        ("/api/x", 200),
        ("/x/../api/x", 200),
    ];
    for (path, want) in paths {
        let before = rig.upstream.requests();
        let proxy = within(
            SHORT,
            path,
            raw(
                rig.gw.addr,
                format!(
                    "GET {path} HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
                ),
            ),
        )
        .await;
        let forwarded = rig.upstream.requests() - before;
        assert_eq!(proxy.status, want, "{path} in proxy mode: {proxy:?}");
        assert_eq!(forwarded, usize::from(want == 200), "{path}: {proxy:?}");

        let decision = within(
            SHORT,
            path,
            raw(
                decision_addr(rig),
                format!(
                    "GET /nginx HTTP/1.1\r\nHost: api.example.com\r\nX-Original-Method: GET\r\nX-Original-URI: {path}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
                ),
            ),
        )
        .await;
        assert_eq!(decision.status, proxy.status, "{path}: {decision:?}");
        if proxy.status != 200 {
            assert_eq!(decision.json(), proxy.json(), "{path}");
            assert_eq!(
                decision.header("www-authenticate"),
                proxy.header("www-authenticate"),
                "{path}"
            );
        }
        assert_eq!(rig.upstream.requests(), before + forwarded, "{path}");

        let nginx = front.get(path, Some(&token)).await;
        assert_eq!(
            nginx.status,
            through_auth_request(proxy.status),
            "{path} through nginx: {nginx:?}"
        );
        assert_eq!(
            rig.upstream.requests(),
            before + 2 * forwarded,
            "{path}: nginx forwards exactly what the gateway admits"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_never_sends_the_body_to_the_decision() {
    let front = Front::start().await;
    let rig = &front.rig;
    let auth = bearer(&rig.token());
    let body = b"BODY-BYTES-".repeat(400_000); // 4.4 MB, against max_body_bytes: 1000
    front.tap.take();
    let r = front
        .send(
            "POST",
            "/api/upload",
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = rig.upstream.last().expect("seen upstream");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body_len, body.len(), "the upstream got the whole body");

    let sent = front.tap.take();
    let text = String::from_utf8_lossy(&sent).to_ascii_lowercase();
    assert!(
        text.starts_with("get /nginx http/1.1\r\n") && text.ends_with("\r\n\r\n"),
        "one decision head, and nothing after it: {text}"
    );
    assert_eq!(text.matches("\r\n\r\n").count(), 1, "{text}");
    assert!(text.contains("\r\nx-original-method: post\r\n"), "{text}");
    assert!(
        text.contains("\r\nx-original-uri: /api/upload\r\n"),
        "{text}"
    );
    assert!(!text.contains("content-length"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(!text.contains("body-bytes"), "{text}");

    let metrics = rig.gw.metrics().await;
    for line in metrics.lines().filter(|l| l.contains(r#"code="413""#)) {
        assert!(
            line.ends_with(" 0"),
            "the decision saw no body to refuse: {line}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            r#"gateway_requests_total{code="200",route="api"}"#
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Traefik / Caddy (`/traefik`) and Envoy HTTP (`/envoy/<path>`), over HTTP/1.1 and h2c.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_and_envoy_http_decisions_admit_with_the_claim_headers() {
    let rig = Rig::start(shape).await;
    let auth = bearer(&rig.token());
    for wire in [Wire::H1, Wire::H2c] {
        let traefik = decide(
            &rig,
            wire,
            "/traefik",
            &traefik_headers("/api/orders?page=2", Some(&auth)),
        )
        .await;
        let envoy = decide(
            &rig,
            wire,
            "/envoy/api/orders?page=2",
            &[("authorization", &auth)],
        )
        .await;
        for (who, a) in [("traefik", &traefik), ("envoy", &envoy)] {
            let what = format!("{who} over {wire:?}");
            assert_eq!(a.status, 200, "{what}: {a:?}");
            assert_eq!(a.header("x-auth-subject"), Some("alice"), "{what}");
            assert_eq!(a.header("x-auth-roles"), Some("orders.read,user"), "{what}");
            assert!(
                a.header("x-request-id").is_some_and(|id| !id.is_empty()),
                "{what}: {a:?}"
            );
            assert_eq!(a.body, "", "{what}");
        }
    }
    // The asking proxy's request id is the decision's.
    let mut headers = traefik_headers("/public/x", None);
    headers.push(("x-request-id", "fa-traefik-1"));
    let a = decide(&rig, Wire::H1, "/traefik", &headers).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-request-id"), Some("fa-traefik-1"));
    assert_eq!(
        a.header("x-auth-subject"),
        None,
        "anonymous: no claim header"
    );
    assert_eq!(rig.upstream.requests(), 0, "a decision forwards nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_and_envoy_http_refusals_are_proxy_modes() {
    let rig = Rig::start(shape).await;
    let (valid, stale) = (rig.token(), expired(&rig));
    let cases: [(&str, &str, Option<&str>); 4] = [
        ("no token", "/api/x", None),
        ("expired", "/api/x", Some(&stale)),
        ("role missing", "/admin/x", Some(&valid)),
        ("no route", "/nowhere", Some(&valid)),
    ];
    for wire in [Wire::H1, Wire::H2c] {
        for (what, path, token) in cases {
            let want = proxied(&rig, path, token).await;
            let auth = token.map(bearer);
            let traefik = decide(
                &rig,
                wire,
                "/traefik",
                &traefik_headers(path, auth.as_deref()),
            )
            .await;
            traefik.same_refusal_as(&want, &format!("traefik {what} over {wire:?}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let envoy = decide(&rig, wire, &format!("/envoy{path}"), &headers).await;
            envoy.same_refusal_as(&want, &format!("envoy {what} over {wire:?}"));
        }
    }
    assert_eq!(
        rig.upstream.requests(),
        0,
        "a refusal never reaches the upstream"
    );
}

/// Only the asking proxy's headers describe the request: a client header meant for another
/// proxy (which that proxy would pass through unexamined) never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_proxys_headers_never_describe_the_request() {
    let rig = Rig::start(shape).await;
    for wire in [Wire::H1, Wire::H2c] {
        // Through Traefik, a client adds nginx's headers naming an anonymous path.
        let mut headers = traefik_headers("/api/x", None);
        headers.extend([
            ("x-original-uri", "/public/x"),
            ("x-original-method", "GET"),
        ]);
        let a = decide(&rig, wire, "/traefik", &headers).await;
        assert_eq!(
            a.status, 401,
            "traefik over {wire:?} read X-Original-URI: {a:?}"
        );

        // Through nginx, a client adds Traefik's.
        let mut headers = nginx_headers("/api/x", None);
        headers.extend([
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "api.example.com"),
        ]);
        let a = decide(&rig, wire, "/nginx", &headers).await;
        assert_eq!(
            a.status, 401,
            "nginx over {wire:?} read X-Forwarded-Uri: {a:?}"
        );

        // Envoy describes the request by the decision's own path.
        let a = decide(
            &rig,
            wire,
            "/envoy/api/x",
            &[
                ("x-original-uri", "/public/x"),
                ("x-forwarded-uri", "/public/x"),
            ],
        )
        .await;
        assert_eq!(a.status, 401, "envoy over {wire:?}: {a:?}");

        // The other proxy's headers alone describe nothing: 400, not a decision.
        let a = decide(
            &rig,
            wire,
            "/traefik",
            &[
                ("x-original-uri", "/public/x"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
        assert_eq!(a.status, 400, "{a:?}");
        let a = decide(&rig, wire, "/nginx", &traefik_headers("/public/x", None)).await;
        assert_eq!(a.status, 400, "{a:?}");
    }
    assert_eq!(rig.upstream.requests(), 0);
}

/// The original method and host come from where each proxy puts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_route_on_the_original_method_and_host() {
    let rig = Rig::start(shape).await;
    for wire in [Wire::H1, Wire::H2c] {
        // `/reads` takes GET only; the decision requests themselves are all GETs.
        let mut post = traefik_headers("/reads/x", None);
        post[0] = ("x-forwarded-method", "POST");
        let a = decide(&rig, wire, "/traefik", &post).await;
        assert_eq!(a.status, 404, "traefik POST over {wire:?}: {a:?}");
        let a = decide(&rig, wire, "/traefik", &traefik_headers("/reads/x", None)).await;
        assert_eq!(a.status, 200, "traefik GET over {wire:?}: {a:?}");

        let a = decide(
            &rig,
            wire,
            "/nginx",
            &[
                ("x-original-method", "POST"),
                ("x-original-uri", "/reads/x"),
            ],
        )
        .await;
        assert_eq!(a.status, 404, "nginx POST over {wire:?}: {a:?}");
        let a = decide(&rig, wire, "/nginx", &nginx_headers("/reads/x", None)).await;
        assert_eq!(a.status, 200, "nginx GET over {wire:?}: {a:?}");

        let a = decide_as(&rig, wire, "POST", "/envoy/reads/x", &[]).await;
        assert_eq!(a.status, 404, "envoy POST over {wire:?}: {a:?}");
        let a = decide(&rig, wire, "/envoy/reads/x", &[]).await;
        assert_eq!(a.status, 200, "envoy GET over {wire:?}: {a:?}");

        // `/t` is host tenant.example.com's: Traefik names the host in X-Forwarded-Host, and
        // the decision request's own Host (this listener's) is not the original's.
        let mut tenant = traefik_headers("/t/x", None);
        tenant[2] = ("x-forwarded-host", "tenant.example.com");
        let a = decide(&rig, wire, "/traefik", &tenant).await;
        assert_eq!(a.status, 200, "traefik tenant over {wire:?}: {a:?}");
    }
    // Over HTTP/1.1 the Host header is nginx's and Envoy's way to name the original host.
    let mut other = traefik_headers("/t/x", None);
    other.push(("host", "tenant.example.com"));
    let a = decide(&rig, Wire::H1, "/traefik", &other).await;
    assert_eq!(a.status, 404, "traefik read its own Host: {a:?}");
    let mut headers = nginx_headers("/t/x", None);
    headers.push(("host", "tenant.example.com"));
    let a = decide(&rig, Wire::H1, "/nginx", &headers).await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = decide(
        &rig,
        Wire::H1,
        "/envoy/t/x",
        &[("host", "tenant.example.com")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = decide(&rig, Wire::H1, "/envoy/t/x", &[]).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(rig.upstream.requests(), 0);
}

/// Envoy's HTTP/2 client names the original host in `:authority` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_h2c_routes_on_the_authority() {
    let rig = Rig::start(shape).await;
    let port = decision_addr(&rig).port();
    let tenant = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("tenant.example.com", decision_addr(&rig))
        .timeout(SHORT)
        .build()
        .expect("client");
    let r = tenant
        .get(format!("http://tenant.example.com:{port}/envoy/t/x"))
        .send()
        .await
        .expect("decision");
    assert_eq!(r.status(), 200);
    let a = decide(&rig, Wire::H2c, "/envoy/t/x", &[]).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_original_header_is_400_and_an_unknown_path_404() {
    let rig = Rig::start(shape).await;
    let auth = bearer(&rig.token());
    for wire in [Wire::H1, Wire::H2c] {
        let full = traefik_headers("/api/x", Some(&auth));
        for missing in ["x-forwarded-method", "x-forwarded-host", "x-forwarded-uri"] {
            let headers: Vec<_> = full
                .iter()
                .copied()
                .filter(|(n, _)| *n != missing)
                .collect();
            let a = decide(&rig, wire, "/traefik", &headers).await;
            assert_eq!(
                a.status, 400,
                "traefik without {missing} over {wire:?}: {a:?}"
            );
            assert_eq!(a.json()["error"], "invalid_request", "{a:?}");
        }
        let full = nginx_headers("/api/x", Some(&auth));
        for missing in ["x-original-method", "x-original-uri"] {
            let headers: Vec<_> = full
                .iter()
                .copied()
                .filter(|(n, _)| *n != missing)
                .collect();
            let a = decide(&rig, wire, "/nginx", &headers).await;
            assert_eq!(
                a.status, 400,
                "nginx without {missing} over {wire:?}: {a:?}"
            );
        }
        // Not origin-form: an absolute URI would name a host of its own.
        let a = decide(
            &rig,
            wire,
            "/nginx",
            &nginx_headers("http://evil.example/api/x", Some(&auth)),
        )
        .await;
        assert_eq!(a.status, 400, "{a:?}");
        for path in [
            "/",
            "/nginx/x",
            "/nginxx",
            "/traefik/x",
            "/envoyx",
            "/metrics",
        ] {
            let a = decide(&rig, wire, path, &nginx_headers("/api/x", Some(&auth))).await;
            assert_eq!(a.status, 404, "{path} over {wire:?}: {a:?}");
            assert_eq!(a.header("x-auth-subject"), None, "{path}");
        }
    }
    assert_eq!(rig.upstream.requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Envoy gRPC `envoy.service.auth.v3.Authorization/Check`.

async fn authz(rig: &Rig) -> AuthorizationClient<crate::support::grpc::H2Connection> {
    let addr = decision_addr(rig);
    let conn = GrpcClient::h2c(addr).await.connection();
    AuthorizationClient::with_origin(conn, format!("http://{addr}").parse().expect("origin"))
}

/// What Envoy sends for `GET https://api.example.com{path}` with these request headers.
fn check_request(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let all: HashMap<String, String> = [
        (":authority", "api.example.com"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "https"),
        ("user-agent", "curl/8"),
    ]
    .into_iter()
    .chain(headers.iter().copied())
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: "api.example.com".into(),
                    path: path.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    headers: all,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check(rig: &Rig, request: CheckRequest) -> CheckResponse {
    let mut client = authz(rig).await;
    within(SHORT, "Check", client.check(request))
        .await
        .unwrap_or_else(|s| panic!("Check failed: {s:?}"))
        .into_inner()
}

fn ok_response(r: &CheckResponse) -> &OkHttpResponse {
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an ok_response: {other:?}"),
    }
}

fn denied_response(r: &CheckResponse) -> &DeniedHttpResponse {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("not a denied_response: {other:?}"),
    }
}

/// The header options of an answer, by name; each must overwrite, never append.
fn options(
    headers: &[envoy_types::ext_authz::v3::pb::HeaderValueOption],
) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|o| {
            assert_eq!(
                o.append_action,
                envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                "{o:?}"
            );
            let h = o.header.as_ref().expect("a header");
            (h.key.clone(), h.value.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_check_allows_with_the_claim_headers_and_removes_the_rest() {
    let rig = Rig::start(shape).await;
    let auth = bearer(&rig.token());
    let r = check(
        &rig,
        check_request(
            "/api/orders?page=2",
            &[
                ("authorization", &auth),
                ("x-auth-subject", "mallory"),
                ("x-request-id", "fa-grpc-1"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
    let ok = ok_response(&r);
    let set = options(&ok.headers);
    assert_eq!(
        set.get("x-auth-subject").map(String::as_str),
        Some("alice"),
        "{ok:?}"
    );
    assert_eq!(
        set.get("x-auth-roles").map(String::as_str),
        Some("orders.read,user")
    );
    assert_eq!(
        set.get("x-request-id").map(String::as_str),
        Some("fa-grpc-1")
    );
    // Envoy forwards the client's own headers: the claim headers this token does not set
    // (`/admin`'s X-Auth-Groups) go.
    assert_eq!(ok.headers_to_remove, ["x-auth-groups"], "{ok:?}");

    // An anonymous route sets none, and removes every claim header any route sets.
    let r = check(
        &rig,
        check_request("/public/x", &[("x-auth-subject", "mallory")]),
    )
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
    let ok = ok_response(&r);
    assert!(
        !options(&ok.headers).contains_key("x-auth-subject"),
        "{ok:?}"
    );
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-auth-groups", "x-auth-roles", "x-auth-subject"]);

    // A decisions-only route answers too.
    let r = check(
        &rig,
        check_request("/decide/x", &[("authorization", &auth)]),
    )
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
    assert_eq!(
        options(&ok_response(&r).headers)
            .get("x-auth-subject")
            .map(String::as_str),
        Some("alice")
    );
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_check_refuses_as_proxy_mode_answers() {
    let rig = Rig::start(shape).await;
    let valid = rig.token();
    let cases: [(&str, &str, Option<&str>, i32); 4] = [
        ("no token", "/api/x", None, 16),
        ("expired", "/api/x", Some(&expired(&rig)), 16),
        ("role missing", "/admin/x", Some(&valid), 7),
        ("no route", "/nowhere", Some(&valid), 12),
    ];
    for (what, path, token, code) in cases {
        let want = proxied(&rig, path, token).await;
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = check(&rig, check_request(path, &headers)).await;
        let status = r.status.clone().expect("a status");
        assert_eq!(status.code, code, "{what}: {r:?}");
        assert!(!status.message.is_empty(), "{what}");
        let denied = denied_response(&r);
        assert_eq!(
            denied.status.as_ref().map(|s| s.code),
            Some(i32::from(want.status)),
            "{what}"
        );
        let headers = options(&denied.headers);
        assert_eq!(
            headers.get("www-authenticate").map(String::as_str),
            want.header("www-authenticate"),
            "{what}: {denied:?}"
        );
        assert!(headers.contains_key("x-request-id"), "{what}");
        let body: Value = serde_json::from_str(&denied.body).expect("JSON body");
        assert_eq!(body, want.json(), "{what}");
    }
    // Envoy described no HTTP request: the decision cannot be made.
    let r = check(&rig, CheckRequest::default()).await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(3), "{r:?}");
    assert_eq!(
        denied_response(&r).status.as_ref().map(|s| s.code),
        Some(400)
    );
    assert_eq!(
        rig.upstream.requests(),
        0,
        "a refusal never reaches the upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Who may ask, decision-only routes, metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_trusted_proxies_gets_no_decision() {
    let rig =
        Rig::start(|i, u| shape_with(i, u, r#"forward_auth: { trusted_proxies: ["10.0.0.0/8"] }"#))
            .await;
    let auth = bearer(&rig.token());
    for wire in [Wire::H1, Wire::H2c] {
        for (target, headers) in [
            ("/nginx", nginx_headers("/api/x", Some(&auth))),
            ("/traefik", traefik_headers("/api/x", Some(&auth))),
            ("/envoy/api/x", vec![("authorization", auth.as_str())]),
            ("/nowhere", vec![]),
        ] {
            let a = decide(&rig, wire, target, &headers).await;
            assert_eq!(a.status, 403, "{target} over {wire:?}: {a:?}");
            assert_eq!(a.header("x-auth-subject"), None, "{target}");
            assert_eq!(a.json()["error"], "forbidden", "{target}");
        }
    }
    let mut client = authz(&rig).await;
    let refused = within(
        SHORT,
        "Check",
        client.check(check_request("/api/x", &[("authorization", &auth)])),
    )
    .await
    .expect_err("an untrusted peer gets no CheckResponse");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(decisions(&rig.gw, "allow", "ok", "api").await, 0.0);
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_upstream_decides_and_proxies_nothing() {
    let rig = Rig::start(shape).await;
    let auth = bearer(&rig.token());
    let a = decide(
        &rig,
        Wire::H1,
        "/nginx",
        &nginx_headers("/decide/x", Some(&auth)),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-auth-subject"), Some("alice"));
    let a = decide(&rig, Wire::H1, "/nginx", &nginx_headers("/decide/x", None)).await;
    assert_eq!(a.status, 401, "{a:?}");

    let r = proxied(&rig, "/decide/x", Some(&rig.token())).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], "not_found", "{r:?}");
    assert_eq!(
        rig.upstream.requests(),
        0,
        "nothing is proxied for such a route"
    );
}

/// Contract C: proxied requests that match a decisions-only route get 404, with or without a
/// token (the route stage refuses them before any token is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_upstream_is_404_to_a_proxied_request_without_token() {
    let rig = Rig::start(shape).await;
    let r = proxied(&rig, "/decide/x", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("www-authenticate"), None, "{r:?}");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_by_route_as_in_proxy_mode() {
    let rig = Rig::start(shape).await;
    let auth = bearer(&rig.token());
    let gw = &rig.gw;
    let a = decide(
        &rig,
        Wire::H1,
        "/nginx",
        &nginx_headers("/api/x", Some(&auth)),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = decide(
        &rig,
        Wire::H2c,
        "/traefik",
        &traefik_headers("/api/x", None),
    )
    .await;
    assert_eq!(a.status, 401);
    let a = decide(
        &rig,
        Wire::H1,
        "/envoy/admin/x",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status, 403);
    let r = check(&rig, check_request("/api/x", &[("authorization", &auth)])).await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    let r = check(&rig, check_request("/api/x", &[])).await;
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(16));
    let a = decide(&rig, Wire::H1, "/nginx", &nginx_headers("/nowhere", None)).await;
    assert_eq!(a.status, 404);

    let m = gw.metrics().await;
    let count = |series: &str| metric(&m, series).unwrap_or(0.0);
    assert_eq!(
        count(r#"gateway_requests_total{code="200",route="api"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(
        count(r#"gateway_requests_total{code="401",route="api"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(
        count(r#"gateway_requests_total{code="403",route="admin"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        count(r#"gateway_requests_total{code="404",route="none"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(decisions(gw, "allow", "ok", "api").await, 2.0);
    assert_eq!(decisions(gw, "deny", "missing_token", "api").await, 2.0);
    assert_eq!(
        decisions(gw, "deny", "insufficient_scope", "admin").await,
        1.0
    );

    // A proxied request adds to the same series.
    let r = proxied(&rig, "/api/x", Some(&rig.token())).await;
    assert_eq!(r.status, 200);
    assert_eq!(decisions(gw, "allow", "ok", "api").await, 3.0);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"gateway_requests_total{code="200",route="api"}"#),
        Some(3.0)
    );
    assert_eq!(
        rig.upstream.requests(),
        1,
        "only the proxied request went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_name_the_resource_metadata_in_their_challenges_as_proxy_mode_does() {
    let rig = Rig::start(|i, u| {
        shape(i, u).server(server().limits("max_body_bytes: 1000").line(
            "resource_metadata: { resource: \"https://api.example.com\", \
             authorization_servers: [\"https://idp.example.com\"] }",
        ))
    })
    .await;
    let want = format!(
        "Bearer realm=\"jwt-gateway\", resource_metadata=\"{}\"",
        "https://api.example.com/.well-known/oauth-protected-resource"
    );
    let proxied = proxied(&rig, "/api/x", None).await;
    assert_eq!(proxied.header("www-authenticate"), Some(want.as_str()));
    let r = decide(&rig, Wire::H1, "/traefik", &traefik_headers("/api/x", None)).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some(want.as_str()));
    let r = check(&rig, check_request("/api/x", &[])).await;
    let headers = options(&denied_response(&r).headers);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some(want.as_str()),
        "{r:?}"
    );
    assert_eq!(rig.upstream.requests(), 0);
}

/// DPoP through nginx running the shipped snippet: the decision checks the proof against the URI
/// the client used (scheme from the snippet's `X-Forwarded-Proto`), nginx relays the `DPoP`
/// challenge of a replayed proof, and the snippet keeps the proof from the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_dpop_proofs_to_the_decision_and_never_to_the_app() {
    use crate::binding::{bound_token, PyClient};
    fn dpop_shape(issuer: &Issuer, upstream: &Upstream) -> Config {
        shape(issuer, upstream).edit_provider("test", |p| {
            p.algorithms("ES256, EdDSA")
                .line("dpop: { max_age: 60s, replay: memory }")
        })
    }
    let front = Front::start_with(dpop_shape).await;
    let rig = &front.rig;
    let py = PyClient::start();
    let key = py.key("ES256");
    let token = bound_token(rig, json!({"jkt": key.jkt}));
    let auth = format!("DPoP {token}");
    let htu = "http://api.example.com/api/orders";
    let proof = py.proof(&key, "GET", htu, &token, json!({}));
    let send = |proof: String| {
        let headers = [
            ("Authorization".to_string(), auth.clone()),
            ("DPoP".to_string(), proof),
        ];
        let front = &front;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            front.send("GET", "/api/orders?page=2", &headers, b"").await
        }
    };
    let r = send(proof.clone()).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", front.nginx.logs());
    let decision = String::from_utf8_lossy(&front.tap.take()).to_lowercase();
    assert!(
        decision.contains("\r\ndpop: "),
        "the decision got the proof: {decision}"
    );
    assert_eq!(rig.upstream.requests(), 1);
    let seen = rig.upstream.last().expect("seen upstream");
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert!(
        seen.headers.get("dpop").is_none(),
        "the app got the proof: {seen:?}"
    );

    let r = send(proof.clone()).await;
    assert_eq!(r.status, 401, "replayed: {r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#),
        "{r:?}"
    );
    let https = py.proof(
        &key,
        "GET",
        "https://api.example.com/api/orders",
        &token,
        json!({}),
    );
    assert_eq!(send(https).await.status, 401, "the client used http");
    // A proof made for another server, with the client's own X-Forwarded-Host naming that server:
    // nginx passes it to the decision, which must judge the host nginx routed (`Host`).
    let elsewhere = "http://other.example/api/orders";
    let foreign = py.proof(&key, "GET", elsewhere, &token, json!({}));
    let headers = [
        ("Authorization", auth.as_str()),
        ("DPoP", foreign.as_str()),
        ("X-Forwarded-Host", "other.example"),
    ];
    let r = front.send("GET", "/api/orders", &headers, b"").await;
    assert_eq!(r.status, 401, "a proof for another host: {r:?}");
    assert_eq!(
        rig.upstream.requests(),
        1,
        "no refused request reached the app"
    );
}

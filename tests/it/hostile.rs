//! Hostile HTTP: request smuggling shapes, absolute-form targets naming other hosts, CONNECT,
//! header floods, HTTP/2 rapid reset and stream floods, slow readers and writers, pipelining.
//! Each gets a defined answer or a closed connection, and the upstream behind the protected
//! routes only ever sees requests that passed authentication: the gateway injects
//! `X-Auth-Subject` after a successful check (and strips it from clients), so every request that
//! upstream records must carry it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::proxy::eventually;
use crate::support::yaml::{anonymous, protected, provider, server, Config};
use crate::support::{Rig, TestGateway, Upstream};

/// The gateway and its two upstreams: `guarded` behind protected routes, `open` behind anonymous
/// ones. Routes, first match wins:
/// - `api`: host `api.example.com`, `/api`, protected → guarded
/// - `www`: host `www.example.com`, everything, anonymous → open
/// - `api-any`: `/api` on any other host, protected → guarded
/// - `public`: `/public`, anonymous → open; `download`: `/download`, anonymous → open
struct Stack {
    /// The rig's upstream is `guarded`.
    rig: Rig,
    open: Upstream,
}

/// A stack is a rig with a second upstream: `stack.gw`, `stack.token()` are the rig's.
impl std::ops::Deref for Stack {
    type Target = Rig;
    fn deref(&self) -> &Rig {
        &self.rig
    }
}

impl Stack {
    async fn start(limits: &str) -> Stack {
        let open = Upstream::start().await;
        let open_url = open.url();
        let rig = Rig::start(|issuer, guarded| {
            let guarded_url = guarded.url();
            Config::new()
                .server(server().limits(limits))
                .provider(provider(issuer))
                .route(
                    protected("api", "/api", &guarded_url)
                        .host("api.example.com")
                        .forward("sub", "X-Auth-Subject"),
                )
                .route(anonymous("www", "/", &open_url).host("www.example.com"))
                .route(protected("api-any", "/api", &guarded_url).forward("sub", "X-Auth-Subject"))
                .route(anonymous("public", "/public", &open_url))
                .route(anonymous("download", "/download", &open_url))
        })
        .await;
        Stack { rig, open }
    }

    fn guarded(&self) -> &Upstream {
        &self.rig.upstream
    }

    /// Every request the guarded upstream ever received came through authentication.
    fn assert_guarded_only_saw_authenticated(&self) {
        for seen in self.guarded().all() {
            assert_eq!(
                seen.headers
                    .get("x-auth-subject")
                    .and_then(|v| v.to_str().ok()),
                Some("alice"),
                "the guarded upstream received an unauthenticated request: {seen:?}"
            );
        }
    }

    fn open_paths(&self) -> Vec<String> {
        self.open
            .all()
            .into_iter()
            .map(|s| s.path_and_query)
            .collect()
    }
}

/// One HTTP/1.1 response read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits what a server sent into responses (Content-Length or chunked bodies). Stops at the
/// first thing that does not parse: a cut-off response is simply not counted.
fn responses(mut bytes: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let Some(status) = head
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
        else {
            break;
        };
        let answer = Answer { status, head };
        let mut rest = &bytes[end + 4..];
        if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    out.push(answer);
                    return out;
                };
                let size = std::str::from_utf8(&rest[..line_end])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .unwrap_or(0);
                rest = rest.get(line_end + 2 + size + 2..).unwrap_or_default();
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = answer
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            rest = rest.get(len..).unwrap_or_default();
        }
        out.push(answer);
        bytes = rest;
    }
    out
}

/// Writes `request` and reads until the server closes (or `within` passes: None then).
async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// A request smuggled inside another one's body: if the gateway ever parsed it as a request of
/// its own, the open upstream would record this path.
const SMUGGLED: &str = "GET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

fn with_body(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n{body}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_a_defined_answer() {
    let stack = Stack::start("request_timeout: 2s").await;
    let token = stack.token();
    let chunked_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    let cl = chunked_then_smuggled.len();
    // (what, request, the statuses allowed). Each shape must get one answer, then a close.
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "Content-Length then Transfer-Encoding",
            with_body(
                &format!("POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
                &chunked_then_smuggled,
            ),
            &[200, 400],
        ),
        (
            "Transfer-Encoding then Content-Length",
            with_body(
                &format!("POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: {cl}\r\n"),
                &chunked_then_smuggled,
            ),
            &[200, 400],
        ),
        (
            "Content-Length 0 with a chunked body carrying a request",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            &[200, 400],
        ),
        (
            "conflicting Content-Length",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 48\r\n",
                &format!("hello{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "Content-Length list",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 48\r\n",
                &format!("hello{SMUGGLED}"),
            ),
            &[400],
        ),
        (
            "signed Content-Length",
            with_body("POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n", "hello"),
            &[400],
        ),
        (
            "Transfer-Encoding: chunked, identity",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n",
                &chunked_then_smuggled,
            ),
            &[400, 501],
        ),
        (
            "Transfer-Encoding: identity",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n",
                "hello",
            ),
            &[400, 501],
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n",
                &chunked_then_smuggled,
            ),
            &[501],
        ),
        (
            "Transfer-Encoding: chunked twice, then gzip",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked, gzip\r\n",
                &chunked_then_smuggled,
            ),
            &[400, 501],
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            with_body(
                "POST /public/a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n",
                &chunked_then_smuggled,
            ),
            &[400],
        ),
        (
            "obs-fold continuation line",
            with_body("GET /public/a HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n", ""),
            &[400],
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Padding: x\r\n Transfer-Encoding: chunked\r\n",
                "hello",
            ),
            &[400],
        ),
        (
            "space before the colon",
            with_body(
                "POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                "hello",
            ),
            &[400],
        ),
        (
            "NUL in a header value",
            with_body("GET /public/a HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n", ""),
            &[400],
        ),
        (
            "obs-fold on Authorization, protected route",
            with_body(
                &format!("GET /api/a HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer\r\n {token}\r\n"),
                "",
            ),
            &[400],
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, allowed) in &cases {
        let Some(bytes) = exchange(stack.gw.addr, request, Duration::from_secs(5)).await else {
            failures.push(format!(
                "{what}: connection neither answered nor closed in 5 s"
            ));
            continue;
        };
        let answers = responses(&bytes);
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        if statuses.len() > 1 || statuses.iter().any(|s| !allowed.contains(s)) {
            failures.push(format!(
                "{what}: got {statuses:?}, allowed one of {allowed:?}: {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        if bytes.is_empty() {
            failures.push(format!("{what}: closed without an answer"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        !stack.open_paths().iter().any(|p| p.contains("smuggled")),
        "a smuggled request reached the upstream: {:?}",
        stack.open_paths()
    );
    assert_eq!(stack.guarded().requests(), 0);
    // The gateway still serves a clean request afterwards.
    assert_eq!(stack.gw.get("/public/ok", None).await.status(), 200);
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes_never_pass_unauthenticated_and_never_hang() {
    let stack = Stack::start("request_timeout: 2s").await;
    let token = stack.token();
    let bad_chunks = [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5 5\r\nhello\r\n0\r\n\r\n",
    ];
    let mut failures = Vec::new();
    for chunk in bad_chunks {
        for (target, auth) in [
            ("/api/chunk", String::new()),
            ("/api/chunk", format!("Authorization: Bearer {token}\r\n")),
            ("/public/chunk", String::new()),
        ] {
            let request = with_body(
                &format!("POST {target} HTTP/1.1\r\nHost: api.example.com\r\n{auth}Transfer-Encoding: chunked\r\n"),
                chunk,
            );
            let what = format!(
                "{target} {} chunk {chunk:?}",
                if auth.is_empty() {
                    "without token"
                } else {
                    "with token"
                }
            );
            let Some(bytes) = exchange(stack.gw.addr, &request, Duration::from_secs(6)).await
            else {
                failures.push(format!("{what}: neither answered nor closed in 6 s"));
                continue;
            };
            let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
            // Past authentication the body is streamed upstream; when it turns out broken the
            // upstream call fails and today the client gets 502 (see the ignored test below).
            let allowed: &[u16] = if auth.is_empty() && target.starts_with("/api") {
                &[401]
            } else {
                &[400, 502]
            };
            if statuses.len() > 1 || statuses.iter().any(|s| !allowed.contains(s)) {
                failures.push(format!(
                    "{what}: got {statuses:?}, allowed one of {allowed:?} or a close: {:?}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    stack.assert_guarded_only_saw_authenticated();
    assert_eq!(stack.gw.get("/public/ok", None).await.status(), 200);
    stack.rig.stop().await;
}

/// A client whose chunked body breaks mid-stream is the client's fault: 400, and not an upstream
/// error on the operator's dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_client_body_is_400_not_an_upstream_error() {
    let stack = Stack::start("").await;
    let bytes = exchange(
        stack.gw.addr,
        b"POST /public/chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .expect("answered or closed");
    let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
    assert!(statuses.is_empty() || statuses == [400], "{statuses:?}");
    let m = stack.gw.metrics().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("gateway_upstream_errors_total{")
                && l.contains(r#"route="public""#)
                && !l.ends_with(" 0")),
        "{m}"
    );
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_route_by_one_host_and_never_skip_auth() {
    let stack = Stack::start("").await;
    let token = stack.token();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let status_of_get = async |target: &str, host: &str, auth: &str| {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
        let bytes = exchange(stack.gw.addr, request.as_bytes(), Duration::from_secs(5))
            .await
            .expect("answered and closed in time");
        responses(&bytes).first().map_or(0, |a| a.status)
    };

    // The target names another host than Host: routing follows the target (RFC 9112 3.2.2), and
    // the upstream is told the same host in X-Forwarded-Host.
    let s = status_of_get("http://evil.example/api/x", "api.example.com", "").await;
    assert_eq!(
        s, 401,
        "evil.example/api is taken by the protected api-any route"
    );
    let s = status_of_get("http://api.example.com/api/x", "www.example.com", "").await;
    assert_eq!(
        s, 401,
        "a Host naming the anonymous host does not open api.example.com"
    );
    let s = status_of_get("https://API.example.com:8443/api/x", "www.example.com", "").await;
    assert_eq!(s, 401);
    assert_eq!(stack.guarded().requests(), 0);
    assert_eq!(stack.open.requests(), 0);

    let s = status_of_get("http://www.example.com/api/x", "api.example.com", "").await;
    assert_eq!(s, 200, "www.example.com is anonymous");
    let seen = stack.open.last().expect("open upstream saw it");
    assert_eq!(seen.path_and_query, "/api/x");
    assert_eq!(
        seen.headers.get("x-forwarded-host").unwrap(),
        "www.example.com",
        "the upstream is told the host the request was routed by"
    );
    assert_eq!(stack.guarded().requests(), 0);

    let s = status_of_get("http://api.example.com/api/y", "www.example.com", &bearer).await;
    assert_eq!(s, 200);
    let seen = stack.guarded().last().expect("guarded upstream saw it");
    assert_eq!(seen.path_and_query, "/api/y");
    assert_eq!(
        seen.headers.get("x-forwarded-host").unwrap(),
        "api.example.com"
    );
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);

    // Two Host headers: which one would the next hop believe? Refused (RFC 9112 3.2).
    let before_open = stack.open.requests();
    let bytes = exchange(
        stack.gw.addr,
        b"GET /api/z HTTP/1.1\r\nHost: www.example.com\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .expect("answered");
    assert_eq!(responses(&bytes).first().map(|a| a.status), Some(400));
    assert_eq!(stack.open.requests(), before_open);
    stack.assert_guarded_only_saw_authenticated();
    assert_eq!(stack.guarded().requests(), 1);

    // No Host at all: HTTP/1.1 requires one (RFC 9112 3.2), HTTP/1.0 does not.
    for (request, want) in [
        (
            &b"GET /public/nohost HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            400,
        ),
        (&b"GET /public/nohost10 HTTP/1.0\r\n\r\n"[..], 200),
    ] {
        let bytes = exchange(stack.gw.addr, request, Duration::from_secs(5))
            .await
            .expect("answered");
        assert_eq!(
            responses(&bytes).first().map(|a| a.status),
            Some(want),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(!stack.open_paths().contains(&"/public/nohost".to_string()));
    assert_eq!(
        stack.open.requests(),
        before_open + 1,
        "only the HTTP/1.0 one passed"
    );

    // HTTP/2: `:authority` and a `host` header that disagree are a malformed request (RFC 9113
    // 8.3.1), whichever way round; one that agrees routes by it.
    let before_open = stack.open.requests();
    let mut h2 = H2Conn::open(stack.gw.addr).await;
    h2.send(headers_frame(
        1,
        &request_block(
            "GET",
            "www.example.com",
            "/api/h2-conflict",
            &[("host", "api.example.com")],
        ),
        true,
    ));
    h2.send(headers_frame(
        3,
        &request_block(
            "GET",
            "api.example.com",
            "/api/h2-conflict",
            &[("host", "www.example.com")],
        ),
        true,
    ));
    h2.send(headers_frame(
        5,
        &request_block(
            "GET",
            "www.example.com",
            "/api/h2",
            &[("host", "www.example.com")],
        ),
        true,
    ));
    let open = stack.open.clone();
    assert!(
        eventually(Duration::from_secs(5), || open
            .all()
            .iter()
            .any(|s| s.path_and_query == "/api/h2"))
        .await
    );
    let _ = h2
        .drain(Duration::from_millis(200), Duration::from_secs(2))
        .await;
    assert_eq!(
        stack.open.requests(),
        before_open + 1,
        "only the consistent stream passed"
    );
    assert!(!stack.open_paths().contains(&"/api/h2-conflict".to_string()));
    let h2_seen = stack
        .open
        .all()
        .into_iter()
        .find(|s| s.path_and_query == "/api/h2")
        .unwrap();
    assert_eq!(
        h2_seen.headers.get("x-forwarded-host").unwrap(),
        "www.example.com"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.assert_guarded_only_saw_authenticated();
    assert_eq!(stack.guarded().requests(), 1);
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_other_non_origin_targets_are_refused() {
    let stack = Stack::start("").await;
    let cases: [(&str, &[u8], &[u16]); 6] = [
        (
            "CONNECT authority-form",
            b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "CONNECT to an internal address",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "CONNECT with an origin-form path on a protected route",
            b"CONNECT /api/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "CONNECT with an origin-form path on an anonymous route",
            b"CONNECT /public/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "OPTIONS asterisk-form",
            b"OPTIONS * HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
            &[400, 404],
        ),
        (
            "request line with a space in the target",
            b"GET /public/a b HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, allowed) in cases {
        let Some(bytes) = exchange(stack.gw.addr, request, Duration::from_secs(5)).await else {
            failures.push(format!("{what}: no close within 5 s"));
            continue;
        };
        let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
        if statuses.len() != 1 || !allowed.contains(&statuses[0]) {
            failures.push(format!(
                "{what}: got {statuses:?}, allowed {allowed:?}: {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(stack.guarded().requests(), 0);
    assert_eq!(stack.open.requests(), 0, "{:?}", stack.open_paths());
    let m = stack.gw.metrics().await;
    assert_eq!(
        crate::support::metric(&m, r#"gateway_requests_total{code="400",route="none"}"#),
        Some(cases.len() as f64 - 1.0),
        "each refusal but hyper's own (the bad request line) is counted before routing"
    );
    stack.rig.stop().await;
}

/// `count` complete HTTP/2 GET requests on the client streams from `first_stream` on, as one
/// burst of HEADERS frames.
fn get_flood(first_stream: u32, count: u32, authority: &str, path: &str) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            headers_frame(
                first_stream + 2 * i,
                &request_block("GET", authority, path, &[]),
                true,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_are_refused() {
    let stack = Stack::start("max_header_bytes: 65536").await;
    let many = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let bytes = exchange(
        stack.gw.addr,
        format!(
            "GET /public/few HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{}\r\n",
            many(50)
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .expect("answered");
    assert_eq!(responses(&bytes)[0].status, 200);
    for n in [101, 1000, 5000] {
        let bytes = exchange(
            stack.gw.addr,
            format!("GET /api/many HTTP/1.1\r\nHost: a\r\n{}\r\n", many(n)).as_bytes(),
            Duration::from_secs(5),
        )
        .await
        .expect("answered or closed");
        let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
        assert!(
            statuses.is_empty() || statuses == [431] || statuses == [400],
            "{n} headers: {statuses:?}"
        );
    }
    assert_eq!(stack.open.requests(), 1);
    assert_eq!(stack.guarded().requests(), 0);
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_authenticated() {
    let stack = Stack::start("").await;
    let token = stack.token();
    let pipeline = format!(
        "GET /api/first HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\n\r\n\
         GET /api/second HTTP/1.1\r\nHost: api.example.com\r\n\r\n\
         GET /api/third HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer forged.{token}\r\n\r\n\
         POST /public/fourth HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\
         GET /api/fifth HTTP/1.1\r\nHost: api.example.com\r\nX-Auth-Subject: alice\r\n\r\n\
         GET /api/sixth HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let bytes = exchange(stack.gw.addr, pipeline.as_bytes(), Duration::from_secs(10))
        .await
        .expect("the pipeline was answered and closed");
    let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 401, 401, 200, 401, 200],
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let guarded: Vec<String> = stack
        .guarded()
        .all()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(guarded, ["/api/first", "/api/sixth"]);
    assert_eq!(stack.open_paths(), ["/public/fourth"]);

    // A body whose declared length ends early: the rest is the next request, judged on its own.
    let hidden = "GET /api/hidden HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    let request = format!(
        "POST /api/carrier HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n{hidden}"
    );
    let bytes = exchange(stack.gw.addr, request.as_bytes(), Duration::from_secs(10))
        .await
        .expect("answered");
    let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 401]);
    // And a body that holds a request is only ever a body.
    let request = format!(
        "POST /api/carrier2 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{hidden}",
        hidden.len()
    );
    let bytes = exchange(stack.gw.addr, request.as_bytes(), Duration::from_secs(10))
        .await
        .expect("answered");
    let statuses: Vec<u16> = responses(&bytes).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200]);
    let guarded: Vec<String> = stack
        .guarded()
        .all()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(
        guarded,
        ["/api/first", "/api/sixth", "/api/carrier", "/api/carrier2"]
    );
    assert_eq!(stack.guarded().last().unwrap().body_len, hidden.len());
    stack.assert_guarded_only_saw_authenticated();
    stack.rig.stop().await;
}

// ---- HTTP/2 on the wire: frames written by hand, so a test can do what no client library does.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn headers_frame(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

fn rst_frame(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 5.1) under the first byte's flag bits.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A request header block without Huffman coding or table insertions: static-table names for
/// the pseudo-headers, literal names for the rest.
fn request_block(method: &str, authority: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    match method {
        "GET" => out.push(0x82),
        other => {
            hpack_int(&mut out, 0, 4, 2);
            hpack_str(&mut out, other);
        }
    }
    if method != "CONNECT" {
        out.push(0x86); // :scheme http
        hpack_int(&mut out, 0, 4, 4);
        hpack_str(&mut out, path);
    }
    hpack_int(&mut out, 0, 4, 1);
    hpack_str(&mut out, authority);
    for (name, value) in extra {
        out.push(0);
        hpack_str(&mut out, name);
        hpack_str(&mut out, value);
    }
    out
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// An HTTP/2 (h2c) connection: a writer task for outgoing bytes, a reader task that ACKs the
/// server's SETTINGS and PINGs and hands every frame over.
struct H2Conn {
    out: mpsc::UnboundedSender<Vec<u8>>,
    frames: mpsc::UnboundedReceiver<Frame>,
}

impl H2Conn {
    async fn open(addr: SocketAddr) -> H2Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let (out, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(bytes) = to_write.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let acks = out.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 9];
            while reader.read_exact(&mut head).await.is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let f = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                    payload,
                };
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    let _ = acks.send(frame(SETTINGS, ACK, 0, &[]));
                }
                if f.kind == PING && f.flags & ACK == 0 {
                    let _ = acks.send(frame(PING, ACK, 0, &f.payload));
                }
                if frames_tx.send(f).is_err() {
                    return;
                }
            }
        });
        let mut preface = PREFACE.to_vec();
        preface.extend(frame(SETTINGS, 0, 0, &[]));
        let _ = out.send(preface);
        H2Conn { out, frames }
    }

    fn send(&self, bytes: Vec<u8>) {
        let _ = self.out.send(bytes);
    }

    /// Frames received until the connection ends or `quiet` passes with nothing new.
    async fn drain(&mut self, quiet: Duration, cap: Duration) -> (Vec<Frame>, bool) {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, self.frames.recv()).await {
                Ok(Some(f)) => got.push(f),
                Ok(None) => return (got, true),
                Err(_) => return (got, false),
            }
        }
    }
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

/// Probes the gateway on a fresh connection while something else is going on.
async fn probe(gw: &TestGateway) -> Duration {
    let started = Instant::now();
    let r = gw.h2_client().get(gw.url("/public/probe")).send().await;
    let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(status, 200, "the gateway stopped serving other connections");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_neither_stalls_the_gateway_nor_passes_auth() {
    let stack = Stack::start("max_concurrent_streams: 100").await;
    let mut attack = H2Conn::open(stack.gw.addr).await;
    // 20 bursts of 500 streams, each opened and cancelled at once, half of them on the protected
    // route without a token, half on an anonymous route.
    let started = Instant::now();
    let mut next = 1u32;
    let mut slowest_probe = Duration::ZERO;
    for burst in 0..20 {
        let mut bytes = Vec::with_capacity(500 * 80);
        for i in 0..500 {
            let path = if i % 2 == 0 { "/api/rr" } else { "/public/rr" };
            bytes.extend(headers_frame(
                next,
                &request_block("GET", "api.example.com", path, &[]),
                true,
            ));
            bytes.extend(rst_frame(next, CANCEL));
            next += 2;
        }
        attack.send(bytes);
        if burst % 5 == 4 {
            slowest_probe = slowest_probe.max(probe(&stack.gw).await);
        }
    }
    let (frames, closed) = attack
        .drain(Duration::from_millis(500), Duration::from_secs(10))
        .await;
    let goaway = goaway_code(&frames);
    eprintln!(
        "rapid reset: 10000 streams in {:?}; gateway answered with {} frames, GOAWAY {goaway:?}, \
         closed {closed}; slowest probe {slowest_probe:?}; open upstream saw {}",
        started.elapsed(),
        frames.len(),
        stack.open.requests()
    );
    assert!(
        slowest_probe < Duration::from_secs(3),
        "other connections waited {slowest_probe:?}"
    );
    // hyper's max_pending_accept_reset_streams (64, set in server/listener.rs): the attacker is
    // cut off with ENHANCE_YOUR_CALM instead of being served stream after stream.
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    assert!(
        stack.open.requests() <= 5000,
        "more upstream requests than anonymous streams"
    );
    assert_eq!(stack.guarded().requests(), 0);
    probe(&stack.gw).await;
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_max_concurrent_streams_are_refused() {
    let stack = Stack::start("max_concurrent_streams: 8, request_timeout: 10s").await;
    let mut conn = H2Conn::open(stack.gw.addr).await;
    let (frames, _) = conn
        .drain(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    let settings = frames
        .iter()
        .find(|f| f.kind == SETTINGS && f.flags & ACK == 0)
        .expect("server SETTINGS");
    let advertised = settings.payload.chunks(6).find_map(|s| {
        (u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
    });
    assert_eq!(advertised, Some(8), "SETTINGS_MAX_CONCURRENT_STREAMS");

    // 40 requests that each hold the (anonymous) upstream for 1.5 s, sent at once.
    conn.send(get_flood(1, 40, "www.example.com", "/slow/1500"));
    let (mut frames, _) = conn
        .drain(Duration::from_millis(800), Duration::from_secs(3))
        .await;
    let refused: Vec<u32> = frames
        .iter()
        .filter(|f| f.kind == RST_STREAM && f.payload == REFUSED_STREAM.to_be_bytes())
        .map(|f| f.stream)
        .collect();
    assert_eq!(
        refused.len(),
        32,
        "streams past the limit are refused at once: {frames:?}"
    );
    assert!(stack.open.requests() <= 8);
    // The admitted eight complete; the refused ones are never served later.
    frames.extend(
        conn.drain(Duration::from_secs(2), Duration::from_secs(6))
            .await
            .0,
    );
    let answered = frames.iter().filter(|f| f.kind == HEADERS).count();
    assert_eq!(answered, 8, "{frames:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.open.requests(), 8);

    // The same flood on the protected route without a token: refused or 401, never forwarded.
    conn.send(get_flood(101, 200, "api.example.com", "/api/flood"));
    let (frames, _) = conn
        .drain(Duration::from_millis(500), Duration::from_secs(5))
        .await;
    let answered = frames.iter().filter(|f| f.kind == HEADERS).count();
    let refused = frames.iter().filter(|f| f.kind == RST_STREAM).count();
    assert!(
        answered + refused == 200 || goaway_code(&frames).is_some(),
        "200 streams: {answered} answered, {refused} reset"
    );
    assert_eq!(stack.guarded().requests(), 0);
    probe(&stack.gw).await;
    stack.rig.stop().await;
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Peak RSS growth over `window`, sampled every 20 ms.
async fn rss_growth_over(window: Duration, before: u64) -> u64 {
    let mut peak = before;
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        peak = peak.max(rss_kb());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak.saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_do_not_make_the_gateway_buffer() {
    const GIB: u64 = 1 << 30;
    // Kernel socket buffers are not in our RSS; a gateway that buffered what the upstream sends
    // would grow by hundreds of MB in this window.
    const MAX_GROWTH_KB: u64 = 48 * 1024;
    let stack = Stack::start("").await;
    assert_eq!(stack.gw.get("/download/1000", None).await.status(), 200);
    let before = rss_kb();
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(stack.gw.addr).await.unwrap();
        s.write_all(format!("GET /download/{GIB} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        readers.push(s);
    }
    // Two HTTP/2 readers that never grant flow-control window beyond the initial one.
    for _ in 0..2 {
        let mut s = TcpStream::connect(stack.gw.addr).await.unwrap();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(headers_frame(
            1,
            &request_block("GET", "a", &format!("/download/{GIB}"), &[]),
            true,
        ));
        s.write_all(&bytes).await.unwrap();
        readers.push(s);
    }
    let open = stack.open.clone();
    assert!(eventually(Duration::from_secs(5), || open.requests() >= 7).await);
    let growth = rss_growth_over(Duration::from_secs(2), before).await;
    eprintln!("slow readers: RSS +{growth} kB over 2 s with 6 stalled 1 GiB downloads");
    assert!(growth < MAX_GROWTH_KB, "RSS grew by {growth} kB");
    // Others are served meanwhile, and the stalled ones are released when their clients go.
    probe(&stack.gw).await;
    drop(readers);
    assert_eq!(stack.gw.get("/download/100000", None).await.status(), 200);
    stack.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writer_body_gets_an_answer_within_the_request_timeout() {
    let stack = Stack::start("request_timeout: 1s").await;
    let token = stack.token();
    let mut s = TcpStream::connect(stack.gw.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/upload HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\nonly-a-few-bytes"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer within 6 s to a stalled body"),
        }
    }
    let statuses: Vec<u16> = responses(&got).iter().map(|a| a.status).collect();
    assert!(
        statuses == [504] || statuses == [408] || statuses.is_empty(),
        "{statuses:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    stack.assert_guarded_only_saw_authenticated();
    stack.rig.stop().await;
}

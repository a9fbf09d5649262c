//! The browser end to end (contract section E): headless Chromium from Debian's `chromium`
//! package loads a page from one origin, which makes a credentialed cross-origin `fetch` through
//! the gateway (a custom header, so the browser sends a preflight the gateway must answer; the
//! token in a cookie) and opens a WebSocket authenticated by a query token. The page posts what
//! it saw back to the test; the upstreams record what reached them.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::servers::{full, serve_http1, BoxBody};
use crate::support::yaml::{protected, provider, Config};
use crate::support::Rig;

const WS_GREETING: &str = "hello from the upstream";

/// The page's origin: serves `page` on `/` (set once the gateway's port is known) and takes
/// the page's report on `POST /result`.
struct PageServer {
    port: u16,
    page: Arc<Mutex<String>>,
    reports: mpsc::Receiver<Value>,
}

async fn page_server() -> PageServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, reports) = mpsc::channel(1);
    let page: Arc<Mutex<String>> = Arc::default();
    let served = page.clone();
    tokio::spawn(serve_http1(listener, move |req: Request<Incoming>| {
        let (page, tx) = (served.lock().unwrap().clone(), tx.clone());
        async move {
            if req.method() == http::Method::POST && req.uri().path() == "/result" {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let _ = tx
                    .send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                    .await;
                return Response::new(full(Bytes::new()));
            }
            let mut r = Response::new(full(page.into_bytes()));
            r.headers_mut()
                .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            r
        }
    }));
    PageServer {
        port,
        page,
        reports,
    }
}

/// A WebSocket upstream (RFC 6455 handshake) that greets each client with one text frame and
/// records the request targets it was asked for.
async fn websocket_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(serve_http1(listener, move |mut req: Request<Incoming>| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(req.uri().to_string());
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return r;
            };
            let mut input = key.as_bytes().to_vec();
            input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let digest =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
            let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut frame = vec![0x81, WS_GREETING.len() as u8];
                frame.extend_from_slice(WS_GREETING.as_bytes());
                let _ = io.write_all(&frame).await;
                // Until the browser closes; bounded so a stuck client ends the task.
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(30), async {
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
            let mut r: Response<BoxBody> = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert("upgrade", "websocket".parse().unwrap());
            h.insert("connection", "Upgrade".parse().unwrap());
            h.insert("sec-websocket-accept", accept.parse().unwrap());
            r
        }
    }));
    (url, seen)
}

/// The page: cookie, credentialed fetch with a custom header, WebSocket with a query token.
fn page(gateway: u16, token: &str) -> String {
    format!(
        r#"<!doctype html><html><body><script>
(async () => {{
  const out = {{}};
  document.cookie = "at={token}; path=/; SameSite=Lax";
  try {{
    const r = await fetch("http://127.0.0.1:{gateway}/api/orders?page=2",
      {{ credentials: "include", headers: {{ "X-Client": "spa" }} }});
    out.status = r.status;
    out.body = await r.json();
    out.request_id = r.headers.get("x-request-id");
  }} catch (e) {{ out.fetch_error = String(e); }}
  out.ws = await new Promise((resolve) => {{
    const ws = new WebSocket("ws://127.0.0.1:{gateway}/ws?access_token={token}");
    ws.onmessage = (e) => {{ resolve(e.data); ws.close(); }};
    ws.onerror = () => resolve("error");
    setTimeout(() => resolve("timeout"), 15000);
  }});
  await fetch("/result", {{ method: "POST", body: JSON.stringify(out) }});
}})();
</script></body></html>"#
    )
}

/// Headless Chromium on `url`, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                // Nothing but loopback: any other name fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium (Debian package `chromium`; tests/run.sh installs it)");
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_calls_through_the_gateway_with_a_cookie_and_a_websocket_query_token() {
    let (ws_url, ws_seen) = websocket_upstream().await;
    let mut site = page_server().await;
    let origin = format!("http://127.0.0.1:{}", site.port);
    let rig = Rig::start(|issuer, upstream| {
        Config::new()
            .provider(provider(issuer))
            .route(
                protected("api", "/api", &upstream.url())
                    .auth_line(r#"token_from: ["cookie:at"]"#)
                    .forward("sub", "X-Auth-Subject")
                    .line(&format!(
                        "cors: {{ allow_origins: [\"{origin}\"], allow_methods: [GET], \
                         allow_headers: [x-client], expose_headers: [x-request-id], \
                         allow_credentials: true }}"
                    )),
            )
            .route(
                protected("ws", "/ws", &ws_url).auth_line(r#"token_from: ["query:access_token"]"#),
            )
    })
    .await;
    let token = rig.token();
    *site.page.lock().unwrap() = page(rig.gw.addr.port(), &token);

    let _browser = Browser::open(&format!("{origin}/"));
    let report = tokio::time::timeout(Duration::from_secs(90), site.reports.recv())
        .await
        .expect("the page reported within 90 s")
        .expect("a report");

    // The fetch: preflight answered by the gateway, then the GET with the cookie's token.
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["body"]["path"], "/api/orders?page=2", "{report}");
    assert!(
        report["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "x-request-id is exposed to the page: {report}"
    );
    let seen = rig.upstream.all();
    assert_eq!(seen.len(), 1, "only the GET reached the upstream: {seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path_and_query, "/api/orders?page=2");
    assert_eq!(seen[0].headers["x-auth-subject"], "alice");
    let cookies: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
    assert!(
        cookies
            .iter()
            .all(|c| !c.to_str().unwrap().contains(&token)),
        "the token cookie is not forwarded: {cookies:?}"
    );

    // The WebSocket: authenticated by the query token, which the upstream never sees.
    assert_eq!(report["ws"], WS_GREETING, "{report}");
    let targets = ws_seen.lock().unwrap().clone();
    assert_eq!(targets, ["/ws"], "{targets:?}");
}

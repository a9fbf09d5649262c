//! Real HTTP servers on 127.0.0.1 ephemeral ports: a JWKS/discovery issuer whose answers a test
//! can change at any moment, and an upstream that records everything it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::keys::SigningKey;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub async fn serve_http1<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// What the issuer answers on `/jwks`, changeable while the test runs.
pub struct IssuerState {
    pub jwks: Value,
    pub status: u16,
    pub delay: Duration,
    pub cache_control: Option<String>,
    pub discovery: Value,
    pub raw_body: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct Issuer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<IssuerState>>,
    jwks_hits: Arc<AtomicUsize>,
}

impl Issuer {
    /// An issuer publishing `keys` at `/jwks` (with `alg` members) and OIDC discovery.
    pub async fn start(keys: &[(&SigningKey, &str)]) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let state = Arc::new(Mutex::new(IssuerState {
            jwks: Issuer::jwks_of(keys),
            status: 200,
            delay: Duration::ZERO,
            cache_control: None,
            discovery: json!({"issuer": format!("http://{addr}"), "jwks_uri": format!("http://{addr}/jwks")}),
            raw_body: None,
        }));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let (s, hits) = (state.clone(), jwks_hits.clone());
        tokio::spawn(serve_http1(listener, move |req: Request<Incoming>| {
            let (s, hits) = (s.clone(), hits.clone());
            async move {
                let path = req.uri().path().to_string();
                let (status, body, delay, cache_control) = {
                    let st = s.lock().expect("issuer state");
                    match path.as_str() {
                        "/jwks" => {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let body = st
                                .raw_body
                                .clone()
                                .unwrap_or_else(|| st.jwks.to_string().into_bytes());
                            (st.status, body, st.delay, st.cache_control.clone())
                        }
                        "/.well-known/openid-configuration" => (
                            200,
                            st.discovery.to_string().into_bytes(),
                            Duration::ZERO,
                            None,
                        ),
                        _ => (404, b"not found".to_vec(), Duration::ZERO, None),
                    }
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut response = Response::new(full(body));
                *response.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if let Some(cc) = cache_control {
                    response.headers_mut().insert(
                        http::header::CACHE_CONTROL,
                        cc.parse().expect("cache-control"),
                    );
                }
                response
            }
        }));
        Issuer {
            addr,
            state,
            jwks_hits,
        }
    }

    pub fn jwks_of(keys: &[(&SigningKey, &str)]) -> Value {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(k, alg)| {
                let mut jwk = k.jwk();
                jwk["alg"] = json!(alg);
                jwk
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The issuer string tokens carry (`http://127.0.0.1:port`, which discovery also names).
    pub fn iss(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
    pub fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
    pub fn set_keys(&self, keys: &[(&SigningKey, &str)]) {
        self.state.lock().expect("issuer state").jwks = Issuer::jwks_of(keys);
    }
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().expect("issuer state").jwks = jwks;
    }
    /// Makes `/jwks` answer `status` (e.g. 500 for an outage; 200 to recover).
    pub fn set_status(&self, status: u16) {
        self.state.lock().expect("issuer state").status = status;
    }
    pub fn set_raw_body(&self, body: Option<&[u8]>) {
        self.state.lock().expect("issuer state").raw_body = body.map(<[u8]>::to_vec);
    }
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// An upstream that records every request. Paths with special meaning:
/// `/slow/<ms>` answers after a delay; `/download/<bytes>` streams that many bytes;
/// `/reset` closes the connection without answering; `/ws` accepts a WebSocket upgrade and
/// echoes raw bytes; anything else answers 200 with a JSON echo of method, path and headers.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(serve_http1(listener, move |req| {
            upstream_answer(log.clone(), req)
        }));
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// How many requests reached the upstream: every denial test asserts 0.
    pub fn requests(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().expect("seen").last().cloned()
    }
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn upstream_answer(
    log: Arc<Mutex<Vec<Seen>>>,
    mut req: Request<Incoming>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/".into(), |pq| pq.to_string());
    let method = req.method().to_string();
    let headers = req.headers().clone();
    if path == "/ws" {
        log.lock().expect("seen").push(Seen {
            method,
            path_and_query,
            headers: headers.clone(),
            body_len: 0,
        });
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().expect("hv"));
        response
            .headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().expect("hv"));
        return response;
    }
    // Count the body without holding it: uploads of 100 MB stream through.
    let mut body = req.into_body();
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    log.lock().expect("seen").push(Seen {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
        headers: headers.clone(),
        body_len,
    });
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(total) = path
        .strip_prefix("/download/")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..total.div_ceil(chunk.len())).map(move |i| {
            let len = chunk.len().min(total - i * chunk.len());
            Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
        });
        let stream = futures_stream(chunks);
        return Response::new(StreamBody::new(stream).boxed());
    }
    if path == "/reset" {
        // Answer nothing: a broken body makes hyper drop the connection mid-response.
        let broken = futures_stream(std::iter::once(Err(std::io::Error::other("reset"))));
        return Response::new(StreamBody::new(broken).boxed());
    }
    let header_map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let echo = json!({"method": method, "path": path_and_query, "headers": header_map, "body_len": body_len});
    let mut response = Response::new(full(echo.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().expect("hv"),
    );
    response
}

/// A stream from an iterator, without pulling in a futures crate.
fn futures_stream<T: Send + 'static>(
    iter: impl Iterator<Item = T> + Send + Unpin + 'static,
) -> IterStream<impl Iterator<Item = T> + Send + Unpin> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> tokio_stream_shim::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// `http_body_util::StreamBody` needs `futures_core::Stream`; re-exported here under one name.
pub mod tokio_stream_shim {
    pub use futures_core::Stream;
}

//! A real gRPC stack on both sides of the gateway: tonic's server and client halves
//! (`tonic::server::Grpc`, `tonic::client::Grpc`, prost messages) over HTTP/2 connections that
//! hyper drives here, h2c or TLS with ALPN `h2`, all on 127.0.0.1 ephemeral ports.
//!
//! tonic's own transport is left out on purpose: its server and its channel both enforce
//! `grpc-timeout` themselves (and report it as `CANCELLED`), which would race the gateway's own
//! deadline and hide what the gateway did. Here only the gateway can end a call on a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::Grpc;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::Pki;

/// Large enough for the 4 MB messages (tonic's decoder refuses more than 4 MiB by default).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The one message type of the test service; which fields matter depends on the method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// ServerStream: replies to send. Sleep: milliseconds. ClientStream reply: messages counted.
    #[prost(uint64, tag = "3")]
    pub n: u64,
    /// ServerStream: payload bytes of each reply. ClientStream reply: payload bytes summed.
    #[prost(uint64, tag = "4")]
    pub size: u64,
    /// ServerStream: after the first reply, wait for `GrpcUpstream::release`.
    #[prost(bool, tag = "5")]
    pub hold: bool,
}

impl Msg {
    pub fn text(text: &str) -> Msg {
        Msg {
            text: text.into(),
            ..Msg::default()
        }
    }
}

/// The test service's methods. The server dispatches on the method (the last path segment)
/// whatever the service name, so each gateway route gets a service name of its own
/// (`/test.Echo/Unary`, `/anon.Echo/Unary`, …) and one upstream serves them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Echoes the request.
    Unary,
    /// `n` replies (`text` = index, `size` payload bytes each), optionally held after the first.
    ServerStream,
    /// Counts messages (`n`) and payload bytes (`size`) until the client closes.
    ClientStream,
    /// Echoes each message as it arrives.
    Bidi,
    /// `NOT_FOUND` with `FAIL_MESSAGE`, `FAIL_DETAILS` and `x-detail: FAIL_DETAIL`, trailers-only.
    Fail,
    /// Two replies, then the same status as `Fail` in real trailers.
    FailStream,
    /// Answers after `n` milliseconds.
    Sleep,
    /// Never answers.
    Hang,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Unary => "Unary",
            Method::ServerStream => "ServerStream",
            Method::ClientStream => "ClientStream",
            Method::Bidi => "Bidi",
            Method::Fail => "Fail",
            Method::FailStream => "FailStream",
            Method::Sleep => "Sleep",
            Method::Hang => "Hang",
        }
    }

    fn parse(name: &str) -> Option<Method> {
        [
            Method::Unary,
            Method::ServerStream,
            Method::ClientStream,
            Method::Bidi,
            Method::Fail,
            Method::FailStream,
            Method::Sleep,
            Method::Hang,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// `/{service}/{method}`.
pub fn path(service: &str, method: Method) -> String {
    format!("/{service}/{}", method.as_str())
}

/// Percent-encoded by tonic on the way out, so it tests that `grpc-message` passes unaltered.
pub const FAIL_MESSAGE: &str = "order 42 not found: ünïcode, 100% sure";
pub const FAIL_DETAIL: &str = "shelf-7";
pub const FAIL_DETAILS: &[u8] = b"\x08\x2a binary details";

fn fail_status() -> Status {
    let mut md = MetadataMap::new();
    md.insert("x-detail", MetadataValue::from_static(FAIL_DETAIL));
    Status::with_details_and_metadata(
        Code::NotFound,
        FAIL_MESSAGE,
        Bytes::from_static(FAIL_DETAILS),
        md,
    )
}

/// One call as the upstream received it: the path and the HTTP/2 headers exactly as they arrived.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub headers: HeaderMap,
}

impl Call {
    /// Every value of header `name`, as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `grpc-timeout` the upstream was given, if any.
    pub fn grpc_timeout(&self) -> Option<Duration> {
        parse_grpc_timeout(self.headers.get("grpc-timeout")?.to_str().ok()?)
    }
}

/// `grpc-timeout` as the gRPC HTTP/2 protocol spells it: at most 8 digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How one `ClientStream` call ended upstream: `clean` when the client's stream ended normally,
/// false when it was reset or broken (a truncated upload must never look complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    pub messages: u64,
    pub bytes: u64,
    pub clean: bool,
}

struct State {
    calls: Mutex<Vec<Call>>,
    ends: Mutex<Vec<StreamEnd>>,
    /// Messages `ClientStream` has read so far, over all calls.
    received: AtomicU64,
    release: Semaphore,
    accepted: AtomicUsize,
    open: AtomicUsize,
    alpn: Mutex<Vec<Option<Vec<u8>>>>,
}

impl Default for State {
    fn default() -> State {
        State {
            calls: Mutex::default(),
            ends: Mutex::default(),
            received: AtomicU64::new(0),
            release: Semaphore::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            alpn: Mutex::default(),
        }
    }
}

struct Control {
    /// Bumped to make every open connection send GOAWAY and finish its streams.
    goaway: watch::Sender<u64>,
    /// Set to stop accepting, GOAWAY every connection and free the port.
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A listener bound before its server starts, so a gateway config can name the port before the
/// TLS variant gets its certificate from that gateway's test CA.
pub struct Bound {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Bound {
    pub async fn new() -> Bound {
        Bound::on("127.0.0.1:0".parse().expect("addr")).await
    }

    async fn on(addr: SocketAddr) -> Bound {
        let listener = TcpListener::bind(addr).await.expect("bind gRPC upstream");
        let addr = listener.local_addr().expect("gRPC upstream addr");
        Bound { listener, addr }
    }

    /// Serves h2c (HTTP/2 with prior knowledge).
    pub fn h2c(self) -> GrpcUpstream {
        GrpcUpstream::serve(self, None, Arc::default())
    }

    /// Serves TLS with ALPN `h2` only, with a certificate for `127.0.0.1` from `pki`.
    pub fn tls(self, pki: &Pki) -> GrpcUpstream {
        GrpcUpstream::serve(self, Some(upstream_acceptor(pki)), Arc::default())
    }
}

fn upstream_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("test certificate chain");
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("test key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("TLS server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The gRPC test service, recording every call it receives.
#[derive(Clone)]
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    control: Arc<Control>,
}

impl GrpcUpstream {
    /// An h2c upstream on a fresh port.
    pub async fn h2c() -> GrpcUpstream {
        Bound::new().await.h2c()
    }

    fn serve(
        bound: Bound,
        tls: Option<tokio_rustls::TlsAcceptor>,
        state: Arc<State>,
    ) -> GrpcUpstream {
        let (goaway, _) = watch::channel(0u64);
        let (stop, _) = watch::channel(false);
        let control = Arc::new(Control {
            goaway,
            stop,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(
            bound.listener,
            tls.clone(),
            state.clone(),
            control.clone(),
        ));
        *control.task.lock().expect("task") = Some(task);
        GrpcUpstream {
            addr: bound.addr,
            tls,
            state,
            control,
        }
    }

    /// `http://127.0.0.1:port` or `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().expect("calls").clone()
    }

    /// The calls received on `path`.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    pub fn client_stream_ends(&self) -> Vec<StreamEnd> {
        self.state.ends.lock().expect("ends").clone()
    }

    /// Messages `ClientStream` has read so far, all calls together.
    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Lets one held `ServerStream` call go on past its first reply.
    pub fn release(&self) {
        self.state.release.add_permits(1);
    }

    /// Connections accepted since the start (restarts included).
    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// The ALPN protocol each TLS connection negotiated, in accept order.
    pub fn alpn(&self) -> Vec<Option<Vec<u8>>> {
        self.state.alpn.lock().expect("alpn").clone()
    }

    /// Graceful GOAWAY on every open connection (in-flight streams finish); keeps listening.
    pub fn goaway(&self) {
        self.control.goaway.send_modify(|epoch| *epoch += 1);
    }

    /// A graceful shutdown: stops accepting, sends GOAWAY on every connection, waits (5 s at
    /// most) for them to close and frees the port.
    pub async fn stop(&self) {
        self.control.stop.send_replace(true);
        let task = self.control.task.lock().expect("task").take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// A server listening again on the same port, with the same log (after `stop`).
    pub async fn restart(&self) -> GrpcUpstream {
        let bound = Bound::on(self.addr).await;
        GrpcUpstream::serve(bound, self.tls.clone(), self.state.clone())
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    control: Arc<Control>,
) {
    let mut stop = control.stop.subscribe();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let goaway = control.goaway.subscribe();
                let stop = control.stop.subscribe();
                let (state, tls) = (state.clone(), tls.clone());
                conns.spawn(async move {
                    state.open.fetch_add(1, Ordering::SeqCst);
                    match tls {
                        None => serve_connection(tcp, state.clone(), goaway, stop).await,
                        Some(acceptor) => {
                            if let Ok(Ok(io)) = tokio::time::timeout(
                                Duration::from_secs(5),
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                let alpn = io.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                                state.alpn.lock().expect("alpn").push(alpn);
                                serve_connection(io, state.clone(), goaway, stop).await;
                            }
                        }
                    }
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
}

async fn serve_connection<IO>(
    io: IO,
    state: Arc<State>,
    mut goaway: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| dispatch(state.clone(), req));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    goaway.borrow_and_update();
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = goaway.changed() => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

fn grpc() -> Grpc<ProstCodec<Msg, Msg>> {
    Grpc::new(ProstCodec::default())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

async fn dispatch(
    state: Arc<State>,
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let path = req.uri().path().to_string();
    state.calls.lock().expect("calls").push(Call {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let method = path.rsplit('/').next().and_then(Method::parse);
    let s = state.clone();
    let response = match method {
        Some(Method::Unary) => grpc().unary(Handler(unary), req).await,
        Some(Method::ServerStream) => {
            grpc()
                .server_streaming(Handler(move |r| server_stream(s.clone(), r)), req)
                .await
        }
        Some(Method::ClientStream) => {
            grpc()
                .client_streaming(Handler(move |r| client_stream(s.clone(), r)), req)
                .await
        }
        Some(Method::Bidi) => grpc().streaming(Handler(bidi), req).await,
        Some(Method::Fail) => grpc().unary(Handler(fail), req).await,
        Some(Method::FailStream) => grpc().server_streaming(Handler(fail_stream), req).await,
        Some(Method::Sleep) => grpc().unary(Handler(sleep), req).await,
        Some(Method::Hang) => grpc().unary(Handler(hang), req).await,
        None => Status::unimplemented("no such method").into_http(),
    };
    Ok(response)
}

/// A closure as a tower `Service`, which tonic's service traits are implemented for.
struct Handler<F>(F);

impl<F, Fut, Req, Res> tower_service::Service<Request<Req>> for Handler<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Res>, Status>>,
{
    type Response = Response<Res>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Req>) -> Fut {
        (self.0)(req)
    }
}

/// Replies from a channel, so handlers stream without a futures crate.
pub struct RxStream<T>(pub mpsc::Receiver<T>);

impl<T> futures_core::Stream for RxStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

type Replies = RxStream<Result<Msg, Status>>;

async fn unary(req: Request<Msg>) -> Result<Response<Msg>, Status> {
    let mut response = Response::new(req.into_inner());
    response
        .metadata_mut()
        .insert("x-upstream", MetadataValue::from_static("grpc-echo"));
    Ok(response)
}

async fn server_stream(state: Arc<State>, req: Request<Msg>) -> Result<Response<Replies>, Status> {
    let want = req.into_inner();
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        for i in 0..want.n {
            let reply = Msg {
                text: i.to_string(),
                payload: pattern(want.size as usize),
                ..Msg::default()
            };
            if tx.send(Ok(reply)).await.is_err() {
                return;
            }
            if i == 0 && want.hold {
                match state.release.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
        }
    });
    Ok(Response::new(RxStream(rx)))
}

/// Records how the stream ended, also when hyper drops the handler on a reset.
struct EndGuard {
    state: Arc<State>,
    end: StreamEnd,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Ok(mut ends) = self.state.ends.lock() {
            ends.push(self.end);
        }
    }
}

async fn client_stream(
    state: Arc<State>,
    req: Request<Streaming<Msg>>,
) -> Result<Response<Msg>, Status> {
    let mut incoming = req.into_inner();
    let mut guard = EndGuard {
        state: state.clone(),
        end: StreamEnd {
            messages: 0,
            bytes: 0,
            clean: false,
        },
    };
    while let Some(m) = incoming.message().await? {
        guard.end.messages += 1;
        guard.end.bytes += m.payload.len() as u64;
        state.received.fetch_add(1, Ordering::SeqCst);
    }
    guard.end.clean = true;
    Ok(Response::new(Msg {
        n: guard.end.messages,
        size: guard.end.bytes,
        ..Msg::default()
    }))
}

async fn bidi(req: Request<Streaming<Msg>>) -> Result<Response<Replies>, Status> {
    let mut incoming = req.into_inner();
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let next = incoming.message().await;
            let done = !matches!(next, Ok(Some(_)));
            let item = match next {
                Ok(Some(m)) => Ok(m),
                Ok(None) => return,
                Err(status) => Err(status),
            };
            if tx.send(item).await.is_err() || done {
                return;
            }
        }
    });
    Ok(Response::new(RxStream(rx)))
}

async fn fail(_req: Request<Msg>) -> Result<Response<Msg>, Status> {
    Err(fail_status())
}

async fn fail_stream(_req: Request<Msg>) -> Result<Response<Replies>, Status> {
    let (tx, rx) = mpsc::channel(4);
    for item in [
        Ok(Msg::text("first")),
        Ok(Msg::text("second")),
        Err(fail_status()),
    ] {
        let _ = tx.send(item).await;
    }
    Ok(Response::new(RxStream(rx)))
}

async fn sleep(req: Request<Msg>) -> Result<Response<Msg>, Status> {
    let m = req.into_inner();
    tokio::time::sleep(Duration::from_millis(m.n)).await;
    Ok(Response::new(m))
}

async fn hang(_req: Request<Msg>) -> Result<Response<Msg>, Status> {
    std::future::pending().await
}

/// `len` bytes that are not all alike, so a misplaced chunk shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// One HTTP response as the client's connection received it, before tonic read it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Exactly one HTTP/2 connection (h2c or TLS with ALPN `h2`), as a tower service tonic's client
/// sends on. Every response head is recorded, so tests can check the HTTP layer too.
#[derive(Clone)]
pub struct H2Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<http::Response<Incoming>, hyper::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let (mut send, exchanges) = (self.send.clone(), self.exchanges.clone());
        Box::pin(async move {
            let response = send.send_request(req).await?;
            exchanges.lock().expect("exchanges").push(Exchange {
                path,
                status: response.status(),
                headers: response.headers().clone(),
            });
            Ok(response)
        })
    }
}

/// A gRPC client on one HTTP/2 connection; clones share that connection.
#[derive(Clone)]
pub struct GrpcClient {
    grpc: tonic::client::Grpc<H2Connection>,
    conn: H2Connection,
}

impl GrpcClient {
    /// h2c with prior knowledge to `addr`.
    pub async fn h2c(addr: SocketAddr) -> GrpcClient {
        let tcp = connect(addr).await;
        GrpcClient::over(tcp, format!("http://{addr}")).await
    }

    /// TLS to `addr` as `localhost`, trusting only `ca`, offering only ALPN `h2` (and insisting
    /// on getting it).
    pub async fn tls(addr: SocketAddr, ca: &CertificateDer<'static>) -> GrpcClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("test CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = connect(addr).await;
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .expect("TLS handshake within 5 s")
            .expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN must pick h2"
        );
        GrpcClient::over(tls, format!("https://localhost:{}", addr.port())).await
    }

    async fn over<IO>(io: IO, origin: String) -> GrpcClient
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = tokio::time::timeout(
            Duration::from_secs(5),
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(io)),
        )
        .await
        .expect("HTTP/2 handshake within 5 s")
        .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let conn = H2Connection {
            send,
            exchanges: Arc::default(),
        };
        let grpc =
            tonic::client::Grpc::with_origin(conn.clone(), origin.parse().expect("origin URI"))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
        GrpcClient { grpc, conn }
    }

    /// The connection itself, for a generated client (`AuthorizationClient::with_origin`).
    pub fn connection(&self) -> H2Connection {
        self.conn.clone()
    }

    /// The response heads this connection received, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.conn.exchanges.lock().expect("exchanges").clone()
    }

    /// The last response head received for `path`.
    pub fn last_exchange(&self, path: &str) -> Option<Exchange> {
        self.exchanges().into_iter().rev().find(|e| e.path == path)
    }

    /// Whether the connection is gone (closed by the peer, GOAWAY and done, or broken).
    pub fn is_closed(&self) -> bool {
        self.conn.send.is_closed()
    }

    async fn ready(&self) -> Result<tonic::client::Grpc<H2Connection>, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("client connection: {e}")))?;
        Ok(grpc)
    }

    pub async fn unary(&self, path: &str, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let path = path.parse().expect("path");
        self.ready()
            .await?
            .unary(req, path, ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn server_stream(
        &self,
        path: &str,
        req: Request<Msg>,
    ) -> Result<Response<Streaming<Msg>>, Status> {
        let path = path.parse().expect("path");
        self.ready()
            .await?
            .server_streaming(req, path, ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn client_stream(
        &self,
        path: &str,
        req: Request<RxStream<Msg>>,
    ) -> Result<Response<Msg>, Status> {
        let path = path.parse().expect("path");
        self.ready()
            .await?
            .client_streaming(req, path, ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn bidi(
        &self,
        path: &str,
        req: Request<RxStream<Msg>>,
    ) -> Result<Response<Streaming<Msg>>, Status> {
        let path = path.parse().expect("path");
        self.ready()
            .await?
            .streaming(req, path, ProstCodec::<Msg, Msg>::default())
            .await
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect within 5 s")
        .expect("connect");
    let _ = tcp.set_nodelay(true);
    tcp
}

/// A request stream the test feeds message by message; dropping the sender ends it.
pub fn outbox() -> (mpsc::Sender<Msg>, RxStream<Msg>) {
    let (tx, rx) = mpsc::channel(4);
    (tx, RxStream(rx))
}

/// `message` with `authorization: Bearer token` when a token is given.
pub fn request<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(token) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("token metadata"),
        );
    }
    req
}

/// `fut`, or a panic naming `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {limit:?}"),
    }
}

//! The accept loops. `serve` is the one entry for the binary and the tests: it is handed bound
//! listeners and a shutdown future, and never binds or reads the environment itself.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::config::Limits;
use crate::gateway::Gateway;
use crate::proxy::decision::handle_decision;
use crate::proxy::pipeline::{handle, ConnInfo};
use crate::server::activity::{Activity, Expiry, IdleClock, TrackedBody};
use crate::server::io::ConnIo;
use crate::server::preface::{read_preface, Prefixed};
use crate::server::slots::{Caps, ConnectionSlots, Slot};
use crate::snapshot::Snapshot;
use crate::tls;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// The admin listener's bound on a TLS handshake and on a request head.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
    /// The decision listener, when the config has a `forward_auth` section.
    pub forward_auth: Option<TcpListener>,
}

/// The two listeners that serve requests through the pipeline: the proxy, and the decision
/// service for other proxies. They share connection handling (caps, TLS, timeouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    Proxy,
    Decisions,
}

/// Every connection task, so that shutdown can ask them to finish (`drain`) and, past the drain
/// deadline, make them stop (`close`).
#[derive(Clone, Default)]
struct Connections {
    tasks: TaskTracker,
    drain: CancellationToken,
    close: CancellationToken,
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for up
/// to `drain` and stops the background refreshers.
pub async fn serve(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    gateway.start_background().await;
    let connections = Connections::default();
    let slots = ConnectionSlots::new(gateway.metrics.connections());
    let admin_listener = listeners.admin;
    let public_listener = listeners.public;
    let decision_listener = listeners.forward_auth;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = public_listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_public(&gateway, &connections, &slots, stream, peer, Front::Proxy)
                }
                Err(e) => accept_error(e).await,
            },
            accepted = accept_if_some(decision_listener.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    accept_public(&gateway, &connections, &slots, stream, peer, Front::Decisions)
                }
                Err(e) => accept_error(e).await,
            },
            accepted = admin_listener.accept() => match accepted {
                Ok((stream, _)) => serve_admin(&gateway, &connections, stream),
                Err(e) => accept_error(e).await,
            },
        }
    }
    drop(public_listener);
    drop(admin_listener);
    drop(decision_listener);
    tracing::info!(
        connections = connections.tasks.len(),
        "shutting down: draining in-flight requests"
    );
    connections.tasks.close();
    connections.drain.cancel();
    tokio::select! {
        () = connections.tasks.wait() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
            connections.close.cancel();
            connections.tasks.wait().await;
        }
    }
    gateway.stop_background().await;
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept_if_some(
    listener: Option<&TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and similar: back off instead of spinning on the error.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Admits the connection against the connection caps, before anything (TLS included) is spent
/// on it; a refused one is closed by dropping it.
fn accept_public(
    gateway: &Arc<Gateway>,
    connections: &Connections,
    slots: &Arc<ConnectionSlots>,
    stream: TcpStream,
    peer: SocketAddr,
    front: Front,
) {
    let snapshot = gateway.snapshot();
    let server = &snapshot.config.server;
    let trusted_proxies = match (front, &snapshot.config.forward_auth) {
        (Front::Decisions, Some(fa)) => &fa.trusted_proxies,
        _ => &server.trusted_proxies,
    };
    let caps = Caps {
        max_connections: server.limits.max_connections,
        max_connections_per_ip: server.limits.max_connections_per_ip,
        trusted_proxies,
    };
    match slots.admit(peer.ip(), caps) {
        Ok(slot) => serve_public(gateway, connections, &snapshot, stream, peer, slot, front),
        Err(why) => tracing::debug!(
            client = %peer.ip(),
            reason = why.as_str(),
            "connection refused at accept"
        ),
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The idle clock times request heads (see `activity`): hyper's own timer would also
        // close every idle keep-alive connection after `header_read_timeout`.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(64))
        // A stream whose upstream stops reading its body holds at most its own window of the
        // connection's: 16 of them, not one, before the client's other streams stall too.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// HTTP/2 receive windows for client request bodies (see `connection_builder`).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// What a public connection's task carries until its first bytes are in.
struct PublicConn {
    gateway: Arc<Gateway>,
    connections: Connections,
    limits: Limits,
    slot: Slot,
}

fn serve_public(
    gateway: &Arc<Gateway>,
    connections: &Connections,
    snapshot: &Snapshot,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    front: Front,
) {
    let _ = stream.set_nodelay(true);
    let tls = match front {
        Front::Proxy => snapshot.tls.clone(),
        Front::Decisions => snapshot.forward_auth_tls.clone(),
    };
    let limits = snapshot.config.server.limits.clone();
    // The TLS handshake and the first bytes share one deadline; the idle clock takes over once
    // the protocol is known.
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    let public = PublicConn {
        gateway: gateway.clone(),
        connections: connections.clone(),
        limits,
        slot,
    };
    let drain = connections.drain.clone();
    connections.tasks.spawn(async move {
        match tls {
            Some(acceptor) => {
                let opened = async {
                    let stream =
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return None;
                            }
                            Err(_) => return None,
                        };
                    let client_cert = tls::client_thumbprint(stream.get_ref().1);
                    first_bytes(stream, deadline)
                        .await
                        .map(|stream| (stream, client_cert))
                };
                let Some(Some((stream, client_cert))) = unless_draining(&drain, opened).await
                else {
                    return;
                };
                let conn = ConnInfo {
                    peer,
                    tls: true,
                    client_cert,
                };
                serve_front(public, stream, conn, front).await;
            }
            None => {
                let opened = first_bytes(stream, deadline);
                let Some(Some(stream)) = unless_draining(&drain, opened).await else {
                    return;
                };
                let conn = ConnInfo {
                    peer,
                    tls: false,
                    client_cert: None,
                };
                serve_front(public, stream, conn, front).await;
            }
        }
    });
}

/// A connection that has not sent its first bytes has no request to finish: a drain closes it
/// at once instead of waiting out its header deadline.
async fn unless_draining<F: Future>(drain: &CancellationToken, opening: F) -> Option<F::Output> {
    tokio::select! {
        () = drain.cancelled() => None,
        opened = opening => Some(opened),
    }
}

/// The connection with its first bytes read (see `preface`), or None if they did not come in
/// time: a silent or stalled client is dropped instead of holding the connection forever.
async fn first_bytes<IO: AsyncRead + Unpin>(
    mut io: IO,
    deadline: tokio::time::Instant,
) -> Option<Prefixed<IO>> {
    match tokio::time::timeout_at(deadline, read_preface(&mut io)).await {
        Ok(Ok(prefix)) => Some(Prefixed::new(prefix, io)),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!("client sent no request in time; closing");
            None
        }
    }
}

async fn serve_front<IO>(public: PublicConn, io: Prefixed<IO>, conn: ConnInfo, front: Front)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match front {
        Front::Proxy => serve_http(public, io, conn, handle).await,
        Front::Decisions => serve_http(public, io, conn, handle_decision).await,
    }
}

/// Drives one connection until it ends, closing it when its idle clock runs out or the gateway
/// shuts down; `serve` answers each request.
async fn serve_http<IO, S, F, B>(public: PublicConn, io: Prefixed<IO>, conn: ConnInfo, serve: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Arc<Gateway>, ConnInfo, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    let PublicConn {
        gateway,
        connections,
        limits,
        slot,
    } = public;
    let idle_timeout = limits.idle_timeout;
    let activity = Activity::new(!io.is_http2());
    let mut clock = IdleClock::new(activity.clone(), idle_timeout, limits.header_read_timeout);
    let io = ConnIo::new(io, activity.clone(), idle_timeout, slot);
    let service = service_fn(move |request| {
        let stream = activity.stream_started();
        let gateway = gateway.clone();
        async move {
            let Ok(response) = serve(gateway, conn, request).await;
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, stream, idle_timeout)))
        }
    });
    let builder = connection_builder(&limits);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = connections.close.cancelled() => return,
            () = connections.drain.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            expiry = clock.expired() => match expiry {
                Expiry::Head => {
                    tracing::debug!("request head not complete in time; closing");
                    return;
                }
                Expiry::Idle if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                // Idle for a whole period after the GOAWAY: the client never closed its end.
                Expiry::Idle => return,
            }
        }
    }
}

fn serve_admin(gateway: &Arc<Gateway>, connections: &Connections, stream: TcpStream) {
    let tls = gateway.snapshot().admin_tls.clone();
    let gateway = gateway.clone();
    let task_connections = connections.clone();
    connections.tasks.spawn(async move {
        let connections = task_connections;
        let Some(acceptor) = tls else {
            return serve_admin_http(gateway, stream, &connections).await;
        };
        let handshake = tokio::time::timeout(ADMIN_HEADER_TIMEOUT, acceptor.accept(stream));
        match unless_draining(&connections.drain, handshake).await {
            Some(Ok(Ok(stream))) => serve_admin_http(gateway, stream, &connections).await,
            Some(Ok(Err(e))) => tracing::debug!(error = %e, "admin TLS handshake failed"),
            Some(Err(_)) => tracing::debug!("admin TLS handshake timed out"),
            None => {}
        }
    });
}

async fn serve_admin_http<IO>(gateway: Arc<Gateway>, io: IO, connections: &Connections)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| admin::handle(gateway.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = connections.drain.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection => {}
        () = connections.close.cancelled() => {}
    }
}

//! The accept loops. `serve` is the one entry for the binary and the tests: it is handed bound
//! listeners and a shutdown future, and never binds or reads the environment itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::admin;
use crate::gateway::Gateway;
use crate::proxy::pipeline::{handle, ConnInfo};
use crate::server::io::ConnIo;
use crate::server::preface::{read_preface, Prefixed};
use crate::server::slots::{Caps, ConnectionSlots, Slot};
use crate::snapshot::Snapshot;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
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
    let graceful = GracefulShutdown::new();
    let slots = ConnectionSlots::new(gateway.metrics.connections());
    let admin_listener = listeners.admin;
    let public_listener = listeners.public;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = public_listener.accept() => match accepted {
                Ok((stream, peer)) => accept_public(&gateway, &graceful, &slots, stream, peer),
                Err(e) => accept_error(e).await,
            },
            accepted = admin_listener.accept() => match accepted {
                Ok((stream, _)) => serve_admin(&gateway, &graceful, stream),
                Err(e) => accept_error(e).await,
            },
        }
    }
    drop(public_listener);
    drop(admin_listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
    gateway.stop_background().await;
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
    graceful: &GracefulShutdown,
    slots: &Arc<ConnectionSlots>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let snapshot = gateway.snapshot();
    let server = &snapshot.config.server;
    let caps = Caps {
        max_connections: server.limits.max_connections,
        max_connections_per_ip: server.limits.max_connections_per_ip,
        trusted_proxies: &server.trusted_proxies,
    };
    match slots.admit(peer.ip(), caps) {
        Ok(slot) => serve_public(gateway, graceful, &snapshot, stream, peer, slot),
        Err(why) => tracing::debug!(
            client = %peer.ip(),
            reason = why.as_str(),
            "connection refused at accept"
        ),
    }
}

fn connection_builder(gateway: &Gateway) -> auto::Builder<TokioExecutor> {
    let limits = gateway.snapshot().config.server.limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

fn serve_public(
    gateway: &Arc<Gateway>,
    graceful: &GracefulShutdown,
    snapshot: &Snapshot,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let tls = snapshot.tls.clone();
    // The TLS handshake and the first bytes share one deadline; hyper's HTTP/1 header timeout
    // takes over once the protocol is known.
    let deadline = tokio::time::Instant::now() + snapshot.config.server.limits.header_read_timeout;
    let builder = connection_builder(gateway);
    let gateway = gateway.clone();
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        match tls {
            Some(acceptor) => {
                let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let Some(stream) = first_bytes(stream, deadline).await else {
                    return;
                };
                let conn = ConnInfo { peer, tls: true };
                serve_http(builder, ConnIo::new(stream, slot), gateway, conn, watcher).await;
            }
            None => {
                let Some(stream) = first_bytes(stream, deadline).await else {
                    return;
                };
                let conn = ConnInfo { peer, tls: false };
                serve_http(builder, ConnIo::new(stream, slot), gateway, conn, watcher).await;
            }
        }
    });
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

async fn serve_http<IO>(
    builder: auto::Builder<TokioExecutor>,
    io: IO,
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let gateway = gateway.clone();
        async move { handle(gateway, conn, req).await }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let _ = watcher.watch(connection.into_owned()).await;
}

fn serve_admin(gateway: &Arc<Gateway>, graceful: &GracefulShutdown, stream: TcpStream) {
    let gateway = gateway.clone();
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        let service = service_fn(move |req| admin::handle(gateway.clone(), req));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let _ = watcher.watch(connection).await;
    });
}

//! Slow clients: whatever a connection trickles in (or withholds), it is closed once
//! `header_read_timeout` (1 s here) passes without a complete request head.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::yaml::{anonymous, server, Config};
use crate::support::{TestGateway, Upstream};

/// Upper bound for "closed after the 1 s timeout"; generous for a loaded CI machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(4);

/// `/public` to `upstream`, anonymous, with a 1 s `header_read_timeout`, over TLS or not.
fn slow_config(upstream: &Upstream, tls: bool) -> Config {
    let server = server().limits("header_read_timeout: 1s");
    Config::new()
        .server(if tls { server.tls() } else { server })
        .route(anonymous("public", "/public", &upstream.url()))
}

/// Sends `first`, then drips `drip` one byte every 250 ms; returns how long the gateway kept the
/// connection open (None if it was still open after 8 s), and what it answered.
async fn hold_open(
    addr: SocketAddr,
    first: &'static [u8],
    drip: &'static [u8],
) -> (Option<Duration>, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let writer_task = tokio::spawn(async move {
        if writer.write_all(first).await.is_err() {
            return;
        }
        for b in drip.iter().cycle().take(64) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
        }
        // Keep the write half open (no FIN): a slowloris client never finishes.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    writer_task.abort();
    (closed, got)
}

fn assert_closed_by_timeout(what: &str, (closed, got): (Option<Duration>, Vec<u8>)) {
    let took = closed.unwrap_or_else(|| panic!("{what}: connection still open after 8 s"));
    assert!(
        took >= Duration::from_millis(800) && took <= CLOSED_WITHIN,
        "{what}: closed after {took:?}, expected about 1 s"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
        "{what}: unexpected answer {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_line_and_headers_are_cut_off() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(slow_config(&upstream, false)).await;
    let (line, headers) = tokio::join!(
        hold_open(gw.addr, b"GET /pub", b"lic/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        hold_open(
            gw.addr,
            b"GET /public/x HTTP/1.1\r\nHost: a\r\n",
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ),
    );
    assert_closed_by_timeout("partial request line", line);
    assert_closed_by_timeout("partial headers", headers);
    assert_eq!(upstream.requests(), 0);
    // The gateway still serves everyone else.
    assert_eq!(gw.get("/public/ok", None).await.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_preface_connections_are_cut_off() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(slow_config(&upstream, false)).await;
    let (silent, preface) = tokio::join!(
        hold_open(gw.addr, b"", b""),
        // Bytes that could still become the HTTP/2 preface, so the protocol is never decided.
        hold_open(gw.addr, b"PRI * HTTP/2.0\r\n", b""),
    );
    assert_closed_by_timeout("silent connection", silent);
    assert_closed_by_timeout("partial HTTP/2 preface", preface);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connection_is_cut_off() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(slow_config(&upstream, true)).await;
    assert_closed_by_timeout(
        "TLS without a handshake",
        hold_open(gw.addr, b"", b"").await,
    );

    // A completed handshake followed by silence is cut off the same way.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gw.pki.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(8), tls.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent TLS client still connected after 8 s: {closed:?}"
    );
    assert!(
        started.elapsed() <= CLOSED_WITHIN,
        "closed after {:?}",
        started.elapsed()
    );

    assert_eq!(gw.get("/public/ok", None).await.status(), 200);
    gw.stop().await;
}

//! The proxy end to end: TLS and HTTP/2, streaming and limits, slow clients, WebSocket, forwarded
//! headers, path normalization, routing, upstream failures and the admin probes. Raw sockets
//! stand in for clients that send what reqwest never would.

mod admin;
mod connections;
mod headers;
mod limits;
mod paths;
mod routing;
mod slowloris;
mod streaming;
mod tls;
mod upstream_failures;
pub mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/1.x response read off a raw socket until the server closed it.
#[derive(Debug)]
pub struct RawResponse {
    /// 0 when the server closed the connection without answering.
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Splits a response read off a socket into status, head and body.
    pub fn parse(bytes: &[u8]) -> RawResponse {
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(bytes.len());
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let body = bytes.get(split + 4..).unwrap_or_default().to_vec();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        RawResponse { status, head, body }
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it (10 s at most).
pub async fn raw(addr: SocketAddr, request: impl AsRef<[u8]>) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect to gateway");
    // The server may answer and close before reading everything (413): keep what came back.
    let _ = stream.write_all(request.as_ref()).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the gateway did not close the connection within 10 s; got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    RawResponse::parse(&out)
}

/// `GET target` with `Host: host` and `Connection: close`.
pub async fn raw_get(addr: SocketAddr, host: &str, target: &str) -> RawResponse {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A loopback port nothing listens on (bound once, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls `cond` every 20 ms for up to `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The wait for a client's first bytes, under the header deadline.
//!
//! hyper-util's `auto` builder reads the start of a connection to tell HTTP/1 from the HTTP/2
//! preface before any HTTP/1 header timeout starts, and waits for those bytes forever: a client
//! that connects and says nothing (or stops inside `PRI * HTTP/2.0`) would hold its connection,
//! and a drain slot, indefinitely. So the listener reads those bytes itself under a deadline and
//! hands them back through [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes received can no longer be the HTTP/2 preface, or are all of it: the
/// point where the protocol is decided. Never reads past the preface's length.
pub async fn read_preface<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<Bytes> {
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = io.read(&mut seen[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if filled == seen.len() || seen[..filled] != H2_PREFACE[..filled] {
            return Ok(Bytes::copy_from_slice(&seen[..filled]));
        }
    }
}

/// A connection whose first bytes were already read: they are replayed before the rest.
pub struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Bytes, io: IO) -> Prefixed<IO> {
        Prefixed { prefix, io }
    }

    /// The connection opened with the HTTP/2 preface (else it speaks HTTP/1). Decided by the
    /// same bytes hyper-util's `auto` builder decides by.
    pub fn is_http2(&self) -> bool {
        self.prefix[..] == H2_PREFACE[..]
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn preface_of(input: &[u8]) -> io::Result<Bytes> {
        let mut reader = input;
        read_preface(&mut reader).await
    }

    #[tokio::test]
    async fn reads_no_further_than_the_preface() {
        assert_eq!(
            preface_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r"
        );
        assert_eq!(
            preface_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest")
                .await
                .unwrap(),
            &H2_PREFACE[..]
        );
        assert_eq!(preface_of(b"PRI / x").await.unwrap(), "PRI / x");
        assert!(
            preface_of(b"PRI * HT").await.is_err(),
            "EOF inside the preface"
        );
        assert!(preface_of(b"").await.is_err());
    }

    #[tokio::test]
    async fn replays_the_prefix_then_the_rest() {
        let mut io = Prefixed::new(Bytes::from_static(b"GE"), &b"T /"[..]);
        assert!(!io.is_http2());
        assert!(Prefixed::new(Bytes::from_static(H2_PREFACE), &b""[..]).is_http2());
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "GET /");
    }
}

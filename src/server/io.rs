//! The client socket as a connection uses it: it holds the connection's [`Slot`] for as long as
//! the socket lives (a WebSocket tunnel that takes it over included), tells the idle clock when
//! bytes arrive, and gives up on a client that takes no byte of what it is sent for the body
//! idle timeout.
//!
//! That last part is the response side of the body idle timeout: a client that stops reading
//! mid-response would otherwise hold its connection and the upstream's behind it forever, as
//! nginx's `send_timeout` also prevents.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::StallTimer;
use crate::server::activity::Activity;
use crate::server::slots::Slot;

pub struct ConnIo<IO> {
    io: IO,
    activity: Arc<Activity>,
    write_stall: StallTimer,
    _slot: Slot,
}

impl<IO> ConnIo<IO> {
    pub fn new(io: IO, activity: Arc<Activity>, idle_timeout: Duration, slot: Slot) -> ConnIo<IO> {
        ConnIo {
            io,
            activity,
            write_stall: StallTimer::new(idle_timeout),
            _slot: slot,
        }
    }

    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.write_stall.progressed();
            return result;
        }
        match self.write_stall.poll_stalled(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                tracing::debug!("client read nothing for idle_timeout; closing");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read nothing for idle_timeout",
                )))
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ConnIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ConnIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.watch_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS writes close_notify here: a client that reads nothing must not stall it either.
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch_write(cx, result)
    }
}

//! What counts as activity on a client connection, and the clock that closes it when there is
//! none: `limits.idle_timeout` between requests (HTTP/1.1) or while no stream is open (HTTP/2),
//! `limits.header_read_timeout` from the first byte of an HTTP/1.1 request head to its end.
//!
//! Only requests count. HTTP/2 PINGs, SETTINGS and WINDOW_UPDATEs never reach the service, so a
//! client that only pings is idle; a request is open from its head until its response body has
//! finished or been dropped (the [`StreamGuard`] rides in the response body).
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a keep-alive connection waits for
//! its next request, which would close every idle connection after `header_read_timeout`; the
//! listener turns it off and [`ConnIo`](super::io::ConnIo) tells this clock when bytes of a new
//! head arrive instead.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::{BodyStalled, BoxError, StallTimer};

/// One connection's requests in flight, shared by its service, its response bodies (which end in
/// other tasks under HTTP/2) and its IO.
pub struct Activity {
    in_flight: AtomicUsize,
    /// HTTP/1.1 only: bytes of a request head have arrived and its request has not started.
    head_started: AtomicBool,
    http1: bool,
    /// Bumped at every change of phase, so the clock restarts even when it sees the same phase
    /// twice (a whole request came and went between two looks).
    epoch: AtomicU64,
    changed: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request is open: the clock does not run (body stalls have their own timer).
    Busy,
    /// HTTP/1.1 between the first byte of a head and the request: `header_read_timeout`.
    Head,
    /// Nothing in flight: `idle_timeout`.
    Idle,
}

/// Which wait ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// An HTTP/1.1 request head did not complete in time: close at once (a graceful close would
    /// wait for the very request that is not coming).
    Head,
    /// No request for `idle_timeout`: close gracefully (HTTP/2: GOAWAY).
    Idle,
}

impl Activity {
    /// An HTTP/1.1 connection starts inside its first head (its first bytes are in); an HTTP/2
    /// one starts idle, until its first stream.
    pub fn new(http1: bool) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            head_started: AtomicBool::new(http1),
            http1,
            epoch: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// A request head was parsed; the request stays open while the guard lives.
    pub fn stream_started(self: &Arc<Self>) -> StreamGuard {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.head_started.store(false, Ordering::Release);
            self.changed_phase();
        }
        StreamGuard(self.clone())
    }

    /// Bytes came in from the client. On an idle HTTP/1.1 connection they start a request head.
    pub fn bytes_arrived(&self) {
        if self.http1
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_started.swap(true, Ordering::AcqRel)
        {
            self.changed_phase();
        }
    }

    fn stream_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed_phase();
        }
    }

    fn changed_phase(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // One waiter, the connection's clock; a permit is kept if it is busy elsewhere.
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else if self.head_started.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }
}

/// An open request (HTTP/2: stream). Dropping it ends the request for the idle clock.
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.stream_ended();
    }
}

/// The connection task's view of [`Activity`]: when the current wait runs out.
pub struct IdleClock {
    activity: Arc<Activity>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    seen_epoch: u64,
    deadline: Option<(Instant, Expiry)>,
}

impl IdleClock {
    pub fn new(
        activity: Arc<Activity>,
        idle_timeout: Duration,
        header_read_timeout: Duration,
    ) -> IdleClock {
        let mut clock = IdleClock {
            activity,
            idle_timeout,
            header_read_timeout,
            seen_epoch: 0,
            deadline: None,
        };
        clock.restart();
        clock
    }

    fn restart(&mut self) {
        self.seen_epoch = self.activity.epoch.load(Ordering::Acquire);
        let now = Instant::now();
        self.deadline = match self.activity.phase() {
            Phase::Busy => None,
            Phase::Head => Some((now + self.header_read_timeout, Expiry::Head)),
            Phase::Idle => Some((now + self.idle_timeout, Expiry::Idle)),
        };
    }

    /// Resolves when the current wait runs out, and starts the next one. Cancel-safe: the
    /// deadline lives in `self`, so calling it again in a `select!` loop continues the same wait.
    pub async fn expired(&mut self) -> Expiry {
        let activity = self.activity.clone();
        loop {
            let changed = activity.changed.notified();
            if self.activity.epoch.load(Ordering::Acquire) != self.seen_epoch {
                self.restart();
            }
            match self.deadline {
                None => changed.await,
                Some((at, expiry)) => tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(at) => {
                        // The next call waits a whole period again, not for a past deadline.
                        self.restart();
                        return expiry;
                    }
                },
            }
        }
    }
}

/// A response body that keeps its request open until it ends, and is aborted when the upstream
/// feeding it moves no byte for the body idle timeout (the client, seeing the response cut,
/// knows it is incomplete; both connections are let go).
pub struct TrackedBody<B> {
    inner: B,
    guard: Option<StreamGuard>,
    stall: StallTimer,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: StreamGuard, idle_timeout: Duration) -> TrackedBody<B> {
        TrackedBody {
            inner,
            guard: Some(guard),
            stall: StallTimer::new(idle_timeout),
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.guard = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.stall.poll_stalled(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::debug!("upstream response body stalled; aborting it");
                this.guard = None;
                Poll::Ready(Some(Err(Box::new(BodyStalled))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, short timeouts, and only lower bounds that the timers guarantee.
    const IDLE: Duration = Duration::from_millis(400);
    const HEAD: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn the_clock_runs_only_between_requests() {
        let activity = Activity::new(true);
        let mut clock = IdleClock::new(activity.clone(), IDLE, HEAD);
        let started = Instant::now();
        assert_eq!(
            clock.expired().await,
            Expiry::Head,
            "the first head is due first"
        );
        assert!(started.elapsed() >= HEAD);
        let again = Instant::now();
        assert_eq!(clock.expired().await, Expiry::Head);
        assert!(
            again.elapsed() >= HEAD,
            "each expiry starts a whole new wait"
        );

        let mut clock = IdleClock::new(activity.clone(), IDLE, HEAD);
        let guard = activity.stream_started();
        let wait = clock.expired();
        tokio::pin!(wait);
        let busy = tokio::time::timeout(IDLE * 2, &mut wait).await;
        assert!(busy.is_err(), "no expiry while a request is open");
        drop(guard);
        let idle_from = Instant::now();
        assert!(tokio::time::timeout(IDLE / 2, &mut wait).await.is_err());
        // Bytes while idle start a head: the shorter timer applies from then on.
        activity.bytes_arrived();
        assert_eq!(wait.await, Expiry::Head);
        assert!(idle_from.elapsed() >= IDLE / 2 + HEAD);
    }

    #[tokio::test]
    async fn a_request_inside_the_idle_wait_restarts_it() {
        let activity = Activity::new(false);
        let mut clock = IdleClock::new(activity.clone(), IDLE, HEAD);
        let wait = clock.expired();
        tokio::pin!(wait);
        activity.bytes_arrived(); // HTTP/2 frames are not heads
        assert!(tokio::time::timeout(IDLE * 3 / 4, &mut wait).await.is_err());
        drop(activity.stream_started());
        let restarted = Instant::now();
        assert_eq!(wait.await, Expiry::Idle);
        assert!(
            restarted.elapsed() >= IDLE,
            "the wait restarted at the request"
        );
    }
}

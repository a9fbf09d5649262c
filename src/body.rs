//! Bodies as they stream through: requests capped at `max_body_bytes` without buffering and
//! aborted when they stall (the body idle timeout), and one response body type for both the
//! gateway's own answers and upstream ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::grpc::{GrpcStatus, GRPC_MESSAGE, GRPC_STATUS};
use crate::metrics::GrpcCounters;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway answers with: its own small JSON, or the upstream's streamed body.
pub type ResponseBody = Either<Full<Bytes>, UpstreamBody>;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_body_bytes")]
pub struct BodyTooLarge;

#[derive(Debug, thiserror::Error)]
#[error("body moved no byte for idle_timeout")]
pub struct BodyStalled;

/// How long a body has waited for the side that feeds it. Armed when that side has nothing to
/// give and disarmed by the next frame, so a consumer that stops polling (backpressure from a
/// slow reader) never arms it: only a producer that moves no byte runs it out.
pub struct StallTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    pub fn new(after: Duration) -> StallTimer {
        StallTimer {
            after,
            sleep: None,
            armed: false,
        }
    }

    /// The producer had nothing this time: Ready once it has had nothing for `after`.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match (&mut self.sleep, self.armed) {
            (Some(sleep), true) => sleep,
            (slot, _) => {
                let deadline = Instant::now() + self.after;
                self.armed = true;
                match slot {
                    Some(sleep) => {
                        sleep.as_mut().reset(deadline);
                        sleep
                    }
                    // One allocation per body, and only for bodies that ever wait.
                    None => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        };
        sleep.as_mut().poll(cx)
    }

    /// A frame (or a write) went through.
    pub fn progressed(&mut self) {
        self.armed = false;
    }
}

/// How a request body ended, when it ended badly: the pipeline answers 413 or 400 for the
/// client's fault instead of blaming (and counting) the upstream.
#[derive(Default)]
pub struct BodyOutcome {
    exceeded: AtomicBool,
    client_error: AtomicBool,
    stalled: AtomicBool,
}

impl BodyOutcome {
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The client sent a body hyper could not read (bad chunk size, early close), or stopped
    /// sending it for `idle_timeout`: like an early close, its request cannot be completed, and
    /// 400 tells it so without blaming the upstream.
    pub fn client_error(&self) -> bool {
        self.client_error.load(Ordering::Relaxed)
    }

    /// The client stopped sending its body for `idle_timeout` (also a `client_error`).
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// A request body passed upstream frame by frame, failing once it passes the limit or once the
/// client moves no byte of it for the idle timeout.
pub struct LimitedBody {
    inner: Option<Incoming>,
    remaining: u64,
    outcome: Arc<BodyOutcome>,
    stall: Option<StallTimer>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> (LimitedBody, Arc<BodyOutcome>) {
        let outcome = Arc::new(BodyOutcome::default());
        let body = LimitedBody {
            inner: Some(inner),
            remaining: limit,
            outcome: outcome.clone(),
            stall: None,
        };
        (body, outcome)
    }

    pub fn empty() -> LimitedBody {
        LimitedBody {
            inner: None,
            remaining: 0,
            outcome: Arc::default(),
            stall: None,
        }
    }

    /// Aborts the body once the client has sent nothing of it for `after` while it was awaited.
    pub fn with_idle_timeout(mut self, after: Duration) -> LimitedBody {
        self.stall = Some(StallTimer::new(after));
        self
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(stall) = self.stall.as_mut() {
                    stall.progressed();
                }
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.outcome.exceeded.store(true, Ordering::Relaxed);
                        self.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.outcome.client_error.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stalled = self
                    .stall
                    .as_mut()
                    .is_some_and(|stall| stall.poll_stalled(cx).is_ready());
                if !stalled {
                    return Poll::Pending;
                }
                self.outcome.stalled.store(true, Ordering::Relaxed);
                self.outcome.client_error.store(true, Ordering::Relaxed);
                self.inner = None;
                Poll::Ready(Some(Err(Box::new(BodyStalled))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

/// An upstream's response body on its way to the client. For a gRPC call it also reads the call's
/// `grpc-status` from the trailers for the metrics, and ends a call the upstream broke off (reset,
/// or its request body refused mid-stream) with trailers of its own, as gRPC clients expect,
/// instead of a bare stream reset they would report as `UNKNOWN`.
pub struct UpstreamBody {
    inner: Option<Incoming>,
    grpc: Option<GrpcCall>,
}

/// What a gRPC call's body needs to end it properly.
pub struct GrpcCall {
    pub counters: Arc<GrpcCounters>,
    /// The call's request body: 413 stands for `RESOURCE_EXHAUSTED`, a reset for `UNAVAILABLE`.
    pub request: Arc<BodyOutcome>,
    /// The status already arrived with the response head (a trailers-only response).
    pub status_seen: bool,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, grpc: Option<GrpcCall>) -> UpstreamBody {
        UpstreamBody {
            inner: Some(inner),
            grpc,
        }
    }

    fn broken_call(&mut self) -> Option<Frame<Bytes>> {
        let call = self.grpc.as_mut()?;
        let status = if call.request.exceeded() {
            GrpcStatus::ResourceExhausted
        } else {
            GrpcStatus::Unavailable
        };
        call.counters.count(status);
        call.status_seen = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            &GRPC_STATUS,
            http::HeaderValue::from_static(status.as_str()),
        );
        trailers.insert(
            &GRPC_MESSAGE,
            http::HeaderValue::from_static("the upstream call ended without a status"),
        );
        Some(Frame::trailers(trailers))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(call), Some(trailers)) = (self.grpc.as_mut(), frame.trailers_ref()) {
                    if let Some(status) = trailers.get(&GRPC_STATUS) {
                        call.counters
                            .count(GrpcStatus::from_header(status.as_bytes()));
                        call.status_seen = true;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Dropping the upstream body resets its stream.
                self.inner = None;
                match self.broken_call() {
                    Some(trailers) => Poll::Ready(Some(Ok(trailers))),
                    None => Poll::Ready(Some(Err(e))),
                }
            }
            Poll::Ready(None) => {
                self.inner = None;
                if let Some(call) = self.grpc.as_mut().filter(|c| !c.status_seen) {
                    // An upstream that ended a call without a status broke the protocol; the
                    // client reads it as UNKNOWN, and so does the metric.
                    call.counters.count(GrpcStatus::Unknown);
                    call.status_seen = true;
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_millis(200);

    async fn stalled_now(timer: &mut StallTimer) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(timer.poll_stalled(cx).is_ready())).await
    }

    #[tokio::test]
    async fn the_stall_timer_runs_only_while_the_producer_has_nothing() {
        let mut timer = StallTimer::new(AFTER);
        assert!(!stalled_now(&mut timer).await, "armed, not run out");
        tokio::time::sleep(AFTER / 2).await;
        timer.progressed();
        // Not asked for longer than AFTER: the consumer was slow, not the producer.
        tokio::time::sleep(AFTER * 2).await;
        assert!(!stalled_now(&mut timer).await, "re-armed from now");
        tokio::time::sleep(AFTER + Duration::from_millis(50)).await;
        assert!(stalled_now(&mut timer).await, "nothing for AFTER: stalled");
    }
}

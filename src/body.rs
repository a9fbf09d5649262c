//! Bodies as they stream through: requests capped at `max_body_bytes` without buffering, and one
//! response body type for both the gateway's own answers and upstream ones.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway answers with: its own small JSON, or the upstream's streamed body.
pub type ResponseBody = Either<Full<Bytes>, Incoming>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Left(Full::new(bytes.into()))
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_body_bytes")]
pub struct BodyTooLarge;

/// How a request body ended, when it ended badly: the pipeline answers 413 or 400 for the
/// client's fault instead of blaming (and counting) the upstream.
#[derive(Default)]
pub struct BodyOutcome {
    exceeded: AtomicBool,
    client_error: AtomicBool,
}

impl BodyOutcome {
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The client sent a body hyper could not read (bad chunk size, early close).
    pub fn client_error(&self) -> bool {
        self.client_error.load(Ordering::Relaxed)
    }
}

/// A request body passed upstream frame by frame, failing once it passes the limit.
pub struct LimitedBody {
    inner: Option<Incoming>,
    remaining: u64,
    outcome: Arc<BodyOutcome>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> (LimitedBody, Arc<BodyOutcome>) {
        let outcome = Arc::new(BodyOutcome::default());
        let body = LimitedBody {
            inner: Some(inner),
            remaining: limit,
            outcome: outcome.clone(),
        };
        (body, outcome)
    }

    pub fn empty() -> LimitedBody {
        LimitedBody {
            inner: None,
            remaining: 0,
            outcome: Arc::default(),
        }
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

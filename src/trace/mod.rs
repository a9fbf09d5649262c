//! Tracing (CONTRACT F): W3C Trace Context continued or started for every proxied request, head
//! sampling, and one span per sampled request (children: `authenticate`, `upstream`) handed to a
//! bounded queue that a background task exports over OTLP/HTTP.
//!
//! The request path does three cheap things: parse `traceparent` and pick ids (~0.1 µs), decide
//! sampling, and for a sampled request copy a few numbers into a [`FinishedSpan`] and `try_send`
//! it. Nothing on it waits for the collector: a full queue drops the span and counts it.

mod context;
mod export;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::header::{HeaderMap, HeaderValue};
use http::Method;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::verify::CacheOutcome;
use crate::config::TracingConfig;
use crate::denial::Reason;
use crate::metrics::TraceExportMetrics;

pub use context::{parse_traceparent, traceparent_value, TraceParent, TRACEPARENT, TRACESTATE};
pub use export::encode;

/// Spans waiting for export; past this a finished span is dropped (OpenTelemetry's default
/// `max_queue_size`). At ~300 bytes a span, a full queue holds ~600 KiB.
const QUEUE_CAPACITY: usize = 2048;

/// The gateway's tracing state that outlives reloads: the export queue, and where it goes.
pub struct Tracer {
    queue: mpsc::Sender<FinishedSpan>,
    /// Taken by the exporter task when the gateway starts its background work.
    receiver: Mutex<Option<mpsc::Receiver<FinishedSpan>>>,
    settings: Arc<ArcSwapOption<export::Settings>>,
    http: reqwest::Client,
    metrics: TraceExportMetrics,
}

impl Tracer {
    pub fn new(
        config: &TracingConfig,
        http: reqwest::Client,
        metrics: TraceExportMetrics,
    ) -> Tracer {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let tracer = Tracer {
            queue,
            receiver: Mutex::new(Some(receiver)),
            settings: Arc::new(ArcSwapOption::empty()),
            http,
            metrics,
        };
        tracer.configure(config);
        tracer
    }

    /// Points the exporter at a reloaded config's collector (or none).
    pub fn configure(&self, config: &TracingConfig) {
        self.settings.store(config.traces_url.clone().map(|url| {
            Arc::new(export::Settings {
                url,
                timeout: config.export_timeout,
            })
        }));
    }

    /// The exporter task, once: it runs until `stop`, then flushes what is queued.
    pub fn exporter(
        &self,
        stop: CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let receiver = self.receiver.lock().ok()?.take()?;
        Some(export::run(
            receiver,
            self.http.clone(),
            self.settings.clone(),
            self.metrics.clone(),
            stop,
        ))
    }

    /// The trace a request joins or starts. With tracing off the client's context is only read,
    /// for the access line's `trace_id`, and travels on untouched.
    pub fn start(&self, config: &TracingConfig, headers: &HeaderMap) -> Option<RequestTrace> {
        let parent = context::parent_of(headers);
        if config.traces_url.is_none() {
            return parent.map(|p| RequestTrace {
                trace_id: p.trace_id,
                span_id: p.span_id,
                parent: None,
                sampled: p.sampled(),
                propagate: false,
                continued: true,
                recording: None,
            });
        }
        let trace_id = parent.map_or_else(context::new_trace_id, |p| p.trace_id);
        let sampled = context::sample(parent.as_ref(), &trace_id, config.sample_ratio);
        let recording = sampled.then(|| {
            Box::new(Recording {
                sink: self.queue.clone(),
                dropped: self.metrics.dropped.clone(),
                start_unix_nanos: unix_nanos(),
                started: Instant::now(),
                authenticate: None,
                upstream: None,
            })
        });
        Some(RequestTrace {
            trace_id,
            span_id: context::new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            propagate: true,
            continued: parent.is_some(),
            recording,
        })
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One request's place in a trace.
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The gateway's span, the upstream's parent (the client's own span when only passing on).
    pub span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    pub sampled: bool,
    /// Whether the gateway takes part (tracing on) and so rewrites `traceparent`.
    propagate: bool,
    /// The client's context is continued, so its `tracestate` travels on with it.
    continued: bool,
    /// Present only for a sampled request: what its spans need at the end.
    recording: Option<Box<Recording>>,
}

struct Recording {
    sink: mpsc::Sender<FinishedSpan>,
    dropped: prometheus::IntCounter,
    start_unix_nanos: u64,
    started: Instant,
    authenticate: Option<ChildSpan>,
    upstream: Option<ChildSpan>,
}

impl Recording {
    fn child(&self, since: Instant, attributes: ChildAttributes) -> ChildSpan {
        let offset = |at: Instant| {
            let nanos = at.saturating_duration_since(self.started).as_nanos();
            self.start_unix_nanos + u64::try_from(nanos).unwrap_or(0)
        };
        ChildSpan {
            span_id: context::new_span_id(),
            start_unix_nanos: offset(since),
            end_unix_nanos: offset(Instant::now()),
            attributes,
        }
    }
}

impl RequestTrace {
    /// The start of a child span: `Some` only when the request is recorded, so an unsampled
    /// request does not even read the clock.
    pub fn mark(trace: &Option<RequestTrace>) -> Option<Instant> {
        trace
            .as_ref()
            .and_then(|t| t.recording.as_ref())
            .map(|_| Instant::now())
    }

    /// Ends the `authenticate` child begun at `since`.
    pub fn authenticated(
        &mut self,
        since: Option<Instant>,
        cache: Option<CacheOutcome>,
        reason: Reason,
    ) {
        if let (Some(rec), Some(since)) = (&mut self.recording, since) {
            rec.authenticate =
                Some(rec.child(since, ChildAttributes::Authenticate { cache, reason }));
        }
    }

    /// Ends the `upstream` child begun at `since`: the response's status, or why there is none.
    pub fn upstream_answered(
        &mut self,
        since: Option<Instant>,
        outcome: Result<u16, &'static str>,
    ) {
        if let (Some(rec), Some(since)) = (&mut self.recording, since) {
            rec.upstream = Some(rec.child(since, ChildAttributes::Upstream { outcome }));
        }
    }

    /// Sets the upstream's `traceparent` to the gateway's span, and keeps the client's
    /// `tracestate` only with the client's trace (a restarted trace must not carry it, W3C 3.3).
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if !self.propagate {
            return;
        }
        headers.insert(
            &TRACEPARENT,
            traceparent_value(&self.trace_id, &self.span_id, self.sampled),
        );
        if !self.continued {
            headers.remove(&TRACESTATE);
        }
    }

    /// Hands a sampled request's spans to the exporter; never waits.
    pub fn end(&self, request: EndedRequest<'_>) {
        let Some(rec) = &self.recording else { return };
        let span = FinishedSpan {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            start_unix_nanos: rec.start_unix_nanos,
            end_unix_nanos: rec.start_unix_nanos
                + u64::try_from(rec.started.elapsed().as_nanos()).unwrap_or(0),
            method: request.method.clone(),
            route: request.route.map(str::to_string),
            status: request.status,
            request_id: request.request_id.clone(),
            authenticate: rec.authenticate,
            upstream: rec.upstream,
        };
        if rec.sink.try_send(span).is_err() {
            rec.dropped.inc();
        }
    }
}

/// What `end` reads from the request: all of it from the gateway's own state, nothing a client
/// could fill with a secret.
pub struct EndedRequest<'a> {
    pub method: &'a Method,
    pub route: Option<&'a str>,
    pub status: u16,
    pub request_id: &'a HeaderValue,
}

/// Lower-case hex without an allocation, for a log field; empty for an untraced request.
pub struct TraceId<'a>(Option<&'a [u8; 16]>);

impl fmt::Display for TraceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.into_iter().flatten() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The access line's `trace_id`.
pub fn log_id(trace: Option<&RequestTrace>) -> TraceId<'_> {
    TraceId(trace.map(|t| &t.trace_id))
}

/// A recorded request, as queued for export.
pub struct FinishedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub method: Method,
    pub route: Option<String>,
    pub status: u16,
    pub request_id: HeaderValue,
    pub authenticate: Option<ChildSpan>,
    pub upstream: Option<ChildSpan>,
}

#[derive(Clone, Copy)]
pub struct ChildSpan {
    pub span_id: [u8; 8],
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: ChildAttributes,
}

#[derive(Clone, Copy)]
pub enum ChildAttributes {
    Authenticate {
        cache: Option<CacheOutcome>,
        reason: Reason,
    },
    /// The upstream's status code, or the kind of failure.
    Upstream { outcome: Result<u16, &'static str> },
}

//! The span exporter: one task that drains the queue in batches, encodes them as an OTLP
//! `ExportTraceServiceRequest` (the maintained `opentelemetry-proto` types, encoded by prost) and
//! POSTs them to `<otlp_endpoint>/v1/traces`.
//!
//! Why not the OpenTelemetry SDK's `BatchSpanProcessor` and `opentelemetry-otlp`: measured in
//! `benches/hot_path.rs` (`tracing/*`), its tracer costs a request ~0.86 µs unsampled (1.24 µs
//! with a client parent) and ~2.5 µs sampled, against ~0.19 µs (0.16 µs) and ~1.2 µs here, next
//! to ~3.5 µs for the whole cached-token pipeline: it builds a `Context`, a span and attribute
//! vectors even for a span it will not record. Its batch processor runs on a thread of its own
//! with a blocking HTTP client, reports failures only to its own logs (no count to export), and
//! would be a thread outside `serve`'s shutdown. This task is owned like the JWKS
//! refreshers: it stops with `stop_background`, after one last bounded flush.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ChildAttributes, ChildSpan, FinishedSpan};
use crate::auth::verify::CacheOutcome;
use crate::metrics::{TraceExportError, TraceExportMetrics};

/// Spans per POST (OpenTelemetry's default `max_export_batch_size`).
const MAX_BATCH: usize = 512;
/// How long a batch waits for more spans after its first.
const FLUSH_DELAY: Duration = Duration::from_secs(1);
/// The last flush at shutdown may hold up the exit this long, at most.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Where the spans go; swapped on reload.
pub(super) struct Settings {
    pub url: reqwest::Url,
    pub timeout: Duration,
}

pub(super) async fn run(
    mut queue: mpsc::Receiver<FinishedSpan>,
    http: reqwest::Client,
    settings: Arc<ArcSwapOption<Settings>>,
    metrics: TraceExportMetrics,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            span = queue.recv() => match span {
                Some(span) => span,
                None => break,
            },
        };
        batch.push(first);
        let deadline = Instant::now() + FLUSH_DELAY;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                span = queue.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
            }
        }
        let current = settings.load_full();
        tokio::select! {
            () = send(&http, current.as_deref(), &metrics, &mut batch, None) => {}
            // A slow collector must not hold up shutdown past the last flush's bound.
            () = stop.cancelled() => break,
        }
    }
    let current = settings.load_full();
    let flush = async {
        loop {
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            send(
                &http,
                current.as_deref(),
                &metrics,
                &mut batch,
                Some(SHUTDOWN_FLUSH),
            )
            .await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_FLUSH, flush).await.is_err() {
        tracing::warn!("the last span export did not finish before shutdown");
    }
}

/// POSTs `batch` (emptied either way) and counts a failure. Without a collector configured (it
/// was removed by a reload) the spans are dropped.
async fn send(
    http: &reqwest::Client,
    settings: Option<&Settings>,
    metrics: &TraceExportMetrics,
    batch: &mut Vec<FinishedSpan>,
    timeout: Option<Duration>,
) {
    let Some(settings) = settings else {
        batch.clear();
        return;
    };
    // Encoding is ~1.3 µs a span, so a second's batch under load takes a millisecond or more:
    // on the blocking pool, not on the runtime thread that serves requests (a gateway given one
    // CPU has just that one), where it showed as a doubled p99 in bench/run.sh.
    let spans = std::mem::take(batch);
    let Ok(body) = tokio::task::spawn_blocking(move || encode(spans.into_iter())).await else {
        return;
    };
    let timeout = timeout.map_or(settings.timeout, |t| t.min(settings.timeout));
    let result = http
        .post(settings.url.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    let failure = match result {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => {
            tracing::warn!(
                status = response.status().as_u16(),
                "the trace collector refused a span export"
            );
            Some(TraceExportError::Status)
        }
        Err(e) if e.is_timeout() => {
            tracing::warn!("a span export timed out");
            Some(TraceExportError::Timeout)
        }
        Err(e) => {
            tracing::warn!(error = %e, "a span export failed");
            Some(TraceExportError::Transport)
        }
    };
    if let Some(why) = failure {
        metrics.failed(why);
    }
}

/// The OTLP/HTTP protobuf body for `spans`: one resource (`service.name` `jwt-gateway`), one
/// scope, each request's span followed by its children.
pub fn encode(spans: impl Iterator<Item = FinishedSpan>) -> Vec<u8> {
    let mut out = Vec::new();
    for finished in spans {
        push_spans(&mut out, finished);
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "jwt-gateway"),
                    string("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "jwt-gateway".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

/// W3C flags on the span record: sampled (all exported spans are), and that the parent was
/// remote (bits 8-9 of OTLP's `flags`) for the request span.
const FLAGS_SAMPLED: u32 = 0x01;
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

fn push_spans(out: &mut Vec<Span>, finished: FinishedSpan) {
    let method = match finished.method.as_str() {
        // Semantic conventions: other methods are `_OTHER`, so a client cannot mint span names.
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE"
        | "PATCH") => m.to_string(),
        _ => "_OTHER".to_string(),
    };
    let route = finished.route.unwrap_or_else(|| "none".into());
    let mut attributes = vec![
        string("http.request.method", &method),
        string("http.route", &route),
        string("route", &route),
        int("http.response.status_code", i64::from(finished.status)),
    ];
    if let Ok(id) = finished.request_id.to_str() {
        attributes.push(string("request_id", id));
    }
    let server_error = finished.status >= 500;
    let request_span = Span {
        trace_id: finished.trace_id.to_vec(),
        span_id: finished.span_id.to_vec(),
        parent_span_id: finished.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: FLAGS_SAMPLED
            | FLAGS_HAS_IS_REMOTE
            | if finished.parent.is_some() {
                FLAGS_IS_REMOTE
            } else {
                0
            },
        name: "request".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: finished.start_unix_nanos,
        end_time_unix_nano: finished.end_unix_nanos,
        attributes,
        status: Some(span_status(server_error)),
        ..Default::default()
    };
    out.push(request_span);
    for child in [finished.authenticate, finished.upstream]
        .into_iter()
        .flatten()
    {
        out.push(child_span(
            &finished.trace_id,
            &finished.span_id,
            &route,
            child,
        ));
    }
}

fn child_span(trace_id: &[u8; 16], parent: &[u8; 8], route: &str, child: ChildSpan) -> Span {
    let (name, kind, mut attributes, error) = match child.attributes {
        ChildAttributes::Authenticate { cache, reason } => {
            let mut attributes = vec![string("reason", reason.as_str())];
            if let Some(cache) = cache {
                let cache = match cache {
                    CacheOutcome::Hit => "hit",
                    CacheOutcome::Miss => "miss",
                };
                attributes.insert(0, string("cache", cache));
            }
            let denied = reason != crate::denial::Reason::Ok;
            ("authenticate", span::SpanKind::Internal, attributes, denied)
        }
        ChildAttributes::Upstream { outcome } => match outcome {
            Ok(status) => (
                "upstream",
                span::SpanKind::Client,
                vec![int("http.response.status_code", i64::from(status))],
                status >= 500,
            ),
            Err(kind) => (
                "upstream",
                span::SpanKind::Client,
                vec![string("error.type", kind)],
                true,
            ),
        },
    };
    attributes.push(string("route", route));
    Span {
        trace_id: trace_id.to_vec(),
        span_id: child.span_id.to_vec(),
        parent_span_id: parent.to_vec(),
        flags: FLAGS_SAMPLED | FLAGS_HAS_IS_REMOTE,
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: child.start_unix_nanos,
        end_time_unix_nano: child.end_unix_nanos,
        attributes,
        status: Some(span_status(error)),
        ..Default::default()
    }
}

fn span_status(error: bool) -> Status {
    Status {
        code: if error {
            status::StatusCode::Error
        } else {
            status::StatusCode::Unset
        } as i32,
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

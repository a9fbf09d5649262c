//! Log setup: JSON or text lines on stderr at the configured level. Access lines use the
//! `access` target; no field ever carries a token, a signature or a secret.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat, LogLevel};

pub fn init(config: &LogConfig) {
    let level = match config.level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    // A second init (tests, `demo` after `check`) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .event_format(WithRequestId(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Puts the id of the enclosing `request` span first on a JSON line, as `request_id`: log
/// queries then join the access line, the client's `X-Request-Id` and the upstream's logs on one
/// top-level field instead of tracing's nested `span.id`.
struct WithRequestId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(id) = request_id(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"request_id\":{id},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The `id` field of the nearest `request` span, JSON-encoded; the span's fields are stored
/// as a JSON object by the JSON field formatter.
fn request_id<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx.event_scope()?.find(|s| s.name() == "request")?;
    let extensions = span.extensions();
    let fields = extensions.get::<FormattedFields<N>>()?;
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&fields.fields).ok()?;
    serde_json::to_string(parsed.get("id")?).ok()
}

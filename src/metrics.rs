//! The contract's Prometheus families, with label handles resolved when a config is loaded so the
//! request path never hashes a label string. Label values come from config names and enums'
//! `as_str()`, never from request input, so a client cannot grow the series count.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::denial::Reason;
use crate::grpc::GrpcStatus;

/// From 1 µs: a cache hit (~1 µs) and an RS256 verify (~20-50 µs) land in different buckets.
const VALIDATION_BUCKETS: &[f64] = &[
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0,
];
/// Milliseconds to seconds, for whole requests and upstream round trips.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Status codes given ready counters per route; others are resolved on the fly.
const COMMON_CODES: &[u16] = &[
    101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 409, 413,
    422, 429, 431, 500, 502, 503, 504,
];

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    decisions: IntCounterVec,
    validation: HistogramVec,
    jwks_refresh: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    pub token_cache_entries: IntGauge,
    config_reloads: IntCounterVec,
    revocations: IntGaugeVec,
    revocation_sync: IntCounterVec,
    rate_limited: IntCounterVec,
    grpc_responses: IntCounterVec,
    open_connections: IntGauge,
    connections_refused: IntCounterVec,
    trace_export_errors: IntCounterVec,
    trace_spans_dropped: IntCounter,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are constants of this file; a clash is a programming error caught by the tests.
    if let Err(e) = registry.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, vec)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, labels).unwrap_or_else(|_| unreachable_metric(name));
    register(registry, vec)
}

fn unreachable_metric(name: &str) -> ! {
    // Only reachable with an invalid constant name or label set, which `metrics_render` tests.
    panic!("invalid metric definition {name}")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new("gateway_build_info", "Build information; always 1"),
                &["version"],
            )
            .unwrap_or_else(|_| unreachable_metric("gateway_build_info")),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let token_cache_entries = register(
            r,
            IntGauge::new(
                "gateway_token_cache_entries",
                "Verified tokens held in the cache",
            )
            .unwrap_or_else(|_| unreachable_metric("gateway_token_cache_entries")),
        );
        let open_connections = register(
            r,
            IntGauge::new(
                "gateway_open_connections",
                "Connections open on the public listener",
            )
            .unwrap_or_else(|_| unreachable_metric("gateway_open_connections")),
        );
        let trace_spans_dropped = register(
            r,
            IntCounter::new(
                "gateway_trace_spans_dropped_total",
                "Finished request spans dropped because the export queue was full",
            )
            .unwrap_or_else(|_| unreachable_metric("gateway_trace_spans_dropped_total")),
        );
        let metrics = Metrics {
            requests: counter_vec(
                r,
                "gateway_requests_total",
                "Requests answered, by route and status code",
                &["route", "code"],
            ),
            request_duration: histogram_vec(
                r,
                "gateway_request_duration_seconds",
                "Time from request head to response head",
                &["route"],
                LATENCY_BUCKETS,
            ),
            decisions: counter_vec(
                r,
                "gateway_auth_decisions_total",
                "Authentication and authorization decisions",
                &["route", "decision", "reason"],
            ),
            validation: histogram_vec(
                r,
                "gateway_token_validation_duration_seconds",
                "Token validation time, cache hits and misses apart",
                &["provider", "cache"],
                VALIDATION_BUCKETS,
            ),
            jwks_refresh: counter_vec(
                r,
                "gateway_jwks_refresh_total",
                "JWKS fetches by outcome",
                &["provider", "result"],
            ),
            jwks_keys: register(
                r,
                IntGaugeVec::new(
                    Opts::new("gateway_jwks_keys", "Usable keys per provider"),
                    &["provider"],
                )
                .unwrap_or_else(|_| unreachable_metric("gateway_jwks_keys")),
            ),
            jwks_last_success: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "gateway_jwks_last_success_timestamp_seconds",
                        "Unix time of the last good JWKS fetch",
                    ),
                    &["provider"],
                )
                .unwrap_or_else(|_| {
                    unreachable_metric("gateway_jwks_last_success_timestamp_seconds")
                }),
            ),
            upstream_duration: histogram_vec(
                r,
                "gateway_upstream_duration_seconds",
                "Upstream time to response head",
                &["route"],
                LATENCY_BUCKETS,
            ),
            upstream_errors: counter_vec(
                r,
                "gateway_upstream_errors_total",
                "Upstream failures by kind",
                &["route", "kind"],
            ),
            token_cache_entries,
            config_reloads: counter_vec(
                r,
                "gateway_config_reloads_total",
                "Configuration reloads by outcome",
                &["result"],
            ),
            revocations: register(
                r,
                IntGaugeVec::new(
                    Opts::new("gateway_revocations", "Revocation entries in force"),
                    &["backend"],
                )
                .unwrap_or_else(|_| unreachable_metric("gateway_revocations")),
            ),
            revocation_sync: counter_vec(
                r,
                "gateway_revocation_sync_total",
                "Revocation syncs with the shared backend",
                &["result"],
            ),
            rate_limited: counter_vec(
                r,
                "gateway_rate_limited_total",
                "Requests refused by the authentication-failure limit",
                &["route"],
            ),
            grpc_responses: counter_vec(
                r,
                "gateway_grpc_responses_total",
                "gRPC responses by grpc-status, the upstream's or the gateway's own",
                &["route", "grpc_status"],
            ),
            open_connections,
            connections_refused: counter_vec(
                r,
                "gateway_connections_refused_total",
                "Connections closed at accept by max_connections or max_connections_per_ip",
                &["reason"],
            ),
            trace_export_errors: counter_vec(
                r,
                "gateway_trace_export_errors_total",
                "OTLP span exports (one POST of a batch) that failed, by kind",
                &["kind"],
            ),
            trace_spans_dropped,
            registry,
        };
        // Zero-valued series exist from the start, so `increase()` and alerts see the first event.
        for result in ["ok", "error"] {
            metrics.config_reloads.with_label_values(&[result]);
            metrics.revocation_sync.with_label_values(&[result]);
        }
        for refusal in ConnectionRefusal::ALL {
            metrics
                .connections_refused
                .with_label_values(&[refusal.as_str()]);
        }
        for kind in TraceExportError::ALL {
            metrics
                .trace_export_errors
                .with_label_values(&[kind.as_str()]);
        }
        metrics
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn route(&self, route: &str) -> RouteMetrics {
        let decision = |decision: &str, reason: Reason| {
            self.decisions
                .with_label_values(&[route, decision, reason.as_str()])
        };
        RouteMetrics {
            name: route.to_string(),
            requests: self.requests.clone(),
            codes: COMMON_CODES
                .iter()
                .map(|&c| (c, self.requests.with_label_values(&[route, &c.to_string()])))
                .collect(),
            duration: self.request_duration.with_label_values(&[route]),
            allow: decision("allow", Reason::Ok),
            deny: Reason::ALL.iter().map(|&r| decision("deny", r)).collect(),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
            upstream_errors: {
                for kind in UpstreamErrorKind::ALL {
                    self.upstream_errors
                        .with_label_values(&[route, kind.as_str()]);
                }
                self.upstream_errors.clone()
            },
            rate_limited: self.rate_limited.with_label_values(&[route]),
            grpc: Arc::new(GrpcCounters(GrpcStatus::ALL.map(|status| {
                self.grpc_responses
                    .with_label_values(&[route, status.as_str()])
            }))),
        }
    }

    pub fn provider(&self, provider: &str) -> ProviderMetrics {
        ProviderMetrics {
            refresh_ok: self.jwks_refresh.with_label_values(&[provider, "ok"]),
            refresh_error: self.jwks_refresh.with_label_values(&[provider, "error"]),
            keys: self.jwks_keys.with_label_values(&[provider]),
            last_success: self.jwks_last_success.with_label_values(&[provider]),
            validation_hit: self.validation.with_label_values(&[provider, "hit"]),
            validation_miss: self.validation.with_label_values(&[provider, "miss"]),
        }
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn revocations(&self, backend: &str) -> IntGauge {
        self.revocations.with_label_values(&[backend])
    }

    /// Handles for the public listener's connection accounting.
    pub fn connections(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.open_connections.clone(),
            refused_global: self
                .connections_refused
                .with_label_values(&[ConnectionRefusal::Global.as_str()]),
            refused_per_ip: self
                .connections_refused
                .with_label_values(&[ConnectionRefusal::PerIp.as_str()]),
        }
    }

    /// Handles for the span exporter.
    pub fn trace_export(&self) -> TraceExportMetrics {
        TraceExportMetrics {
            errors: TraceExportError::ALL
                .map(|kind| self.trace_export_errors.with_label_values(&[kind.as_str()])),
            dropped: self.trace_spans_dropped.clone(),
        }
    }

    pub fn revocation_sync(&self, ok: bool) {
        self.revocation_sync
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }
}

/// Ready handles for one route; `none` labels requests refused before routing.
#[derive(Clone)]
pub struct RouteMetrics {
    pub name: String,
    requests: IntCounterVec,
    /// foldhash: the lookup runs on every response, and its keys are a fixed list.
    codes: HashMap<u16, IntCounter, foldhash::fast::RandomState>,
    pub duration: Histogram,
    allow: IntCounter,
    deny: Vec<IntCounter>,
    pub upstream_duration: Histogram,
    upstream_errors: IntCounterVec,
    pub rate_limited: IntCounter,
    /// One counter per gRPC status, shared with the bodies that read it from the trailers.
    pub grpc: Arc<GrpcCounters>,
}

/// `gateway_grpc_responses_total` of one route, by status.
pub struct GrpcCounters([IntCounter; 17]);

impl GrpcCounters {
    pub fn count(&self, status: GrpcStatus) {
        if let Some(i) = GrpcStatus::ALL.iter().position(|&s| s == status) {
            self.0[i].inc();
        }
    }
}

impl RouteMetrics {
    pub fn count_response(&self, code: u16) {
        match self.codes.get(&code) {
            Some(counter) => counter.inc(),
            None => self
                .requests
                .with_label_values(&[&self.name, &code.to_string()])
                .inc(),
        }
    }

    pub fn allow(&self) {
        self.allow.inc();
    }

    pub fn deny(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|&r| r == reason) {
            self.deny[i].inc();
        }
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[&self.name, kind.as_str()])
            .inc();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

/// Why an OTLP export failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceExportError {
    /// No connection, or it broke: the collector is down or unreachable.
    Transport,
    /// The collector took longer than the export timeout.
    Timeout,
    /// The collector answered with a status other than 2xx.
    Status,
}

impl TraceExportError {
    pub const ALL: [TraceExportError; 3] = [
        TraceExportError::Transport,
        TraceExportError::Timeout,
        TraceExportError::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TraceExportError::Transport => "transport",
            TraceExportError::Timeout => "timeout",
            TraceExportError::Status => "status",
        }
    }
}

#[derive(Clone)]
pub struct TraceExportMetrics {
    errors: [IntCounter; 3],
    pub dropped: IntCounter,
}

impl TraceExportMetrics {
    pub fn failed(&self, why: TraceExportError) {
        match why {
            TraceExportError::Transport => self.errors[0].inc(),
            TraceExportError::Timeout => self.errors[1].inc(),
            TraceExportError::Status => self.errors[2].inc(),
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `limits.max_connections` open on the whole listener.
    Global,
    /// `limits.max_connections_per_ip` open from one address (IPv6: one /64).
    PerIp,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 2] = [ConnectionRefusal::Global, ConnectionRefusal::PerIp];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Global => "global",
            ConnectionRefusal::PerIp => "per_ip",
        }
    }
}

#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: IntGauge,
    refused_global: IntCounter,
    refused_per_ip: IntCounter,
}

impl ConnectionMetrics {
    pub fn refused(&self, why: ConnectionRefusal) {
        match why {
            ConnectionRefusal::Global => self.refused_global.inc(),
            ConnectionRefusal::PerIp => self.refused_per_ip.inc(),
        }
    }
}

#[derive(Clone)]
pub struct ProviderMetrics {
    pub refresh_ok: IntCounter,
    pub refresh_error: IntCounter,
    pub keys: IntGauge,
    pub last_success: Gauge,
    pub validation_hit: Histogram,
    pub validation_miss: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_contract_family() {
        let m = Metrics::new();
        let route = m.route("orders");
        route.count_response(200);
        route.count_response(418);
        route.allow();
        route.deny(Reason::Expired);
        route.duration.observe(0.01);
        route.upstream_duration.observe(0.01);
        route.upstream_error(UpstreamErrorKind::Connect);
        route.rate_limited.inc();
        let p = m.provider("corp");
        p.refresh_ok.inc();
        p.validation_hit.observe(0.000_001);
        m.config_reload(true);
        m.revocations("memory").set(0);
        m.revocation_sync(true);
        let connections = m.connections();
        connections.refused(ConnectionRefusal::PerIp);
        connections.open.set(3);
        let text = m.render();
        for family in [
            "gateway_requests_total{code=\"200\",route=\"orders\"} 1",
            "gateway_requests_total{code=\"418\",route=\"orders\"} 1",
            "gateway_request_duration_seconds_bucket",
            "gateway_auth_decisions_total{decision=\"deny\",reason=\"expired\",route=\"orders\"} 1",
            "gateway_token_validation_duration_seconds_bucket{cache=\"hit\",provider=\"corp\",le=\"0.000001\"} 1",
            "gateway_jwks_refresh_total{provider=\"corp\",result=\"ok\"} 1",
            "gateway_jwks_keys{provider=\"corp\"}",
            "gateway_jwks_last_success_timestamp_seconds{provider=\"corp\"}",
            "gateway_upstream_duration_seconds_bucket",
            "gateway_upstream_errors_total{kind=\"connect\",route=\"orders\"} 1",
            "gateway_build_info{version=",
            "gateway_token_cache_entries 0",
            "gateway_config_reloads_total{result=\"ok\"} 1",
            "gateway_revocations{backend=\"memory\"} 0",
            "gateway_revocation_sync_total{result=\"ok\"} 1",
            "gateway_rate_limited_total{route=\"orders\"} 1",
            "gateway_open_connections 3",
            "gateway_connections_refused_total{reason=\"global\"} 0",
            "gateway_connections_refused_total{reason=\"per_ip\"} 1",
            "gateway_trace_export_errors_total{kind=\"timeout\"} 0",
            "gateway_trace_spans_dropped_total 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}

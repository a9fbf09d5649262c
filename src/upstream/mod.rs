//! The pooled upstream clients: HTTP/1.1, HTTP/2 (h2c with prior knowledge, or ALPN `h2`) and
//! ALPN-negotiated, to plain or TLS upstreams, with connect and response-head deadlines, and
//! failures sorted into the kinds operators act on.
//!
//! HTTP/2 connections are pooled per upstream and multiplexed; the upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` holds further requests until a stream frees up, and a
//! request that had not been sent when the upstream said GOAWAY is retried on a new connection.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{BodyTooLarge, LimitedBody};
use crate::config::UpstreamProtocol;
use crate::metrics::UpstreamErrorKind;

/// Per-stream receive window for upstream responses. Data a slow client leaves unread holds this
/// much of the shared connection's window at most, so one stalled reader cannot stall the other
/// calls multiplexed on that upstream connection: it takes `CONNECTION_WINDOW / STREAM_WINDOW`
/// (256) of them, and the client write timeout (`idle_timeout`) ends each.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    Failed(UpstreamErrorKind),
    /// The client's body passed `max_body_bytes` while streaming upstream.
    BodyTooLarge,
}

/// Which wire protocol a request goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    /// `https://`: whatever ALPN agrees on, `h2` preferred.
    Negotiated,
    /// `http://`: h2c with prior knowledge; `https://`: ALPN `h2` only.
    Http2,
}

impl Wire {
    /// The wire for a route's `upstream_protocol`; gRPC, which needs HTTP/2, never leaves it to
    /// ALPN. `None`: the request cannot be carried (gRPC to an HTTP/1.1 upstream).
    pub fn for_route(protocol: UpstreamProtocol, https: bool, grpc: bool) -> Option<Wire> {
        match (protocol, https, grpc) {
            (UpstreamProtocol::Http2, _, _) => Some(Wire::Http2),
            (UpstreamProtocol::Auto, true, true) => Some(Wire::Http2),
            (UpstreamProtocol::Auto, true, false) => Some(Wire::Negotiated),
            (UpstreamProtocol::Http1, _, true) | (UpstreamProtocol::Auto, false, true) => None,
            (UpstreamProtocol::Http1, _, false) | (UpstreamProtocol::Auto, false, false) => {
                Some(Wire::Http1)
            }
        }
    }
}

type Pool = Client<HttpsConnector<HttpConnector>, LimitedBody>;

#[derive(Clone)]
pub struct UpstreamClient {
    http1: Pool,
    negotiated: Pool,
    http2: Pool,
}

impl UpstreamClient {
    /// `tls` verifies TLS upstreams (the platform's roots, `upstream_tls.ca_file`'s, or the
    /// tests' CA).
    pub fn new(connect_timeout: Duration, tls: rustls::ClientConfig) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
        };
        let http1 = https().enable_http1().wrap_connector(http.clone());
        let negotiated = https().enable_all_versions().wrap_connector(http.clone());
        let http2 = https().enable_http2().wrap_connector(http);
        let pool = |http2_only: bool, connector| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256)
                .http2_only(http2_only)
                .http2_initial_stream_window_size(STREAM_WINDOW)
                .http2_initial_connection_window_size(CONNECTION_WINDOW)
                .http2_keep_alive_interval(Some(Duration::from_secs(30)))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .build(connector)
        };
        UpstreamClient {
            http1: pool(false, http1),
            negotiated: pool(false, negotiated),
            http2: pool(true, http2),
        }
    }

    /// Sends the request and waits for the response head for at most `timeout`.
    pub async fn send(
        &self,
        request: Request<LimitedBody>,
        wire: Wire,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Only a request being passed through as an upgrade still carries `Upgrade` here.
        let asked_to_upgrade = request.headers().contains_key(http::header::UPGRADE);
        let pool = match wire {
            Wire::Http1 => &self.http1,
            Wire::Negotiated => &self.negotiated,
            Wire::Http2 => &self.http2,
        };
        match tokio::time::timeout(timeout, pool.request(request)).await {
            Err(_) => Err(UpstreamError::Failed(UpstreamErrorKind::Timeout)),
            // A 101 nobody asked for has no protocol behind it: relaying it would leave the
            // client with a switched connection that carries nothing.
            Ok(Ok(response))
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    && !asked_to_upgrade =>
            {
                Err(UpstreamError::Failed(UpstreamErrorKind::Protocol))
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn classify(error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return UpstreamError::BodyTooLarge;
        }
        source = e.source();
    }
    if error.is_connect() {
        return UpstreamError::Failed(UpstreamErrorKind::Connect);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return UpstreamError::Failed(UpstreamErrorKind::Protocol);
            }
            if h.is_timeout() {
                return UpstreamError::Failed(UpstreamErrorKind::Timeout);
            }
        }
        source = e.source();
    }
    UpstreamError::Failed(UpstreamErrorKind::Reset)
}

/// TLS client settings for upstreams: the platform's trust store, or only `extra_roots` when given.
pub fn upstream_tls(
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    if extra_roots.is_empty() {
        let verifier = rustls_platform_verifier::Verifier::new(provider)?;
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in extra_roots {
            roots.add(cert.clone())?;
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

//! The pooled upstream client: keep-alive HTTP/1.1 to plain or TLS upstreams, with connect and
//! response-head deadlines, the body idle timeout on what it streams up, and failures sorted into
//! the kinds operators act on.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{BodyTooLarge, LimitedBody};
use crate::metrics::UpstreamErrorKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    Failed(UpstreamErrorKind),
    /// The client's body passed `max_body_bytes` while streaming upstream.
    BodyTooLarge,
}

#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, LimitedBody>,
}

impl UpstreamClient {
    /// `tls` verifies TLS upstreams (the platform's roots unless tests supply their own CA).
    pub fn new(connect_timeout: Duration, tls: rustls::ClientConfig) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        UpstreamClient { client }
    }

    /// Sends the request and waits for the response head for at most `timeout`.
    pub async fn send(
        &self,
        request: Request<LimitedBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Only a request being passed through as an upgrade still carries `Upgrade` here.
        let asked_to_upgrade = request.headers().contains_key(http::header::UPGRADE);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
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

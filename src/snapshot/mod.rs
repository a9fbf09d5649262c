//! The compiled state a request reads: routes with their providers and metric handles, the
//! header names the gateway owns, the TLS acceptors. Built whole from one `Config`; the lifecycle
//! that swaps snapshots on reload lives in `gateway`.

mod routes;

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;

use crate::assertion::Minter;
use crate::auth::keyset::ProviderKeys;
use crate::config::{Config, RouteAuth};
use crate::denial::MetadataChallenges;
use crate::metrics::{Metrics, RouteMetrics};
use crate::tls::{self, TlsError};
use crate::upstream::{upstream_tls, UpstreamClient};

pub use routes::{Route, RouteMiss, RouteTable};

/// Everything a request reads, built together from one config so a reload never mixes two.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub providers: Vec<Arc<ProviderKeys>>,
    /// Every header name any route may inject: removed from every incoming request.
    pub injected_headers: Vec<HeaderName>,
    /// Metrics of requests refused before a route matched.
    pub unrouted: RouteMetrics,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub hsts: Option<HeaderValue>,
    /// `admin.tls`: re-read with the public certificate on every reload.
    pub admin_tls: Option<tokio_rustls::TlsAcceptor>,
    /// `forward_auth.tls`, likewise.
    pub forward_auth_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The upstream pools, kept across reloads unless `upstream_tls` or the connect timeout
    /// changed (a changed CA file is re-read then).
    pub upstream: UpstreamClient,
    /// Signs `forward.assertion`s with this config's key; `None` without an `assertion:` section.
    pub assertions: Option<Minter>,
    /// The challenges with `resource_metadata` appended, when `server.resource_metadata` is set.
    pub metadata_challenges: Option<MetadataChallenges>,
}

/// Compiles `config` into a snapshot. Providers whose settings equal one of `previous`'s are
/// carried over (with their keys, and so their cached tokens); the others start without keys.
pub fn build(
    config: Config,
    metrics: &Metrics,
    jwks_http: &reqwest::Client,
    extra_roots: &[CertificateDer<'static>],
    previous: Option<&Snapshot>,
) -> Result<Snapshot, TlsError> {
    let upstream = match previous {
        Some(p)
            if p.config.upstream_tls == config.upstream_tls
                && p.config.server.limits.upstream_connect_timeout
                    == config.server.limits.upstream_connect_timeout =>
        {
            p.upstream.clone()
        }
        _ => upstream_client(&config, extra_roots)?,
    };
    let providers: Vec<Arc<ProviderKeys>> = config
        .providers
        .iter()
        .map(|pc| {
            let unchanged = previous.and_then(|s| s.providers.iter().find(|p| *p.config == **pc));
            match unchanged {
                Some(p) => p.clone(),
                None => Arc::new(ProviderKeys::new(
                    pc.clone(),
                    jwks_http.clone(),
                    metrics.provider(&pc.name),
                )),
            }
        })
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|rc| {
            let trusted = match &rc.auth {
                RouteAuth::Anonymous => Vec::new(),
                RouteAuth::Protected(auth) => auth
                    .providers
                    .iter()
                    .map(|&i| providers[i].clone())
                    .collect(),
            };
            Route::new(rc.clone(), trusted, metrics.route(&rc.name))
        })
        .collect();
    // Each provider's DPoP challenge names its algorithms: rendered here, once, not on a refusal.
    for dpop in config.providers.iter().filter_map(|p| p.dpop.as_ref()) {
        crate::denial::dpop_text(dpop.algorithms);
    }
    let mut injected_headers: Vec<HeaderName> = Vec::new();
    for route in &config.routes {
        // An assertion header is the gateway's to set: a client's is removed on every route.
        let assertion = route.assertion.iter().map(|a| &a.header);
        for header in route
            .forward_claims
            .iter()
            .map(|ch| &ch.header)
            .chain(assertion)
        {
            if !injected_headers.contains(header) {
                injected_headers.push(header.clone());
            }
        }
    }
    let (tls, hsts) = match &config.server.tls {
        Some(t) => (
            Some(tls::acceptor(t)?),
            t.hsts_max_age.map(|age| {
                HeaderValue::from_str(&format!("max-age={}", age.as_secs()))
                    .unwrap_or(HeaderValue::from_static("max-age=31536000"))
            }),
        ),
        None => (None, None),
    };
    let admin_tls = config
        .admin
        .tls
        .as_ref()
        .map(tls::admin_acceptor)
        .transpose()?;
    let forward_auth_tls = config
        .forward_auth
        .as_ref()
        .and_then(|fa| fa.tls.as_ref())
        .map(tls::decision_acceptor)
        .transpose()?;
    Ok(Snapshot {
        routes: RouteTable::new(routes, config.server.path),
        providers,
        injected_headers,
        unrouted: metrics.route("none"),
        tls,
        hsts,
        admin_tls,
        forward_auth_tls,
        upstream,
        assertions: Minter::new(&config),
        metadata_challenges: config
            .server
            .resource_metadata
            .as_ref()
            .map(|m| MetadataChallenges::new(&m.url)),
        config: Arc::new(config),
    })
}

/// Upstream TLS trusts `upstream_tls.ca_file` (and `extra_roots`, for tests and the demo) when
/// either is given, the platform's store otherwise.
fn upstream_client(
    config: &Config,
    extra_roots: &[CertificateDer<'static>],
) -> Result<UpstreamClient, TlsError> {
    let mut roots = extra_roots.to_vec();
    if let Some(upstream) = &config.upstream_tls {
        roots.extend(tls::load_certs(&upstream.ca_file)?);
    }
    Ok(UpstreamClient::new(
        config.server.limits.upstream_connect_timeout,
        upstream_tls(&roots)?,
    ))
}

//! The running gateway's lifecycle: one `Snapshot` of compiled config behind an `ArcSwap`, swapped
//! whole on reload, plus what outlives a reload (metrics, the verified-token cache, the JWKS
//! client).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::assertion::{self, PublishedKeys};
use crate::auth::cache::VerifiedCache;
use crate::auth::keyset::ProviderKeys;
use crate::auth::replay::ReplayCache;
use crate::auth::revocation::{RevocationError, Revocations};
use crate::auth::throttle::FailureThrottle;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};
use crate::tls::TlsError;
use crate::trace::Tracer;

/// Options for embedding the gateway (tests, the demo); production uses the defaults.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Trust only these roots for JWKS, discovery and TLS upstreams instead of the platform's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the HTTPS client: {0}")]
    Client(String),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub cache: VerifiedCache,
    /// Revocations outlive reloads: a changed `revocation:` section needs a restart.
    pub revocations: Arc<Revocations>,
    pub throttle: FailureThrottle,
    /// Trace context and span export; the queue outlives reloads.
    pub tracer: Tracer,
    /// The assertion keys the admin listener publishes, retired ones included.
    pub assertion_keys: PublishedKeys,
    /// DPoP proofs already accepted; outlives reloads, so a reload never forgets one.
    pub replay: ReplayCache,
    jwks_http: reqwest::Client,
    /// Roots the embedder trusts for TLS upstreams, kept for the snapshots of later reloads.
    extra_roots: Vec<CertificateDer<'static>>,
    background: tokio::sync::Mutex<Background>,
}

#[derive(Default)]
struct Background {
    tasks: JoinSet<()>,
    /// One token per provider generation, so a reload can stop the refreshers it replaced.
    refreshers: Vec<(Arc<ProviderKeys>, CancellationToken)>,
    stop: CancellationToken,
}

impl Gateway {
    pub fn new(config: Config, options: GatewayOptions) -> Result<Arc<Gateway>, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let mut jwks = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jwt-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5));
        for root in &options.extra_roots {
            let cert = reqwest::Certificate::from_der(root)
                .map_err(|e| BuildError::Client(e.to_string()))?;
            jwks = jwks.tls_certs_only([cert]);
        }
        let jwks_http = jwks
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        let cache = VerifiedCache::new(config.token_cache.max_entries);
        let revocations = Arc::new(Revocations::open(&config.revocation, metrics.clone())?);
        // The JWKS client's settings (no redirects, the embedder's roots) suit the collector too.
        let tracer = Tracer::new(&config.tracing, jwks_http.clone(), metrics.trace_export());
        let assertion_keys = PublishedKeys::new(&config);
        let snapshot = snapshot::build(config, &metrics, &jwks_http, &options.extra_roots, None)?;
        Ok(Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            cache,
            revocations,
            throttle: FailureThrottle::new(),
            tracer,
            assertion_keys,
            replay: ReplayCache::default(),
            jwks_http,
            extra_roots: options.extra_roots,
            background: tokio::sync::Mutex::new(Background::default()),
        }))
    }

    /// The current snapshot; a request loads it once and keeps it to the end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Every provider can verify tokens now.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().providers.iter().all(|p| p.is_ready())
    }

    /// Starts one JWKS refresher per provider; `stop_background` ends them.
    pub async fn start_background(&self) {
        let snapshot = self.snapshot();
        let mut bg = self.background.lock().await;
        for provider in &snapshot.providers {
            spawn_refresher(&mut bg, provider.clone());
        }
        let token = bg.stop.child_token();
        bg.tasks.spawn(self.revocations.clone().run_sync(token));
        if let Some(exporter) = self.tracer.exporter(bg.stop.child_token()) {
            bg.tasks.spawn(exporter);
        }
    }

    pub async fn stop_background(&self) {
        let mut bg = self.background.lock().await;
        bg.stop.cancel();
        while bg.tasks.join_next().await.is_some() {}
    }

    /// Swaps in a new config. Providers whose settings did not change keep their keys (and so
    /// their cached tokens); changed ones start fresh, and their old refreshers stop.
    pub async fn reload(&self, config: Config) -> Result<(), BuildError> {
        let previous = self.snapshot();
        if config.revocation != previous.config.revocation {
            tracing::warn!("the revocation section changed; it takes effect at the next restart");
        }
        let next = snapshot::build(
            config,
            &self.metrics,
            &self.jwks_http,
            &self.extra_roots,
            Some(&previous),
        )?;
        let mut bg = self.background.lock().await;
        let kept: Vec<Arc<ProviderKeys>> = next.providers.clone();
        bg.refreshers.retain(|(p, token)| {
            let alive = kept.iter().any(|k| Arc::ptr_eq(k, p));
            if !alive {
                token.cancel();
            }
            alive
        });
        for provider in &next.providers {
            if !bg.refreshers.iter().any(|(p, _)| Arc::ptr_eq(p, provider)) {
                spawn_refresher(&mut bg, provider.clone());
            }
        }
        self.tracer.configure(&next.config.tracing);
        self.assertion_keys.rotate(
            next.config.assertion.as_ref(),
            assertion::longest_ttl(&previous.config),
        );
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

fn spawn_refresher(bg: &mut Background, provider: Arc<ProviderKeys>) {
    let token = bg.stop.child_token();
    bg.refreshers.push((provider.clone(), token.clone()));
    bg.tasks.spawn(provider.run_refresher(token));
}

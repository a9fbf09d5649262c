//! Each provider's signing keys: fetched from its JWKS (or OIDC discovery), kept in an `ArcSwap`
//! that requests read without locking, refreshed in the background, refetched once on an unknown
//! `kid`, and kept through an IdP outage for up to `max_stale`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jwk::{parse_jwks, JwksError, VerifyingKey};
use super::token::unix_now;
use super::Algorithm;
use crate::config::{KeysSource, ProviderConfig};
use crate::denial::Reason;
use crate::metrics::ProviderMetrics;

/// Largest JWKS or discovery document read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The keys of one provider at one moment. Replaced whole, never edited in place.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Arc<VerifyingKey>>,
    /// When the JWKS last answered with a usable document; `None` before the first success.
    pub last_success: Option<Instant>,
    pub last_attempt: Option<Instant>,
    /// The last fetch failed: an unknown `kid` may exist at the IdP, so it is 503, not 401.
    pub failing: bool,
    /// Counts fetch attempts, so a waiter can tell whether someone fetched while it queued.
    pub attempts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("JWKS unusable: {0}")]
    Jwks(#[from] JwksError),
    #[error("JWKS holds no key usable with the allowed algorithms")]
    NoUsableKey,
    #[error("discovery document invalid: {0}")]
    Discovery(&'static str),
}

pub struct ProviderKeys {
    pub config: Arc<ProviderConfig>,
    state: ArcSwap<KeySet>,
    /// Single flight: one fetch at a time per provider, whoever asks for it.
    fetch_lock: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    shared_secret: Option<Arc<VerifyingKey>>,
    metrics: ProviderMetrics,
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKeys")
            .field("provider", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl ProviderKeys {
    pub fn new(
        config: Arc<ProviderConfig>,
        http: reqwest::Client,
        metrics: ProviderMetrics,
    ) -> ProviderKeys {
        let shared_secret = config
            .shared_secret
            .as_ref()
            .and_then(|s| VerifyingKey::shared_secret(&s.0, &config.algorithms))
            .map(Arc::new);
        // An HMAC-only provider is ready from the start; its one key counts for the gauge.
        if config.keys.is_none() && shared_secret.is_some() {
            metrics.keys.set(1);
        }
        ProviderKeys {
            config,
            state: ArcSwap::from_pointee(KeySet::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            http,
            shared_secret,
            metrics,
        }
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        self.state.load_full()
    }

    pub fn metrics(&self) -> &ProviderMetrics {
        &self.metrics
    }

    pub fn has_remote_keys(&self) -> bool {
        self.config.keys.is_some()
    }

    /// Ready when tokens can be verified: an HMAC-only provider always is; a JWKS one while its
    /// last good keys are within `max_stale`.
    pub fn is_ready(&self) -> bool {
        if !self.has_remote_keys() {
            return self.shared_secret.is_some();
        }
        let state = self.state.load();
        self.fresh_enough(&state, Instant::now()) && !state.keys.is_empty()
    }

    fn fresh_enough(&self, state: &KeySet, now: Instant) -> bool {
        state
            .last_success
            .is_some_and(|t| now.saturating_duration_since(t) <= self.config.jwks.max_stale)
    }

    /// Whether `key` may still verify tokens: the shared secret, or a key of the current set
    /// within `max_stale`. A cached token whose key left the JWKS dies here.
    pub fn holds(&self, key: &VerifyingKey) -> bool {
        if self.shared_secret.as_ref().is_some_and(|s| s.id == key.id) {
            return true;
        }
        let state = self.state.load();
        self.fresh_enough(&state, Instant::now()) && state.keys.iter().any(|k| k.id == key.id)
    }

    /// Seconds a client should wait before retrying when keys are unavailable.
    pub fn retry_after_secs(&self) -> u32 {
        self.config.jwks.min_refresh.as_secs().clamp(1, 3600) as u32
    }

    /// The key that must verify a token with this `kid` and `alg`, refetching the JWKS at most
    /// once per `min_refresh` when the `kid` is unknown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyingKey>, Reason> {
        if alg.is_hmac() {
            return self
                .shared_secret
                .clone()
                .filter(|k| k.supports(alg))
                .ok_or(Reason::AlgNotAllowed);
        }
        let state = self.state.load_full();
        if let Some(found) = self.find(&state, kid, alg)? {
            return Ok(found);
        }
        if self.may_refetch(&state) {
            let _ = self.refresh_if_no_fetch_since(state.attempts).await;
        }
        let state = self.state.load_full();
        if let Some(found) = self.find(&state, kid, alg)? {
            return Ok(found);
        }
        if state.failing || !self.fresh_enough(&state, Instant::now()) {
            Err(Reason::KeysUnavailable)
        } else {
            Err(Reason::UnknownKid)
        }
    }

    fn find(
        &self,
        state: &KeySet,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<VerifyingKey>>, Reason> {
        if !self.fresh_enough(state, Instant::now()) {
            return Ok(None);
        }
        match kid {
            Some(kid) => match state.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(key) if key.supports(alg) => Ok(Some(key.clone())),
                Some(_) => Err(Reason::AlgNotAllowed),
                None => Ok(None),
            },
            // Without a kid only an unambiguous key is used: trying every key would multiply the
            // cost of each forged token by the size of the set.
            None => {
                let mut candidates = state.keys.iter().filter(|k| k.supports(alg));
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Ok(Some(only.clone())),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Whether the `min_refresh` floor allows another fetch now.
    fn may_refetch(&self, state: &KeySet) -> bool {
        self.has_remote_keys()
            && state
                .last_attempt
                .is_none_or(|t| t.elapsed() >= self.config.jwks.min_refresh)
    }

    /// Fetches unless another fetch started after the caller looked (`seen_attempts`): a thousand
    /// requests with an unknown kid queue on the lock, and only the first one fetches.
    async fn refresh_if_no_fetch_since(&self, seen_attempts: u64) -> Result<(), FetchError> {
        let _guard = self.fetch_lock.lock().await;
        let state = self.state.load();
        if state.attempts != seen_attempts || !self.may_refetch(&state) {
            return Ok(());
        }
        drop(state);
        self.fetch_and_store().await.map(|_| ())
    }

    /// Fetches now (start-up, the background timer, `check --request`); returns the next delay.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<Duration, FetchError> {
        let started = Instant::now();
        let outcome = self.fetch().await;
        let previous = self.state.load_full();
        let mut next = KeySet {
            keys: previous.keys.clone(),
            last_success: previous.last_success,
            last_attempt: Some(started),
            failing: true,
            attempts: previous.attempts + 1,
        };
        let result = match outcome {
            Ok((keys, max_age)) => {
                // A key that survives a refresh keeps its identity, so cached tokens stay valid;
                // one that left the set takes its cached tokens with it.
                next.keys = keys
                    .into_iter()
                    .map(|k| {
                        previous
                            .keys
                            .iter()
                            .find(|old| old.same_material(&k))
                            .cloned()
                            .unwrap_or_else(|| Arc::new(k))
                    })
                    .collect();
                next.last_success = Some(started);
                next.failing = false;
                self.metrics.refresh_ok.inc();
                self.metrics.keys.set(next.keys.len() as i64);
                self.metrics.last_success.set(unix_now());
                let jwks = &self.config.jwks;
                Ok(max_age
                    .unwrap_or(jwks.refresh_interval)
                    .clamp(jwks.min_refresh, jwks.refresh_interval))
            }
            Err(e) => {
                self.metrics.refresh_error.inc();
                tracing::warn!(provider = %self.config.name, error = %e, "JWKS refresh failed; serving the last good keys until max_stale");
                Err(e)
            }
        };
        if !self.fresh_enough(&next, Instant::now()) {
            self.metrics.keys.set(0);
        }
        self.state.store(Arc::new(next));
        result
    }

    async fn fetch(&self) -> Result<(Vec<VerifyingKey>, Option<Duration>), FetchError> {
        let jwks_url = match &self.config.keys {
            Some(KeysSource::JwksUrl(url)) => url.clone(),
            Some(KeysSource::Discovery(doc)) => self.discover(doc).await?,
            None => return Ok((Vec::new(), None)),
        };
        let (body, max_age) = self.get(&jwks_url).await?;
        let parsed = parse_jwks(&body, &self.config.algorithms)?;
        for (which, why) in &parsed.skipped {
            tracing::warn!(provider = %self.config.name, key = %which, reason = %why, "JWKS entry skipped");
        }
        if parsed.keys.is_empty() {
            return Err(FetchError::NoUsableKey);
        }
        Ok((parsed.keys, max_age))
    }

    async fn discover(&self, doc_url: &reqwest::Url) -> Result<reqwest::Url, FetchError> {
        let (body, _) = self.get(doc_url).await?;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|_| FetchError::Discovery("not JSON"))?;
        // OpenID Connect Discovery 4.3: the document must name exactly the issuer it was fetched for.
        if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(FetchError::Discovery(
                "its issuer differs from the configured one",
            ));
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or(FetchError::Discovery("no jwks_uri"))?;
        let url =
            reqwest::Url::parse(uri).map_err(|_| FetchError::Discovery("jwks_uri is not a URL"))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.config.allow_insecure_jwks_http => Ok(url),
            _ => Err(FetchError::Discovery("jwks_uri is not https")),
        }
    }

    async fn get(&self, url: &reqwest::Url) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut response = self
            .http
            .get(url.clone())
            .timeout(self.config.jwks.fetch_timeout)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Http(without_url(e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(without_url(e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }

    /// Refreshes on the schedule the IdP asks for, within the configured bounds, until cancelled.
    pub async fn run_refresher(self: Arc<Self>, cancel: CancellationToken) {
        if !self.has_remote_keys() {
            return;
        }
        loop {
            let delay = match self.refresh().await {
                Ok(next) => next,
                Err(_) => self.config.jwks.min_refresh.max(Duration::from_secs(1)),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// reqwest errors print the URL; keep the cause only (URLs may carry tokens in query strings).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body could not be read"
    } else {
        "failed"
    };
    kind.to_string()
}

/// `max-age` in seconds from a Cache-Control header; `no-cache`/`no-store` mean "as soon as allowed".
fn cache_max_age(header: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_read() {
        assert_eq!(
            cache_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_max_age("public"), None);
        assert_eq!(cache_max_age("max-age=abc"), None);
    }
}

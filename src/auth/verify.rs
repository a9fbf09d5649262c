//! One token's verification against the providers a route trusts: the verified-token cache first,
//! then strict decoding, provider choice by `iss`, key lookup and signature, provider-level claims.

use std::sync::Arc;

use tokio::time::Instant;

use super::cache::{CachedToken, VerifiedCache};
use super::keyset::ProviderKeys;
use super::token::{self, unix_now};
use crate::denial::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// Verifies `token` for a route trusting `providers`, recording the validation time of the
/// provider it belongs to under `cache="hit"` or `cache="miss"`.
pub async fn verify_token(
    token: &str,
    providers: &[Arc<ProviderKeys>],
    cache: &VerifiedCache,
) -> Result<(Arc<CachedToken>, CacheOutcome), Reason> {
    let started = Instant::now();
    match verify_cached(token.as_bytes(), providers, cache, started) {
        Some(verdict) => verdict,
        None => verify_miss(token, providers, cache, started).await,
    }
}

/// The verdict of the verified-token cache, `None` when it has no usable entry for `token`
/// (unknown, verified for a provider this route does not trust, or its key is gone). `started`
/// is when validation began, for the histogram.
pub fn verify_cached(
    token: &[u8],
    providers: &[Arc<ProviderKeys>],
    cache: &VerifiedCache,
    started: Instant,
) -> Option<Result<(Arc<CachedToken>, CacheOutcome), Reason>> {
    let entry = cache.get(token)?;
    if !providers.iter().any(|p| Arc::ptr_eq(p, &entry.provider)) {
        return None;
    }
    if !entry.key_still_current() {
        // The key left the JWKS (or went past max_stale): the token must earn a fresh verdict.
        cache.remove(token);
        return None;
    }
    let result = entry
        .claims
        .check_times(unix_now(), entry.provider.config.clock_skew.as_secs_f64())
        .map(|()| (entry.clone(), CacheOutcome::Hit));
    entry
        .provider
        .metrics()
        .validation_hit
        .observe(started.elapsed().as_secs_f64());
    Some(result)
}

/// Full verification of a token the cache could not answer for: strict decoding, provider
/// choice by `iss`, key, signature, provider-level claims; a verified token enters the cache.
pub async fn verify_miss(
    token: &str,
    providers: &[Arc<ProviderKeys>],
    cache: &VerifiedCache,
    started: Instant,
) -> Result<(Arc<CachedToken>, CacheOutcome), Reason> {
    let decoded = token::decode(token)?;
    let iss = token::issuer(&decoded.claims)?;
    let provider = providers
        .iter()
        .find(|p| p.config.issuer == iss)
        .ok_or(Reason::Issuer)?;
    let result = verify_uncached(token, decoded, provider, cache).await;
    provider
        .metrics()
        .validation_miss
        .observe(started.elapsed().as_secs_f64());
    result.map(|entry| (entry, CacheOutcome::Miss))
}

async fn verify_uncached(
    token: &str,
    decoded: token::UnverifiedToken<'_>,
    provider: &Arc<ProviderKeys>,
    cache: &VerifiedCache,
) -> Result<Arc<CachedToken>, Reason> {
    if !provider.config.algorithms.contains(&decoded.alg) {
        return Err(Reason::AlgNotAllowed);
    }
    let key = provider
        .key_for(decoded.kid.as_deref(), decoded.alg)
        .await?;
    if !key.verify(decoded.alg, decoded.signing_input, &decoded.signature) {
        return Err(Reason::BadSignature);
    }
    let now = unix_now();
    let claims = token::check_claims(decoded, &provider.config, now)?;
    Ok(cache.insert(token, CachedToken::new(provider.clone(), key, claims, now)))
}

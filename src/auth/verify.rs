//! One token's verification against the providers a route trusts: the verified-token cache first,
//! then strict decoding, provider choice by `iss`, key lookup and signature, provider-level claims.

use std::sync::Arc;

use tokio::time::Instant;

use super::bearer::{BadAuthorization, Credential};
use super::cache::{CachedToken, VerifiedCache};
use super::keyset::ProviderKeys;
use super::token::{self, unix_now};
use crate::denial::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// Why a credential did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unverified {
    /// The token's characters are not a b64token: the Authorization header is malformed (400).
    Credential(BadAuthorization),
    /// The token was read and refused (401, or 503 for `KeysUnavailable`).
    Token(Reason),
}

/// Verifies a bearer credential for a route trusting `providers`, recording the validation time
/// of the provider it belongs to under `cache="hit"` or `cache="miss"`. The one composition of
/// the steps below: the proxy, `check --request` and the benches all call it.
pub async fn verify_token(
    credential: &Credential<'_>,
    providers: &[Arc<ProviderKeys>],
    cache: &VerifiedCache,
) -> Result<(Arc<CachedToken>, CacheOutcome), Unverified> {
    let started = Instant::now();
    // The cache first: a hit is a string that already passed the character check, so only a
    // miss pays for scanning the token.
    if let Some(verdict) = verify_cached(credential.bytes(), providers, cache, started) {
        return verdict.map_err(Unverified::Token);
    }
    let token = credential.checked().map_err(Unverified::Credential)?;
    verify_miss(token, providers, cache, started)
        .await
        .map_err(Unverified::Token)
}

/// The verdict of the verified-token cache, `None` when it has no usable entry for `token`
/// (unknown, verified for a provider this route does not trust, or its key is gone). `started`
/// is when validation began, for the histogram.
fn verify_cached(
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
async fn verify_miss(
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

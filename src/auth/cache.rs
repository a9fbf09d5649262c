//! Tokens that already passed signature and provider checks, so a repeat request skips base64,
//! JSON and crypto. Only verified tokens enter, so a flood of garbage cannot evict good entries.
//!
//! An entry is keyed by the token itself (comparing the whole token on a hit is what makes a hit
//! safe) and remembers the provider and the key that verified it: it dies at the token's `exp`,
//! when its key leaves the JWKS, and when its provider's settings change on reload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::jwk::VerifyingKey;
use super::keyset::ProviderKeys;
use super::token::VerifiedClaims;

/// Tokens without `exp` (allowed only when a provider drops it from require_claims) are
/// re-verified at least this often.
const MAX_TTL: Duration = Duration::from_secs(3600);

pub struct CachedToken {
    pub provider: Arc<ProviderKeys>,
    pub key: Arc<VerifyingKey>,
    pub claims: VerifiedClaims,
    ttl: Duration,
}

impl CachedToken {
    pub fn new(
        provider: Arc<ProviderKeys>,
        key: Arc<VerifyingKey>,
        claims: VerifiedClaims,
        now_unix: f64,
    ) -> CachedToken {
        let ttl = match claims.exp {
            Some(exp) if exp > now_unix => {
                Duration::from_secs_f64((exp - now_unix).min(MAX_TTL.as_secs_f64()))
            }
            Some(_) => Duration::ZERO,
            None => MAX_TTL,
        };
        CachedToken {
            provider,
            key,
            claims,
            ttl,
        }
    }

    /// Whether the key that verified this token is still served by its provider.
    pub fn key_still_current(&self) -> bool {
        self.provider.holds(&self.key)
    }
}

struct UntilExp;

impl Expiry<Arc<[u8]>, Arc<CachedToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Arc<[u8]>,
        value: &Arc<CachedToken>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Every hit hashes the whole token (hundreds of bytes): SipHash cost about 0.4 µs of it, foldhash
/// a fraction. Its weaker flooding resistance does not matter here: only verified tokens enter,
/// so nobody without an issuer's key can choose what collides.
type TokenHasher = foldhash::fast::RandomState;

#[derive(Clone)]
pub struct VerifiedCache {
    /// Keyed by the token's bytes, so a request's credential can be looked up before its
    /// characters are checked (see `bearer::Credential`).
    cache: Cache<Arc<[u8]>, Arc<CachedToken>, TokenHasher>,
}

impl VerifiedCache {
    pub fn new(max_entries: u64) -> VerifiedCache {
        VerifiedCache {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExp)
                .build_with_hasher(TokenHasher::default()),
        }
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<CachedToken>> {
        self.cache.get(token)
    }

    pub fn insert(&self, token: &str, entry: CachedToken) -> Arc<CachedToken> {
        let entry = Arc::new(entry);
        if !entry.ttl.is_zero() {
            self.cache
                .insert(Arc::from(token.as_bytes()), entry.clone());
        }
        entry
    }

    pub fn remove(&self, token: &[u8]) {
        self.cache.invalidate(token);
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

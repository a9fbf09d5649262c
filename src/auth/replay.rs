//! The DPoP replay cache: a proof's `jti` is accepted once within the window its `iat` allows
//! (RFC 9449 11.1). `replay: memory` remembers them in this instance, in bounded memory;
//! `replay: redis` in the revocation store, so that a proof accepted by one instance is refused by
//! every other at once (`SET NX`, one round trip).
//!
//! Both fail closed: a full memory cache or an unreachable Redis refuses the proof (503) rather
//! than accept one it cannot prove new.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::revocation::Revocations;
use crate::config::ReplayStore;

/// Proofs the memory cache remembers at once. An entry costs about 60 bytes (a 16-byte key and
/// its expiry in a hash map, and again in the expiry queue), so 1,000,000 are about 60 MB; at
/// `max_age: 60s` and the default `clock_skew` (each proof is remembered for
/// `max_age + 2 × clock_skew`, 120 s) that is about 8,000 new proofs a second, sustained.
pub const MEMORY_CAPACITY: usize = 1_000_000;

/// Shards of the memory cache, each behind its own lock, held only to look up and insert one key
/// (well under a microsecond), so concurrent requests rarely meet.
const SHARDS: usize = 64;

/// Whether a proof is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not seen within its window; now remembered (unless only looked at).
    Fresh,
    Replayed,
}

/// Why the cache could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the DPoP replay cache is full")]
    Full,
    #[error("the shared DPoP replay cache (Redis) is unavailable")]
    Unavailable,
}

/// Whether a lookup remembers the proof (the proxy and decision fronts) or only looks (the
/// explainer, which must not use up a client's proof in a shared store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Record,
    LookOnly,
}

/// The replay caches of a gateway; outlives reloads, so a reload never forgets a proof.
pub struct ReplayCache {
    memory: MemoryReplay,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(MEMORY_CAPACITY)
    }
}

impl ReplayCache {
    pub fn new(memory_capacity: usize) -> ReplayCache {
        ReplayCache {
            memory: MemoryReplay::new(memory_capacity),
        }
    }

    /// Whether the proof `key` is new, remembering it until `until` (seconds since the epoch)
    /// when `mode` says so. `now` is seconds since the epoch.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] when the store cannot tell: the proof must then be refused.
    pub async fn claim(
        &self,
        store: ReplayStore,
        revocations: &Revocations,
        key: [u8; 16],
        now: f64,
        until: f64,
        mode: Mode,
    ) -> Result<Claim, ReplayError> {
        match store {
            ReplayStore::Memory => self.memory.claim(key, millis(now), millis(until), mode),
            ReplayStore::Redis => self.claim_shared(revocations, key, now, until, mode).await,
        }
    }

    async fn claim_shared(
        &self,
        revocations: &Revocations,
        key: [u8; 16],
        now: f64,
        until: f64,
        mode: Mode,
    ) -> Result<Claim, ReplayError> {
        // A reload may ask for `replay: redis` while the revocation backend (fixed until a
        // restart) is the embedded one: then there is nothing to share, and proofs are refused.
        let store = revocations.shared_store().ok_or(ReplayError::Unavailable)?;
        let name = redis_key(&key);
        let answer = match mode {
            Mode::Record => {
                let ttl = Duration::from_millis(millis(until).saturating_sub(millis(now)).max(1));
                store.set_once(&name, ttl).await
            }
            Mode::LookOnly => store.exists(&name).await.map(|seen| !seen),
        };
        match answer {
            Ok(true) => Ok(Claim::Fresh),
            Ok(false) => Ok(Claim::Replayed),
            Err(e) => {
                // The revocation sync logs the outage itself, once; one line per refused proof
                // would flood the log.
                tracing::debug!(error = %e, "DPoP proof refused: the replay cache is unreachable");
                Err(ReplayError::Unavailable)
            }
        }
    }
}

fn millis(unix_secs: f64) -> u64 {
    (unix_secs.max(0.0) * 1000.0) as u64
}

/// `jwt-gateway:dpop:<hex of the replay key>`: the key is a hash already, so nothing a client
/// chose reaches Redis.
fn redis_key(key: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(17 + 32);
    name.push_str("jwt-gateway:dpop:");
    for b in key {
        name.push(HEX[usize::from(b >> 4)] as char);
        name.push(HEX[usize::from(b & 15)] as char);
    }
    name
}

/// Exact and bounded: a key is remembered until its own expiry, never evicted early (moka's
/// admission policy may drop a fresh entry under pressure, and a dropped `jti` could be replayed),
/// and a full shard refuses new proofs instead.
struct MemoryReplay {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    /// Key → expiry (ms since the epoch).
    seen: HashMap<u128, u64>,
    /// Keys in the order they came, with their expiry: nearly the order they expire in (windows
    /// differ only between providers), so purging looks at the front only.
    order: VecDeque<(u64, u128)>,
}

impl MemoryReplay {
    fn new(capacity: usize) -> MemoryReplay {
        MemoryReplay {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn claim(&self, key: [u8; 16], now: u64, until: u64, mode: Mode) -> Result<Claim, ReplayError> {
        let key = u128::from_le_bytes(key);
        // The key is a SHA-256 prefix: its low bits are as good a shard index as any hash.
        let shard = &self.shards[(key as usize) % SHARDS];
        // A poisoned lock means a panic mid-insert; the maps are still consistent enough to use.
        let mut shard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.purge(now);
        if shard.seen.get(&key).is_some_and(|&expiry| expiry > now) {
            return Ok(Claim::Replayed);
        }
        if mode == Mode::LookOnly {
            return Ok(Claim::Fresh);
        }
        if shard.seen.len() >= self.per_shard {
            // `order` is by insertion, not expiry (each proof's window depends on its `iat` and
            // its provider's `max_age`): entries that expired behind a longer-lived one still
            // count until swept here, before refusing.
            shard.seen.retain(|_, expiry| *expiry > now);
            shard.order.retain(|(expiry, _)| *expiry > now);
            if shard.seen.len() >= self.per_shard {
                return Err(ReplayError::Full);
            }
        }
        shard.seen.insert(key, until);
        shard.order.push_back((until, key));
        Ok(Claim::Fresh)
    }
}

impl Shard {
    fn purge(&mut self, now: u64) {
        while let Some(&(expiry, key)) = self.order.front() {
            if expiry > now {
                return;
            }
            self.order.pop_front();
            // Only if it was not remembered again since (a key re-inserted after it expired).
            if self.seen.get(&key) == Some(&expiry) {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[0] = n;
        k[15] = n.wrapping_mul(7);
        k
    }

    #[test]
    fn a_key_is_fresh_once_within_its_window_and_again_after() {
        let cache = MemoryReplay::new(1000);
        assert_eq!(
            cache.claim(key(1), 1_000, 5_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(key(1), 4_999, 9_000, Mode::Record),
            Ok(Claim::Replayed)
        );
        assert_eq!(
            cache.claim(key(2), 4_999, 9_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        // Past its window the proof's iat fails anyway; the key may be remembered anew.
        assert_eq!(
            cache.claim(key(1), 5_000, 9_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(key(1), 8_999, 9_999, Mode::Record),
            Ok(Claim::Replayed)
        );
    }

    #[test]
    fn looking_remembers_nothing() {
        let cache = MemoryReplay::new(1000);
        assert_eq!(
            cache.claim(key(3), 0, 5_000, Mode::LookOnly),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(key(3), 0, 5_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(key(3), 1, 5_000, Mode::LookOnly),
            Ok(Claim::Replayed)
        );
    }

    #[test]
    fn expired_keys_behind_a_longer_lived_one_do_not_fill_the_cache() {
        // Capacity one per shard; keys 0 and SHARDS land in the same shard.
        let cache = MemoryReplay::new(SHARDS * 2);
        let same_shard = |n: usize| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&((n * SHARDS) as u64).to_le_bytes());
            k
        };
        assert_eq!(
            cache.claim(same_shard(0), 0, 600_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(same_shard(1), 0, 1_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        // Full at 1 s; at 2 s the short-lived key has expired behind the long-lived one.
        assert_eq!(
            cache.claim(same_shard(2), 500, 5_000, Mode::Record),
            Err(ReplayError::Full)
        );
        assert_eq!(
            cache.claim(same_shard(2), 2_000, 5_000, Mode::Record),
            Ok(Claim::Fresh)
        );
        assert_eq!(
            cache.claim(same_shard(0), 2_000, 5_000, Mode::Record),
            Ok(Claim::Replayed)
        );
    }

    #[test]
    fn a_full_cache_refuses_instead_of_forgetting() {
        // One key per shard fits: the 65th key, in a shard that holds one, is refused.
        let cache = MemoryReplay::new(SHARDS);
        let mut refused = 0;
        for n in 0..=255u8 {
            match cache.claim(key(n), 0, 10_000, Mode::Record) {
                Ok(Claim::Fresh) => {}
                Err(ReplayError::Full) => refused += 1,
                other => panic!("{n}: {other:?}"),
            }
        }
        assert!(refused > 0);
        for n in 0..=255u8 {
            let again = cache.claim(key(n), 1, 10_000, Mode::Record);
            assert!(
                again != Ok(Claim::Fresh),
                "{n}: a remembered key was forgotten"
            );
        }
        // Once their window is over the shards take new keys again.
        assert_eq!(
            cache.claim(key(9), 10_000, 20_000, Mode::Record),
            Ok(Claim::Fresh)
        );
    }

    #[test]
    fn redis_keys_are_hex_of_the_hash() {
        assert_eq!(
            redis_key(&[0xab; 16]),
            "jwt-gateway:dpop:abababababababababababababababab"
        );
    }
}

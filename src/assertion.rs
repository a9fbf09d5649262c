//! The gateway's signed identity for upstreams (CONTRACT F, `forward.assertion`): a short JWT
//! naming the route (`aud`), the verified subject and the route's forwarded claims, signed with
//! the gateway's own ES256 or EdDSA key, so an upstream reachable around the gateway can tell a
//! request that came through it. The public keys are served on the admin listener
//! (`/.well-known/jwks.json`), the retired one until its last assertion has expired.
//!
//! Signing one costs ~39 µs (ES256, `benches/hot_path.rs` `assertion/*`), ten times the rest of
//! a cached-token request (~3.5 µs): an assertion is signed once per verified token and route and
//! reused for the first half of its life (so an upstream always receives one with at least half
//! its `ttl` left), ~0.27 µs a request, in a bounded cache that a reload drops with the snapshot
//! that holds it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::HeaderValue;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

pub use crate::signing_key::{AssertionKey, KeyError};

use crate::auth::cache::CachedToken;
use crate::auth::token::unix_now;
use crate::config::{AssertionConfig, AssertionForward, Config, RouteConfig};

/// The keys the admin listener publishes: the current one and each retired one until the last
/// assertion it signed has expired. Read by the admin listener and changed on reload only.
#[derive(Default)]
pub struct PublishedKeys {
    keys: Mutex<Vec<Published>>,
}

struct Published {
    key: Arc<AssertionKey>,
    /// `None` while it signs; a retired key is published until then.
    until: Option<Instant>,
}

/// Past the longest `ttl`, for requests that were signing on the old snapshot as it was swapped.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

impl PublishedKeys {
    pub fn new(config: &Config) -> PublishedKeys {
        let keys = PublishedKeys::default();
        keys.rotate(config.assertion.as_ref(), Duration::ZERO);
        keys
    }

    /// Makes `next`'s key the current one. A replaced key stays published for `old_ttl` (the
    /// longest assertion `ttl` of the config it served) and then disappears.
    pub fn rotate(&self, next: Option<&AssertionConfig>, old_ttl: Duration) {
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        let now = Instant::now();
        let next_kid = next.map(|n| n.key.kid());
        for published in keys.iter_mut() {
            if Some(published.key.kid()) == next_kid {
                published.until = None;
            } else if published.until.is_none() {
                published.until = Some(now + old_ttl + RETIRE_GRACE);
            }
        }
        if let Some(next) = next {
            if !keys.iter().any(|p| p.key.kid() == next.key.kid()) {
                keys.push(Published {
                    key: next.key.clone(),
                    until: None,
                });
            }
        }
        keys.retain(|p| p.until.is_none_or(|until| until > now));
    }

    /// `{"keys": [...]}`: every key an unexpired assertion may name.
    pub fn jwks(&self) -> Value {
        let now = Instant::now();
        let keys: Vec<Value> = match self.keys.lock() {
            Ok(mut keys) => {
                keys.retain(|p| p.until.is_none_or(|until| until > now));
                keys.iter().map(|p| p.key.jwk()).collect()
            }
            Err(_) => Vec::new(),
        };
        json!({ "keys": keys })
    }
}

/// The longest assertion `ttl` of any route: how long a key is still needed once replaced.
pub fn longest_ttl(config: &Config) -> Duration {
    config
        .routes
        .iter()
        .filter_map(|r| r.assertion.as_ref().map(|a| a.ttl))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Signs a snapshot's assertions and remembers them; built with the snapshot, dropped with it.
pub struct Minter {
    issuer: String,
    key: Arc<AssertionKey>,
    signed: moka::sync::Cache<(usize, usize), Arc<Minted>>,
}

/// A signed assertion and until when it is handed out again.
struct Minted {
    /// The verified token it speaks for; while this is held, no other token's entry can have
    /// the address the cache key uses.
    token: Weak<CachedToken>,
    value: HeaderValue,
    reuse_until: f64,
}

/// At most this many signed assertions are remembered per configuration.
const MAX_CACHED: u64 = 50_000;

/// Why no assertion could be made; the request is refused rather than sent without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningFailed;

impl Minter {
    pub fn new(config: &Config) -> Option<Minter> {
        let assertion = config.assertion.as_ref()?;
        let cached = config.token_cache.max_entries.clamp(1, MAX_CACHED);
        Some(Minter {
            issuer: assertion.issuer.clone(),
            key: assertion.key.clone(),
            signed: moka::sync::Cache::builder().max_capacity(cached).build(),
        })
    }

    /// The assertion for `identity` (`None` on an anonymous route) on route `index`.
    pub fn assertion(
        &self,
        index: usize,
        route: &RouteConfig,
        forward: &AssertionForward,
        identity: Option<&Arc<CachedToken>>,
    ) -> Result<HeaderValue, SigningFailed> {
        let now = unix_now();
        let key = (identity.map_or(0, |t| Arc::as_ptr(t) as usize), index);
        if let Some(minted) = self.signed.get(&key) {
            let same_token = match identity {
                Some(t) => minted.token.upgrade().is_some_and(|m| Arc::ptr_eq(&m, t)),
                None => true,
            };
            if same_token && now < minted.reuse_until {
                return Ok(minted.value.clone());
            }
        }
        let (jws, reuse_until) = self.sign(route, forward, identity, now)?;
        let value = HeaderValue::from_str(&jws).map_err(|_| SigningFailed)?;
        self.signed.insert(
            key,
            Arc::new(Minted {
                token: identity.map_or_else(Weak::new, Arc::downgrade),
                value: value.clone(),
                reuse_until,
            }),
        );
        Ok(value)
    }

    fn sign(
        &self,
        route: &RouteConfig,
        forward: &AssertionForward,
        identity: Option<&Arc<CachedToken>>,
        now: f64,
    ) -> Result<(String, f64), SigningFailed> {
        let iat = now.floor();
        let mut exp = iat + forward.ttl.as_secs_f64();
        let mut claims = Map::new();
        if let Some(token) = identity {
            // Never vouch for a request past the token it came with.
            if let Some(token_exp) = token.claims.exp {
                exp = exp.min(token_exp.floor());
            }
            for ch in &route.forward_claims {
                if let Some(value) = ch.claim.lookup(&token.claims.claims) {
                    claims.insert(ch.claim.as_str().to_string(), value.clone());
                }
            }
            if let Some(sub) = &token.claims.sub {
                claims.insert("sub".into(), sub.clone().into());
            }
        }
        // The gateway's own claims win over any forwarded claim of the same name.
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("aud".into(), route.name.clone().into());
        claims.insert("iat".into(), json!(iat as i64));
        claims.insert("exp".into(), json!(exp as i64));
        claims.insert("jti".into(), format!("{:032x}", fastrand::u128(..)).into());
        let jws = self.key.sign(&Value::Object(claims)).ok_or(SigningFailed)?;
        Ok((jws, iat + (exp - iat) / 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::b64;
    use aws_lc_rs::digest::{digest, SHA256};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;

    fn pem_of(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn reads_p256_and_ed25519_pkcs8() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = AssertionKey::from_pem(pem_of(ec.as_ref()).as_bytes()).unwrap();
        assert_eq!(key.alg(), "ES256");
        assert_eq!(key.kid().len(), 43);
        let ed = Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
        let key = AssertionKey::from_pem(pem_of(ed.as_ref()).as_bytes()).unwrap();
        assert_eq!(key.alg(), "EdDSA");
        let jws = key.sign(&json!({"a": 1})).unwrap();
        assert_eq!(jws.split('.').count(), 3);
    }

    #[test]
    fn refuses_other_keys() {
        assert!(matches!(
            AssertionKey::from_pem(b"not a pem"),
            Err(KeyError::NotPkcs8)
        ));
        let p384 = EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        assert!(matches!(
            AssertionKey::from_pem(pem_of(p384.as_ref()).as_bytes()),
            Err(KeyError::Unsupported)
        ));
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the Ed25519 key's thumbprint.
        let public: Map<String, Value> = serde_json::from_str(
            r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .unwrap();
        let canonical = Value::Object(public).to_string();
        assert_eq!(
            b64(digest(&SHA256, canonical.as_bytes())),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}

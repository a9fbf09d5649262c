//! Revocations: one token by `jti` (kept until that token's `exp`), or every token of a `sub`
//! issued before a time. Every request consults a local, lock-free view (an `ArcSwap` of an
//! immutable list), so the check adds no network round trip; backends only keep that view
//! complete and durable.

mod memory;
mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::token::{unix_now, VerifiedClaims};
use crate::config::RevocationConfig;
use crate::metrics::Metrics;

/// Longest `jti` or `sub` accepted; real ones are UUID-sized.
const MAX_ID_LEN: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rule {
    Jti { jti: String, exp: i64 },
    Subject { sub: String, not_before: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub rule: Rule,
    pub created_at: i64,
}

impl Entry {
    pub fn new(rule: Rule) -> Entry {
        let mut bytes = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let id = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Entry {
            id,
            rule,
            created_at: unix_now() as i64,
        }
    }

    /// A jti entry is useless once its token has expired; subject entries never lapse.
    fn expired(&self, now: i64) -> bool {
        matches!(self.rule, Rule::Jti { exp, .. } if exp < now)
    }
}

/// Why an admin request body is not a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("the body must be a JSON object {{\"jti\", \"exp\"}} or {{\"sub\", \"not_before\"}}")]
    Shape,
    #[error("jti and sub must be 1 to 1024 characters")]
    Identifier,
    #[error("exp and not_before must be positive whole seconds since the epoch")]
    Time,
}

/// Parses exactly `{"jti": "...", "exp": N}` or `{"sub": "...", "not_before": N}`; nothing more.
pub fn parse_rule(body: &[u8]) -> Result<Rule, InvalidRule> {
    let value: Value = serde_json::from_slice(body).map_err(|_| InvalidRule::Shape)?;
    let obj = value.as_object().ok_or(InvalidRule::Shape)?;
    let text = |key: &str| -> Result<String, InvalidRule> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(s.clone()),
            Some(_) => Err(InvalidRule::Identifier),
            None => Err(InvalidRule::Shape),
        }
    };
    let time = |key: &str| -> Result<i64, InvalidRule> {
        match obj.get(key) {
            Some(Value::Number(n)) => n.as_i64().filter(|t| *t > 0).ok_or(InvalidRule::Time),
            Some(_) => Err(InvalidRule::Time),
            None => Err(InvalidRule::Shape),
        }
    };
    if obj.len() != 2 {
        return Err(InvalidRule::Shape);
    }
    if obj.contains_key("jti") {
        Ok(Rule::Jti {
            jti: text("jti")?,
            exp: time("exp")?,
        })
    } else if obj.contains_key("sub") {
        Ok(Rule::Subject {
            sub: text("sub")?,
            not_before: time("not_before")?,
        })
    } else {
        Err(InvalidRule::Shape)
    }
}

/// An immutable view of every revocation in force, indexed for the request path.
#[derive(Debug, Default)]
pub struct RevocationList {
    entries: Vec<Entry>,
    by_jti: HashMap<String, i64>,
    by_sub: HashMap<String, i64>,
}

impl RevocationList {
    pub fn new(entries: Vec<Entry>) -> RevocationList {
        let mut by_jti = HashMap::new();
        let mut by_sub: HashMap<String, i64> = HashMap::new();
        for e in &entries {
            match &e.rule {
                Rule::Jti { jti, exp } => {
                    let slot = by_jti.entry(jti.clone()).or_insert(*exp);
                    *slot = (*slot).max(*exp);
                }
                Rule::Subject { sub, not_before } => {
                    let slot = by_sub.entry(sub.clone()).or_insert(*not_before);
                    *slot = (*slot).max(*not_before);
                }
            }
        }
        RevocationList {
            entries,
            by_jti,
            by_sub,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A subject revocation covers tokens issued before `not_before`, and tokens without `iat`
    /// (nothing proves they are newer).
    pub fn is_revoked(&self, claims: &VerifiedClaims) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        if claims
            .jti
            .as_ref()
            .is_some_and(|jti| self.by_jti.contains_key(jti))
        {
            return true;
        }
        match claims.sub.as_ref().and_then(|sub| self.by_sub.get(sub)) {
            Some(&not_before) => claims.iat.is_none_or(|iat| iat < not_before as f64),
            None => false,
        }
    }

    fn with(&self, entry: Entry) -> RevocationList {
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.id != entry.id)
            .cloned()
            .collect();
        entries.push(entry);
        RevocationList::new(entries)
    }

    fn without(&self, id: &str) -> RevocationList {
        RevocationList::new(
            self.entries
                .iter()
                .filter(|e| e.id != id)
                .cloned()
                .collect(),
        )
    }

    fn live(&self, now: i64) -> RevocationList {
        RevocationList::new(
            self.entries
                .iter()
                .filter(|e| !e.expired(now))
                .cloned()
                .collect(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("the revocation store is unavailable: {0}")]
    Unavailable(String),
    #[error("cannot open the revocation file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

enum Backend {
    Memory(memory::FileLog),
    Redis(Box<redis::RedisBackend>),
}

/// The gateway's revocations: the local view every request reads, and the backend behind it.
pub struct Revocations {
    list: ArcSwap<RevocationList>,
    backend: Backend,
    gauge: IntGauge,
    metrics: Arc<Metrics>,
}

impl Revocations {
    /// Opens the configured backend; the memory backend replays and compacts its file here.
    pub fn open(
        config: &RevocationConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Revocations, RevocationError> {
        let (backend, entries, label) = match config {
            RevocationConfig::Memory { file } => {
                let (log, entries) = memory::FileLog::open(file.as_deref())?;
                (Backend::Memory(log), entries, "memory")
            }
            RevocationConfig::Redis { url } => (
                Backend::Redis(Box::new(redis::RedisBackend::new(url)?)),
                Vec::new(),
                "redis",
            ),
        };
        let gauge = metrics.revocations(label);
        let revocations = Revocations {
            list: ArcSwap::from_pointee(RevocationList::new(entries)),
            backend,
            gauge,
            metrics,
        };
        revocations.publish_count();
        Ok(revocations)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// The per-request check: one atomic load, at most two hash lookups.
    pub fn is_revoked(&self, claims: &VerifiedClaims) -> bool {
        self.list.load().is_revoked(claims)
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.list.load().entries().to_vec()
    }

    /// Stores a revocation durably (file or Redis) before enforcing and acknowledging it; when the
    /// store cannot take it, nothing changes and the caller answers 503.
    pub async fn add(&self, rule: Rule) -> Result<Entry, RevocationError> {
        let entry = Entry::new(rule);
        match &self.backend {
            Backend::Memory(log) => log.append_add(&entry).await?,
            Backend::Redis(r) => r.add(&entry).await?,
        }
        self.list.rcu(|list| list.with(entry.clone()));
        self.publish_count();
        Ok(entry)
    }

    /// `Ok(false)` when no entry has that id.
    pub async fn remove(&self, id: &str) -> Result<bool, RevocationError> {
        if !self.list.load().entries().iter().any(|e| e.id == id) {
            return Ok(false);
        }
        match &self.backend {
            Backend::Memory(log) => log.append_remove(id).await?,
            Backend::Redis(r) => r.remove(id).await?,
        }
        self.list.rcu(|list| list.without(id));
        self.publish_count();
        Ok(true)
    }

    /// Whether the shared store is reachable (`None` for the embedded backend).
    pub fn connected(&self) -> Option<bool> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.connected()),
        }
    }

    fn publish_count(&self) {
        self.gauge.set(self.list.load().len() as i64);
    }

    fn replace(&self, list: RevocationList) {
        self.list.store(Arc::new(list));
        self.publish_count();
    }

    /// Keeps the local view in step with the backend until cancelled: the Redis subscription and
    /// resync for a fleet, the purge of expired jti entries for both.
    pub async fn run_sync(self: Arc<Self>, cancel: CancellationToken) {
        match &self.backend {
            Backend::Redis(r) => r.run(&self, cancel).await,
            Backend::Memory(_) => loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {
                        let now = unix_now() as i64;
                        let current = self.list.load_full();
                        if current.entries().iter().any(|e| e.expired(now)) {
                            self.replace(current.live(now));
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn claims(sub: &str, jti: Option<&str>, iat: Option<f64>) -> VerifiedClaims {
        VerifiedClaims {
            claims: Map::new(),
            exp: None,
            nbf: None,
            audiences: vec![],
            sub: Some(sub.into()),
            jti: jti.map(str::to_string),
            iat,
        }
    }

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(
            parse_rule(br#"{"jti":"a","exp":5}"#),
            Ok(Rule::Jti {
                jti: "a".into(),
                exp: 5
            })
        );
        assert_eq!(
            parse_rule(br#"{"sub":"u","not_before":7}"#),
            Ok(Rule::Subject {
                sub: "u".into(),
                not_before: 7
            })
        );
        for bad in [
            &br#"{"jti":"a"}"#[..],
            br#"{"jti":"a","exp":"5"}"#,
            br#"{"jti":"","exp":5}"#,
            br#"{"jti":"a","exp":5,"x":1}"#,
            br#"{"sub":"u","exp":5}"#,
            br#"{"jti":"a","exp":-1}"#,
            br#"{"jti":"a","exp":1.5}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert!(parse_rule(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn jti_and_subject_revocations_apply() {
        let list = RevocationList::new(vec![
            Entry::new(Rule::Jti {
                jti: "j1".into(),
                exp: i64::MAX,
            }),
            Entry::new(Rule::Subject {
                sub: "bob".into(),
                not_before: 1000,
            }),
        ]);
        assert!(list.is_revoked(&claims("alice", Some("j1"), Some(5.0))));
        assert!(!list.is_revoked(&claims("alice", Some("j2"), Some(5.0))));
        assert!(list.is_revoked(&claims("bob", None, Some(999.0))));
        assert!(!list.is_revoked(&claims("bob", None, Some(1000.0))));
        assert!(
            list.is_revoked(&claims("bob", None, None)),
            "no iat: cannot prove it is newer"
        );
    }
}

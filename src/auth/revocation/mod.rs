//! Revocations: one token by `jti` (kept until that token's `exp`), or every token of a `sub`
//! issued up to a time; either may be scoped to one issuer (`iss`). Every request consults a local, lock-free view (an `ArcSwap` of an
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

/// The largest `clock_skew` a provider may have (`config::compile` refuses more than 10m).
const MAX_CLOCK_SKEW_SECS: i64 = 600;

/// Longest `jti`, `sub` or `iss` accepted; real ones are UUID- or URL-sized.
pub const MAX_ID_LEN: usize = 1024;

/// What is revoked. `iss`, when present, limits the rule to tokens of that issuer; without it the
/// rule holds for every provider (a `sub` or `jti` is only unique within one issuer, so scoping
/// is the precise form; the unscoped form is the older, broader one and stays valid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rule {
    Jti {
        jti: String,
        exp: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iss: Option<String>,
    },
    Subject {
        sub: String,
        not_before: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iss: Option<String>,
    },
}

impl Rule {
    pub fn issuer(&self) -> Option<&str> {
        match self {
            Rule::Jti { iss, .. } | Rule::Subject { iss, .. } => iss.as_deref(),
        }
    }
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

    /// A jti entry is useless once its token can no longer pass; subject entries never lapse.
    /// The gateway accepts a token until `exp` plus its provider's `clock_skew`, so the entry is
    /// kept that much longer (by the largest skew the config allows), or a purge in that window
    /// would let the revoked token back in.
    fn expired(&self, now: i64) -> bool {
        matches!(self.rule, Rule::Jti { exp, .. } if exp.saturating_add(MAX_CLOCK_SKEW_SECS) < now)
    }
}

/// Why an admin request body is not a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("the body must be a JSON object {{\"jti\", \"exp\"}} or {{\"sub\", \"not_before\"}} (each with an optional \"iss\"), or {{\"token\"}}")]
    Shape,
    #[error("jti, sub and iss must be 1 to 1024 characters, token a non-empty string")]
    Identifier,
    #[error("exp and not_before must be positive whole seconds since the epoch")]
    Time,
}

/// An admin `POST /revocations` body: a rule as such, or a token to verify and revoke by `jti`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationRequest {
    Rule(Rule),
    Token(String),
}

/// Parses exactly `{"jti": "...", "exp": N}` or `{"sub": "...", "not_before": N}`, each with an
/// optional `"iss": "..."`, or `{"token": "..."}`; nothing more.
pub fn parse_request(body: &[u8]) -> Result<RevocationRequest, InvalidRule> {
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
    if let Some(token) = obj.get("token") {
        return match (token, obj.len()) {
            (Value::String(t), 1) if !t.is_empty() => Ok(RevocationRequest::Token(t.clone())),
            (_, 1) => Err(InvalidRule::Identifier),
            _ => Err(InvalidRule::Shape),
        };
    }
    let iss = obj.contains_key("iss").then(|| text("iss")).transpose()?;
    if obj.len() != 2 + usize::from(iss.is_some()) {
        return Err(InvalidRule::Shape);
    }
    let rule = if obj.contains_key("jti") {
        Rule::Jti {
            jti: text("jti")?,
            exp: time("exp")?,
            iss,
        }
    } else if obj.contains_key("sub") {
        Rule::Subject {
            sub: text("sub")?,
            not_before: time("not_before")?,
            iss,
        }
    } else {
        return Err(InvalidRule::Shape);
    };
    Ok(RevocationRequest::Rule(rule))
}

/// The rules kept under one `jti` or `sub`: the value of the unscoped rule, and per issuer that
/// of scoped ones (usually none or one: a short vector beats a second map here).
#[derive(Debug)]
struct Scoped<T> {
    any: Option<T>,
    issuers: Vec<(String, T)>,
}

impl<T: Copy + Ord> Scoped<T> {
    fn new() -> Scoped<T> {
        Scoped {
            any: None,
            issuers: Vec::new(),
        }
    }

    /// Several rules for the same key and scope merge into the widest (the latest time).
    fn add(&mut self, iss: Option<&str>, value: T) {
        let slot = match iss {
            None => &mut self.any,
            Some(iss) => match self.issuers.iter_mut().position(|(i, _)| i == iss) {
                Some(at) => {
                    let v = &mut self.issuers[at].1;
                    *v = (*v).max(value);
                    return;
                }
                None => {
                    self.issuers.push((iss.to_string(), value));
                    return;
                }
            },
        };
        *slot = Some(slot.map_or(value, |v| v.max(value)));
    }

    /// Whether a rule for every issuer, or for the token's own, satisfies `holds`. The token's
    /// issuer is read only when a scoped rule exists for this key.
    fn applies<'c>(
        &self,
        iss: impl FnOnce() -> Option<&'c str>,
        holds: impl Fn(T) -> bool,
    ) -> bool {
        if self.any.is_some_and(&holds) {
            return true;
        }
        if self.issuers.is_empty() {
            return false;
        }
        let Some(iss) = iss() else {
            return false;
        };
        self.issuers.iter().any(|(i, v)| i == iss && holds(*v))
    }
}

/// An immutable view of every revocation in force, indexed for the request path.
#[derive(Debug, Default)]
pub struct RevocationList {
    entries: Vec<Entry>,
    by_jti: HashMap<String, Scoped<i64>>,
    by_sub: HashMap<String, Scoped<i64>>,
}

impl RevocationList {
    pub fn new(entries: Vec<Entry>) -> RevocationList {
        let mut by_jti: HashMap<String, Scoped<i64>> = HashMap::new();
        let mut by_sub: HashMap<String, Scoped<i64>> = HashMap::new();
        for e in &entries {
            match &e.rule {
                Rule::Jti { jti, exp, iss } => by_jti
                    .entry(jti.clone())
                    .or_insert_with(Scoped::new)
                    .add(iss.as_deref(), *exp),
                Rule::Subject {
                    sub,
                    not_before,
                    iss,
                } => by_sub
                    .entry(sub.clone())
                    .or_insert_with(Scoped::new)
                    .add(iss.as_deref(), *not_before),
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

    /// A subject revocation covers tokens issued up to and including the second `not_before`
    /// (so `--not-before "$(date +%s)"` also catches a token minted in that same second), and
    /// tokens without `iat` (nothing proves they are newer). A scoped rule holds only when the
    /// token's `iss` (already checked against its provider) equals the rule's.
    pub fn is_revoked(&self, claims: &VerifiedClaims) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let iss = || claims.claims.get("iss").and_then(Value::as_str);
        if let Some(scoped) = claims.jti.as_ref().and_then(|jti| self.by_jti.get(jti)) {
            if scoped.applies(iss, |_| true) {
                return true;
            }
        }
        match claims.sub.as_ref().and_then(|sub| self.by_sub.get(sub)) {
            Some(scoped) => scoped.applies(iss, |not_before| {
                claims
                    .iat
                    .is_none_or(|iat| iat.floor() <= not_before as f64)
            }),
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
    /// Bumped on every change of `list`, so long-lived holders of a token (WebSocket tunnels)
    /// re-check it at once instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
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
            changes: tokio::sync::watch::Sender::new(0),
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

    /// The fleet's shared store, for other state a fleet must share at once (the DPoP replay
    /// cache); `None` for the embedded backend.
    pub(crate) fn shared_store(&self) -> Option<&redis::RedisBackend> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r),
        }
    }

    /// Whether the shared store is reachable (`None` for the embedded backend).
    pub fn connected(&self) -> Option<bool> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r.connected()),
        }
    }

    /// Tells the gauge and every subscriber that the list changed.
    fn publish_count(&self) {
        self.gauge.set(self.list.load().len() as i64);
        self.changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Wakes on every change of the revocation list.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
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
    use serde_json::{json, Map};

    fn claims(sub: &str, jti: Option<&str>, iat: Option<f64>) -> VerifiedClaims {
        claims_from("https://a.example", sub, jti, iat)
    }

    fn claims_from(iss: &str, sub: &str, jti: Option<&str>, iat: Option<f64>) -> VerifiedClaims {
        let mut map = Map::new();
        map.insert("iss".into(), json!(iss));
        VerifiedClaims {
            claims: map,
            exp: None,
            nbf: None,
            audiences: vec![],
            sub: Some(sub.into()),
            jti: jti.map(str::to_string),
            iat,
        }
    }

    fn rule(body: &str) -> Rule {
        match parse_request(body.as_bytes()) {
            Ok(RevocationRequest::Rule(rule)) => rule,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(
            rule(r#"{"jti":"a","exp":5}"#),
            Rule::Jti {
                jti: "a".into(),
                exp: 5,
                iss: None
            }
        );
        assert_eq!(
            rule(r#"{"sub":"u","not_before":7}"#),
            Rule::Subject {
                sub: "u".into(),
                not_before: 7,
                iss: None
            }
        );
        assert_eq!(
            rule(r#"{"sub":"u","iss":"https://i","not_before":7}"#),
            Rule::Subject {
                sub: "u".into(),
                not_before: 7,
                iss: Some("https://i".into())
            }
        );
        assert_eq!(
            rule(r#"{"jti":"a","exp":5,"iss":"https://i"}"#).issuer(),
            Some("https://i")
        );
        assert_eq!(
            parse_request(br#"{"token":"a.b.c"}"#),
            Ok(RevocationRequest::Token("a.b.c".into()))
        );
        for bad in [
            &br#"{"jti":"a"}"#[..],
            br#"{"jti":"a","exp":"5"}"#,
            br#"{"jti":"","exp":5}"#,
            br#"{"jti":"a","exp":5,"x":1}"#,
            br#"{"sub":"u","exp":5}"#,
            br#"{"jti":"a","exp":-1}"#,
            br#"{"jti":"a","exp":1.5}"#,
            br#"{"jti":"a","iss":"i"}"#,
            br#"{"jti":"a","exp":5,"iss":""}"#,
            br#"{"jti":"a","exp":5,"iss":7}"#,
            br#"{"sub":"u","not_before":5,"iss":"i","x":1}"#,
            br#"{"iss":"i","exp":5}"#,
            br#"{"token":""}"#,
            br#"{"token":5}"#,
            br#"{"token":"a.b.c","jti":"a"}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn jti_and_subject_revocations_apply() {
        let list = RevocationList::new(vec![
            Entry::new(rule(&format!(r#"{{"jti":"j1","exp":{}}}"#, i64::MAX))),
            Entry::new(rule(r#"{"sub":"bob","not_before":1000}"#)),
        ]);
        assert!(list.is_revoked(&claims("alice", Some("j1"), Some(5.0))));
        assert!(!list.is_revoked(&claims("alice", Some("j2"), Some(5.0))));
        assert!(list.is_revoked(&claims("bob", None, Some(999.0))));
        assert!(
            list.is_revoked(&claims("bob", None, Some(1000.0))),
            "issued in the not_before second itself"
        );
        assert!(
            list.is_revoked(&claims("bob", None, Some(1000.9))),
            "a fractional iat within that second"
        );
        assert!(!list.is_revoked(&claims("bob", None, Some(1001.0))));
        assert!(
            list.is_revoked(&claims("bob", None, None)),
            "no iat: cannot prove it is newer"
        );
    }

    #[test]
    fn scoped_rules_hold_only_for_their_issuer() {
        let list = RevocationList::new(vec![
            Entry::new(rule(r#"{"sub":"bob","not_before":1000,"iss":"https://a"}"#)),
            Entry::new(rule(r#"{"sub":"bob","not_before":500,"iss":"https://b"}"#)),
            Entry::new(rule(r#"{"jti":"j1","exp":99999999999,"iss":"https://a"}"#)),
        ]);
        assert!(list.is_revoked(&claims_from("https://a", "bob", None, Some(900.0))));
        assert!(!list.is_revoked(&claims_from("https://b", "bob", None, Some(900.0))));
        assert!(list.is_revoked(&claims_from("https://b", "bob", None, Some(500.0))));
        assert!(!list.is_revoked(&claims_from("https://c", "bob", None, Some(1.0))));
        assert!(list.is_revoked(&claims_from("https://a", "al", Some("j1"), Some(1.0))));
        assert!(!list.is_revoked(&claims_from("https://b", "al", Some("j1"), Some(1.0))));

        // An unscoped rule next to scoped ones still holds for every issuer.
        let list = list.with(Entry::new(rule(r#"{"sub":"bob","not_before":700}"#)));
        assert!(list.is_revoked(&claims_from("https://c", "bob", None, Some(700.0))));
        assert!(!list.is_revoked(&claims_from("https://c", "bob", None, Some(701.0))));
        assert!(list.is_revoked(&claims_from("https://a", "bob", None, Some(1000.0))));
    }

    #[test]
    fn jti_entries_outlive_exp_by_the_largest_clock_skew() {
        let entry = Entry::new(rule(r#"{"jti":"j","exp":1000}"#));
        assert!(
            !entry.expired(1000 + MAX_CLOCK_SKEW_SECS),
            "still acceptable with skew"
        );
        assert!(entry.expired(1001 + MAX_CLOCK_SKEW_SECS));
        let far = Entry::new(rule(&format!(r#"{{"jti":"j","exp":{}}}"#, i64::MAX)));
        assert!(!far.expired(i64::MAX), "no overflow");
        let subject = Entry::new(rule(r#"{"sub":"s","not_before":1}"#));
        assert!(!subject.expired(i64::MAX));
    }

    #[test]
    fn entries_without_iss_still_load_and_scoped_ones_round_trip() {
        let old: Entry =
            serde_json::from_str(r#"{"id":"x","sub":"bob","not_before":5,"created_at":1}"#)
                .expect("an entry written before iss existed");
        assert_eq!(old.rule.issuer(), None);
        assert!(!serde_json::to_string(&old).unwrap().contains("iss"));
        let old: Entry =
            serde_json::from_str(r#"{"id":"y","jti":"j","exp":5,"created_at":1}"#).unwrap();
        assert!(matches!(old.rule, Rule::Jti { .. }));
        let scoped = Entry::new(rule(r#"{"sub":"bob","not_before":5,"iss":"https://a"}"#));
        let text = serde_json::to_string(&scoped).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), scoped);
    }
}

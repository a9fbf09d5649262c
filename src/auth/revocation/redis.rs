//! The fleet backend: revocations live in a Redis hash, changes are announced on a pub/sub channel
//! so every instance applies them within milliseconds, and a full resync runs after every
//! (re)connect and periodically. While Redis is away each instance keeps enforcing what it knows;
//! when Redis returns (even empty) every instance writes back what Redis lost, so a revocation is
//! never dropped by an outage. Removals leave a tombstone so a resync does not resurrect them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_core::Stream;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};
use tokio_util::sync::CancellationToken;

use super::{Entry, RevocationError, RevocationList, Revocations};
use crate::auth::token::unix_now;

const ENTRIES: &str = "jwt-gateway:revocations";
const TOMBSTONES: &str = "jwt-gateway:revocations:removed";
const CHANNEL: &str = "jwt-gateway:revocations:events";
/// An admin call waits at most this long for Redis before answering 503.
const TIMEOUT: Duration = Duration::from_secs(1);
/// After Redis failed a DPoP replay lookup, lookups fail at once for this long instead of each
/// trying (and waiting `TIMEOUT` for) a connection of its own: an outage costs a request no more
/// than its refusal. The sync session reconnects on a similar rhythm (`RECONNECT_AFTER`).
const REPLAY_RETRY_AFTER: Duration = Duration::from_millis(300);
const RESYNC_EVERY: Duration = Duration::from_secs(10);
const RECONNECT_AFTER: Duration = Duration::from_millis(300);

pub struct RedisBackend {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    connected: AtomicBool,
    /// When a DPoP replay lookup last failed, in milliseconds since `created` (0: never).
    replay_failed_at: AtomicU64,
    created: tokio::time::Instant,
}

fn unavailable(e: impl std::fmt::Display) -> RevocationError {
    RevocationError::Unavailable(e.to_string())
}

impl RedisBackend {
    pub fn new(url: &str) -> Result<RedisBackend, RevocationError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(RedisBackend {
            client,
            conn: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            replay_failed_at: AtomicU64::new(0),
            created: tokio::time::Instant::now(),
        })
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RevocationError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
        self.connected.store(false, Ordering::Relaxed);
    }

    pub async fn add(&self, entry: &Entry) -> Result<(), RevocationError> {
        let json = serde_json::to_string(entry).map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(ENTRIES, &entry.id, &json)
            .ignore()
            .publish(CHANNEL, format!("add {json}"))
            .ignore();
        self.write(&pipe).await
    }

    pub async fn remove(&self, id: &str) -> Result<(), RevocationError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(ENTRIES, id)
            .ignore()
            .hset(TOMBSTONES, id, unix_now() as i64)
            .ignore()
            .publish(CHANNEL, format!("del {id}"))
            .ignore();
        self.write(&pipe).await
    }

    /// Runs one atomic change and its announcement; a failure drops the connection, so the next
    /// admin call reconnects instead of reusing a dead one.
    async fn write(&self, pipe: &redis::Pipeline) -> Result<(), RevocationError> {
        let mut conn = self.connection().await?;
        let result: Result<(), redis::RedisError> = pipe.query_async(&mut conn).await;
        if let Err(e) = result {
            self.forget_connection().await;
            return Err(unavailable(e));
        }
        Ok(())
    }

    /// Sets `key` to expire after `ttl` unless it exists: `Ok(true)` when this call set it. One
    /// `SET NX PX`, atomic in Redis, so two instances can never both take a key for new.
    pub async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, RevocationError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let set: Option<String> = self.replay_query(&cmd).await?;
        Ok(set.is_some())
    }

    /// Whether `key` exists (for a look that must not take it).
    pub async fn exists(&self, key: &str) -> Result<bool, RevocationError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        let n: u64 = self.replay_query(&cmd).await?;
        Ok(n > 0)
    }

    /// Runs a replay-cache command on the shared connection, failing at once within
    /// `REPLAY_RETRY_AFTER` of the last failure; a failure drops the connection for the next
    /// caller to reconnect, as an admin write does, but leaves the sync session's state alone.
    async fn replay_query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RevocationError> {
        let backoff = || -> Result<(), RevocationError> {
            let failed_at = self.replay_failed_at.load(Ordering::Relaxed);
            let now = self.created.elapsed().as_millis() as u64;
            if failed_at != 0
                && now.saturating_sub(failed_at) < REPLAY_RETRY_AFTER.as_millis() as u64
            {
                return Err(unavailable("failed moments ago"));
            }
            Ok(())
        };
        backoff()?;
        let connected = {
            let mut slot = self.conn.lock().await;
            // Requests that queued behind a failed connect give up with it.
            backoff()?;
            match slot.as_ref() {
                Some(conn) => Ok(conn.clone()),
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(TIMEOUT))
                        .set_response_timeout(Some(TIMEOUT));
                    let conn = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await;
                    if let Ok(conn) = &conn {
                        *slot = Some(conn.clone());
                    }
                    conn
                }
            }
        };
        let result = match connected {
            Ok(mut conn) => cmd.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let now = self.created.elapsed().as_millis() as u64;
            self.replay_failed_at.store(now.max(1), Ordering::Relaxed);
            *self.conn.lock().await = None;
        }
        result.map_err(unavailable)
    }

    pub async fn run(&self, owner: &Revocations, cancel: CancellationToken) {
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = self.session(owner) => outcome,
            };
            if let Err(e) = outcome {
                if self.connected() {
                    tracing::warn!(error = %e, "lost the revocation store; enforcing the revocations already known");
                }
                self.forget_connection().await;
                owner.metrics.revocation_sync(false);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            }
        }
    }

    /// One connected stretch: subscribe first (so nothing published during the resync is
    /// missed), resync, then apply announcements until the connection drops.
    async fn session(&self, owner: &Revocations) -> Result<(), RevocationError> {
        let mut pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)?;
        pubsub.subscribe(CHANNEL).await.map_err(unavailable)?;
        self.resync(owner).await?;
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!("revocation store connected");
        }
        let mut messages = pubsub.into_on_message();
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        loop {
            tokio::select! {
                message = std::future::poll_fn(|cx| std::pin::Pin::new(&mut messages).poll_next(cx)) => {
                    let Some(message) = message else {
                        return Err(unavailable("subscription closed"));
                    };
                    apply(owner, message.get_payload_bytes());
                }
                _ = resync.tick() => self.resync(owner).await?,
            }
        }
    }

    /// Merges Redis and the local view: Redis' entries, plus local ones Redis lost (written
    /// back), minus tombstoned and expired ones.
    async fn resync(&self, owner: &Revocations) -> Result<(), RevocationError> {
        let mut conn = self.connection().await?;
        let stored: HashMap<String, String> = conn.hgetall(ENTRIES).await.map_err(unavailable)?;
        let removed: HashMap<String, String> =
            conn.hgetall(TOMBSTONES).await.map_err(unavailable)?;
        let now = unix_now() as i64;
        let mut merged: Vec<Entry> = stored
            .values()
            .filter_map(|json| serde_json::from_str::<Entry>(json).ok())
            .collect();
        let local = owner.list.load_full();
        for entry in local.entries() {
            if !stored.contains_key(&entry.id)
                && !removed.contains_key(&entry.id)
                && !entry.expired(now)
            {
                let json = serde_json::to_string(entry).map_err(unavailable)?;
                let _: () = conn
                    .hset(ENTRIES, &entry.id, json)
                    .await
                    .map_err(unavailable)?;
                merged.push(entry.clone());
            }
        }
        let expired: Vec<&str> = merged
            .iter()
            .filter(|e| e.expired(now))
            .map(|e| e.id.as_str())
            .collect();
        if !expired.is_empty() {
            let _: () = conn.hdel(ENTRIES, &expired).await.map_err(unavailable)?;
        }
        merged.retain(|e| !e.expired(now));
        owner.replace(RevocationList::new(merged));
        owner.metrics.revocation_sync(true);
        Ok(())
    }
}

fn apply(owner: &Revocations, payload: &[u8]) {
    let text = String::from_utf8_lossy(payload);
    if let Some(json) = text.strip_prefix("add ") {
        if let Ok(entry) = serde_json::from_str::<Entry>(json) {
            owner.list.rcu(|list| list.with(entry.clone()));
            owner.publish_count();
        }
    } else if let Some(id) = text.strip_prefix("del ") {
        owner.list.rcu(|list| list.without(id));
        owner.publish_count();
    }
}

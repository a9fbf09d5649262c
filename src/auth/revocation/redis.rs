//! The fleet backend: revocations live in a Redis hash, changes are announced on a pub/sub channel
//! so every instance applies them within milliseconds, and a full resync runs after every
//! (re)connect and periodically. While Redis is away each instance keeps enforcing what it knows;
//! when Redis returns (even empty) every instance writes back what Redis lost, so a revocation is
//! never dropped by an outage. Removals leave a tombstone so a resync does not resurrect them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
const RESYNC_EVERY: Duration = Duration::from_secs(10);
const RECONNECT_AFTER: Duration = Duration::from_millis(300);

pub struct RedisBackend {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    connected: AtomicBool,
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

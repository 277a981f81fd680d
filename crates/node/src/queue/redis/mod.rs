//! Halibut's Redis pending-request queue: the nodes of a cluster, in one process
//! or many, share their queues through one Redis, so a request queued on any node
//! reaches a Tentacle whose one connection landed on another (the load-balanced
//! topology Octopus recommends since 2026.4).
//!
//! The flow, as Halibut's `RedisPendingRequestQueue` runs it (names in [`keys`]):
//! 1. the **sender** (the node whose caller queued the request) stores it in a
//!    hash (TTL: pickup timeout + 2 min), pushes its guid on the subscription's
//!    list (TTL 1 day) and publishes a pulse ([`sender`]);
//! 2. a **processor** (a node holding a connection of that subscription) pops a
//!    guid on a pulse or when its long-poll starts, reads the hash and deletes it:
//!    only the caller whose `DEL` returned 1 owns the request ([`RedisQueue::collect_next`]);
//! 3. both heartbeat every 15 s (the first after 7 s); the sender presumes the
//!    processor gone after 60 s of silence once the request was collected, the
//!    processor presumes the sender gone after 90 s and abandons the response;
//! 4. the processor stores the response (TTL 20 min) and publishes a pulse; the
//!    sender also looks for it every 15 s, +15 s, at most every 2 min ([`processor`]);
//! 5. at the pickup timeout the sender takes its request back the same way a
//!    processor claims it: if its `DEL` wins, nobody collected it;
//! 6. each node keeps a canary key and reads it every 60 s: when it is gone, Redis
//!    lost its data, and every request the node is waiting on fails with
//!    `queue-data-lost` ([`canary`]);
//! 7. every Redis call is retried 1 s apart for 30 s; a collection that still
//!    fails waits a random 0–30 s before the Tentacle's connection is dropped, so
//!    that an outage does not end in a synchronised reconnect storm.
//!
//! Where octopoll differs: data streams travel in the request's hash (Halibut
//! keeps them in a directory the cluster shares); each hash has a third field with
//! what the simulator measures ([`stored`]); the commands of one step go in one
//! pipeline (Halibut sends them one after another: the same commands, fewer round
//! trips); a collector that loses a claim to another node waits on for the rest of
//! its long-poll rather than returning the null request at once; and a node reads
//! its canary again as soon as its pub/sub link comes back after a loss (a Redis
//! restart drops every connection), not only every 60 s.

mod canary;
mod hub;
mod keys;
mod processor;
mod sender;
mod stored;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_wire::{Limits, SubscriptionId};
use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    Collect, FailReason, PendingRequest, QueueFailed, RedisStatus, RequestCounters, RequestQueue,
    StatusFuture,
};
use super::{RedisQueueConfig, RedisQueueTiming};
use crate::redis_link::{manager_config, redacted};
use crate::NodeId;
use hub::Hub;
use keys::Keys;

/// What a link runs by: the cluster's queue settings and the node's own.
#[derive(Clone, Debug)]
struct LinkConfig {
    timing: RedisQueueTiming,
    /// The node's pickup timeout: a request's hash lives this + 2 min.
    pickup_timeout: Duration,
    /// What a stored message may hold when read back.
    limits: Limits,
}

impl LinkConfig {
    /// How long a queued request's hash lives: the pickup timeout + 2 min (Halibut's).
    fn request_ttl(&self) -> Duration {
        self.pickup_timeout + Duration::from_secs(120)
    }
}

/// Why a node could not connect to the Redis queue.
#[derive(Debug, thiserror::Error)]
#[error("the Redis queue at {url} is unreachable or refused a command")]
pub struct QueueLinkError {
    /// Where the queue is, without its password.
    pub url: String,
    /// redis-rs's reason.
    #[source]
    pub source: redis::RedisError,
}

/// One node's connection to the queue, kept across the node's restarts (as a
/// process keeps its configuration): its command connection, pub/sub hub and
/// data-loss canary. In one process, give each node its own, as separate
/// processes would have.
pub struct RedisQueueLink {
    config: LinkConfig,
    shown: String,
    keys: Keys,
    connection: ConnectionManager,
    hub: Hub,
    canary: canary::Canary,
    _stop: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for RedisQueueLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueueLink")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl RedisQueueLink {
    /// Connects (command connection, pub/sub, canary) or says why not.
    pub async fn connect(
        config: &RedisQueueConfig,
        node: &crate::NodeConfig,
    ) -> Result<Arc<Self>, QueueLinkError> {
        let shown = redacted(&config.url);
        let error = |source| QueueLinkError {
            url: shown.clone(),
            source,
        };
        let client = redis::Client::open(config.url.as_str()).map_err(error)?;
        let connection = ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
            .map_err(error)?;
        let stop = CancellationToken::new();
        let hub = Hub::start(client, shown.clone(), stop.clone())
            .await
            .map_err(error)?;
        let keys = Keys::new(&config.prefix);
        let config = LinkConfig {
            timing: config.timing.clone(),
            pickup_timeout: node.pickup_timeout,
            limits: node.limits,
        };
        let canary = canary::Canary::start(
            connection.clone(),
            keys.clone(),
            config.timing.clone(),
            shown.clone(),
            hub.back(),
            stop.clone(),
        );
        Ok(Arc::new(Self {
            config,
            shown,
            keys,
            connection,
            hub,
            canary,
            _stop: stop.drop_guard(),
        }))
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The queue for one start of `node`: what it queues and collects until it
    /// stops or is killed.
    pub fn queue_for(self: &Arc<Self>, node: NodeId) -> RedisQueue {
        RedisQueue {
            inner: Arc::new(QueueInner {
                link: self.clone(),
                node,
                sending: Mutex::default(),
                pulses: tokio::sync::Mutex::default(),
                stopped: Mutex::new(None),
                senders_stop: CancellationToken::new(),
                dead: CancellationToken::new(),
                waiting: AtomicUsize::new(0),
                carried: Arc::default(),
            }),
        }
    }

    /// Whether Redis answers a PING within 2 s.
    pub async fn status(&self) -> RedisStatus {
        let ping = async {
            redis::cmd("PING")
                .query_async::<String>(&mut self.connection.clone())
                .await
        };
        let reachable = matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        );
        RedisStatus {
            is_enabled: true,
            is_configured: true,
            is_reachable: reachable,
        }
    }

    /// Times Redis was found to have lost its data (the canary gone).
    pub fn data_losses(&self) -> u64 {
        self.canary.losses()
    }

    /// Times the pub/sub link was lost and followed again.
    pub fn link_losses(&self) -> u64 {
        self.hub.losses()
    }

    /// A fault: drops every pulse this node receives from now on (`true`), as
    /// Redis pub/sub may lose a message, so only a collector's long-poll timeout
    /// (Halibut: 30 s) finds new work; `false` hears them again.
    pub fn lose_pulses(&self, lose: bool) {
        self.hub.lose_pulses(lose);
    }

    /// Runs `call` until it succeeds, `retry_every` apart, for at most `retry_for`
    /// (Halibut's `RedisFacade`); the last error if it never does.
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> redis::RedisResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let timing = &self.config.timing;
        let until = Instant::now() + timing.retry_for;
        loop {
            match call(self.connection.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) if Instant::now() + timing.retry_every < until => {
                    debug!(%error, what, "Redis call failed; retrying in {:?}", timing.retry_every);
                    tokio::time::sleep(timing.retry_every).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads the three fields of `key` and deletes it, in one round trip: the
    /// fields if this caller's `DEL` removed it (it owns what the hash held),
    /// `None` if the hash was gone or another caller's `DEL` won. (Halibut sends
    /// the two one after the other; the `DEL` decides either way.)
    async fn claim(&self, key: &str) -> redis::RedisResult<Option<[Vec<u8>; 3]>> {
        let (fields, deleted): ([Option<Vec<u8>>; 3], u64) = self
            .retry("claim: HMGET, DEL", |mut c| async move {
                redis::pipe()
                    .cmd("HMGET")
                    .arg(key)
                    .arg(stored::MESSAGE)
                    .arg(stored::STREAMS)
                    .arg(stored::FACTS)
                    .cmd("DEL")
                    .arg(key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match fields {
            [Some(message), streams, Some(facts)] if deleted == 1 => {
                Ok(Some([message, streams.unwrap_or_default(), facts]))
            }
            _ => Ok(None),
        }
    }

    /// Runs `pipe` (commands whose answers are not needed) in one round trip,
    /// retried as every call is.
    async fn send(&self, what: &str, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        self.retry(
            what,
            |mut c| async move { pipe.query_async::<()>(&mut c).await },
        )
        .await
    }

    /// Publishes a heartbeat on `channel`, once: a lost one is made up by the next.
    async fn heartbeat(&self, channel: &str) {
        let _ = redis::cmd("PUBLISH")
            .arg(channel)
            .arg("{}")
            .query_async::<()>(&mut self.connection.clone())
            .await;
    }

    /// Stores `fields` in the hash `key` for `ttl`, then publishes on `pulse`.
    async fn store(
        &self,
        key: &str,
        fields: &stored::Fields,
        ttl: Duration,
        pulse: &str,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        set_hash(&mut pipe, key, fields, ttl);
        pipe.cmd("PUBLISH").arg(pulse).arg("{}").ignore();
        self.send("HSET, PEXPIRE, PUBLISH", &pipe).await
    }
}

/// Adds `HSET key fields…` and its `PEXPIRE` to `pipe`.
fn set_hash(pipe: &mut redis::Pipeline, key: &str, fields: &stored::Fields, ttl: Duration) {
    pipe.cmd("HSET").arg(key);
    for (field, value) in fields {
        pipe.arg(*field).arg(value.as_slice());
    }
    pipe.ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(ttl.as_millis() as u64)
        .ignore();
}

/// What one start of a node shares with its sender and processor tasks.
struct QueueInner {
    link: Arc<RedisQueueLink>,
    node: NodeId,
    /// The requests this node queued and is waiting on, by guid.
    sending: Mutex<HashMap<uuid::Uuid, Arc<sender::Sending>>>,
    /// Pulse watches of the subscriptions this node has collected for: kept for
    /// the node's life, as Halibut keeps one queue per endpoint.
    pulses: tokio::sync::Mutex<HashMap<SubscriptionId, Arc<tokio::sync::Mutex<hub::Watch>>>>,
    stopped: Mutex<Option<FailReason>>,
    /// Stops every sender task (the node stopped or was killed).
    senders_stop: CancellationToken,
    /// Stops every processor task without a word (the node was killed).
    dead: CancellationToken,
    /// Requests this node queued that nobody collected yet.
    waiting: AtomicUsize,
    /// Counts the stand-ins this node processes for requests queued elsewhere.
    carried: Arc<RequestCounters>,
}

impl QueueInner {
    fn sending(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Arc<sender::Sending>>> {
        self.sending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn pulse_watch(
        &self,
        subscription: &SubscriptionId,
    ) -> Arc<tokio::sync::Mutex<hub::Watch>> {
        let mut pulses = self.pulses.lock().await;
        if let Some(watch) = pulses.get(subscription) {
            return watch.clone();
        }
        let watch = self
            .link
            .hub
            .watch(self.link.keys.request_pulse(subscription))
            .await;
        let watch = Arc::new(tokio::sync::Mutex::new(watch));
        pulses.insert(subscription.clone(), watch.clone());
        watch
    }

    /// Pops guids off `subscription`'s list until one is claimed, or the list is empty.
    async fn claim_next(
        &self,
        subscription: &SubscriptionId,
    ) -> redis::RedisResult<Option<processor::Claimed>> {
        let link = &self.link;
        let list = link.keys.pending(subscription);
        loop {
            let guid: Option<String> = link
                .retry("LPOP", |mut c| {
                    let list = list.clone();
                    async move { redis::cmd("LPOP").arg(list).query_async(&mut c).await }
                })
                .await?;
            let Some(guid) = guid else { return Ok(None) };
            let Ok(guid) = guid.parse::<uuid::Uuid>() else {
                warn!(guid, "a request guid in the queue is not a guid; skipped");
                continue;
            };
            let key = link.keys.request(subscription, guid);
            if let Some(fields) = link.claim(&key).await? {
                return Ok(Some(processor::Claimed {
                    subscription: subscription.clone(),
                    guid,
                    fields,
                }));
            }
            // Taken back by its sender, or claimed by another node: the next one.
        }
    }

    /// A random wait of at most `drop_delay_max`, so that connections dropped
    /// because Redis failed do not all come back at once.
    fn drop_delay(&self) -> Duration {
        let max = self.link.config.timing.drop_delay_max;
        max.mul_f64(rand::random::<f64>())
    }

    async fn collect(
        self: Arc<Self>,
        subscription: SubscriptionId,
        wait: Duration,
    ) -> Result<Option<Arc<PendingRequest>>, QueueFailed> {
        let deadline = Instant::now() + wait;
        let watch = self.pulse_watch(&subscription).await;
        let mut watch = watch.lock().await;
        loop {
            watch.seen();
            // Claimed in a task of its own, so a connection that goes away while
            // it waits for Redis cannot lose a claimed request: the task puts it
            // back.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let inner = self.clone();
            let sub = subscription.clone();
            tokio::spawn(async move {
                let claimed = inner.claim_next(&sub).await;
                if let Err(Ok(Some(claimed))) = tx.send(claimed) {
                    claimed.put_back(&inner).await;
                }
            });
            match rx.await {
                Ok(Ok(Some(claimed))) => match claimed.into_stand_in(&self) {
                    Some(stand_in) => return Ok(Some(stand_in)),
                    None => continue,
                },
                Ok(Ok(None)) => {}
                Ok(Err(error)) => {
                    let delay = self.drop_delay();
                    warn!(%error, %subscription, ?delay, "collecting from the Redis queue failed; dropping the connection after a random delay");
                    tokio::time::sleep(delay).await;
                    return Err(QueueFailed(error.to_string()));
                }
                Err(_) => return Err(QueueFailed("the claim task ended early".into())),
            }
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }
}

/// One start of a node's view of the Redis queue.
pub struct RedisQueue {
    inner: Arc<QueueInner>,
}

impl RequestQueue for RedisQueue {
    fn enqueue(&self, subscription: &SubscriptionId, pending: Arc<PendingRequest>) -> bool {
        let stopped = *self.inner.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = stopped {
            pending.try_fail_queued(reason);
            return false;
        }
        sender::start(self.inner.clone(), subscription.clone(), pending);
        true
    }

    fn withdraw(
        &self,
        _subscription: &SubscriptionId,
        pending: &Arc<PendingRequest>,
        reason: FailReason,
    ) -> bool {
        let guid = pending.request.activity_id;
        match self.inner.sending().get(&guid) {
            Some(sending) => sending.withdraw(reason),
            None => false,
        }
    }

    fn collect_next<'a>(&'a self, subscription: &'a SubscriptionId, wait: Duration) -> Collect<'a> {
        Box::pin(self.inner.clone().collect(subscription.clone(), wait))
    }

    fn stop(&self, reason: FailReason) -> usize {
        *self.inner.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        let sending: Vec<_> = self.inner.sending().values().cloned().collect();
        for one in &sending {
            one.stop(reason);
        }
        self.inner.senders_stop.cancel();
        if reason == FailReason::NodeKilled {
            // A killed process says nothing more: no heartbeat, no response.
            self.inner.dead.cancel();
        }
        sending.len()
    }

    fn depth(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    fn redis_status(&self) -> StatusFuture<'_> {
        Box::pin(self.inner.link.status())
    }
}

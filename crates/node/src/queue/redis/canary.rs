//! A node's data-loss canary, as Halibut keeps one: a key holding its own guid
//! (TTL 8 h), read every minute. Gone or changed means Redis lost its data
//! (restarted without persistence, flushed, failed over to an empty replica):
//! every request the node is waiting on can no longer end through Redis, so each
//! fails at once with `queue-data-lost`, a reason the caller may retry, and a new
//! canary is planted. A read that fails (Redis down) is not a loss. The canary is
//! also read as soon as the node's pub/sub link is back after a loss: a Redis
//! that restarted dropped every connection, so that is when a loss shows first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};
use uuid::Uuid;

use super::keys::Keys;
use super::RedisQueueTiming;

/// How long a canary lives without being read (Halibut: 8 h).
const CANARY_TTL: Duration = Duration::from_secs(8 * 60 * 60);

/// The watcher's findings.
pub(super) struct Canary {
    losses: Arc<AtomicU64>,
    generation: watch::Receiver<u64>,
}

impl Canary {
    /// Plants a canary and reads it every `timing.canary_every` until `stop`.
    pub(super) fn start(
        connection: ConnectionManager,
        keys: Keys,
        timing: RedisQueueTiming,
        url: String,
        link_back: watch::Receiver<u64>,
        stop: CancellationToken,
    ) -> Self {
        let (tx, generation) = watch::channel(0);
        let losses = Arc::new(AtomicU64::new(0));
        let watcher = Watcher {
            connection,
            keys,
            every: timing.canary_every,
            retry_every: timing.retry_every,
            url,
            losses: losses.clone(),
            tx,
            link_back,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = watcher.run() => {}
            }
        });
        Self { losses, generation }
    }

    /// Changes each time a loss is found: a request waits on it from when it was queued.
    pub(super) fn generation(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Losses found so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }
}

struct Watcher {
    connection: ConnectionManager,
    keys: Keys,
    every: Duration,
    retry_every: Duration,
    url: String,
    losses: Arc<AtomicU64>,
    tx: watch::Sender<u64>,
    link_back: watch::Receiver<u64>,
}

impl Watcher {
    async fn plant(&self) -> (String, String) {
        let id = Uuid::new_v4();
        let (key, guid) = (self.keys.canary(id), id.to_string());
        loop {
            let set = redis::cmd("SET")
                .arg(&key)
                .arg(&guid)
                .arg("PX")
                .arg(CANARY_TTL.as_millis() as u64)
                .query_async::<()>(&mut self.connection.clone())
                .await;
            match set {
                Ok(()) => return (key, guid),
                Err(error) => {
                    debug!(%error, "planting the data-loss canary failed; retrying");
                    tokio::time::sleep(self.retry_every).await;
                }
            }
        }
    }

    async fn run(mut self) {
        let (mut key, mut guid) = self.plant().await;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                changed = self.link_back.changed() => {
                    if changed.is_err() {
                        // The hub is gone: the link is stopping.
                        std::future::pending::<()>().await;
                    }
                }
            }
            let get = || async {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut self.connection.clone())
                    .await
            };
            // Once more after a failure: the command connection reconnects on the
            // first call that finds it broken.
            let read = match get().await {
                Err(_) => {
                    tokio::time::sleep(self.retry_every).await;
                    get().await
                }
                read => read,
            };
            match read {
                Ok(Some(value)) if value == guid => {
                    let _ = redis::cmd("PEXPIRE")
                        .arg(&key)
                        .arg(CANARY_TTL.as_millis() as u64)
                        .query_async::<()>(&mut self.connection.clone())
                        .await;
                }
                Ok(found) => {
                    self.losses.fetch_add(1, Ordering::Relaxed);
                    error!(
                        url = %self.url,
                        key,
                        expected = guid,
                        found = found.as_deref().unwrap_or("nothing"),
                        "Redis data loss detected: the queue's canary is gone, so Redis lost its data; every request this node is waiting on fails with queue-data-lost"
                    );
                    self.tx.send_modify(|n| *n += 1);
                    (key, guid) = self.plant().await;
                }
                Err(error) => debug!(%error, "reading the data-loss canary failed; not a loss"),
            }
        }
    }
}

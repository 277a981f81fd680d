//! One pub/sub connection per node for every channel the queue listens on:
//! request pulses per subscription, response pulses and heartbeats per request.
//! A [`Watch`] subscribes while it lives; each message on its channel bumps a
//! counter it can wait on. After the link is lost (closed, or silent past a ping)
//! the hub connects again, subscribes to every channel still watched, and bumps
//! them all: a message may have been missed, so every watcher looks again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::PubSubSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::redis_link::Channel;

/// How long the hub waits before connecting again after losing its link.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

struct Route {
    bump: watch::Sender<u64>,
    watchers: usize,
}

struct Inner {
    url: String,
    routes: Mutex<HashMap<String, Route>>,
    sink: Mutex<Option<PubSubSink>>,
    /// Times the link was lost and followed again.
    losses: std::sync::atomic::AtomicU64,
    /// Bumped each time the link is back after a loss.
    back: watch::Sender<u64>,
    /// Pulses are received and dropped (a fault: only the collectors' own
    /// timeouts find new work).
    deaf: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn routes(&self) -> MutexGuard<'_, HashMap<String, Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_sink(&self, sink: Option<PubSubSink>) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    fn bump(&self, channel: &str) {
        if let Some(route) = self.routes().get(channel) {
            route.bump.send_modify(|n| *n += 1);
        }
    }

    fn bump_all(&self) {
        for route in self.routes().values() {
            route.bump.send_modify(|n| *n += 1);
        }
    }
}

/// A node's pub/sub connection to the queue's Redis.
#[derive(Clone)]
pub(super) struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// Connects, and follows the link until `stop`.
    pub(super) async fn start(
        client: redis::Client,
        url: String,
        stop: CancellationToken,
    ) -> redis::RedisResult<Self> {
        let channel = Channel::open(&client).await?;
        let inner = Arc::new(Inner {
            url,
            routes: Mutex::default(),
            sink: Mutex::new(Some(channel.sink())),
            losses: Default::default(),
            back: watch::channel(0).0,
            deaf: Default::default(),
        });
        tokio::spawn(run(client, inner.clone(), channel, stop));
        Ok(Self { inner })
    }

    /// Listens on `channel` until the returned watch is dropped.
    pub(super) async fn watch(&self, channel: String) -> Watch {
        let (bumps, new) = {
            let mut routes = self.inner.routes();
            match routes.get_mut(&channel) {
                Some(route) => {
                    route.watchers += 1;
                    (route.bump.subscribe(), false)
                }
                None => {
                    let (bump, bumps) = watch::channel(0);
                    routes.insert(channel.clone(), Route { bump, watchers: 1 });
                    (bumps, true)
                }
            }
        };
        // Routed before subscribing; a sink read here after the hub reconnected
        // is the new one, and a hub reconnecting after this subscribes it anyway.
        if new {
            if let Some(mut sink) = self.inner.sink() {
                if let Err(error) = sink.subscribe(&channel).await {
                    debug!(%error, channel, "subscribing failed; the hub subscribes again once it reconnects");
                }
            }
        }
        Watch {
            bumps,
            channel,
            inner: self.inner.clone(),
        }
    }

    /// Changes each time the link is back after a loss (a Redis restart drops
    /// every connection: the canary reads again then).
    pub(super) fn back(&self) -> watch::Receiver<u64> {
        self.inner.back.subscribe()
    }

    /// Times the link was lost and followed again.
    pub(super) fn losses(&self) -> u64 {
        self.inner.losses.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops every pulse from now on (`true`), or hears them again.
    pub(super) fn lose_pulses(&self, lose: bool) {
        self.inner
            .deaf
            .store(lose, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One channel listened on.
pub(super) struct Watch {
    bumps: watch::Receiver<u64>,
    channel: String,
    inner: Arc<Inner>,
}

impl Watch {
    /// Forgets the messages so far: [`Watch::changed`] waits for the next.
    pub(super) fn seen(&mut self) {
        self.bumps.borrow_and_update();
    }

    /// Waits for a message (or a reconnect) since [`Watch::seen`]. Cancel-safe.
    pub(super) async fn changed(&mut self) {
        if self.bumps.changed().await.is_err() {
            // The route went with the hub: nothing will come.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut routes = self.inner.routes();
        let Some(route) = routes.get_mut(&self.channel) else {
            return;
        };
        route.watchers -= 1;
        if route.watchers > 0 {
            return;
        }
        routes.remove(&self.channel);
        drop(routes);
        if let Some(mut sink) = self.inner.sink() {
            let channel = std::mem::take(&mut self.channel);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = sink.unsubscribe(&channel).await;
                });
            }
        }
    }
}

async fn run(
    client: redis::Client,
    inner: Arc<Inner>,
    mut channel: Channel,
    stop: CancellationToken,
) {
    loop {
        let lost = loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = channel.next() => message,
            };
            match message {
                Ok(message) if inner.deaf.load(std::sync::atomic::Ordering::Relaxed) => {
                    debug!(channel = message.get_channel_name(), "pulse lost (fault)");
                }
                Ok(message) => inner.bump(message.get_channel_name()),
                Err(lost) => break lost,
            }
        };
        inner.set_sink(None);
        inner
            .losses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(url = %inner.url, link = lost.as_str(), "lost the queue's pub/sub link; connecting again");
        channel = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            }
            match Channel::open(&client).await {
                Ok(channel) => break channel,
                Err(error) => debug!(%error, "connecting the queue's pub/sub link failed"),
            }
        };
        let mut sink = channel.sink();
        inner.set_sink(Some(sink.clone()));
        let channels: Vec<String> = inner.routes().keys().cloned().collect();
        for name in &channels {
            if let Err(error) = sink.subscribe(name).await {
                debug!(%error, "subscribing again failed; the next loss retries");
            }
        }
        inner.bump_all();
        inner.back.send_modify(|n| *n += 1);
        info!(url = %inner.url, channels = channels.len(), "the queue's pub/sub link is back");
    }
}

//! The sending side: a request this node's caller queued, from storing it in
//! Redis to the response coming back (or the request failing), in one task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use octopoll_wire::SubscriptionId;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info_span, warn, Instrument};

use super::keys::Role;
use super::stored::{self, Queued};
use super::{hub, set_hash, QueueInner};
use crate::queue::{FailReason, PendingRequest, Reply};

/// How long a subscription's list of guids lives after its last push (Halibut: 1 day).
const LIST_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// What the node asks of a request it is sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    /// Take it back if nobody collected it (the pickup timeout; the caller gone).
    Withdraw(FailReason),
    /// The node stops: end it now.
    Stop(FailReason),
}

/// One request this node is sending.
pub(super) struct Sending {
    commands: watch::Sender<Option<Command>>,
    collected: AtomicBool,
}

impl Sending {
    /// Asks the task to take the request back; whether it may still be queued.
    pub(super) fn withdraw(&self, reason: FailReason) -> bool {
        self.commands.send_replace(Some(Command::Withdraw(reason)));
        !self.collected.load(Ordering::Relaxed)
    }

    /// Ends the request with `reason`, the node stopping.
    pub(super) fn stop(&self, reason: FailReason) {
        self.commands.send_replace(Some(Command::Stop(reason)));
    }
}

/// Starts sending `pending` to `subscription` through Redis.
pub(super) fn start(
    inner: Arc<QueueInner>,
    subscription: SubscriptionId,
    pending: Arc<PendingRequest>,
) {
    let (commands, rx) = watch::channel(None);
    let sending = Arc::new(Sending {
        commands,
        collected: AtomicBool::new(false),
    });
    let guid = pending.request.activity_id;
    inner.sending().insert(guid, sending.clone());
    inner.waiting.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("redis-send", node = %inner.node, %subscription, request = %guid);
    tokio::spawn(
        async move {
            let task = Task {
                inner: &inner,
                subscription: &subscription,
                pending: &pending,
                sending: &sending,
            };
            task.run(rx).await;
            task.collected();
            inner.sending().remove(&guid);
        }
        .instrument(span),
    );
}

struct Task<'a> {
    inner: &'a Arc<QueueInner>,
    subscription: &'a SubscriptionId,
    pending: &'a Arc<PendingRequest>,
    sending: &'a Sending,
}

impl Task<'_> {
    /// Counts it out of the node's waiting requests, once.
    fn collected(&self) {
        if !self.sending.collected.swap(true, Ordering::Relaxed) {
            self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
            self.pending.try_collect();
        }
    }

    async fn enqueue(&self, queued: Queued) -> redis::RedisResult<()> {
        let link = &self.inner.link;
        let guid = self.pending.request.activity_id;
        let key = link.keys.request(self.subscription, guid);
        let fields = stored::request(&self.pending.request, &self.pending.streams, queued);
        let ttl = link.config.request_ttl();
        let list = link.keys.pending(self.subscription);
        let mut pipe = redis::pipe();
        set_hash(&mut pipe, &key, &fields, ttl);
        pipe.cmd("RPUSH")
            .arg(&list)
            .arg(guid.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&list)
            .arg(LIST_TTL.as_millis() as u64)
            .ignore()
            .cmd("PUBLISH")
            .arg(link.keys.request_pulse(self.subscription))
            .arg("{}")
            .ignore();
        link.send("HSET, PEXPIRE, RPUSH, PEXPIRE, PUBLISH", &pipe)
            .await
    }

    /// Takes the response if it is there and ends the request with it.
    async fn try_response(&self) -> bool {
        let link = &self.inner.link;
        let key = link
            .keys
            .response(self.subscription, self.pending.request.activity_id);
        let fields = match link.claim(&key).await {
            Ok(Some(fields)) => fields,
            Ok(None) => return false,
            Err(error) => {
                warn!(%error, "reading the response from Redis failed; looking again later");
                return false;
            }
        };
        self.collected();
        match stored::read_response(fields, &link.config.limits) {
            Ok((response, streams, processed)) => {
                if let Some(micros) = processed.pickup_micros {
                    self.pending
                        .set_pickup(std::time::Duration::from_micros(micros));
                }
                match (processed.failed, response.error.clone()) {
                    (Some(reason), _) => self.pending.finish(Err(reason)),
                    (None, Some(error)) => self.pending.fail_with(error),
                    (None, None) => self.pending.finish(Ok(Reply { response, streams })),
                }
            }
            Err(error) => {
                warn!(%error, "the response in Redis is unreadable");
                self.pending.finish(Err(FailReason::ProtocolError));
            }
        }
        true
    }

    /// Whether the request's hash is gone: a processor claimed it.
    async fn was_collected(&self) -> bool {
        let link = &self.inner.link;
        let key = link
            .keys
            .request(self.subscription, self.pending.request.activity_id);
        let exists = redis::cmd("HEXISTS")
            .arg(&key)
            .arg(stored::MESSAGE)
            .query_async::<bool>(&mut link.connection.clone())
            .await;
        matches!(exists, Ok(false))
    }

    /// Claims its own request back: true if nobody had collected it.
    async fn take_back(&self) -> bool {
        let link = &self.inner.link;
        let key = link
            .keys
            .request(self.subscription, self.pending.request.activity_id);
        matches!(link.claim(&key).await, Ok(Some(_)))
    }

    async fn run(&self, mut commands: watch::Receiver<Option<Command>>) {
        let link = &self.inner.link;
        let timing = &link.config.timing;
        let guid = self.pending.request.activity_id;
        let mut data_loss = link.canary.generation();
        data_loss.borrow_and_update();
        let mut response = link
            .hub
            .watch(link.keys.response_pulse(self.subscription, guid))
            .await;
        response.seen();
        let queued = Queued {
            origin: self.inner.node,
            at_micros: stored::now_micros(),
        };
        if let Err(error) = self.enqueue(queued).await {
            warn!(%error, "the request could not be put in the Redis queue");
            self.pending.try_fail_queued(FailReason::QueueUnavailable);
            return;
        }
        let heartbeat = link.keys.heartbeat(self.subscription, guid, Role::Sender);
        let now = Instant::now();
        let mut next_heartbeat = now + timing.heartbeat_first;
        let mut next_check = now + timing.collected_check;
        let mut poll_wait = timing.response_poll_step;
        let mut next_poll = now + poll_wait;
        // Once it was collected: the processor's heartbeats, and when one was last heard.
        let mut processor: Option<hub::Watch> = None;
        let mut heard = now;
        loop {
            let silence_ends = heard + timing.processor_silence;
            tokio::select! {
                () = response.changed() => {
                    response.seen();
                    if self.try_response().await { return }
                }
                () = tokio::time::sleep_until(next_poll) => {
                    poll_wait = (poll_wait + timing.response_poll_step).min(timing.response_poll_max);
                    next_poll = Instant::now() + poll_wait;
                    if self.try_response().await { return }
                }
                () = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + timing.heartbeat_every;
                    link.heartbeat(&heartbeat).await;
                }
                () = tokio::time::sleep_until(next_check), if processor.is_none() => {
                    next_check = Instant::now() + timing.collected_check;
                    if self.was_collected().await {
                        self.collected();
                        processor = Some(link.hub.watch(link.keys.heartbeat(self.subscription, guid, Role::Processor)).await);
                        heard = Instant::now();
                    }
                }
                () = async { match processor.as_mut() { Some(watch) => watch.changed().await, None => std::future::pending().await } } => {
                    if let Some(watch) = processor.as_mut() { watch.seen() }
                    heard = Instant::now();
                }
                () = tokio::time::sleep_until(silence_ends), if processor.is_some() => {
                    if self.try_response().await { return }
                    warn!(
                        silent_for = ?heard.elapsed(),
                        "The node processing the request did not send a heartbeat for long enough, and so the node is now assumed to be offline"
                    );
                    self.pending.finish(Err(FailReason::NodeLost));
                    return;
                }
                () = async { let _ = data_loss.changed().await; } => {
                    self.pending.finish(Err(FailReason::QueueDataLost));
                    return;
                }
                changed = commands.changed() => {
                    let command = *commands.borrow_and_update();
                    match (changed, command) {
                        (Err(_), _) | (_, Some(Command::Stop(_))) => {
                            let reason = match command { Some(Command::Stop(reason)) => reason, _ => FailReason::NodeStopped };
                            if !self.sending.collected.load(Ordering::Relaxed) {
                                let _ = self.take_back().await;
                            }
                            self.pending.finish(Err(reason));
                            return;
                        }
                        (Ok(()), Some(Command::Withdraw(reason))) => {
                            if self.take_back().await {
                                self.pending.try_fail_queued(reason);
                                return;
                            }
                            // Collected already: the response is on its way.
                            self.collected();
                            if processor.is_none() {
                                processor = Some(link.hub.watch(link.keys.heartbeat(self.subscription, guid, Role::Processor)).await);
                                heard = Instant::now();
                            }
                            if reason == FailReason::RunEnded { return }
                        }
                        (Ok(()), None) => {}
                    }
                }
            }
        }
    }
}

//! The processing side: a request this node claimed for a Tentacle connected to
//! it, queued by any node. The connection gets a local stand-in to send and
//! finish; a task heartbeats while it is in flight, watches the sender's
//! heartbeats, and stores how it ended for the sender.

use std::sync::Arc;
use std::time::Duration;

use octopoll_wire::{ResponseMessage, ServerError, SubscriptionId};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info_span, warn, Instrument};
use uuid::Uuid;

use super::keys::Role;
use super::stored::{self, Processed};
use super::{set_hash, QueueInner};
use crate::queue::{FailReason, Outcome, PendingRequest};

/// A request this node won the claim for: its stored fields.
pub(super) struct Claimed {
    pub(super) subscription: SubscriptionId,
    pub(super) guid: Uuid,
    pub(super) fields: [Vec<u8>; 3],
}

impl Claimed {
    /// Puts a claimed request back at the front of its queue (its collector went
    /// away before it could be handed over).
    pub(super) async fn put_back(self, inner: &QueueInner) {
        let link = &inner.link;
        let key = link.keys.request(&self.subscription, self.guid);
        let fields = stored::named(self.fields);
        let ttl = link.config.request_ttl();
        let list = link.keys.pending(&self.subscription);
        let guid = self.guid.to_string();
        let mut pipe = redis::pipe();
        set_hash(&mut pipe, &key, &fields, ttl);
        pipe.cmd("LPUSH")
            .arg(&list)
            .arg(&guid)
            .ignore()
            .cmd("PUBLISH")
            .arg(link.keys.request_pulse(&self.subscription))
            .arg("{}")
            .ignore();
        let put = link.send("HSET, PEXPIRE, LPUSH, PUBLISH", &pipe);
        if let Err(error) = put.await {
            warn!(%error, request = %self.guid, "a claimed request could not be put back; its sender fails it when nobody answers");
        }
    }

    /// The stand-in the connection sends, and the task that reports its end;
    /// `None` if the stored request cannot be read (its sender is told why).
    pub(super) fn into_stand_in(self, inner: &Arc<QueueInner>) -> Option<Arc<PendingRequest>> {
        let limits = &inner.link.config.limits;
        let span = info_span!("redis-process", node = %inner.node, subscription = %self.subscription, request = %self.guid);
        let (request, streams, queued) = match stored::read_request(self.fields, limits) {
            Ok(read) => read,
            Err(error) => {
                let _enter = span.enter();
                warn!(%error, "a request in the Redis queue is unreadable; its sender is told");
                let failed = Processing {
                    inner: inner.clone(),
                    subscription: self.subscription,
                    guid: self.guid,
                    request_id: String::new(),
                    pickup: None,
                };
                let outcome = Outcome {
                    result: Err(FailReason::ProtocolError),
                    pickup: None,
                    error: None,
                };
                tokio::spawn(async move { failed.report(outcome).await }.instrument(span.clone()));
                return None;
            }
        };
        let pickup = queued.waited();
        let request_id = request.id.clone();
        let (stand_in, ended) =
            PendingRequest::new(queued.origin, request, streams, inner.carried.clone());
        stand_in.try_collect();
        stand_in.set_pickup(pickup);
        let processing = Processing {
            inner: inner.clone(),
            subscription: self.subscription,
            guid: self.guid,
            request_id,
            pickup: Some(pickup),
        };
        tokio::spawn(processing.run(ended).instrument(span));
        Some(stand_in)
    }
}

struct Processing {
    inner: Arc<QueueInner>,
    subscription: SubscriptionId,
    guid: Uuid,
    request_id: String,
    pickup: Option<Duration>,
}

impl Processing {
    async fn run(self, mut ended: oneshot::Receiver<Outcome>) {
        let link = &self.inner.link;
        let timing = &link.config.timing;
        let heartbeat = link
            .keys
            .heartbeat(&self.subscription, self.guid, Role::Processor);
        let start = Instant::now();
        let mut next_heartbeat = start + timing.heartbeat_first;
        // The sender's heartbeats are watched from when its first is due, as Halibut does.
        let mut sender: Option<super::hub::Watch> = None;
        let mut heard = start;
        let outcome = loop {
            let silence_ends = heard + timing.sender_silence;
            tokio::select! {
                () = self.inner.dead.cancelled() => return,
                outcome = &mut ended => break outcome.unwrap_or_else(|_| Outcome {
                    result: Err(FailReason::ConnectionLostInFlight),
                    pickup: None,
                    error: None,
                }),
                () = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + timing.heartbeat_every;
                    link.heartbeat(&heartbeat).await;
                    if sender.is_none() {
                        sender = Some(link.hub.watch(link.keys.heartbeat(&self.subscription, self.guid, Role::Sender)).await);
                        heard = Instant::now();
                    }
                }
                () = async { match sender.as_mut() { Some(watch) => watch.changed().await, None => std::future::pending().await } } => {
                    if let Some(watch) = sender.as_mut() { watch.seen() }
                    heard = Instant::now();
                }
                () = tokio::time::sleep_until(silence_ends), if sender.is_some() => {
                    warn!(
                        silent_for = ?heard.elapsed(),
                        "RequestSenderNode node appears disconnected: the request was abandoned, possibly because the node processing the request shutdown or redis lost all of its data; its response will not be stored"
                    );
                    return;
                }
            }
        };
        // This node was killed (its connection ended the stand-in so before the
        // queue heard): a dead process says nothing, its sender notices the silence.
        if self.inner.dead.is_cancelled() || matches!(outcome.result, Err(FailReason::NodeKilled)) {
            return;
        }
        self.report(outcome).await;
    }

    /// Stores how the request ended and tells the sender.
    async fn report(&self, outcome: Outcome) {
        let link = &self.inner.link;
        let (response, streams, failed) = match outcome.result {
            Ok(reply) => (reply.response, reply.streams, None),
            Err(FailReason::AgentError) => {
                let error = outcome
                    .error
                    .unwrap_or_else(|| ServerError::thrown("the service failed"));
                (
                    ResponseMessage::failed(&self.request_id, error),
                    Vec::new(),
                    None,
                )
            }
            Err(reason) => {
                let error = ServerError::thrown(format!(
                    "the request failed where it was processed: {reason}"
                ));
                (
                    ResponseMessage::failed(&self.request_id, error),
                    Vec::new(),
                    Some(reason),
                )
            }
        };
        let processed = Processed {
            pickup_micros: self.pickup.map(|pickup| pickup.as_micros() as u64),
            failed,
        };
        let fields = stored::response(&response, &streams, processed);
        let key = link.keys.response(&self.subscription, self.guid);
        let pulse = link.keys.response_pulse(&self.subscription, self.guid);
        if let Err(error) = link
            .store(&key, &fields, link.config.timing.response_ttl, &pulse)
            .await
        {
            warn!(%error, "the response could not be stored in Redis; its sender fails the request when it hears nothing");
        }
    }
}

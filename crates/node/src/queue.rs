//! Pending request queues: one per polling subscription, per node.
//!
//! A request lives through `Queued → Collected → Completed | Failed(reason)` and
//! ends exactly once: every path that ends it goes through [`PendingRequest::finish`],
//! which takes the one reply sender. That is the invariant behind `lost = 0`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_wire::{DataStream, RequestMessage, ResponseMessage, SubscriptionId};
use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailReason {
    /// No connection of its subscription collected it within the pickup timeout.
    PickupTimeout,
    /// The connection carrying it failed before the response came.
    ConnectionLost,
    /// The response did not come within the response timeout.
    ResponseTimeout,
    /// The node stopped while it was queued.
    NodeStopped,
    /// The service answered with an error.
    ServiceError,
    /// The peer broke the protocol while it was in flight.
    ProtocolError,
    /// The run ended (after draining) before it finished.
    RunEnded,
}

impl FailReason {
    /// The reason's report name, e.g. `pickup-timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::PickupTimeout => "pickup-timeout",
            FailReason::ConnectionLost => "connection-lost",
            FailReason::ResponseTimeout => "response-timeout",
            FailReason::NodeStopped => "node-stopped",
            FailReason::ServiceError => "service-error",
            FailReason::ProtocolError => "protocol-error",
            FailReason::RunEnded => "run-ended",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A completed call: the service's response and the streams after it.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response (its `error` is `None`).
    pub response: ResponseMessage,
    /// Data streams that followed it.
    pub streams: Vec<DataStream>,
}

/// How a request ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The reply, or why there is none.
    pub result: Result<Reply, FailReason>,
    /// Time from queued to collected, if it was collected.
    pub pickup: Option<Duration>,
}

/// How many requests a node created and how they ended; `created` must equal
/// `completed + failed` once the node has stopped.
#[derive(Debug, Default)]
pub struct RequestCounters {
    created: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl RequestCounters {
    /// (created, completed, failed) now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            load(&self.created),
            load(&self.completed),
            load(&self.failed),
        )
    }
}

const QUEUED: u8 = 0;
const COLLECTED: u8 = 1;
const ENDED: u8 = 2;

/// A queued request and the one channel its outcome goes to.
pub struct PendingRequest {
    /// The request to send.
    pub request: RequestMessage,
    /// Its data streams.
    pub streams: Vec<DataStream>,
    queued_at: Instant,
    state: AtomicU8,
    reply: Mutex<Option<(oneshot::Sender<Outcome>, Option<Duration>)>>,
    counters: Arc<RequestCounters>,
}

impl PendingRequest {
    /// A new queued request, counted in `counters`, and the receiver of its outcome.
    pub fn new(
        request: RequestMessage,
        streams: Vec<DataStream>,
        counters: Arc<RequestCounters>,
    ) -> (Arc<Self>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        counters.created.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(Self {
            request,
            streams,
            queued_at: Instant::now(),
            state: AtomicU8::new(QUEUED),
            reply: Mutex::new(Some((tx, None))),
            counters,
        });
        (pending, rx)
    }

    /// Moves it from queued to collected; false if it already ended.
    fn try_collect(&self) -> bool {
        let collected = self
            .state
            .compare_exchange(QUEUED, COLLECTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if collected {
            if let Some((_, pickup)) = self
                .reply
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                *pickup = Some(self.queued_at.elapsed());
            }
        }
        collected
    }

    /// Ends it with `reason` if nobody collected it yet; false if it was collected or ended.
    pub fn try_fail_queued(&self, reason: FailReason) -> bool {
        let failed = self
            .state
            .compare_exchange(QUEUED, ENDED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if failed {
            self.finish(Err(reason));
        }
        failed
    }

    /// Ends it with `result`. Only the first call has any effect.
    pub fn finish(&self, result: Result<Reply, FailReason>) {
        self.state.store(ENDED, Ordering::Release);
        let taken = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, pickup)) = taken {
            let counter = match result {
                Ok(_) => &self.counters.completed,
                Err(_) => &self.counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            // The caller may have stopped waiting (run ended); that is fine.
            let _ = tx.send(Outcome { result, pickup });
        }
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        // Every path should have finished it; if one did not, still end it once.
        self.finish(Err(FailReason::ConnectionLost));
    }
}

#[derive(Default)]
struct SubscriptionQueue {
    items: Mutex<VecDeque<Arc<PendingRequest>>>,
    ready: Notify,
}

/// One node's pending requests, by subscription.
#[derive(Default)]
pub struct PendingRequestQueue {
    subscriptions: Mutex<HashMap<SubscriptionId, Arc<SubscriptionQueue>>>,
    /// Set (under the `subscriptions` lock) once the node stops: nothing more is queued.
    stopped: AtomicBool,
    counters: Arc<RequestCounters>,
}

impl PendingRequestQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn queue_for(&self, subscription: &SubscriptionId) -> Arc<SubscriptionQueue> {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        subscriptions
            .entry(subscription.clone())
            .or_default()
            .clone()
    }

    /// The counters every request of this queue reports to.
    pub fn counters(&self) -> Arc<RequestCounters> {
        self.counters.clone()
    }

    /// Queues `pending` for `subscription` and wakes one waiting connection; a
    /// stopped queue fails it with `node-stopped` at once and returns false.
    pub fn enqueue(&self, subscription: &SubscriptionId, pending: Arc<PendingRequest>) -> bool {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            drop(subscriptions);
            pending.try_fail_queued(FailReason::NodeStopped);
            return false;
        }
        let queue = subscriptions
            .entry(subscription.clone())
            .or_default()
            .clone();
        queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(pending);
        drop(subscriptions);
        queue.ready.notify_one();
        true
    }

    /// Fails `pending` with `reason` and takes it out of the queue, if nobody has
    /// collected it yet; returns whether it did.
    pub fn withdraw(
        &self,
        subscription: &SubscriptionId,
        pending: &Arc<PendingRequest>,
        reason: FailReason,
    ) -> bool {
        if !pending.try_fail_queued(reason) {
            return false;
        }
        let queue = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subscription)
            .cloned();
        if let Some(queue) = queue {
            queue
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| !Arc::ptr_eq(p, pending));
        }
        true
    }

    /// The next request for `subscription`, waiting up to `wait`; `None` if none came.
    pub async fn collect_next(
        &self,
        subscription: &SubscriptionId,
        wait: Duration,
    ) -> Option<Arc<PendingRequest>> {
        let queue = self.queue_for(subscription);
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pending) = Self::pop_collectable(&queue) {
                return Some(pending);
            }
            // notify_one stores a permit when nobody waits, so an enqueue between the
            // pop above and this wait is not missed.
            tokio::select! {
                _ = queue.ready.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return Self::pop_collectable(&queue),
            }
        }
    }

    fn pop_collectable(queue: &SubscriptionQueue) -> Option<Arc<PendingRequest>> {
        let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(pending) = items.pop_front() {
            if pending.try_collect() {
                return Some(pending);
            }
        }
        None
    }

    /// Stops queuing and fails everything still queued with `reason`; returns how many.
    pub fn stop(&self, reason: FailReason) -> usize {
        let queues: Vec<_> = {
            let subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            self.stopped.store(true, Ordering::Release);
            subscriptions.values().cloned().collect()
        };
        let mut failed = 0;
        for queue in queues {
            let items: Vec<_> = queue
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .collect();
            failed += items
                .into_iter()
                .filter(|p| p.try_fail_queued(reason))
                .count();
        }
        failed
    }

    /// How many requests wait, over all subscriptions.
    pub fn depth(&self) -> usize {
        let subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        subscriptions
            .values()
            .map(|q| q.items.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_wire::ServiceEndPoint;

    fn request() -> RequestMessage {
        RequestMessage::call(
            "IEchoService",
            "SayHello",
            vec![],
            ServiceEndPoint::new("poll://a/", ""),
            1,
        )
    }

    fn sub() -> SubscriptionId {
        "poll://a/".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_returns_none_after_the_wait() {
        let queue = PendingRequestQueue::new();
        let started = Instant::now();
        assert!(queue
            .collect_next(&sub(), Duration::from_secs(30))
            .await
            .is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_collector_gets_a_later_request_with_its_pickup_time() {
        let queue = Arc::new(PendingRequestQueue::new());
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.collect_next(&sub(), Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (pending, rx) = PendingRequest::new(request(), vec![], Arc::default());
        queue.enqueue(&sub(), pending);
        let collected = waiter.await.unwrap().expect("collected");
        collected.finish(Err(FailReason::ServiceError));
        let outcome = rx.await.unwrap();
        assert_eq!(outcome.pickup, Some(Duration::ZERO));
        assert_eq!(outcome.result.unwrap_err(), FailReason::ServiceError);
    }

    #[tokio::test]
    async fn a_request_ends_exactly_once() {
        let queue = PendingRequestQueue::new();
        let (pending, rx) = PendingRequest::new(request(), vec![], Arc::default());
        queue.enqueue(&sub(), pending.clone());
        assert!(pending.try_fail_queued(FailReason::PickupTimeout));
        assert!(!pending.try_fail_queued(FailReason::NodeStopped));
        pending.finish(Err(FailReason::ConnectionLost));
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::PickupTimeout
        );
        // The failed entry is skipped by collectors.
        assert!(queue.collect_next(&sub(), Duration::ZERO).await.is_none());
    }

    #[tokio::test]
    async fn stop_ends_queued_requests_and_refuses_new_ones() {
        let queue = PendingRequestQueue::new();
        let (pending, rx) = PendingRequest::new(request(), vec![], queue.counters());
        assert!(queue.enqueue(&sub(), pending));
        assert_eq!(queue.stop(FailReason::NodeStopped), 1);
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeStopped
        );
        assert_eq!(queue.depth(), 0);
        let (late, rx) = PendingRequest::new(request(), vec![], queue.counters());
        assert!(!queue.enqueue(&sub(), late));
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeStopped
        );
        assert_eq!(
            queue.counters().snapshot(),
            (2, 0, 2),
            "every request created ended once"
        );
    }

    #[tokio::test]
    async fn dropping_an_unfinished_request_still_ends_it() {
        let (pending, rx) = PendingRequest::new(request(), vec![], Arc::default());
        drop(pending);
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::ConnectionLost
        );
    }
}

//! The in-process queue: per-subscription FIFOs in memory, viewed by one node
//! (per-node mode) or by every node of a cluster (shared mode).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use octopoll_wire::SubscriptionId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Collect, FailReason, PendingRequest, RequestQueue};
use crate::NodeId;

#[derive(Default)]
struct SubscriptionQueue {
    items: Mutex<VecDeque<Arc<PendingRequest>>>,
    ready: Notify,
}

impl SubscriptionQueue {
    fn items(&self) -> MutexGuard<'_, VecDeque<Arc<PendingRequest>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pending requests by subscription, in memory. Give each node a [`NodeQueue`]
/// view with [`InProcessQueue::for_node`]: one queue per node is Halibut's
/// per-node mode, one queue for the whole cluster its shared mode.
#[derive(Default)]
pub struct InProcessQueue {
    subscriptions: Mutex<HashMap<SubscriptionId, Arc<SubscriptionQueue>>>,
}

impl InProcessQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Node `node`'s view: what it queues is tagged with its id, and stopping it
    /// fails only what it queued.
    pub fn for_node(self: &Arc<Self>, node: NodeId) -> NodeQueue {
        NodeQueue {
            queue: self.clone(),
            node,
            stopped: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SubscriptionId, Arc<SubscriptionQueue>>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue_for(&self, subscription: &SubscriptionId) -> Arc<SubscriptionQueue> {
        self.lock().entry(subscription.clone()).or_default().clone()
    }

    fn all(&self) -> Vec<Arc<SubscriptionQueue>> {
        self.lock().values().cloned().collect()
    }
}

/// One node's view of an [`InProcessQueue`].
pub struct NodeQueue {
    queue: Arc<InProcessQueue>,
    node: NodeId,
    /// Why it stopped, once it has: set under the queue's lock, so no enqueue
    /// slips in after `stop`, and a late one fails with the same reason.
    stopped: Mutex<Option<FailReason>>,
}

impl NodeQueue {
    /// A queue of its own for `node`: per-node mode.
    pub fn per_node(node: NodeId) -> Self {
        InProcessQueue::new().for_node(node)
    }

    fn pop_collectable(queue: &SubscriptionQueue) -> Option<Arc<PendingRequest>> {
        let mut items = queue.items();
        while let Some(pending) = items.pop_front() {
            if pending.try_collect() {
                return Some(pending);
            }
        }
        None
    }

    async fn next(
        &self,
        subscription: &SubscriptionId,
        wait: Duration,
    ) -> Option<Arc<PendingRequest>> {
        let queue = self.queue.queue_for(subscription);
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
}

impl RequestQueue for NodeQueue {
    fn enqueue(&self, subscription: &SubscriptionId, pending: Arc<PendingRequest>) -> bool {
        let mut subscriptions = self.queue.lock();
        let stopped = *self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = stopped {
            drop(subscriptions);
            pending.try_fail_queued(reason);
            return false;
        }
        let queue = subscriptions
            .entry(subscription.clone())
            .or_default()
            .clone();
        // Pushed under the lock `stop` takes, so `stop` sees it.
        queue.items().push_back(pending);
        drop(subscriptions);
        queue.ready.notify_one();
        true
    }

    fn withdraw(
        &self,
        subscription: &SubscriptionId,
        pending: &Arc<PendingRequest>,
        reason: FailReason,
    ) -> bool {
        if !pending.try_fail_queued(reason) {
            return false;
        }
        let queue = self.queue.lock().get(subscription).cloned();
        if let Some(queue) = queue {
            queue.items().retain(|p| !Arc::ptr_eq(p, pending));
        }
        true
    }

    fn collect_next<'a>(&'a self, subscription: &'a SubscriptionId, wait: Duration) -> Collect<'a> {
        Box::pin(async move { Ok(self.next(subscription, wait).await) })
    }

    fn stop(&self, reason: FailReason) -> usize {
        let queues = {
            let subscriptions = self.queue.lock();
            self.stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(reason);
            subscriptions.values().cloned().collect::<Vec<_>>()
        };
        let mut failed = 0;
        for queue in queues {
            let mine: VecDeque<_> = {
                let mut items = queue.items();
                let (mine, others) = items.drain(..).partition(|p| p.origin == self.node);
                *items = others;
                mine
            };
            failed += mine
                .into_iter()
                .filter(|p| p.try_fail_queued(reason))
                .count();
        }
        failed
    }

    fn depth(&self) -> usize {
        self.queue
            .all()
            .iter()
            .map(|q| q.items().iter().filter(|p| p.origin == self.node).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::request;
    use crate::queue::RequestCounters;

    fn sub() -> SubscriptionId {
        "poll://a/".parse().unwrap()
    }

    fn pending(
        origin: u16,
    ) -> (
        Arc<PendingRequest>,
        tokio::sync::oneshot::Receiver<super::super::Outcome>,
    ) {
        PendingRequest::new(NodeId(origin), request(), vec![], Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_returns_none_after_the_wait() {
        let queue = NodeQueue::per_node(NodeId(1));
        let started = Instant::now();
        assert!(queue
            .collect_next(&sub(), Duration::from_secs(30))
            .await
            .unwrap()
            .is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_collector_gets_a_later_request_with_its_pickup_time() {
        let queue = Arc::new(NodeQueue::per_node(NodeId(1)));
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue
                    .collect_next(&sub(), Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (request, rx) = pending(1);
        queue.enqueue(&sub(), request);
        let collected = waiter.await.unwrap().expect("collected");
        collected.finish(Err(FailReason::AgentError));
        let outcome = rx.await.unwrap();
        assert_eq!(outcome.pickup, Some(Duration::ZERO));
        assert_eq!(outcome.result.unwrap_err(), FailReason::AgentError);
    }

    #[tokio::test]
    async fn a_withdrawn_request_is_not_collected() {
        let queue = NodeQueue::per_node(NodeId(1));
        let (request, rx) = pending(1);
        queue.enqueue(&sub(), request.clone());
        assert!(queue.withdraw(&sub(), &request, FailReason::PickupTimeout));
        assert!(!queue.withdraw(&sub(), &request, FailReason::RunEnded));
        assert_eq!(queue.depth(), 0);
        assert!(queue
            .collect_next(&sub(), Duration::ZERO)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::PickupTimeout
        );
    }

    #[tokio::test]
    async fn stop_ends_queued_requests_and_refuses_new_ones() {
        let queue = NodeQueue::per_node(NodeId(1));
        let counters = Arc::new(RequestCounters::default());
        let (first, rx) = PendingRequest::new(NodeId(1), request(), vec![], counters.clone());
        assert!(queue.enqueue(&sub(), first));
        assert_eq!(queue.stop(FailReason::NodeStopped), 1);
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeStopped
        );
        assert_eq!(queue.depth(), 0);
        let (late, rx) = PendingRequest::new(NodeId(1), request(), vec![], counters.clone());
        assert!(
            !queue.enqueue(&sub(), late),
            "a late request fails with the stop's reason"
        );
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeStopped
        );
        assert_eq!(
            counters.snapshot(),
            (2, 0, 2),
            "every request created ended once"
        );
    }

    #[tokio::test]
    async fn a_request_queued_after_a_kill_fails_as_killed() {
        let queue = NodeQueue::per_node(NodeId(1));
        queue.stop(FailReason::NodeKilled);
        let (late, rx) = pending(1);
        assert!(!queue.enqueue(&sub(), late));
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeKilled
        );
    }

    #[tokio::test]
    async fn per_node_queues_do_not_see_each_others_requests() {
        let (one, two) = (
            NodeQueue::per_node(NodeId(1)),
            NodeQueue::per_node(NodeId(2)),
        );
        let (request, _rx) = pending(1);
        one.enqueue(&sub(), request);
        assert!(two
            .collect_next(&sub(), Duration::ZERO)
            .await
            .unwrap()
            .is_none());
        assert!(one
            .collect_next(&sub(), Duration::ZERO)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_shared_queue_lets_any_node_collect() {
        let shared = InProcessQueue::new();
        let (one, two) = (shared.for_node(NodeId(1)), shared.for_node(NodeId(2)));
        let (request, _rx) = pending(1);
        one.enqueue(&sub(), request);
        assert_eq!(
            (one.depth(), two.depth()),
            (1, 0),
            "depth counts what a node queued"
        );
        let collected = two
            .collect_next(&sub(), Duration::ZERO)
            .await
            .unwrap()
            .expect("node 2 collects");
        assert_eq!(collected.origin, NodeId(1));
    }

    #[tokio::test]
    async fn stopping_one_node_of_a_shared_queue_fails_only_its_requests() {
        let shared = InProcessQueue::new();
        let (one, two) = (shared.for_node(NodeId(1)), shared.for_node(NodeId(2)));
        let (mine, mine_rx) = pending(1);
        let (theirs, _theirs_rx) = pending(2);
        one.enqueue(&sub(), mine);
        two.enqueue(&sub(), theirs);
        assert_eq!(one.stop(FailReason::NodeStopped), 1);
        assert_eq!(
            mine_rx.await.unwrap().result.unwrap_err(),
            FailReason::NodeStopped
        );
        let (late, _late_rx) = pending(2);
        assert!(two.enqueue(&sub(), late), "node 2 still queues");
        assert_eq!(two.depth(), 2);
        let collected = one
            .collect_next(&sub(), Duration::ZERO)
            .await
            .unwrap()
            .expect("still collectable");
        assert_eq!(collected.origin, NodeId(2));
    }
}

//! Pending request queues: where a request waits until a polling connection of its
//! subscription collects it.
//!
//! A node talks to its queue through [`RequestQueue`] only. Two modes exist today,
//! both in-process ([`InProcessQueue`]):
//! - **per-node** (Halibut's default): each node has its own queue, so only a
//!   connection *to that node* can collect its requests — why a polling Tentacle
//!   must poll every node;
//! - **shared**: the nodes of a cluster share one queue, so a subscription's
//!   connection to *any* node collects the request, as Halibut's Redis-backed queue
//!   gives Octopus.
//!
//! A store-backed queue (Redis) implements the same trait without touching the node:
//! the queuing node keeps the [`PendingRequest`] (its caller waits on it), the store
//! carries the request, and the collecting node finishes a local stand-in whose
//! outcome the store carries back.

mod in_process;
mod pending;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use octopoll_wire::SubscriptionId;
use serde::{Deserialize, Serialize};

pub use in_process::{InProcessQueue, NodeQueue};
pub use pending::{FailReason, Outcome, PendingRequest, Reply, RequestCounters};

/// The future [`RequestQueue::collect_next`] returns.
pub type Collect<'a> = Pin<Box<dyn Future<Output = Option<Arc<PendingRequest>>> + Send + 'a>>;

/// One node's view of a pending request queue.
pub trait RequestQueue: Send + Sync {
    /// Queues `pending` for `subscription` and wakes one waiting collector. After
    /// [`RequestQueue::stop`] it fails `pending` with `node-stopped` at once and
    /// returns false.
    fn enqueue(&self, subscription: &SubscriptionId, pending: Arc<PendingRequest>) -> bool;

    /// Fails `pending` with `reason` and takes it out of the queue if nobody has
    /// collected it yet; returns whether it did.
    fn withdraw(
        &self,
        subscription: &SubscriptionId,
        pending: &Arc<PendingRequest>,
        reason: FailReason,
    ) -> bool;

    /// The next request `subscription`'s connection on this node may collect,
    /// waiting up to `wait` (the long-poll); `None` if none came. Cancel-safe.
    fn collect_next<'a>(&'a self, subscription: &'a SubscriptionId, wait: Duration) -> Collect<'a>;

    /// Stops queuing for this node and fails every request this node queued and
    /// nobody collected with `reason`; returns how many.
    fn stop(&self, reason: FailReason) -> usize;

    /// Requests this node queued that wait now.
    fn depth(&self) -> usize;
}

/// Which requests a subscription's connection to a node may collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// Only those queued on that node (Halibut's in-memory queue; the default).
    #[default]
    PerNode,
    /// Those queued on any node of the cluster (Halibut's Redis queue).
    Shared,
}

impl QueueMode {
    /// `per-node` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::PerNode => "per-node",
            QueueMode::Shared => "shared",
        }
    }
}

impl std::fmt::Display for QueueMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use octopoll_wire::{RequestMessage, ServiceEndPoint};

    /// A small request for queue tests.
    pub(crate) fn request() -> RequestMessage {
        RequestMessage::call(
            "IEchoService",
            "SayHello",
            vec![],
            ServiceEndPoint::new("poll://a/", ""),
            1,
        )
    }
}

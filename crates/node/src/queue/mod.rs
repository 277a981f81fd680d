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
#[cfg(feature = "redis")]
mod redis;
mod redis_config;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use octopoll_wire::SubscriptionId;
use serde::{Deserialize, Serialize};

pub use in_process::{InProcessQueue, NodeQueue};
pub use pending::{FailReason, Outcome, PendingRequest, Reply, RequestCounters};
#[cfg(feature = "redis")]
pub use redis::{QueueLinkError, RedisQueue, RedisQueueLink};
pub use redis_config::{RedisQueueConfig, RedisQueueTiming};

/// Octopus's `GET /api/serverstatus/redis`: whether a node's queue goes through
/// Redis, and whether Redis answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RedisStatus {
    /// Multi-node polling over Redis is switched on.
    pub is_enabled: bool,
    /// A connection string is set.
    pub is_configured: bool,
    /// Redis answers a PING now.
    pub is_reachable: bool,
}

/// The future [`RequestQueue::redis_status`] returns.
pub type StatusFuture<'a> = Pin<Box<dyn Future<Output = RedisStatus> + Send + 'a>>;

/// The future [`RequestQueue::collect_next`] returns.
pub type Collect<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<PendingRequest>>, QueueFailed>> + Send + 'a>>;

/// A queue that could not be read (Redis down past its retries): the connection
/// waiting on it is dropped, so its Tentacle connects again later.
#[derive(Debug, thiserror::Error)]
#[error("the request queue could not be read: {0}")]
pub struct QueueFailed(pub String);

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
    /// waiting up to `wait` (the long-poll); `None` if none came, an error if the
    /// queue cannot be read. Cancel-safe.
    fn collect_next<'a>(&'a self, subscription: &'a SubscriptionId, wait: Duration) -> Collect<'a>;

    /// Stops queuing for this node and fails every request this node queued and
    /// nobody collected with `reason`; returns how many.
    fn stop(&self, reason: FailReason) -> usize;

    /// Requests this node queued that wait now.
    fn depth(&self) -> usize;

    /// Whether this queue goes through Redis and Redis answers; an in-process
    /// queue is neither.
    fn redis_status(&self) -> StatusFuture<'_> {
        Box::pin(std::future::ready(RedisStatus::default()))
    }
}

/// Which requests a subscription's connection to a node may collect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// Only those queued on that node (Halibut's in-memory queue; the default).
    #[default]
    PerNode,
    /// Those queued on any node of the cluster, in this process (as Halibut's
    /// Redis queue would, without Redis).
    Shared,
    /// Those queued on any node of the cluster, through Halibut's Redis queue
    /// (each node with a link of its own, as separate processes have).
    Redis,
}

impl QueueMode {
    /// `per-node` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::PerNode => "per-node",
            QueueMode::Shared => "shared",
            QueueMode::Redis => "redis",
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

//! One pending request and how it ends.
//!
//! A request lives through `Queued → Collected → Completed | Failed(reason)` and
//! ends exactly once: every path that ends it goes through [`PendingRequest::finish`],
//! which takes the one reply sender. That is the invariant behind `lost = 0`.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_wire::{DataStream, RequestMessage, ResponseMessage, ServerError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::NodeId;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailReason {
    /// No connection of its subscription collected it within the pickup timeout.
    PickupTimeout,
    /// The connection carrying it failed before the response came (the agent may
    /// have run it; it is never sent again).
    ConnectionLostInFlight,
    /// The response did not come within the response timeout.
    ResponseTimeout,
    /// The node stopped while it was queued.
    NodeStopped,
    /// The node was killed while it was queued or in flight on one of its connections.
    NodeKilled,
    /// The agent's service answered with an error (Halibut's `ServerError`).
    AgentError,
    /// The peer broke the protocol while it was in flight.
    ProtocolError,
    /// The run ended (after draining) before it finished.
    RunEnded,
    /// The node's process went away, or could not be reached, while the request
    /// was queued or in flight there (a node in another process or container), or
    /// the node processing it through the Redis queue stopped heartbeating.
    NodeLost,
    /// The Redis queue could not be written or read (retried for 30 s first).
    QueueUnavailable,
    /// The Redis queue lost its data (its canary was gone) while the request was
    /// waiting on it; the caller may send it again.
    QueueDataLost,
}

impl FailReason {
    /// Every reason, in declaration order.
    pub const ALL: [FailReason; 11] = [
        FailReason::PickupTimeout,
        FailReason::ConnectionLostInFlight,
        FailReason::ResponseTimeout,
        FailReason::NodeStopped,
        FailReason::NodeKilled,
        FailReason::AgentError,
        FailReason::ProtocolError,
        FailReason::RunEnded,
        FailReason::NodeLost,
        FailReason::QueueUnavailable,
        FailReason::QueueDataLost,
    ];

    /// The reason whose report name is `name`.
    ///
    /// ```
    /// # use octopoll_node::FailReason;
    /// assert_eq!(FailReason::named("node-lost"), Some(FailReason::NodeLost));
    /// assert_eq!(FailReason::named("gone"), None);
    /// ```
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == name)
    }

    /// The reason's report name, e.g. `pickup-timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::PickupTimeout => "pickup-timeout",
            FailReason::ConnectionLostInFlight => "connection-lost-in-flight",
            FailReason::ResponseTimeout => "response-timeout",
            FailReason::NodeStopped => "node-stopped",
            FailReason::NodeKilled => "node-killed",
            FailReason::AgentError => "agent-error",
            FailReason::ProtocolError => "protocol-error",
            FailReason::RunEnded => "run-ended",
            FailReason::NodeLost => "node-lost",
            FailReason::QueueUnavailable => "queue-unavailable",
            FailReason::QueueDataLost => "queue-data-lost",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request without a reply is an error to its sender (`outcome.result?`).
impl std::error::Error for FailReason {}

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
    /// The service's error, when it answered with one ([`FailReason::AgentError`]).
    pub error: Option<ServerError>,
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
    /// The node it was queued on, whose caller waits for its outcome.
    pub origin: NodeId,
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
    /// A new request queued on `origin`, counted in `counters`, and the receiver of
    /// its outcome.
    pub fn new(
        origin: NodeId,
        request: RequestMessage,
        streams: Vec<DataStream>,
        counters: Arc<RequestCounters>,
    ) -> (Arc<Self>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        counters.created.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(Self {
            origin,
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
    pub(crate) fn try_collect(&self) -> bool {
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

    /// Records `pickup` as its queued → collected time (measured where it was
    /// collected, in another process), replacing the local estimate.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_pickup(&self, pickup: Duration) {
        if let Some((_, recorded)) = self
            .reply
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            *recorded = Some(pickup);
        }
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
        self.end(result, None);
    }

    /// Ends the request with the error its service answered.
    pub fn fail_with(&self, error: ServerError) {
        self.end(Err(FailReason::AgentError), Some(error));
    }

    fn end(&self, result: Result<Reply, FailReason>, error: Option<ServerError>) {
        self.state.store(ENDED, Ordering::Release);
        let taken = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, pickup)) = taken {
            let counter = match result {
                Ok(_) => &self.counters.completed,
                Err(_) => &self.counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            // The caller may have stopped waiting (run ended); that is fine.
            let _ = tx.send(Outcome {
                result,
                pickup,
                error,
            });
        }
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        // Every path should have finished it; if one did not, still end it once.
        self.finish(Err(FailReason::ConnectionLostInFlight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::request;

    #[tokio::test]
    async fn a_request_ends_exactly_once() {
        let counters = Arc::new(RequestCounters::default());
        let (pending, rx) = PendingRequest::new(NodeId(1), request(), vec![], counters.clone());
        assert!(pending.try_fail_queued(FailReason::PickupTimeout));
        assert!(!pending.try_fail_queued(FailReason::NodeStopped));
        assert!(
            !pending.try_collect(),
            "an ended request cannot be collected"
        );
        pending.finish(Err(FailReason::ConnectionLostInFlight));
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::PickupTimeout
        );
        assert_eq!(counters.snapshot(), (1, 0, 1));
    }

    #[tokio::test]
    async fn dropping_an_unfinished_request_still_ends_it() {
        let (pending, rx) = PendingRequest::new(NodeId(1), request(), vec![], Arc::default());
        drop(pending);
        assert_eq!(
            rx.await.unwrap().result.unwrap_err(),
            FailReason::ConnectionLostInFlight
        );
    }
}

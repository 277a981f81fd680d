//! What a running node's listener and connection tasks share: its configuration,
//! registry, queue, counters and TLS acceptor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::NodeMetrics;
use crate::queue::{FailReason, RequestQueue};
use crate::{MachineRegistry, NodeConfig};

/// What a node's tasks share.
pub(crate) struct NodeShared {
    pub(crate) config: NodeConfig,
    pub(crate) registry: MachineRegistry,
    pub(crate) queue: Arc<dyn RequestQueue>,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) acceptor: TlsAcceptor,
    /// Cancelled when the drain bound of a stop expires, or at once by a kill:
    /// connection tasks still running are dropped, which ends any request they hold
    /// (see `InFlight`).
    pub(crate) abort: CancellationToken,
    /// Set by a kill, before `abort`: requests the dropped tasks held fail with
    /// `node-killed` rather than `connection-lost-in-flight`.
    pub(crate) killed: AtomicBool,
    /// Turns at the TLS handshake (`max_concurrent_handshakes`).
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
    /// Which refusals of peers that never identified were logged when.
    pub(crate) strangers: crate::strangers::Strangers,
}

impl NodeShared {
    /// Why a request this node's connection held fails when the connection is dropped.
    pub(crate) fn dropped_reason(&self) -> FailReason {
        if self.killed.load(Ordering::Acquire) {
            FailReason::NodeKilled
        } else {
            FailReason::ConnectionLostInFlight
        }
    }
}

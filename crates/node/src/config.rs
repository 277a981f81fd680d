//! Node settings, with Halibut's and Tentacle's defaults.

use std::fmt;
use std::time::Duration;

use octopoll_pki::ApiKey;
use octopoll_wire::Limits;
use serde::{Deserialize, Serialize};

/// A node's number in its cluster, from 1. Displays as `node-1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// Halibut's `PollingQueueWaitTimeout`: a node with nothing queued sends the null
/// request after this long.
pub const DEFAULT_LONG_POLL: Duration = Duration::from_secs(30);
/// Halibut's `PollingRequestQueueTimeout`: a request nobody collects fails after this.
pub const DEFAULT_PICKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Tentacle's `TcpClientReceiveResponseTimeout`: the first byte of a response is due within this.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Tentacle's `TcpClientHeartbeatTimeout`, for `NEXT` after an exchange.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Tentacle's `TcpClientTimeout`: any other read or write (a request, `PROCEED`, the rest of a response).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// octopoll's bound on the TLS handshake, preamble and identity of a new connection.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping node lets connection tasks finish.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Most TLS handshakes (with preamble and identity) a node runs at once: a
/// reconnect storm of thousands is served a few hundred at a time, each finishing
/// quickly, instead of all crawling together past their deadlines.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// How long an accepted connection may wait for its turn to handshake: Tentacle's
/// `TcpClientConnectTimeout`, the most a client waits for a connection anyway.
pub const DEFAULT_HANDSHAKE_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything one node needs besides its identity, registry and listeners.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Which node this is.
    pub id: NodeId,
    /// The key `POST /api/machines` requires.
    pub api_key: ApiKey,
    /// Long-poll wait before the null request.
    pub long_poll: Duration,
    /// A queued request not collected within this fails with `pickup-timeout`.
    pub pickup_timeout: Duration,
    /// Wait for the first byte of a collected request's response.
    pub response_timeout: Duration,
    /// Bound on every other read and write of an identified connection.
    pub io_timeout: Duration,
    /// Wait for `NEXT` or `END` after an exchange.
    pub heartbeat_timeout: Duration,
    /// Bound on TLS handshake + preamble + identity, from the connection's turn.
    pub handshake_timeout: Duration,
    /// Most handshakes at once; the rest wait their turn.
    pub max_concurrent_handshakes: usize,
    /// Bound on waiting for that turn.
    pub handshake_queue_timeout: Duration,
    /// How long stopping waits for connection tasks.
    pub drain: Duration,
    /// Decoder limits for polling connections.
    pub limits: Limits,
}

impl NodeConfig {
    /// Defaults for node `id` requiring `api_key`.
    pub fn new(id: NodeId, api_key: ApiKey) -> Self {
        Self {
            id,
            api_key,
            long_poll: DEFAULT_LONG_POLL,
            pickup_timeout: DEFAULT_PICKUP_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            handshake_queue_timeout: DEFAULT_HANDSHAKE_QUEUE_TIMEOUT,
            drain: DEFAULT_DRAIN,
            limits: Limits::default(),
        }
    }
}

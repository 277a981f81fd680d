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
/// octopoll's bound on the TLS handshake of a new polling connection.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// octopoll's bound on the `MX` preamble and identity line after the TLS handshake.
pub const DEFAULT_IDENTIFICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a node holds before they identify (in or waiting for their
/// handshake). More are closed at once, so a port scanner or a flood of silent
/// peers cannot take the descriptors identified Tentacles need; a reconnect storm
/// of 8,000 agents per node still queues whole.
pub const DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS: usize = 8192;
/// Most connections the registration API holds at once (TLS, HTTP, idle).
pub const DEFAULT_MAX_API_CONNECTIONS: usize = 1024;
/// Most polling connections one subscription may hold to a node (Halibut's
/// `MaximumActiveTcpConnectionsPerPollingSubscription`, unset there). A Tentacle
/// opens `PollingConnectionCount` of them, a handful; a runaway peer is cut off.
pub const DEFAULT_MAX_CONNECTIONS_PER_SUBSCRIPTION: usize = 32;
/// Registrations (`POST /api/machines`) a node accepts per second, after the burst.
pub const DEFAULT_REGISTRATIONS_PER_SECOND: u32 = 1000;
/// Registrations a node accepts at once before the rate applies: a 10,000-agent
/// swarm registers unhindered.
pub const DEFAULT_REGISTRATION_BURST: u32 = 10_000;
/// Largest registration API request body; a machine registration is well under 1 KiB.
pub const DEFAULT_MAX_API_BODY_BYTES: usize = 64 * 1024;
/// How long an API client may take to send a request's headers (slowloris bound).
pub const DEFAULT_API_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API request may take, body included.
pub const DEFAULT_API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Bound on the TLS handshake, from the connection's turn.
    pub handshake_timeout: Duration,
    /// Bound on the preamble and identity line after the handshake.
    pub identification_timeout: Duration,
    /// Most connections accepted and not identified yet; more are closed at once.
    pub max_unauthenticated_connections: usize,
    /// Most identified connections per subscription; more are closed before `MX-SERVER`.
    pub max_connections_per_subscription: usize,
    /// Registration API: sustained registrations per second.
    pub registrations_per_second: u32,
    /// Registration API: registrations allowed at once before the rate applies.
    pub registration_burst: u32,
    /// Registration API: most connections open at once; more are closed at once.
    pub max_api_connections: usize,
    /// Registration API: largest request body.
    pub max_api_body_bytes: usize,
    /// Registration API: bound on receiving a request's headers.
    pub api_header_timeout: Duration,
    /// Registration API: bound on one whole request.
    pub api_request_timeout: Duration,
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
            identification_timeout: DEFAULT_IDENTIFICATION_TIMEOUT,
            max_unauthenticated_connections: DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS,
            max_connections_per_subscription: DEFAULT_MAX_CONNECTIONS_PER_SUBSCRIPTION,
            registrations_per_second: DEFAULT_REGISTRATIONS_PER_SECOND,
            registration_burst: DEFAULT_REGISTRATION_BURST,
            max_api_connections: DEFAULT_MAX_API_CONNECTIONS,
            max_api_body_bytes: DEFAULT_MAX_API_BODY_BYTES,
            api_header_timeout: DEFAULT_API_HEADER_TIMEOUT,
            api_request_timeout: DEFAULT_API_REQUEST_TIMEOUT,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            handshake_queue_timeout: DEFAULT_HANDSHAKE_QUEUE_TIMEOUT,
            drain: DEFAULT_DRAIN,
            limits: Limits::default(),
        }
    }
}

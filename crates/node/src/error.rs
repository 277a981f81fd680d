//! Errors of the node crate.

use std::net::SocketAddr;

use crate::NodeId;

/// What can stop a node or cluster from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not bind.
    #[error("{what} for {node} could not bind {addr}")]
    Bind {
        /// `polling listener` or `registration API`.
        what: &'static str,
        /// The node.
        node: NodeId,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener could not report its address.
    #[error("{what} for {node} has no local address")]
    LocalAddr {
        /// `polling listener` or `registration API`.
        what: &'static str,
        /// The node.
        node: NodeId,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Node ports would run past 65535.
    #[error("{what} port {base} + {nodes} nodes runs past 65535")]
    PortRange {
        /// `comms` or `API`.
        what: &'static str,
        /// The first port.
        base: u16,
        /// The node count.
        nodes: u16,
    },
    /// A TLS configuration could not be built from the node's identity.
    #[error("TLS configuration for {node} is invalid")]
    Tls {
        /// The node.
        node: NodeId,
        /// Why.
        #[source]
        source: octopoll_pki::Error,
    },
    /// Unique-address nodes would run out of the base address's /8 (or it is not IPv4).
    #[error("cannot give {nodes} nodes an address each from {base}: use an IPv4 base address with room for every node (127.0.0.1 gives 127.0.0.1 … 127.0.0.N)")]
    AddressRange {
        /// The base address.
        base: std::net::IpAddr,
        /// The node count.
        nodes: u16,
    },
    /// A cluster was asked for with no nodes.
    #[error("a cluster needs at least one node")]
    NoNodes,
    /// The Redis queue was asked for without saying where it is.
    #[error("queue = redis needs the Redis queue's URL (redis://HOST:PORT)")]
    NoRedisQueue,
    /// A relay was put in front of a Redis queue that is not on TCP.
    #[error("{node}'s link to the Redis queue can only go through a relay when the queue is on TCP (redis://HOST:PORT)")]
    RedisQueueNotOnTcp {
        /// The node.
        node: NodeId,
    },
    /// Pulses were to be lost on a node whose queue has none.
    #[error("{node} does not use the Redis queue, which is what has pulses to lose")]
    NoPulses {
        /// The node.
        node: NodeId,
    },
    /// The Redis queue was asked for in a build without the `redis` feature.
    #[error("this build of octopoll-node has no Redis support: enable its `redis` feature")]
    RedisUnsupported,
    /// A node could not connect to the Redis queue.
    #[cfg(feature = "redis")]
    #[error("{node} could not connect to the Redis queue")]
    RedisQueue {
        /// The node.
        node: NodeId,
        /// Why.
        #[source]
        source: crate::queue::QueueLinkError,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

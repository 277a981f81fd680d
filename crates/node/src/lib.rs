//! A mock Octopus Server node, and a cluster of them sharing one machine registry.
//!
//! A [`Node`] serves the registration REST API over HTTPS ([`api`]), accepts
//! polling Tentacles on its comms port ([`listener`], [`connection`]), and keeps a
//! pending request queue per subscription ([`queue`]): a request queued on a node
//! can only be collected by a connection to that node, which is why a polling
//! Tentacle must poll every node of an HA cluster ([`coverage`] measures whether it
//! does). A [`Cluster`] starts N nodes over one [`MachineRegistry`], the HA
//! "database", and optionally one shared queue.
//!
//! Listening Tentacles are called the other way round, the node as TLS client
//! ([`listening`]).
//!
//! This crate knows nothing of agents: it speaks the protocol of `octopoll-wire`
//! and trusts by the thumbprints of `octopoll-pki`.

pub mod api;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod coverage;
pub mod error;
pub mod health;
pub mod listener;
pub mod listening;
pub mod metrics;
pub mod node;
pub mod queue;
#[cfg(feature = "redis")]
mod redis_link;
pub mod registry;
mod shared;
mod strangers;
pub mod tcp;

pub use cluster::{Addressing, Cluster, ClusterConfig, ClusterView};
pub use config::{NodeConfig, NodeId};
pub use coverage::{Coverage, CoverageMatrix, PairState};
pub use error::{Error, Result};
pub use health::{HealthCheck, HealthError, HealthSummary};
pub use metrics::NodeStats;
pub use node::{Node, NodeSender, QueueSource};
pub use queue::{
    FailReason, Outcome, QueueMode, RedisQueueConfig, RedisQueueTiming, RedisStatus, Reply,
    RequestQueue,
};
pub use registry::{
    Conflict, Endpoint, EndpointError, ListeningAddress, Machine, MachineRegistry, NewMachine,
    RegisterError, Registered, StoreError,
};

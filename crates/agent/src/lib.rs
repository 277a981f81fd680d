//! A simulated polling Tentacle ([`Agent`]) and a [`Swarm`] of thousands in one process.
//!
//! An agent has its own self-signed certificate and polling subscription. It
//! registers once over HTTPS with an API key ([`register`], `register-with`), learns
//! the server's thumbprint, and then runs one polling loop per trusted server entry
//! and connection ([`poller`]), each holding a mutual-TLS connection to one node,
//! answering requests with simulated [`services`], and reconnecting with Halibut's
//! [`backoff`] after a drop.
//!
//! A [`listening`] Tentacle is the other way round: it accepts the server's TLS
//! connection on its port and answers its requests.
//!
//! `tentacle` (the `tentacle-config` feature) reads and writes a real Tentacle's `Tentacle.config`.
//!
//! This crate knows nothing of nodes: it speaks `octopoll-wire` over TLS configured
//! by `octopoll-pki`, as a real Tentacle would to a real server.

pub mod agent;
pub mod backoff;
pub mod config;
pub mod error;
pub mod listening;
pub mod poller;
pub mod ramp;
pub mod register;
pub mod services;
pub mod swarm;
#[cfg(feature = "tentacle-config")]
pub mod tentacle;

pub use agent::{Agent, AgentHandle, RunningAgent};
pub use backoff::{Backoff, BackoffConfig, BackoffStrategy};
pub use config::{AgentConfig, PollingConfig, ServerAddress, ServiceConfig, TrustedServer};
pub use error::{Error, Result};
pub use listening::{ListeningConfig, ListeningTentacle};
pub use ramp::Ramp;
pub use register::{RegistrationClient, RegistrationTrust};
pub use swarm::{RegistrationTarget, Swarm, SwarmConfig};

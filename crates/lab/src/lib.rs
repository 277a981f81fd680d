//! An Octopus Deploy HA cluster with polling Tentacles, in one process, for tests
//! and demos: real nodes ([`octopoll_node`]) and a swarm of real polling agents
//! ([`octopoll_agent`]) on loopback, with real TLS, laid out in one of the Octopus
//! docs' [`topology`] choices (with a real [`haproxy`] where the topology has a
//! balancer, and the [`fronts`], chaos proxies, where asked).
//!
//! [`Lab`] is the entry point: build a [`LabConfig`] (free loopback ports by default,
//! so tests run in parallel), start it ready, send requests to its agents through
//! any node, break and heal its nodes ([`actions`]), read its coverage and registry,
//! and stop it (or drop it: its nodes and agents end).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use octopoll_lab::{Lab, LabConfig, NodeAction};
//! use octopoll_wire::{contracts::echo, ServiceEndPoint};
//!
//! // Three nodes, five polling agents; back once every agent polls every node.
//! let lab = Lab::start_ready(LabConfig::new(3, 5), Duration::from_secs(30)).await?;
//!
//! // Node 2 dies; agent 0 still answers through node 1.
//! lab.act(2, NodeAction::Kill).await?;
//! let agent = ServiceEndPoint::new(lab.agent(0)?.subscription().as_str(), "");
//! let reply = lab.send(1, 0, echo::request(agent, "still here", 1)).await?.result?;
//! assert_eq!(reply.response.result, echo::answer("still here"));
//!
//! // Node 2 comes back and every agent polls it again.
//! lab.act(2, NodeAction::Start).await?;
//! lab.wait_for_full_coverage(Duration::from_secs(30)).await?;
//! lab.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod actions;
pub mod fronts;
pub mod haproxy;
pub mod lab;
pub mod supervised;
pub mod topology;
pub mod wait;

pub use actions::{NetworkAction, NodeAction};
pub use lab::{Lab, LabConfig, LabError, Mesh};
pub use topology::Topology;

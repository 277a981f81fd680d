//! The library behind the `octopoll` binary: an in-process HA lab (a [`lab::Lab`]
//! of nodes and a swarm), the [`workload`] that queues requests on it with exact
//! accounting, and the [`report`] a run ends with. The end-to-end tests use the
//! same pieces the CLI does.

pub mod lab;
pub mod progress;
pub mod report;
pub mod run;
pub mod workload;

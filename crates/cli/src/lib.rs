//! The library behind the `octopoll` binary: an in-process HA lab (a [`lab::Lab`]
//! of nodes and a swarm, laid out in one of the [`topology`] choices, with a real
//! [`haproxy`] in front where the topology has a balancer), the [`workload`] that
//! queues requests on it with exact accounting, and the [`report`] a run ends
//! with. The end-to-end tests use the same pieces the CLI does.

pub mod bench;
pub mod control;
pub mod faults;
pub mod haproxy;
pub mod html;
pub mod lab;
pub mod listening_cluster;
pub mod network;
pub mod processes;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod telemetry;
pub mod tentacle;
pub mod testbed;
pub mod timeline;
pub mod topology;
pub mod workload;

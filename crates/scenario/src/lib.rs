//! octopoll's runs: a scenario file ([`file`]) resolved into a [`RunConfig`],
//! and the engine ([`engine`]) that starts a testbed (a [`Lab`](octopoll_lab::Lab)
//! in this process, or node and swarm processes, [`process_lab`]), waits for the
//! mesh, drives the [`workload`], carries out the faults ([`injector`]), samples the
//! coverage ([`sampler`]), and ends with the run's report ([`octopoll_report`]). During a run, [`control`] serves the dashboard and
//! [`telemetry`] the Prometheus metrics.

pub mod abort;
pub mod config;
pub mod control;
pub mod engine;
pub mod fault;
pub mod file;
pub mod injector;
pub mod layers;
pub mod listening_cluster;
pub mod listening_keys;
pub mod pacer;
pub mod process_lab;
pub mod progress;
pub mod resolve;
pub mod sampler;
pub mod telemetry;
pub mod testbed;
pub mod workload;

pub use config::RunConfig;
pub use engine::{execute, execute_until, Finished};

//! The parts of a run that live in processes of their own: HAProxy, a Redis
//! server for the shared machine registry, and (for runs larger than one process
//! can hold) octopoll's own node and swarm processes, driven by a [`lab::ProcessLab`].

pub mod args;
pub mod child;
pub mod cluster_file;
pub mod guard;
pub mod http;
pub mod lab;
pub mod node_api;
pub mod node_process;
pub mod plan;
pub mod redis;
pub mod remote;
pub mod supervised;
pub mod swarm_process;
pub mod usage;

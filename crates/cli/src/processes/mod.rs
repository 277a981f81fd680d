//! The parts of a run that live in processes of their own: HAProxy, a Redis
//! server for the shared machine registry, and (for runs larger than one process
//! can hold) octopoll's own node and swarm processes.

pub mod redis;
pub mod supervised;

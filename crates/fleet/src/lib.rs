//! octopoll's processes, for runs larger than one process can hold and for nodes
//! other programs drive: `octopoll node` ([`node_process`], with its control API,
//! [`node_api`]) and `octopoll swarm` ([`swarm_process`]), their command lines
//! ([`process_args`]) and cluster files ([`cluster_file`]), how a parent starts and hears
//! them ([`child`]) and drives them ([`remote`]), the Redis server their registry
//! is shared through ([`redis_server`]), and how a run is split over them ([`plan`]).

pub mod child;
pub mod cluster_file;
pub mod guard;
pub mod limits;
pub mod node_api;
pub mod node_process;
pub mod plan;
pub mod process_args;
pub mod redis_server;
pub mod remote;
pub mod swarm_process;
pub mod usage;

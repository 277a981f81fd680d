//! One module per subcommand.

pub mod bench;
pub mod certs;
pub mod health;
pub mod node;
pub mod proxy;
pub mod run;
pub mod swarm;

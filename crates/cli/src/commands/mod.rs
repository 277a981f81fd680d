//! One module per subcommand.

pub mod bench;
pub mod certs;
pub mod compare;
pub mod health;
pub mod node;
pub mod proxy;
pub mod run;
pub mod swarm;

/// The exit code of a run that breached a threshold (or was stopped by one),
/// and of a comparison that breached a limit: k6's.
pub const THRESHOLD_BREACHED: u8 = 99;

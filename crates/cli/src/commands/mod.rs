//! One module per subcommand.

pub mod certs;
pub mod proxy;
pub mod run;

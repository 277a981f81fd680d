//! One module per subcommand.

pub mod certs;
pub mod run;

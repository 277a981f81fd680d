//! Tentacle's own files, read and written as the real Tentacle does, so that
//! octopoll's agent can be set up with the same commands and the same
//! `Tentacle.config` (`<octopus-settings>`) as a polling Tentacle.

pub mod config;
mod error;
pub mod trusted_servers;
mod xml;

pub use config::TentacleConfig;
pub use error::{ConfigError, Location, Structure, TrustedServerProblem, XmlError};
pub use trusted_servers::{CommunicationStyle, TrustedOctopusServer};

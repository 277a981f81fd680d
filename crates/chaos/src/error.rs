//! Errors of the chaos proxy: what the registry refuses, and why a proxy could not listen.

use std::net::SocketAddr;

/// Why a chaos operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A proxy of that name is already registered.
    #[error("proxy `{0}` already exists")]
    ProxyExists(String),
    /// No proxy of that name is registered.
    #[error("proxy `{0}` not found")]
    NoSuchProxy(String),
    /// The proxy already has a toxic of that name.
    #[error("toxic `{toxic}` already exists on proxy `{proxy}`")]
    ToxicExists {
        /// The proxy.
        proxy: String,
        /// The toxic's name.
        toxic: String,
    },
    /// The proxy has no toxic of that name.
    #[error("toxic `{toxic}` not found on proxy `{proxy}`")]
    NoSuchToxic {
        /// The proxy.
        proxy: String,
        /// The toxic's name.
        toxic: String,
    },
    /// A proxy's listener could not bind its address.
    #[error("proxy `{name}` could not listen on {addr}")]
    Bind {
        /// The proxy.
        name: String,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A toxic's type, stream, toxicity or attributes are not acceptable.
    #[error("invalid toxic: {0}")]
    InvalidToxic(String),
    /// A proxy's name or upstream is not acceptable.
    #[error("invalid proxy: {0}")]
    InvalidProxy(String),
}

/// The chaos crate's result, [`Error`] unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

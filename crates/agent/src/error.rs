//! Errors of the agent crate.

use std::time::Duration;

use octopoll_pki::Thumbprint;

/// What can go wrong registering or polling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached or did not answer HTTP.
    #[error("could not reach {url}")]
    Unreachable {
        /// What was called.
        url: String,
        /// reqwest's reason (connection refused, TLS, timeout).
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the API key.
    #[error("{url} refused the API key (401): {message}; check --apikey")]
    Unauthorized {
        /// What was called.
        url: String,
        /// The server's reason.
        message: String,
    },
    /// The server rate-limited the call (429) and kept doing so through every retry.
    #[error("{url} rate-limited the registration (429) through every retry: {message}")]
    RateLimited {
        /// What was called.
        url: String,
        /// The server's `Retry-After`, or 1 s.
        retry_after: Duration,
        /// The server's reason.
        message: String,
    },
    /// The server refused the request.
    #[error("{url} answered {status}: {message}")]
    Rejected {
        /// What was called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's reason.
        message: String,
    },
    /// The server's answer was not what Octopus sends.
    #[error("{url} sent an unexpected answer: {reason}")]
    BadAnswer {
        /// What was called.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// An address was not `https://host:port` or `host:port`.
    #[error("invalid server address {text:?}: {reason}")]
    BadAddress {
        /// What was given.
        text: String,
        /// Why.
        reason: &'static str,
    },
    /// The node presented a certificate other than the pinned one.
    #[error(
        "server at {address} presented certificate {actual}, but this agent trusts {expected}"
    )]
    ServerMismatch {
        /// The node address.
        address: String,
        /// The pinned thumbprint.
        expected: Thumbprint,
        /// What it presented.
        actual: Thumbprint,
    },
    /// A certificate or TLS configuration problem.
    #[error(transparent)]
    Pki(#[from] octopoll_pki::Error),
    /// A listener could not be set up.
    #[error("{what}: could not read its listening address")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Key generation could not run.
    #[error("certificate generation task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

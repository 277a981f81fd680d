//! Errors of the pki crate.

use std::path::PathBuf;

/// What went wrong making, reading or using a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen could not make a key or certificate.
    #[error("could not generate a {key_type} certificate for {common_name:?}")]
    Generate {
        /// The subject common name asked for.
        common_name: String,
        /// The key type asked for.
        key_type: crate::KeyType,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A file could not be read or written.
    #[error("could not {action} {path}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path} holds no PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's reason.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A thumbprint string was not 40 hex digits.
    #[error("{input:?} is not a thumbprint (40 hex digits, the SHA-1 of a certificate)")]
    Thumbprint {
        /// What was given.
        input: String,
    },
    /// rustls refused the certificate or key when building a config.
    #[error("rustls refused the certificate or key")]
    Tls(#[from] rustls::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

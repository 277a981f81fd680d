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
    /// The PFX's MAC or encryption did not match the password.
    #[cfg(feature = "pfx")]
    #[error("the PFX could not be opened with the password given: check --pfx-password")]
    PfxPassword,
    /// The PFX opened but held no private key (or none with its certificate).
    #[cfg(feature = "pfx")]
    #[error("the PFX holds no private key: export it with its private key")]
    PfxNoPrivateKey,
    /// The PFX held a private key but no certificate for it.
    #[cfg(feature = "pfx")]
    #[error("the PFX holds a private key but no certificate for it: export the certificate with its key")]
    PfxNoCertificate,
    /// The bytes are not a PKCS#12 file.
    #[cfg(feature = "pfx")]
    #[error("not a PFX (PKCS#12) file: give a .pfx or .p12 file exported with its private key")]
    PfxInvalid {
        /// The parser's reason.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The PFX is a PKCS#12 file but uses something that cannot be read.
    #[cfg(feature = "pfx")]
    #[error("the PFX could not be read (an unsupported algorithm or a damaged file)")]
    PfxUnreadable {
        /// The parser's reason.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// The PFX's key cannot be used with its certificate.
    #[cfg(feature = "pfx")]
    #[error(
        "the PFX's private key does not fit its certificate or is not an ECDSA, Ed25519 or RSA key"
    )]
    PfxKey {
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The certificate and key could not be written as a PFX.
    #[cfg(feature = "pfx")]
    #[error("could not write the certificate and key as a PFX")]
    PfxExport {
        /// The writer's reason.
        #[source]
        source: p12_keystore::error::Error,
    },
    /// rustls refused the certificate or key when building a config.
    #[error("rustls refused the certificate or key")]
    Tls(#[from] rustls::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

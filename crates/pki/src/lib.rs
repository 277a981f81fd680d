//! Certificates and trust for octopoll.
//!
//! Every party (node, agent) has a self-signed certificate and is known by its
//! [`Thumbprint`]: the SHA-1 of the certificate's DER, in uppercase hex, as .NET's
//! `X509Certificate2.Thumbprint` prints it. Trust is pinning by thumbprint, never
//! chain building; the TLS signature checks stay with rustls.
//!
//! This crate does no network I/O. It makes identities ([`Identity::generate`]),
//! reads and writes them as PEM ([`pem`]) and PKCS#12 (`pfx`, with the `pfx` feature), and builds
//! rustls configurations that pin peers ([`tls`]). aws-lc-rs is the only TLS
//! crypto provider; PKCS#12 files use p12-keystore's own (RustCrypto) ciphers.

pub mod api_key;
pub mod error;
pub mod generate;
pub mod key_type;
pub mod pem;
#[cfg(feature = "pfx")]
pub mod pfx;
pub mod thumbprint;
pub mod tls;
pub mod verify;

pub use api_key::ApiKey;
pub use error::{Error, Result};
pub use generate::Identity;
pub use key_type::KeyType;
pub use thumbprint::Thumbprint;
pub use verify::{PeerRejected, TrustedThumbprints};

//! Certificate verifiers that pin peers by thumbprint.
//!
//! Pinning replaces chain building, never proof of key possession: the handshake
//! signatures are still checked by rustls with the provider's algorithms.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Thumbprint;

/// The handshake signature checks every verifier here keeps: pinning replaces
/// chain building, never proof of key possession.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// A set of trusted thumbprints that can change while connections are accepted.
///
/// A node shares one set between its registry and its TLS acceptor, so a machine
/// registered a moment ago is accepted on its very next handshake.
#[derive(Clone, Debug, Default)]
pub struct TrustedThumbprints {
    set: Arc<RwLock<HashSet<Thumbprint>>>,
    defer_unknown: bool,
}

impl TrustedThumbprints {
    /// An empty set; the verifier refuses every thumbprint it does not hold.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that only caches a store shared with other processes: the
    /// verifier lets a thumbprint it does not hold through the handshake (the
    /// signatures are still checked), and its owner must look it up in the store
    /// before serving the connection. A machine registered through another process
    /// a moment ago is then accepted even before this cache has heard of it.
    pub fn deferring() -> Self {
        Self {
            set: Arc::default(),
            defer_unknown: true,
        }
    }

    /// Whether unknown thumbprints pass the handshake, to be checked by the owner.
    pub fn defers_unknown(&self) -> bool {
        self.defer_unknown
    }

    /// Trusts `thumbprint`; returns false if it already was.
    pub fn insert(&self, thumbprint: Thumbprint) -> bool {
        self.write().insert(thumbprint)
    }

    /// Stops trusting `thumbprint`; returns false if it was not trusted.
    pub fn remove(&self, thumbprint: &Thumbprint) -> bool {
        self.write().remove(thumbprint)
    }

    /// Whether `thumbprint` is trusted.
    pub fn contains(&self, thumbprint: &Thumbprint) -> bool {
        // A poisoned lock only means a writer panicked mid-insert; the set is still valid.
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(thumbprint)
    }

    /// How many thumbprints are trusted.
    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no thumbprint is trusted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the set hold exactly `thumbprints` (a cache reloaded from its store).
    pub fn replace_all(&self, thumbprints: impl IntoIterator<Item = Thumbprint>) {
        *self.write() = thumbprints.into_iter().collect();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<Thumbprint>> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a peer's certificate was refused; carried inside the rustls error.
///
/// Find it in a failed handshake's error with [`PeerRejected::find_in`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRejected {
    /// The client's certificate thumbprint is not in the trusted set.
    #[error("client certificate {thumbprint} is not trusted (no registered machine has it)")]
    Untrusted {
        /// The refused certificate's thumbprint.
        thumbprint: Thumbprint,
    },
    /// The server presented a certificate other than the pinned one.
    #[error("server presented certificate {actual} but {expected} is pinned")]
    Mismatch {
        /// The pinned thumbprint.
        expected: Thumbprint,
        /// What the server presented.
        actual: Thumbprint,
    },
}

impl PeerRejected {
    /// The rejection inside an I/O error from a tokio-rustls handshake or read, if
    /// any, looking through I/O errors wrapped in I/O errors (as HTTP clients do).
    pub fn find_in(err: &std::io::Error) -> Option<Self> {
        let mut inner = err.get_ref()?;
        loop {
            if let Some(rustls_err) = inner.downcast_ref::<rustls::Error>() {
                return Self::find_in_rustls(rustls_err);
            }
            inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
        }
    }

    /// The rejection inside a rustls error, if any.
    pub fn find_in_rustls(err: &rustls::Error) -> Option<Self> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                let inner: &(dyn std::error::Error + 'static) = &*other.0;
                inner.downcast_ref::<PeerRejected>().cloned()
            }
            _ => None,
        }
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// Accepts a client only if its certificate's thumbprint is in a [`TrustedThumbprints`]
/// (or, for a [`TrustedThumbprints::deferring`] set, leaves unknown ones to its owner).
#[derive(Debug)]
pub struct ThumbprintClientVerifier {
    trusted: TrustedThumbprints,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ThumbprintClientVerifier {
    /// A verifier over `trusted`, checking signatures with `algorithms`.
    pub fn new(trusted: TrustedThumbprints, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            trusted,
            algorithms,
        }
    }
}

impl ClientCertVerifier for ThumbprintClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let thumbprint = Thumbprint::of(end_entity);
        if self.trusted.contains(&thumbprint) || self.trusted.defers_unknown() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(PeerRejected::Untrusted { thumbprint }.into_rustls())
        }
    }

    signature_checks!();
}

/// Accepts a server only if it presents the pinned thumbprint.
///
/// The server name is not checked: like Halibut, identity is the thumbprint alone,
/// so a node reached through NAT or a load balancer under any name still verifies.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    /// `None` only through [`PinnedServerVerifier::dangerous_accept_any`].
    expected: Option<Thumbprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier that pins `expected`, checking signatures with `algorithms`.
    pub fn new(expected: Thumbprint, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            expected: Some(expected),
            algorithms,
        }
    }

    /// A verifier that accepts **any** server certificate (signatures are still
    /// checked, but anyone can present any certificate).
    pub fn dangerous_accept_any(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            expected: None,
            algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = Thumbprint::of(end_entity);
        match self.expected {
            Some(expected) if expected != actual => {
                Err(PeerRejected::Mismatch { expected, actual }.into_rustls())
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    signature_checks!();
}

//! Self-signed identities made with rcgen.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, KeyType, Result, Thumbprint};

/// A certificate with its private key and thumbprint.
///
/// Cheap to clone: the DER bytes are shared.
#[derive(Clone)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    thumbprint: Thumbprint,
}

impl Identity {
    /// Makes a self-signed certificate for `common_name`.
    ///
    /// RSA key generation takes tens of milliseconds: call it from
    /// `spawn_blocking` when on an async runtime.
    pub fn generate(common_name: &str, key_type: KeyType) -> Result<Self> {
        let fail = |source| Error::Generate {
            common_name: common_name.to_owned(),
            key_type,
            source,
        };
        let algorithm = match key_type {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        };
        let key_pair = rcgen::KeyPair::generate_for(algorithm).map_err(fail)?;
        let mut params =
            rcgen::CertificateParams::new(vec![common_name.to_owned()]).map_err(fail)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        // Tentacle certificates are long-lived; so are these (100 years, as Tentacle's are).
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2120, 1, 1);
        let cert = params.self_signed(&key_pair).map_err(fail)?;
        let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
        Ok(Self::from_der(cert.der().clone(), key))
    }

    /// An identity from a DER certificate and its PKCS#8 key.
    pub fn from_der(cert: CertificateDer<'static>, key: PrivatePkcs8KeyDer<'static>) -> Self {
        let thumbprint = Thumbprint::of(&cert);
        Self {
            cert,
            key: Arc::new(key),
            thumbprint,
        }
    }

    /// The certificate, DER-encoded.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key, as rustls takes it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The private key's PKCS#8 DER bytes.
    pub fn private_key_pkcs8(&self) -> &[u8] {
        self.key.secret_pkcs8_der()
    }

    /// The certificate's thumbprint.
    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_identities_are_distinct() {
        let a = Identity::generate("a", KeyType::EcdsaP256).unwrap();
        let b = Identity::generate("a", KeyType::EcdsaP256).unwrap();
        assert_ne!(a.thumbprint(), b.thumbprint());
        assert_eq!(a.thumbprint(), Thumbprint::of(a.cert()));
    }

    #[test]
    fn rsa_identity_generates() {
        let id = Identity::generate("rsa", KeyType::Rsa2048).unwrap();
        assert!(
            id.private_key_pkcs8().len() > 1000,
            "an RSA-2048 PKCS#8 key is over 1 KB"
        );
    }
}

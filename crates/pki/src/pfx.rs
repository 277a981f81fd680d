//! PKCS#12 (PFX) files: how Tentacle stores its certificate and how
//! `import-certificate --from-file` takes one.
//!
//! Written with PBES2 (PBKDF2-SHA256, AES-256-CBC) and an HMAC-SHA256 MAC, as
//! OpenSSL 3 does. Read: those and the legacy 3DES and RC2 schemes older Windows
//! and .NET exports use.

use p12_keystore::error::Error as P12Error;
use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::{Error, Identity, Result};

/// The friendly name of the key entry, as Tentacle's certificates show in a store.
pub const FRIENDLY_NAME: &str = "Octopus Tentacle";

/// A PKCS#12 file holding `identity`'s certificate and private key.
///
/// `password` may be empty: Tentacle keeps a password-less PFX in its config.
/// Key derivation runs PBKDF2 (10,000 rounds) twice: call it from
/// `spawn_blocking` when on an async runtime and making many.
pub fn export(identity: &Identity, password: &str) -> Result<Vec<u8>> {
    let fail = |source| Error::PfxExport { source };
    let cert = p12_keystore::Certificate::from_der(identity.cert()).map_err(fail)?;
    let key = p12_keystore::PrivateKey::from_der(identity.private_key_pkcs8()).map_err(fail)?;
    // The local key id links the key to its certificate; OpenSSL and Windows use
    // the certificate's SHA-1, which is the thumbprint.
    let local_key_id = identity.thumbprint().as_bytes().to_vec();
    let chain = PrivateKeyChain::new(local_key_id, key, [cert]);
    let mut store = KeyStore::new();
    store.add_entry(FRIENDLY_NAME, KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(fail)
}

/// The identity in the first key entry of a PKCS#12 file.
///
/// The key's certificate is the one with the same local key id or, failing
/// that, the only certificate in the file. The key must fit the certificate and
/// be one rustls can sign with, so a bad file fails here rather than at the
/// first handshake.
pub fn import(bytes: &[u8], password: &str) -> Result<Identity> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(bytes, password).map_err(classify)?;
    let key = archive.keys.first().ok_or(Error::PfxNoPrivateKey)?;
    let linked = key.local_key_id.as_ref().and_then(|id| {
        archive
            .certs
            .iter()
            .find(|c| c.local_key_id.as_deref() == Some(id.as_ref()))
    });
    let cert_bag = match (linked, archive.certs.as_slice()) {
        (Some(cert), _) => cert,
        (None, [only]) => only,
        (None, _) => return Err(Error::PfxNoCertificate),
    };
    let cert = CertificateDer::from(cert_bag.cert.as_der().to_vec());
    let key = PrivatePkcs8KeyDer::from(key.key.as_der().to_vec());
    let identity = Identity::from_der(cert, key);
    rustls::sign::CertifiedKey::from_der(
        vec![identity.cert().clone()],
        identity.private_key(),
        &crate::tls::provider(),
    )
    .map_err(|source| Error::PfxKey { source })?;
    Ok(identity)
}

/// Sorts p12-keystore's errors into what the user should do about them.
fn classify(error: P12Error) -> Error {
    match error {
        // A MAC mismatch is the wrong password; so, in a MAC-less file, is a
        // decryption that ends in bad padding.
        P12Error::MacError(_) | P12Error::UnpadError | P12Error::Pkcs5Error(_) => {
            Error::PfxPassword
        }
        P12Error::DerError(_) | P12Error::InvalidVersion | P12Error::UnsupportedContentType => {
            Error::PfxInvalid { source: error }
        }
        other => Error::PfxUnreadable { source: other },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    fn round_trip(key_type: KeyType, password: &str) {
        let identity = Identity::generate("tentacle", key_type).unwrap();
        let bytes = export(&identity, password).unwrap();
        let back = import(&bytes, password).unwrap();
        assert_eq!(back.thumbprint(), identity.thumbprint());
        assert_eq!(back.private_key_pkcs8(), identity.private_key_pkcs8());
        let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
        crate::tls::polling_client_config(&back, server.thumbprint()).unwrap();
    }

    #[test]
    fn ecdsa_round_trips_with_password() {
        round_trip(KeyType::EcdsaP256, "s3cret!");
    }

    #[test]
    fn ecdsa_round_trips_with_empty_password() {
        round_trip(KeyType::EcdsaP256, "");
    }

    #[test]
    fn rsa_round_trips_with_password() {
        round_trip(KeyType::Rsa2048, "s3cret!");
    }

    #[test]
    fn rsa_round_trips_with_empty_password() {
        round_trip(KeyType::Rsa2048, "");
    }

    #[test]
    fn wrong_password_says_so() {
        let identity = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
        let bytes = export(&identity, "right").unwrap();
        let err = import(&bytes, "wrong").unwrap_err();
        assert!(matches!(err, Error::PfxPassword), "{err:?}");
        assert!(err.to_string().contains("check --pfx-password"));
        let err = import(&bytes, "").unwrap_err();
        assert!(matches!(err, Error::PfxPassword), "{err:?}");
    }

    #[test]
    fn garbage_is_not_a_pfx() {
        for bytes in [
            &b""[..],
            b"not a pfx at all",
            &[0x30, 0x03, 0x02, 0x01, 0x03],
        ] {
            let err = import(bytes, "").unwrap_err();
            assert!(matches!(err, Error::PfxInvalid { .. }), "{err:?}");
            assert!(err.to_string().starts_with("not a PFX"));
        }
    }

    #[test]
    fn truncated_pfx_is_an_error() {
        let identity = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
        let bytes = export(&identity, "").unwrap();
        for len in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(import(&bytes[..len], "").is_err(), "{len} bytes");
        }
    }

    #[test]
    fn certificate_only_pfx_has_no_private_key() {
        let identity = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
        let cert = p12_keystore::Certificate::from_der(identity.cert()).unwrap();
        let mut store = KeyStore::new();
        store.add_entry("cert", KeyStoreEntry::Certificate(cert));
        let bytes = store.writer("").write().unwrap();
        let err = import(&bytes, "").unwrap_err();
        assert!(matches!(err, Error::PfxNoPrivateKey), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the PFX holds no private key: export it with its private key"
        );
    }

    #[test]
    fn key_from_another_certificate_is_refused() {
        let a = Identity::generate("a", KeyType::EcdsaP256).unwrap();
        let b = Identity::generate("b", KeyType::EcdsaP256).unwrap();
        let mismatched = Identity::from_der(
            a.cert().clone(),
            PrivatePkcs8KeyDer::from(b.private_key_pkcs8().to_vec()),
        );
        let bytes = export(&mismatched, "").unwrap();
        let err = import(&bytes, "").unwrap_err();
        assert!(matches!(err, Error::PfxKey { .. }), "{err:?}");
    }

    /// `openssl pkcs12 -export -legacy -passout pass:pw` (OpenSSL 3.0): the key in
    /// 3DES, the certificate in RC2-40, a SHA-1 MAC, as older Windows exports are.
    const OPENSSL_LEGACY_PFX: &[&str] = &[
        "MIIDywIBAzCCA5EGCSqGSIb3DQEHAaCCA4IEggN+MIIDejCCAk8GCSqGSIb3DQEHBqCCAkAwggI8AgEAMIICNQYJKoZIhvcN",
        "AQcBMBwGCiqGSIb3DQEMAQYwDgQIFvb/U8VoCmkCAggAgIICCHzMr0728O3N0bMfoV5Q6L4bnIfis47EiV6fA5kyin75CEFo",
        "EtZPntSbRT77EWkAq+rr1RBcJRGPoqZ7E3M07Jw8n3sDt+s6BdZrkn4YTJTrFHfYHR/9Q/bTv+4sJWxpPo+AdYuOdEg96hEl",
        "ROfzAz8nEcdfQQwuoQz6BHwHgqe+lmFPMlfhwltg6F7CkFg8tbFKhFFrPQJLQeN7fxxwdf8oizB1Jo2OSsaniIuN4lVvRxF5",
        "30a4xhAB7rOQ2E32FYHWY8dq2HxZcJwQxm8gSM7C5jx+h+Z9GAcEaQpFVTUcUBLtMdNbsmCVqKhO8MinmVEzWuzVvF8yXSCD",
        "tYu7Fj6NGkHjIZNRYcJ1+EgeKO0+VjIV6GVV6h8drmsVYW2YsxAuz6Umuc/kilv11d3HQOYkkEtbyFJERQKcriFC/0sYOIh8",
        "pBkAkGP2+qnzET9k9f3oSk3YiihEtX7ZOK2S3C30p/RVi6toGPhInNYJ4voIIzfUecHcIpQSJJ1/BESu1A4f5S8ZSYfuGMMg",
        "I5ygbt+ORv4maeRxjwk/IMAbXuT+jEBd3BTqERBsz9QAMXvEJ+rU1zbmdfrzjr1q86WoijgfQGjkQMQMUnRv0oGxuE8XXhix",
        "bXqPKZiPKzO8q+cbb106OA2UOiRe86mi6n+/N9ZniaWnGJlzzfiU3w25PC1cGw5hUifn7hEwggEjBgkqhkiG9w0BBwGgggEU",
        "BIIBEDCCAQwwggEIBgsqhkiG9w0BDAoBAqCBtDCBsTAcBgoqhkiG9w0BDAEDMA4ECNN69hApMW0KAgIIAASBkEES5noNoXxe",
        "OkFzHzPMbAEeqWVWp8isxfYhGHh7EZb9KgI+MkkDA3bL/5nK6td055XE1KQulLtxtVE7tisUlSZ0Fb7uBlEs/YWlCRZWMaeW",
        "du2fkQ9514Ewnjhg5z3d+sfW55VBtZSPfm84D6yaVskD+xYfylVhb7K6xz+yLNETGnAf2rFczjCWMtcgiAd1QjFCMBsGCSqG",
        "SIb3DQEJFDEOHgwAbABlAGcAYQBjAHkwIwYJKoZIhvcNAQkVMRYEFC/uWO+t8TjDY5mv0vQ+1GmW9O6dMDEwITAJBgUrDgMC",
        "GgUABBR3pJH6IgoXW9tSS5KBdTeB6NIsYgQIo8wj/MSE3GECAggA",
    ];

    #[test]
    fn reads_an_openssl_legacy_pfx() {
        use base64::Engine as _;
        let text = OPENSSL_LEGACY_PFX.concat();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let identity = import(&bytes, "pw").unwrap();
        assert_eq!(
            identity.thumbprint().to_string(),
            "2FEE58EFADF138C36399AFD2F43ED46996F4EE9D"
        );
        assert!(matches!(
            import(&bytes, "").unwrap_err(),
            Error::PfxPassword
        ));
    }
}

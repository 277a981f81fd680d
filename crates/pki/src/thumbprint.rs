//! Certificate thumbprints: the identity every octopoll party is known by.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;

use crate::Error;

/// SHA-1 of a certificate's DER, as .NET's `X509Certificate2.Thumbprint` gives it.
///
/// Displays as 40 uppercase hex digits; parses case-insensitively, as Halibut's
/// default trust provider compares thumbprints ignoring case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thumbprint([u8; 20]);

impl Thumbprint {
    /// The thumbprint of a DER-encoded certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The raw 20 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl FromStr for Thumbprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::Thumbprint {
            input: s.to_owned(),
        };
        let digits = s.as_bytes();
        if digits.len() != 40 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 20];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_uppercase_and_parses_any_case() {
        let text = "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6";
        let tp: Thumbprint = text.parse().unwrap();
        assert_eq!(tp.to_string(), text);
        let lower: Thumbprint = text.to_lowercase().parse().unwrap();
        assert_eq!(lower, tp);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert!("ABC".parse::<Thumbprint>().is_err());
        let bad = "Z7751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6";
        let err = bad.parse::<Thumbprint>().unwrap_err();
        assert!(err.to_string().contains("40 hex digits"), "{err}");
    }

    #[test]
    fn is_sha1_of_der() {
        // SHA-1("abc") from FIPS 180-1.
        let tp = Thumbprint::of(&CertificateDer::from(b"abc".to_vec()));
        assert_eq!(tp.to_string(), "A9993E364706816ABA3E25717850C26C9CD0D89D");
    }
}

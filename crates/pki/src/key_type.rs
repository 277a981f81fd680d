//! The key algorithms octopoll generates certificates with.

use std::fmt;

/// The key algorithm of a generated certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: fast to make and to handshake with.
    #[default]
    EcdsaP256,
    /// RSA-2048 with SHA-256, what Octopus and Tentacle generate: slower, for realism.
    Rsa2048,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
        })
    }
}

//! The API key a Tentacle presents to register (`X-Octopus-ApiKey`).

use std::fmt;

/// An Octopus API key (`API-…`). Never printed, compared in constant time.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// A random key in Octopus's form: `API-` and 26 uppercase alphanumerics.
    pub fn random() -> Self {
        use aws_lc_rs::rand::SecureRandom;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut raw = [0u8; 26];
        // The system RNG failing is not recoverable and never happens on Linux.
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut raw)
            .expect("the system random number generator works");
        let body: String = raw
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Self(format!("API-{body}"))
    }

    /// The key's text, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this key, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), candidate.as_bytes())
            .is_ok()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_itself_and_never_prints() {
        let key = ApiKey::random();
        assert!(key.expose().starts_with("API-") && key.expose().len() == 30);
        assert!(key.matches(key.expose()));
        assert!(!key.matches("API-WRONG"));
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}

//! Stage 1: identification lines, and the polling subscription id they carry.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::control::split_line;
use crate::{Error, Result};

/// A polling subscription: `poll://<id>/`.
///
/// Identifies one polling Tentacle to every node; all its connections use it.
/// Stored lowercased, with the trailing `/` that .NET's `Uri.ToString()` adds.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(String);

/// The alphabet of Tentacle's random subscription ids, `[a-hj-np-z2-9]` (no `i`, `o`, `0`, `1`).
const ALPHABET: &[u8] = b"abcdefghjklmnpqrstuvwxyz23456789";

impl SubscriptionId {
    /// A new random id, 20 characters from Tentacle's alphabet.
    pub fn random(rng: &mut impl Rng) -> Self {
        let id: String = (0..20)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self(format!("poll://{id}/"))
    }

    /// The URI text, `poll://<id>/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubscriptionId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::BadSubscription {
            text: text.to_owned(),
        };
        let lower = text.to_ascii_lowercase();
        let rest = lower.strip_prefix("poll://").ok_or_else(bad)?;
        let host = rest.strip_suffix('/').unwrap_or(rest);
        let valid = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(bad());
        }
        Ok(Self(format!("poll://{host}/")))
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({})", self.0)
    }
}

/// Who a peer says it is, in its identification line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteIdentity {
    /// `MX-CLIENT 1.0`: a server calling a listening service.
    Client,
    /// `MX-SUBSCRIBER 1.0 poll://…/`: a polling service.
    Subscriber(SubscriptionId),
    /// `MX-SERVER 1.0`: the answer of whichever side was called.
    Server,
}

impl RemoteIdentity {
    /// Appends the identity line and the empty line after it, to be sent in one write
    /// (Tentacle 4.4.x fails when they arrive in two).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RemoteIdentity::Client => out.extend_from_slice(b"MX-CLIENT 1.0"),
            RemoteIdentity::Server => out.extend_from_slice(b"MX-SERVER 1.0"),
            RemoteIdentity::Subscriber(id) => {
                out.extend_from_slice(b"MX-SUBSCRIBER 1.0 ");
                out.extend_from_slice(id.as_str().as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n\r\n");
    }

    /// Decodes an identity line and its empty line from `buf`.
    ///
    /// Returns the identity and bytes consumed, or `Ok(None)` if both lines are not in
    /// `buf` yet. Empty lines are not skipped here, as in Halibut.
    pub fn decode(buf: &[u8], max_line_bytes: usize) -> Result<Option<(Self, usize)>> {
        let Some((line, first)) = split_line(buf, max_line_bytes, "identity line")? else {
            return Ok(None);
        };
        let identity = Self::parse(line)?;
        let Some((blank, second)) = split_line(&buf[first..], max_line_bytes, "identity line")?
        else {
            return Ok(None);
        };
        if !blank.is_empty() {
            return Err(Error::BadIdentity {
                line: blank.to_owned(),
                reason: "the identity line must be followed by an empty line",
            });
        }
        Ok(Some((identity, first + second)))
    }

    fn parse(line: &str) -> Result<Self> {
        let bad = |reason| Error::BadIdentity {
            line: line.to_owned(),
            reason,
        };
        let mut words = line.split(' ');
        // The version word is never checked, as in Halibut.
        let (kind, _version, uri) = (words.next().unwrap_or(""), words.next(), words.next());
        match kind {
            "" => Err(bad("empty identity line")),
            "MX-CLIENT" => Ok(RemoteIdentity::Client),
            "MX-SERVER" => Ok(RemoteIdentity::Server),
            "MX-SUBSCRIBER" => {
                let uri = uri.ok_or_else(|| bad("MX-SUBSCRIBER needs a subscription URI"))?;
                Ok(RemoteIdentity::Subscriber(uri.parse()?))
            }
            _ => Err(bad(
                "unknown identity; expected MX-CLIENT, MX-SUBSCRIBER or MX-SERVER",
            )),
        }
    }
}

impl fmt::Display for RemoteIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteIdentity::Client => f.write_str("MX-CLIENT"),
            RemoteIdentity::Server => f.write_str("MX-SERVER"),
            RemoteIdentity::Subscriber(id) => write!(f, "MX-SUBSCRIBER {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> SubscriptionId {
        "poll://abc123/".parse().unwrap()
    }

    #[test]
    fn identity_lines_are_byte_exact() {
        let cases = [
            (
                RemoteIdentity::Subscriber(sub()),
                &b"MX-SUBSCRIBER 1.0 poll://abc123/\r\n\r\n"[..],
            ),
            (RemoteIdentity::Server, b"MX-SERVER 1.0\r\n\r\n"),
            (RemoteIdentity::Client, b"MX-CLIENT 1.0\r\n\r\n"),
        ];
        for (identity, bytes) in cases {
            let mut out = Vec::new();
            identity.encode(&mut out);
            assert_eq!(out, bytes);
            assert_eq!(
                RemoteIdentity::decode(bytes, 1024).unwrap(),
                Some((identity, bytes.len()))
            );
        }
    }

    #[test]
    fn needs_the_empty_line_too() {
        assert_eq!(
            RemoteIdentity::decode(b"MX-SERVER 1.0\r\n", 1024).unwrap(),
            None
        );
    }

    #[test]
    fn rejects_malformed_identities() {
        for bad in [
            &b"\r\n\r\n"[..],
            b"HELLO 1.0\r\n\r\n",
            b"MX-SUBSCRIBER 1.0\r\n\r\n",
            b"MX-SUBSCRIBER 1.0 https://x/\r\n\r\n",
            b"MX-SERVER 1.0\r\nmore\r\n",
        ] {
            assert!(
                RemoteIdentity::decode(bad, 1024).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn subscription_ids_normalise_and_generate() {
        let id: SubscriptionId = "POLL://G3662RE9NJTELSYFHM7T".parse().unwrap();
        assert_eq!(id.as_str(), "poll://g3662re9njtelsyfhm7t/");
        assert_eq!(ALPHABET.len(), 32);
        let random = SubscriptionId::random(&mut rand::rng());
        assert_eq!(random.as_str().len(), "poll://".len() + 20 + 1);
        assert_eq!(random.as_str().parse::<SubscriptionId>().unwrap(), random);
    }
}

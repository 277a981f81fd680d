//! Stage 0: the `MX` preamble the connecting side writes right after TLS.
//!
//! Without it a real Halibut listener would take the identity line for the preamble
//! and then wait for an identity until it times out.

use crate::{Error, Result};

/// What octopoll writes: `MX` and two Windows newlines, as Tentacle on Windows does.
pub const PREAMBLE: &[u8] = b"MX\r\n\r\n";

/// The page Halibut answers a non-`MX` probe (such as a browser) with before closing.
pub const PROBE_RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n\r\n<html><body><p>Hello from octopoll. This is a polling endpoint, not a web page.</p></body></html>\r\n";

/// Decodes the preamble at the start of `buf`.
///
/// Reads bytes, ignoring CR, up to two LFs in a row, so both `MX\r\n\r\n` and
/// `MX\n\n` are accepted. Returns the bytes consumed, `Ok(None)` if the end is not
/// in `buf` yet, [`Error::EmptyPreamble`] for nothing but newlines and
/// [`Error::NotMx`] for anything not starting with `MX`.
pub fn decode(buf: &[u8], max_chars: usize) -> Result<Option<usize>> {
    let mut chars = 0usize;
    let mut last_was_lf = false;
    for (index, &byte) in buf.iter().enumerate() {
        // Every byte counts toward the cap, CRs included, so nothing reads unbounded.
        if index >= max_chars {
            return Err(Error::TooLong {
                what: "preamble",
                limit: max_chars as u64,
            });
        }
        if byte == b'\r' {
            continue;
        }
        if byte == b'\n' {
            if last_was_lf {
                return finish(buf, index + 1).map(Some);
            }
            last_was_lf = true;
        } else {
            last_was_lf = false;
        }
        chars += 1;
        // A probe is recognisable before it ends: fail fast rather than buffer it.
        if chars == 2 && !text_of(&buf[..=index]).starts_with("MX") {
            return Err(not_mx(buf));
        }
    }
    Ok(None)
}

fn finish(buf: &[u8], consumed: usize) -> Result<usize> {
    let text = text_of(&buf[..consumed]);
    if text.trim().is_empty() {
        Err(Error::EmptyPreamble)
    } else if !text.starts_with("MX") {
        Err(not_mx(buf))
    } else {
        Ok(consumed)
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn not_mx(buf: &[u8]) -> Error {
    let shown = &buf[..buf.len().min(32)];
    Error::NotMx {
        got: String::from_utf8_lossy(shown).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_windows_and_linux_forms() {
        assert_eq!(decode(b"MX\r\n\r\nMX-SUB", 100).unwrap(), Some(6));
        assert_eq!(decode(b"MX\n\n", 100).unwrap(), Some(4));
    }

    #[test]
    fn needs_more_until_two_lfs() {
        assert_eq!(decode(b"MX\r\n\r", 100).unwrap(), None);
        assert_eq!(decode(b"M", 100).unwrap(), None);
    }

    #[test]
    fn refuses_probe_empty_and_overlong() {
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n", 100),
            Err(Error::NotMx { .. })
        ));
        assert!(matches!(
            decode(b"\r\n\r\n", 100),
            Err(Error::EmptyPreamble)
        ));
        assert!(matches!(
            decode(b"MXAAAAAAAAAAAA", 8),
            Err(Error::TooLong {
                what: "preamble",
                limit: 8
            })
        ));
    }
}

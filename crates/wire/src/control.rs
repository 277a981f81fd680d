//! Control lines (`NEXT`, `PROCEED`, `END`) and the CR LF line reader they share
//! with identity lines.

use std::fmt;

use crate::{Error, Result};

/// A control line of the message exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Service to server: ready for the next request.
    Next,
    /// Server to service: answer to `NEXT`.
    Proceed,
    /// The side that opened the connection is discarding it (sent instead of `NEXT`).
    End,
}

impl ControlMessage {
    /// The line's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlMessage::Next => "NEXT",
            ControlMessage::Proceed => "PROCEED",
            ControlMessage::End => "END",
        }
    }

    /// Appends the line and its CR LF to `out`.
    pub fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Decodes one control line from `buf`, skipping empty lines first as Halibut does.
    ///
    /// Returns the message and bytes consumed, or `Ok(None)` if no whole line is in `buf`.
    pub fn decode(buf: &[u8], max_line_bytes: usize) -> Result<Option<(Self, usize)>> {
        let mut offset = 0;
        loop {
            let Some((line, used)) = split_line(&buf[offset..], max_line_bytes, "control line")?
            else {
                return Ok(None);
            };
            offset += used;
            let message = match line {
                // Blank lines are skipped, but not without bound.
                "" if offset > max_line_bytes => {
                    return Err(Error::TooLong {
                        what: "blank lines before a control line",
                        limit: max_line_bytes as u64,
                    })
                }
                "" => continue,
                "NEXT" => ControlMessage::Next,
                "PROCEED" => ControlMessage::Proceed,
                "END" => ControlMessage::End,
                other => {
                    return Err(Error::UnexpectedControl {
                        line: other.to_owned(),
                        expected: "NEXT, PROCEED or END",
                    })
                }
            };
            return Ok(Some((message, offset)));
        }
    }
}

impl fmt::Display for ControlMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may come next where either a control line or a message is possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// `NEXT`, `PROCEED` or `END` (after any blank lines).
    ControlLine,
    /// Anything else: a message's raw DEFLATE.
    Message,
}

/// Tells a control line from a message by the bytes at the front of `buf`, or
/// `None` if they do not tell yet. One byte is not enough: a DEFLATE stream may
/// begin with `E`, `P`, CR or LF (only `N`, a block of the reserved type, never
/// starts one), so the bytes are matched against the whole line, which is at
/// most nine bytes after the blank lines.
pub fn next_in(buf: &[u8]) -> Option<Next> {
    let mut rest = buf;
    loop {
        match rest {
            [] | [b'\r'] => return None,
            [b'\r', b'\n', after @ ..] => rest = after,
            _ => break,
        }
    }
    for line in [&b"NEXT\r\n"[..], b"PROCEED\r\n", b"END\r\n"] {
        let n = rest.len().min(line.len());
        if rest[..n] == line[..n] {
            return (n == line.len()).then_some(Next::ControlLine);
        }
    }
    Some(Next::Message)
}

/// Splits one CR LF-terminated ASCII line off the front of `buf`.
///
/// As .NET's reader does: a CR must be followed by LF, and a lone LF stays inside
/// the line. Returns the line without its CR LF and the bytes consumed.
pub(crate) fn split_line<'a>(
    buf: &'a [u8],
    max_line_bytes: usize,
    what: &'static str,
) -> Result<Option<(&'a str, usize)>> {
    let Some(cr) = buf.iter().position(|&b| b == b'\r') else {
        return if buf.len() > max_line_bytes {
            Err(Error::TooLong {
                what,
                limit: max_line_bytes as u64,
            })
        } else {
            Ok(None)
        };
    };
    if cr > max_line_bytes {
        return Err(Error::TooLong {
            what,
            limit: max_line_bytes as u64,
        });
    }
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            let line = &buf[..cr];
            if !line.is_ascii() {
                return Err(Error::NotAscii { what });
            }
            let text = std::str::from_utf8(line).map_err(|_| Error::NotAscii { what })?;
            Ok(Some((text, cr + 2)))
        }
        Some(_) => Err(Error::BareCr { what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_starting_like_a_control_line_is_told_apart_by_its_next_bytes() {
        assert_eq!(next_in(b"END\r\n"), Some(Next::ControlLine));
        assert_eq!(next_in(b"\r\n\r\nNEXT\r\n"), Some(Next::ControlLine));
        assert_eq!(next_in(b"PROCEED\r\nmore"), Some(Next::ControlLine));
        // Not known yet: a prefix of a line, or of the blank lines before one.
        for partial in [&b""[..], b"E", b"EN", b"END\r", b"\r", b"\r\n", b"\r\nNE"] {
            assert_eq!(next_in(partial), None, "{partial:?}");
        }
        // DEFLATE that happens to start with E, P, CR or LF (0x45 is a final
        // dynamic-Huffman block header) is a message as soon as a byte differs.
        for deflate in [
            &[0x45u8, 0x8c, 0x31][..],
            &[b'P', b'R', 0x00],
            &[b'\r', 0x9d],
            b"\nE",
            b"END\n",
            &[0x1d, 0x8e],
        ] {
            assert_eq!(next_in(deflate), Some(Next::Message), "{deflate:?}");
        }
    }

    #[test]
    fn lines_round_trip_byte_exact() {
        for (message, bytes) in [
            (ControlMessage::Next, &b"NEXT\r\n"[..]),
            (ControlMessage::Proceed, b"PROCEED\r\n"),
            (ControlMessage::End, b"END\r\n"),
        ] {
            let mut out = Vec::new();
            message.encode(&mut out);
            assert_eq!(out, bytes);
            assert_eq!(
                ControlMessage::decode(bytes, 64).unwrap(),
                Some((message, bytes.len()))
            );
        }
    }

    #[test]
    fn skips_empty_lines_and_waits_for_whole_line() {
        assert_eq!(
            ControlMessage::decode(b"\r\n\r\nNEXT\r\nrest", 64).unwrap(),
            Some((ControlMessage::Next, 10))
        );
        assert_eq!(ControlMessage::decode(b"NEX", 64).unwrap(), None);
        assert_eq!(ControlMessage::decode(b"NEXT\r", 64).unwrap(), None);
    }

    #[test]
    fn rejects_unknown_bare_cr_and_overlong() {
        assert!(matches!(
            ControlMessage::decode(b"HELLO\r\n", 64),
            Err(Error::UnexpectedControl { .. })
        ));
        assert!(matches!(
            ControlMessage::decode(b"NEXT\rX", 64),
            Err(Error::BareCr { .. })
        ));
        assert!(matches!(
            ControlMessage::decode(&[b'A'; 65], 64),
            Err(Error::TooLong { limit: 64, .. })
        ));
    }

    #[test]
    fn endless_blank_lines_are_refused() {
        assert!(matches!(
            ControlMessage::decode(&b"\r\n".repeat(100), 64),
            Err(Error::TooLong { limit: 64, .. })
        ));
    }

    #[test]
    fn lone_lf_stays_inside_the_line() {
        assert!(matches!(
            ControlMessage::decode(b"NE\nXT\r\n", 64),
            Err(Error::UnexpectedControl { line, .. }) if line == "NE\nXT"
        ));
    }
}

//! Data stream frames: the raw bytes that follow a message for each DataStream it
//! references.
//!
//! Frame: 16-byte id in `Guid.ToByteArray()` order, length as little-endian i64,
//! the bytes, and the length again.

use bytes::Bytes;
use uuid::Uuid;

use crate::message::DataStreamRef;
use crate::{Error, Result};

const HEADER: usize = 16 + 8;

/// A data stream with its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataStream {
    /// The id its message references.
    pub id: Uuid,
    /// The content.
    pub bytes: Bytes,
}

impl DataStream {
    /// A stream with a fresh id.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::new_v4(),
            bytes: bytes.into(),
        }
    }

    /// The reference a message carries for this stream.
    pub fn reference(&self) -> DataStreamRef {
        DataStreamRef {
            id: self.id,
            length: self.bytes.len() as i64,
        }
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let length = (self.bytes.len() as i64).to_le_bytes();
        out.extend_from_slice(&self.id.to_bytes_le());
        out.extend_from_slice(&length);
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&length);
    }

    /// Decodes one frame from `buf`: the stream and bytes consumed, or `Ok(None)` if
    /// the frame is not whole yet. Lengths over `max_bytes` fail before buffering.
    pub fn decode(buf: &[u8], max_bytes: u64) -> Result<Option<(Self, usize)>> {
        let Some((id, length)) = decode_header(buf, max_bytes)? else {
            return Ok(None);
        };
        let end = HEADER + length as usize;
        let Some(trailer) = buf.get(end..end + 8) else {
            return Ok(None);
        };
        let trailer = i64::from_le_bytes(trailer.try_into().expect("slice of 8"));
        if trailer != length {
            return Err(Error::StreamLengthMismatch {
                id,
                declared: length,
                trailer,
            });
        }
        let bytes = Bytes::copy_from_slice(&buf[HEADER..end]);
        Ok(Some((Self { id, bytes }, end + 8)))
    }
}

/// The id and length of the frame at the front of `buf`, checked against `max_bytes`.
pub fn decode_header(buf: &[u8], max_bytes: u64) -> Result<Option<(Uuid, i64)>> {
    let Some(header) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let id = Uuid::from_bytes_le(header[..16].try_into().expect("slice of 16"));
    let length = i64::from_le_bytes(header[16..].try_into().expect("slice of 8"));
    if length < 0 {
        return Err(Error::NegativeStreamLength { id, length });
    }
    if length as u64 > max_bytes {
        return Err(Error::TooLong {
            what: "data stream",
            limit: max_bytes,
        });
    }
    Ok(Some((id, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> DataStream {
        DataStream {
            id: "a3c9e1f2-5b6d-4c7e-8f90-123456789abc".parse().unwrap(),
            bytes: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn frame_matches_the_notes() {
        let mut out = Vec::new();
        hello().encode(&mut out);
        let expected = "f2e1c9a36d5b7e4c8f90123456789abc050000000000000068656c6c6f0500000000000000";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_eq!(
            DataStream::decode(&out, 100).unwrap(),
            Some((hello(), out.len()))
        );
        assert_eq!(
            DataStream::decode(&out[..out.len() - 1], 100).unwrap(),
            None
        );
    }

    #[test]
    fn mismatched_trailer_and_oversize_are_errors() {
        let mut out = Vec::new();
        hello().encode(&mut out);
        let last = out.len() - 8;
        out[last] = 6;
        assert!(matches!(
            DataStream::decode(&out, 100),
            Err(Error::StreamLengthMismatch {
                declared: 5,
                trailer: 6,
                ..
            })
        ));
        assert!(matches!(
            DataStream::decode(&out, 4),
            Err(Error::TooLong { limit: 4, .. })
        ));
    }
}

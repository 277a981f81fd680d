//! Raw DEFLATE (RFC 1951) framing of messages.
//!
//! A message has no length prefix: it ends where its final DEFLATE block ends, and
//! the bytes after it belong to what follows. .NET reads ahead and pushes unused
//! input back; [`Inflater`] instead counts the input bytes it consumed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::{Error, Result};

/// Compresses `data` as one complete raw DEFLATE stream appended to `out`.
pub fn compress(data: &[u8], out: &mut Vec<u8>) {
    let mut compressor = Compress::new(Compression::fast(), false);
    let start = out.len();
    out.reserve(data.len() / 2 + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        // Sizes are bounded by `reserve` below; an error here is impossible for valid state.
        let status = compressor
            .compress_vec(&data[consumed..], out, FlushCompress::Finish)
            .expect("deflate of an in-memory buffer cannot fail");
        if status == Status::StreamEnd {
            break;
        }
        let produced = out.len() - start;
        out.reserve(produced.max(1024));
    }
}

/// The result of feeding input to an [`Inflater`].
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// All `consumed` bytes were used and the stream has not ended.
    NeedMore,
    /// The stream ended after `consumed` bytes of this input; the rest is not ours.
    Done {
        /// Bytes of the last input that belonged to the stream.
        consumed: usize,
    },
}

/// Incremental inflater of one message, bounded in output size.
pub struct Inflater {
    decompress: Decompress,
    output: Vec<u8>,
    max_output: usize,
}

impl Inflater {
    /// An inflater that fails once the message would exceed `max_output` bytes.
    pub fn new(max_output: usize) -> Self {
        Self {
            decompress: Decompress::new(false),
            output: Vec::new(),
            max_output,
        }
    }

    /// Feeds the next input bytes.
    pub fn feed(&mut self, input: &[u8]) -> Result<Feed> {
        let mut offset = 0usize;
        loop {
            if self.output.len() == self.output.capacity() {
                if self.output.len() > self.max_output {
                    return Err(self.too_large());
                }
                let grow = self.output.len().clamp(256, 64 * 1024);
                let room = (self.max_output + 1 - self.output.len()).min(grow);
                self.output.reserve_exact(room);
            }
            let before_in = self.decompress.total_in();
            let status = self
                .decompress
                .decompress_vec(&input[offset..], &mut self.output, FlushDecompress::None)
                .map_err(|e| Error::Deflate {
                    reason: e.to_string(),
                })?;
            offset += (self.decompress.total_in() - before_in) as usize;
            if self.output.len() > self.max_output {
                return Err(self.too_large());
            }
            match status {
                Status::StreamEnd => return Ok(Feed::Done { consumed: offset }),
                _ if offset == input.len() && self.output.len() < self.output.capacity() => {
                    return Ok(Feed::NeedMore)
                }
                _ => {}
            }
        }
    }

    /// The inflated bytes so far (all of them once [`Feed::Done`] was returned).
    pub fn into_output(self) -> Vec<u8> {
        self.output
    }

    fn too_large(&self) -> Error {
        Error::TooLong {
            what: "message",
            limit: self.max_output as u64,
        }
    }
}

/// Inflates one message from the front of `buf`: its bytes and the input consumed,
/// or `Ok(None)` if the stream does not end within `buf`.
pub fn inflate(buf: &[u8], max_output: usize) -> Result<Option<(Vec<u8>, usize)>> {
    let mut inflater = Inflater::new(max_output);
    match inflater.feed(buf)? {
        Feed::NeedMore => Ok(None),
        Feed::Done { consumed } => Ok(Some((inflater.into_output(), consumed))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_consumed() {
        let data = b"hello hello hello hello".repeat(100);
        let mut wire = Vec::new();
        compress(&data, &mut wire);
        let len = wire.len();
        wire.extend_from_slice(b"NEXT\r\n");
        let (back, consumed) = inflate(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(back, data);
        assert_eq!(consumed, len);
    }

    #[test]
    fn stored_block_from_the_notes() {
        let bson = hex("0e0000000a4d6573736167650000");
        let mut wire = hex("010e00f1ff");
        wire.extend_from_slice(&bson);
        assert_eq!(inflate(&wire, 1024).unwrap(), Some((bson, wire.len())));
    }

    #[test]
    fn incomplete_then_complete_one_byte_at_a_time() {
        let mut wire = Vec::new();
        compress(b"some message body", &mut wire);
        let mut inflater = Inflater::new(1024);
        for (i, byte) in wire.iter().enumerate() {
            let feed = inflater.feed(std::slice::from_ref(byte)).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(feed, Feed::NeedMore);
            } else {
                assert_eq!(feed, Feed::Done { consumed: 1 });
            }
        }
        assert_eq!(inflater.into_output(), b"some message body");
    }

    #[test]
    fn bomb_is_refused_at_the_limit() {
        let mut wire = Vec::new();
        compress(&vec![0u8; 10 * 1024 * 1024], &mut wire);
        assert!(wire.len() < 64 * 1024);
        assert!(matches!(
            inflate(&wire, 1024 * 1024),
            Err(Error::TooLong { what: "message", limit }) if limit == 1024 * 1024
        ));
    }

    #[test]
    fn garbage_is_a_deflate_error() {
        assert!(matches!(
            inflate(&[0xff; 16], 1024),
            Err(Error::Deflate { .. })
        ));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

//! Bounds on everything a peer can make us buffer.

/// Limits applied while decoding; every read is bounded by one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Characters read while looking for the end of the `MX` preamble (Halibut: 20,000).
    pub max_preamble_chars: usize,
    /// Bytes in one identity or control line (octopoll: 1 KiB; Halibut sets none).
    pub max_line_bytes: usize,
    /// Bytes of one inflated message (octopoll: 16 MiB; Halibut sets none).
    pub max_message_bytes: usize,
    /// Bytes of all data streams of one message together (octopoll: 64 MiB).
    pub max_stream_bytes: u64,
}

/// Halibut's cap on preamble characters (`SecureListener.ReadInitialRequest`).
pub const DEFAULT_MAX_PREAMBLE_CHARS: usize = 20_000;
/// octopoll's cap on an identity or control line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024;
/// octopoll's cap on an inflated message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// octopoll's cap on one data stream.
pub const DEFAULT_MAX_STREAM_BYTES: u64 = 64 * 1024 * 1024;

impl Limits {
    /// Memory one message's values may take once decoded: twice
    /// `max_message_bytes`, so that reading a message peaks at about four times
    /// the message limit (the inflated bytes, their buffer's growth, the values).
    /// Tiny values cost far more decoded than on the wire (an empty value is 3
    /// bytes there and over 100 here): a message of millions of them is refused,
    /// while any real Halibut message (thousands of log lines) fits many times.
    pub fn max_decoded_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_preamble_chars: DEFAULT_MAX_PREAMBLE_CHARS,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_stream_bytes: DEFAULT_MAX_STREAM_BYTES,
        }
    }
}

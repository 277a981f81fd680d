//! Everything that can be wrong with bytes from a peer.

/// A protocol error: the connection that produced it cannot continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection closed before the preamble.
    #[error("peer sent an empty preamble")]
    EmptyPreamble,
    /// The first bytes were not `MX` (Halibut answers such a probe with an HTML page).
    #[error("peer did not start with the MX preamble (got {got:?})")]
    NotMx {
        /// The start of what was sent, lossily decoded.
        got: String,
    },
    /// A line, preamble or frame ran past its limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLong {
        /// `preamble`, `identity line`, `control line`, `message`, `decoded
        /// message` (its values in memory), `data stream`.
        what: &'static str,
        /// The limit that was hit.
        limit: u64,
    },
    /// A CR not followed by LF, which .NET's reader rejects.
    #[error("CR not followed by LF in {what}")]
    BareCr {
        /// The kind of line.
        what: &'static str,
    },
    /// A line that is not ASCII text.
    #[error("{what} is not ASCII")]
    NotAscii {
        /// The kind of line.
        what: &'static str,
    },
    /// An identity line that is not `MX-CLIENT`, `MX-SUBSCRIBER uri` or `MX-SERVER`.
    #[error("invalid identity line {line:?}: {reason}")]
    BadIdentity {
        /// The line received.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A subscription id that is not a `poll://…/` URI.
    #[error("invalid subscription id {text:?}: expected poll://<id>/")]
    BadSubscription {
        /// What was given.
        text: String,
    },
    /// The peer identified as something other than what this side requires.
    #[error("expected identity {expected}, got {got}")]
    UnexpectedIdentity {
        /// What was required.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// A control line that is not `NEXT`, `PROCEED` or `END`, or not the one expected.
    #[error("unexpected control line {line:?} (expected {expected})")]
    UnexpectedControl {
        /// The line received.
        line: String,
        /// What was allowed here.
        expected: &'static str,
    },
    /// Compressed bytes that are not a valid raw DEFLATE stream.
    #[error("message is not valid raw DEFLATE: {reason}")]
    Deflate {
        /// The inflater's message.
        reason: String,
    },
    /// Inflated bytes that are not one BSON document.
    #[error("message is not a BSON document: {reason}")]
    Bson {
        /// The decoder's message.
        reason: String,
    },
    /// A BSON document that is not a Halibut envelope.
    #[error("invalid envelope: {reason}")]
    Envelope {
        /// What is missing or wrong, naming the field.
        reason: String,
    },
    /// A data stream frame whose id no DataStream in the message has (or one sent twice).
    #[error("data stream {id} was not announced by its message, or came twice")]
    UnknownStream {
        /// The frame's id.
        id: uuid::Uuid,
    },
    /// A data stream frame whose length differs from the one its message announced.
    #[error("data stream {id} was announced with {announced} bytes but sent with {sent}")]
    StreamNotAsAnnounced {
        /// The frame's id.
        id: uuid::Uuid,
        /// The length in the message.
        announced: i64,
        /// The length in the frame.
        sent: i64,
    },
    /// A message to send references a stream the caller did not pass.
    #[error("message references data stream {id} but no such stream was given to send")]
    MissingStream {
        /// The referenced id.
        id: uuid::Uuid,
    },
    /// A data stream frame whose trailing length differs from its leading one.
    #[error("data stream {id} declared {declared} bytes but its trailer says {trailer}")]
    StreamLengthMismatch {
        /// The frame's id.
        id: uuid::Uuid,
        /// The leading length.
        declared: i64,
        /// The trailing length.
        trailer: i64,
    },
    /// A negative stream length.
    #[error("data stream {id} has negative length {length}")]
    NegativeStreamLength {
        /// The frame's id.
        id: uuid::Uuid,
        /// The length sent.
        length: i64,
    },
    /// The peer closed in the middle of something.
    #[error("peer closed the connection in the middle of {during}")]
    Truncated {
        /// What was being read.
        during: &'static str,
    },
    /// The transport failed.
    #[error("transport error while {during}")]
    Io {
        /// What was being done.
        during: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable, kebab-case name for what went wrong, for counting (the
    /// node's `close_reasons`, Prometheus labels) and for tests to assert on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyPreamble => "empty-preamble",
            Error::NotMx { .. } => "not-mx",
            Error::TooLong { what, .. } => match *what {
                "preamble" => "preamble-too-long",
                "message" | "decoded message" => "message-too-large",
                "data stream" | "data streams of one message" => "stream-too-large",
                _ => "line-too-long",
            },
            Error::BareCr { .. } => "bare-cr",
            Error::NotAscii { .. } => "not-ascii",
            Error::BadIdentity { .. } => "bad-identity",
            Error::BadSubscription { .. } => "bad-subscription",
            Error::UnexpectedIdentity { .. } => "unexpected-identity",
            Error::UnexpectedControl { .. } => "unexpected-control-line",
            Error::Deflate { .. } => "bad-deflate",
            Error::Bson { .. } => "bad-bson",
            Error::Envelope { .. } => "bad-envelope",
            Error::UnknownStream { .. } => "unknown-stream",
            Error::StreamNotAsAnnounced { .. } => "stream-not-as-announced",
            Error::MissingStream { .. } => "missing-stream",
            Error::StreamLengthMismatch { .. } => "stream-length-mismatch",
            Error::NegativeStreamLength { .. } => "negative-stream-length",
            Error::Truncated { .. } => "truncated",
            Error::Io { .. } => "io",
        }
    }

    pub(crate) fn envelope(reason: impl Into<String>) -> Self {
        Error::Envelope {
            reason: reason.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

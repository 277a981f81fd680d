//! The Halibut protocol as octopoll speaks it, wire-compatible with Octopus Server
//! and Tentacle.
//!
//! A polling connection, after TLS, carries: the `MX` [`preamble`], one
//! [`identity`] line each way, then repeated [`message`] envelopes (raw DEFLATE of
//! one BSON document, see [`deflate`]) each followed by its data [`stream`]s, and
//! [`control`] lines (`NEXT`, `PROCEED`, `END`) between exchanges. Service payloads
//! (capabilities, scripts, echo) are built by [`contracts`].
//!
//! Everything here is pure: decoders take bytes and return the value and the bytes
//! consumed, `Ok(None)` when more input is needed, or a typed [`Error`]. Every limit
//! is a parameter ([`Limits`]). The one adapter to async I/O is [`io::Exchange`],
//! which works over any `AsyncRead + AsyncWrite`; the crate opens no sockets and
//! reads no clocks.

pub mod api;
pub mod bson;
pub mod contracts;
pub mod control;
pub mod deflate;
pub mod error;
pub mod identity;
pub mod io;
pub mod limits;
pub mod message;
pub mod preamble;
pub mod stream;

pub use control::{ControlMessage, Next};
pub use error::{Error, Result};
pub use identity::{RemoteIdentity, SubscriptionId};
pub use io::Exchange;
pub use limits::Limits;
pub use message::{
    DataStreamRef, Envelope, RequestMessage, ResponseMessage, ServerError, ServiceEndPoint,
};
pub use stream::DataStream;

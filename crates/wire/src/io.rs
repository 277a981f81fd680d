//! The one adapter from the pure codecs to async I/O.
//!
//! [`Exchange`] wraps any `AsyncRead + AsyncWrite + Unpin` (a TLS stream in node and
//! agent, `tokio::io::duplex` in tests) with a read buffer. Every write is flushed,
//! since the peer waits for it. Timeouts are the caller's: wrap calls in
//! `tokio::time::timeout`.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::control::Next;
use crate::deflate::{compress, Feed, Inflater};
use crate::stream::decode_header;
use crate::{
    ControlMessage, DataStream, DataStreamRef, Envelope, Error, Limits, RemoteIdentity, Result,
};

/// Room a read asks for with nothing buffered (enough for a control line): an
/// idle connection holds this much.
const IDLE_READ_BYTES: usize = 64;
/// Room a read asks for in the middle of a message or stream.
const BUSY_READ_BYTES: usize = 16 * 1024;

/// A message read from the peer, with the data streams that followed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The envelope.
    pub envelope: Envelope,
    /// Its streams, in the order the envelope references them.
    pub streams: Vec<DataStream>,
}

/// One side of a Halibut connection after TLS.
pub struct Exchange<S> {
    io: S,
    buffer: BytesMut,
    limits: Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<S> {
    /// Wraps `io`, decoding within `limits`.
    pub fn new(io: S, limits: Limits) -> Self {
        Self {
            io,
            buffer: BytesMut::new(),
            limits,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The wrapped stream, mutably (for raw writes in tests and tools).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes received and not read yet (what [`Exchange::wait_for_peer`] kept).
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Writes bytes already encoded (e.g. preamble and identity in one write).
    pub async fn write_raw(&mut self, bytes: &[u8], during: &'static str) -> Result<()> {
        self.write_all(bytes, during).await
    }

    /// Writes the `MX` preamble (connecting side).
    pub async fn write_preamble(&mut self) -> Result<()> {
        self.write_all(crate::preamble::PREAMBLE, "writing the preamble")
            .await
    }

    /// Writes the `MX` preamble and `identity` in one write, as a connecting peer
    /// opens (a polling Tentacle's `MX-SUBSCRIBER`): one TLS record, one round trip.
    pub async fn write_hello(&mut self, identity: &RemoteIdentity) -> Result<()> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(crate::preamble::PREAMBLE);
        identity.encode(&mut out);
        self.write_all(&out, "writing the preamble and identity")
            .await
    }

    /// Reads the `MX` preamble (accepting side).
    pub async fn read_preamble(&mut self) -> Result<()> {
        let max = self.limits.max_preamble_chars;
        self.read_decoded("the preamble", |buf| {
            Ok(crate::preamble::decode(buf, max)?.map(|n| ((), n)))
        })
        .await?
        .ok_or(Error::EmptyPreamble)
    }

    /// Answers a non-`MX` probe the way Halibut does, with a small HTML page.
    pub async fn write_probe_response(&mut self) -> Result<()> {
        self.write_all(crate::preamble::PROBE_RESPONSE, "answering a probe")
            .await
    }

    /// Writes an identity line and its empty line in one write.
    pub async fn write_identity(&mut self, identity: &RemoteIdentity) -> Result<()> {
        let mut out = Vec::with_capacity(64);
        identity.encode(&mut out);
        self.write_all(&out, "writing the identity").await
    }

    /// Reads the peer's identity; a close before it is [`Error::Truncated`].
    pub async fn read_identity(&mut self) -> Result<RemoteIdentity> {
        let max = self.limits.max_line_bytes;
        self.read_decoded("the identity", |buf| RemoteIdentity::decode(buf, max))
            .await?
            .ok_or(Error::Truncated {
                during: "the identity",
            })
    }

    /// Writes a control line.
    pub async fn write_control(&mut self, control: ControlMessage) -> Result<()> {
        let mut out = Vec::with_capacity(9);
        control.encode(&mut out);
        self.write_all(&out, "writing a control line").await
    }

    /// Reads a control line; `Ok(None)` if the peer closed cleanly instead.
    pub async fn read_control(&mut self) -> Result<Option<ControlMessage>> {
        let max = self.limits.max_line_bytes;
        self.read_decoded("a control line", |buf| ControlMessage::decode(buf, max))
            .await
    }

    /// Writes an envelope as raw DEFLATE, then each stream it references.
    ///
    /// `streams` must hold exactly the streams the envelope references.
    pub async fn write_message(
        &mut self,
        envelope: &Envelope,
        streams: &[DataStream],
    ) -> Result<()> {
        let mut out = Vec::new();
        compress(&envelope.to_bson_bytes()?, &mut out);
        for reference in envelope.data_streams() {
            // The peer waits for every frame its message announces: a missing one is
            // the caller's bug, and must not hang the peer.
            let stream = streams
                .iter()
                .find(|s| s.id == reference.id)
                .ok_or(Error::MissingStream { id: reference.id })?;
            stream.encode(&mut out);
        }
        self.write_all(&out, "writing a message").await
    }

    /// Reads a message and its data streams; `Ok(None)` if the peer closed cleanly
    /// before its first byte.
    pub async fn read_message(&mut self) -> Result<Option<Message>> {
        let Some(bytes) = self.read_deflated().await? else {
            return Ok(None);
        };
        let envelope = Envelope::from_bson_bytes_within(&bytes, self.limits.max_decoded_bytes())?;
        let references = envelope.data_streams();
        // Saturating: three streams of i64::MAX would wrap a plain sum past the limit.
        let announced = references
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.length.max(0) as u64));
        if announced > self.limits.max_stream_bytes {
            return Err(Error::TooLong {
                what: "data streams of one message",
                limit: self.limits.max_stream_bytes,
            });
        }
        let mut streams = Vec::with_capacity(references.len());
        let mut expected = references;
        while !expected.is_empty() {
            streams.push(self.read_stream(&mut expected).await?);
        }
        Ok(Some(Message { envelope, streams }))
    }

    /// Waits until the peer sends something or closes, keeping what it sent for the
    /// next read. Returns `true` if it closed. Cancel-safe: a node races this against
    /// its queue while a connection is idle, so a peer that went away is noticed at
    /// once rather than when the next request is written to it.
    pub async fn wait_for_peer(&mut self) -> Result<bool> {
        if !self.buffer.is_empty() {
            return Ok(false);
        }
        Ok(self.fill("the peer while idle").await? == 0)
    }

    /// Waits for the peer's next item where either a control line or a message may
    /// come, and says which it is (reading only as far as that takes, at most a
    /// control line's length); `Ok(None)` if the peer closed cleanly before it.
    pub async fn next_item(&mut self) -> Result<Option<Next>> {
        loop {
            if let Some(next) = crate::control::next_in(&self.buffer) {
                return Ok(Some(next));
            }
            if self.fill("the peer's next line or message").await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(Error::Truncated {
                    during: "a control line",
                });
            }
        }
    }

    /// Shuts down the write side (TLS close_notify).
    pub async fn shutdown(&mut self) -> Result<()> {
        self.io.shutdown().await.map_err(|source| Error::Io {
            during: "closing",
            source,
        })
    }

    async fn read_deflated(&mut self) -> Result<Option<Vec<u8>>> {
        let mut inflater = Inflater::new(self.limits.max_message_bytes);
        let mut started = false;
        loop {
            if !self.buffer.is_empty() {
                started = true;
                match inflater.feed(&self.buffer)? {
                    Feed::Done { consumed } => {
                        self.consume(consumed);
                        return Ok(Some(inflater.into_output()));
                    }
                    Feed::NeedMore => self.buffer.clear(),
                }
            }
            if self.fill_for("a message", started).await? == 0 {
                return if started {
                    Err(Error::Truncated {
                        during: "a message",
                    })
                } else {
                    Ok(None)
                };
            }
        }
    }

    /// Reads the next stream frame, which must be one of `expected` (by id, with the
    /// announced length); it is removed from `expected`. The header is checked before
    /// the body is buffered, so a peer cannot make us hold more than it announced.
    async fn read_stream(&mut self, expected: &mut Vec<DataStreamRef>) -> Result<DataStream> {
        let max = self.limits.max_stream_bytes;
        let (id, length) = loop {
            if let Some(header) = decode_header(&self.buffer, max)? {
                break header;
            }
            if self.fill_for("a data stream", true).await? == 0 {
                return Err(Error::Truncated {
                    during: "a data stream",
                });
            }
        };
        let index = expected
            .iter()
            .position(|r| r.id == id)
            .ok_or(Error::UnknownStream { id })?;
        let announced = expected.swap_remove(index).length;
        if announced != length {
            return Err(Error::StreamNotAsAnnounced {
                id,
                announced,
                sent: length,
            });
        }
        self.read_decoded("a data stream", |buf| DataStream::decode(buf, max))
            .await?
            .ok_or(Error::Truncated {
                during: "a data stream",
            })
    }

    /// Runs `decode` over the buffer, reading more until it yields. `Ok(None)` for a
    /// clean close with nothing buffered; a close mid-item is [`Error::Truncated`].
    async fn read_decoded<T>(
        &mut self,
        during: &'static str,
        decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>>,
    ) -> Result<Option<T>> {
        loop {
            if let Some((value, consumed)) = decode(&self.buffer)? {
                self.consume(consumed);
                return Ok(Some(value));
            }
            if self.fill(during).await? == 0 {
                let only_blank = self.buffer.iter().all(|b| matches!(b, b'\r' | b'\n'));
                return if only_blank {
                    Ok(None)
                } else {
                    Err(Error::Truncated { during })
                };
            }
        }
    }

    /// Drops `n` decoded bytes; an empty buffer gives back the room a large item
    /// took, so a connection between messages holds little.
    fn consume(&mut self, n: usize) {
        self.buffer.advance(n);
        if self.buffer.is_empty() && self.buffer.capacity() > IDLE_READ_BYTES {
            self.buffer = BytesMut::new();
        }
    }

    /// Reads more into the buffer. Between items with nothing buffered (a
    /// connection waiting for the peer, which thousands do at once) it asks for
    /// little; in the middle of an item (`mid_item`, or bytes buffered) for more.
    async fn fill(&mut self, during: &'static str) -> Result<usize> {
        self.fill_for(during, false).await
    }

    async fn fill_for(&mut self, during: &'static str, mid_item: bool) -> Result<usize> {
        let want = if mid_item {
            BUSY_READ_BYTES
        } else if self.buffer.is_empty() {
            IDLE_READ_BYTES
        } else {
            BUSY_READ_BYTES
        };
        self.buffer.reserve(want);
        self.io
            .read_buf(&mut self.buffer)
            .await
            .map_err(|source| Error::Io {
                during: reading(during),
                source,
            })
    }

    async fn write_all(&mut self, bytes: &[u8], during: &'static str) -> Result<()> {
        let io = &mut self.io;
        async {
            io.write_all(bytes).await?;
            io.flush().await
        }
        .await
        .map_err(|source| Error::Io { during, source })
    }
}

/// "reading <what>", for the error of a failed read.
fn reading(what: &'static str) -> &'static str {
    match what {
        "the preamble" => "reading the preamble",
        "the identity" => "reading the identity",
        "a control line" => "reading a control line",
        "a message" => "reading a message",
        "a data stream" => "reading a data stream",
        "the peer while idle" => "waiting for the peer while idle",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ResponseMessage, SubscriptionId};
    use bson::Bson;

    fn pair() -> (
        Exchange<tokio::io::DuplexStream>,
        Exchange<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1024);
        (
            Exchange::new(a, Limits::default()),
            Exchange::new(b, Limits::default()),
        )
    }

    #[tokio::test]
    async fn polling_handshake_and_exchange() {
        let (mut agent, mut node) = pair();
        let sub: SubscriptionId = "poll://abc123/".parse().unwrap();
        let agent_sub = sub.clone();
        let agent_side = async move {
            agent.write_preamble().await.unwrap();
            agent
                .write_identity(&RemoteIdentity::Subscriber(agent_sub))
                .await
                .unwrap();
            assert_eq!(agent.read_identity().await.unwrap(), RemoteIdentity::Server);
            let message = agent.read_message().await.unwrap().unwrap();
            assert_eq!(message.envelope, Envelope::Null);
            let stream = DataStream::new(&b"payload"[..]);
            let response = Envelope::Response(ResponseMessage {
                id: "x".into(),
                error: None,
                result: stream.reference().to_bson(true),
            });
            agent
                .write_message(&response, std::slice::from_ref(&stream))
                .await
                .unwrap();
            agent.write_control(ControlMessage::Next).await.unwrap();
            assert_eq!(
                agent.read_control().await.unwrap(),
                Some(ControlMessage::Proceed)
            );
            agent.write_control(ControlMessage::End).await.unwrap();
            drop(agent);
        };
        let node_side = async {
            node.read_preamble().await.unwrap();
            assert_eq!(
                node.read_identity().await.unwrap(),
                RemoteIdentity::Subscriber(sub.clone())
            );
            node.write_identity(&RemoteIdentity::Server).await.unwrap();
            node.write_message(&Envelope::Null, &[]).await.unwrap();
            let message = node.read_message().await.unwrap().unwrap();
            assert_eq!(message.streams.len(), 1);
            assert_eq!(&message.streams[0].bytes[..], b"payload");
            assert_eq!(
                node.read_control().await.unwrap(),
                Some(ControlMessage::Next)
            );
            node.write_control(ControlMessage::Proceed).await.unwrap();
            assert_eq!(
                node.read_control().await.unwrap(),
                Some(ControlMessage::End)
            );
            assert_eq!(node.read_control().await.unwrap(), None);
        };
        tokio::join!(agent_side, node_side);
    }

    #[tokio::test]
    async fn a_hello_is_the_preamble_and_identity_in_one_piece() {
        let (a, mut raw) = tokio::io::duplex(1024);
        let mut agent = Exchange::new(a, Limits::default());
        let sub: SubscriptionId = "poll://abc123/".parse().unwrap();
        agent
            .write_hello(&RemoteIdentity::Subscriber(sub.clone()))
            .await
            .unwrap();
        drop(agent);
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut bytes)
            .await
            .unwrap();
        assert_eq!(bytes, b"MX\r\n\r\nMX-SUBSCRIBER 1.0 poll://abc123/\r\n\r\n");

        let (mut agent, mut node) = pair();
        agent
            .write_hello(&RemoteIdentity::Subscriber(sub.clone()))
            .await
            .unwrap();
        node.read_preamble().await.unwrap();
        assert_eq!(
            node.read_identity().await.unwrap(),
            RemoteIdentity::Subscriber(sub)
        );
    }

    #[tokio::test]
    async fn clean_close_is_none_and_mid_message_close_is_truncated() {
        let (a, b) = tokio::io::duplex(1024);
        drop(a);
        let mut node = Exchange::new(b, Limits::default());
        assert!(node.read_message().await.unwrap().is_none());

        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(&[0x01, 0x0e]).await.unwrap();
        drop(a);
        let mut node = Exchange::new(b, Limits::default());
        assert!(matches!(
            node.read_message().await,
            Err(Error::Truncated {
                during: "a message"
            })
        ));
    }

    #[tokio::test]
    async fn wait_for_peer_reports_close_and_keeps_data() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut node = Exchange::new(b, Limits::default());
        a.write_all(b"END\r\n").await.unwrap();
        assert!(!node.wait_for_peer().await.unwrap());
        assert_eq!(
            node.read_control().await.unwrap(),
            Some(ControlMessage::End)
        );
        drop(a);
        assert!(node.wait_for_peer().await.unwrap());
    }

    #[tokio::test]
    async fn an_idle_exchange_gives_back_the_room_a_large_message_took() {
        let (mut a, mut b) = pair();
        // Letters that do not compress, so the message is large on the wire too.
        let mut state = 1u32;
        let text: String = (0..200_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + (state >> 16) as u8 % 26)
            })
            .collect();
        let big = Envelope::Request(crate::RequestMessage::call(
            "IEchoService",
            "SayHello",
            vec![bson::Bson::String(text)],
            crate::ServiceEndPoint::new("poll://a/", ""),
            1,
        ));
        let writer = async {
            a.write_message(&big, &[]).await.unwrap();
            a.write_control(ControlMessage::Next).await.unwrap();
        };
        let reader = async {
            b.read_message().await.unwrap().unwrap();
            assert_eq!(b.read_control().await.unwrap(), Some(ControlMessage::Next));
            assert!(
                b.buffer.capacity() <= 2 * IDLE_READ_BYTES,
                "back to {} bytes of room between messages, holding {}",
                IDLE_READ_BYTES,
                b.buffer.capacity()
            );
        };
        tokio::join!(writer, reader);
    }

    #[tokio::test]
    async fn oversized_message_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut agent = Exchange::new(a, Limits::default());
        let limits = Limits {
            max_message_bytes: 4096,
            ..Limits::default()
        };
        let mut node = Exchange::new(b, limits);
        let big = Envelope::Response(ResponseMessage {
            id: "x".into(),
            error: None,
            result: Bson::String("a".repeat(10_000)),
        });
        agent.write_message(&big, &[]).await.unwrap();
        assert!(matches!(
            node.read_message().await,
            Err(Error::TooLong {
                what: "message",
                limit: 4096
            })
        ));
    }
}

//! What the hashes of the Redis queue hold. Halibut's two fields, plus one of
//! octopoll's own with what the simulator measures:
//! * `RequestMessageField`: the message as BSON, the envelope the wire carries
//!   (Halibut: its serialiser's BSON of the message);
//! * `DataStreamMetaDataField`: the data streams, framed as on the wire (Halibut
//!   keeps them in a store the cluster shares and only their metadata here);
//! * `Octopoll`: JSON; for a request, which node queued it and when; for a
//!   response, its pickup time, or why the request failed where it was processed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octopoll_wire::{DataStream, Envelope, Limits, RequestMessage, ResponseMessage};
use serde::{Deserialize, Serialize};

use crate::queue::FailReason;
use crate::NodeId;

/// The message, as Halibut names the field.
pub(super) const MESSAGE: &str = "RequestMessageField";
/// The data streams, as Halibut names the field.
pub(super) const STREAMS: &str = "DataStreamMetaDataField";
/// octopoll's facts about the request.
pub(super) const FACTS: &str = "Octopoll";

/// A stored value that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("a stored {what} cannot be read: {reason}")]
pub(super) struct Unreadable {
    what: &'static str,
    reason: String,
}

fn unreadable(what: &'static str) -> impl Fn(String) -> Unreadable {
    move |reason| Unreadable { what, reason }
}

/// Microseconds since the Unix epoch: the nodes of one cluster share a clock
/// (one machine, or containers on one host).
pub(super) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Who queued a request, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Queued {
    pub(super) origin: NodeId,
    pub(super) at_micros: u64,
}

impl Queued {
    /// Time since it was queued.
    pub(super) fn waited(&self) -> Duration {
        Duration::from_micros(now_micros().saturating_sub(self.at_micros))
    }
}

/// How a request ended where it was processed, beyond the response itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Processed {
    /// Queued → collected.
    pub(super) pickup_micros: Option<u64>,
    /// Why it failed there without a response (the connection dropped, …).
    pub(super) failed: Option<FailReason>,
}

/// The three fields of a stored message.
pub(super) type Fields = [(&'static str, Vec<u8>); 3];

fn encode(envelope: &Envelope, streams: &[DataStream], facts: Vec<u8>) -> Fields {
    // Encoding a message the node built cannot fail but on a bug; an empty message
    // then fails where it is read, with a clear error.
    let message = envelope.to_bson_bytes().unwrap_or_default();
    let mut framed = Vec::new();
    for stream in streams {
        stream.encode(&mut framed);
    }
    named([message, framed, facts])
}

/// The three values, message first, under their field names.
pub(super) fn named([message, streams, facts]: [Vec<u8>; 3]) -> Fields {
    [(MESSAGE, message), (STREAMS, streams), (FACTS, facts)]
}

/// A request's fields.
pub(super) fn request(request: &RequestMessage, streams: &[DataStream], queued: Queued) -> Fields {
    let facts = serde_json::to_vec(&queued).unwrap_or_default();
    encode(&Envelope::Request(request.clone()), streams, facts)
}

/// A response's fields.
pub(super) fn response(
    response: &ResponseMessage,
    streams: &[DataStream],
    processed: Processed,
) -> Fields {
    let facts = serde_json::to_vec(&processed).unwrap_or_default();
    encode(&Envelope::Response(response.clone()), streams, facts)
}

fn decode_streams(mut framed: &[u8], limits: &Limits) -> Result<Vec<DataStream>, String> {
    let mut streams = Vec::new();
    while !framed.is_empty() {
        match DataStream::decode(framed, limits.max_stream_bytes) {
            Ok(Some((stream, used))) => {
                streams.push(stream);
                framed = &framed[used..];
            }
            Ok(None) => return Err("a data stream is cut short".into()),
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(streams)
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    [message, streams, facts]: [Vec<u8>; 3],
    limits: &Limits,
) -> Result<(Envelope, Vec<DataStream>, T), Unreadable> {
    let bad = unreadable(what);
    let envelope = Envelope::from_bson_bytes_within(&message, limits.max_decoded_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let streams = decode_streams(&streams, limits).map_err(&bad)?;
    let facts = serde_json::from_slice(&facts).map_err(|e| bad(e.to_string()))?;
    Ok((envelope, streams, facts))
}

/// A request read back.
pub(super) fn read_request(
    fields: [Vec<u8>; 3],
    limits: &Limits,
) -> Result<(RequestMessage, Vec<DataStream>, Queued), Unreadable> {
    match decode("request", fields, limits)? {
        (Envelope::Request(request), streams, queued) => Ok((request, streams, queued)),
        _ => Err(unreadable("request")("not a request message".into())),
    }
}

/// A response read back.
pub(super) fn read_response(
    fields: [Vec<u8>; 3],
    limits: &Limits,
) -> Result<(ResponseMessage, Vec<DataStream>, Processed), Unreadable> {
    match decode("response", fields, limits)? {
        (Envelope::Response(response), streams, processed) => Ok((response, streams, processed)),
        _ => Err(unreadable("response")("not a response message".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::request as a_request;

    fn values(fields: Fields) -> [Vec<u8>; 3] {
        fields.map(|(_, value)| value)
    }

    #[test]
    fn a_request_and_its_streams_read_back_as_stored() {
        let request = a_request();
        let streams = vec![
            DataStream::new(vec![1u8, 2, 3]),
            DataStream::new(Vec::<u8>::new()),
        ];
        let queued = Queued {
            origin: NodeId(2),
            at_micros: 42,
        };
        let stored = super::request(&request, &streams, queued);
        assert_eq!(
            stored.clone().map(|(field, _)| field),
            [MESSAGE, STREAMS, FACTS]
        );
        let (read, read_streams, read_queued) =
            read_request(values(stored), &Limits::default()).unwrap();
        assert_eq!(
            (read, read_streams, read_queued),
            (request, streams, queued)
        );
    }

    #[test]
    fn what_cannot_be_read_is_a_clear_error_not_a_panic() {
        let limits = Limits::default();
        let garbage = [b"not bson".to_vec(), vec![], b"{}".to_vec()];
        assert!(read_request(garbage, &limits)
            .unwrap_err()
            .to_string()
            .starts_with("a stored request cannot be read"));
        let response = ResponseMessage {
            id: "x".into(),
            error: None,
            result: bson::Bson::Null,
        };
        let stored = values(super::response(&response, &[], Processed::default()));
        assert!(
            read_request(stored.clone(), &limits).is_err(),
            "a response is not a request"
        );
        let mut cut = stored;
        cut[1] = vec![0u8; 10];
        assert!(read_response(cut, &limits)
            .unwrap_err()
            .to_string()
            .contains("cut short"));
    }

    #[test]
    fn a_stream_past_the_limit_is_refused_when_read() {
        let request = a_request();
        let streams = vec![DataStream::new(vec![7u8; 2048])];
        let stored = super::request(
            &request,
            &streams,
            Queued {
                origin: NodeId(1),
                at_micros: 0,
            },
        );
        let small = Limits {
            max_stream_bytes: 1024,
            ..Limits::default()
        };
        assert!(read_request(values(stored), &small).is_err());
    }
}

//! The protocol's byte vectors (`tests/data/vectors.json`, written from Halibut's
//! wire format) through decode and encode, byte-exact for BSON.
//! DEFLATE output differs between compressors, so compressed forms are checked by
//! inflating them.

use std::time::Duration;

use bson::Bson;
use octopoll_wire::contracts::{capabilities, script};
use octopoll_wire::io::Message;
use octopoll_wire::{
    deflate, DataStream, DataStreamRef, Envelope, Error, Exchange, Limits, RequestMessage,
    ResponseMessage, ServerError, ServiceEndPoint,
};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

#[derive(serde::Deserialize)]
struct Vector {
    name: String,
    bson_hex: String,
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("data/vectors.json");
    let list: Vec<Vector> = serde_json::from_str(text).unwrap();
    list.into_iter()
        .map(|v| (v.name, hex(&v.bson_hex)))
        .collect()
}

fn vector(name: &str) -> Vec<u8> {
    vectors().into_iter().find(|(n, _)| n == name).unwrap().1
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const THUMBPRINT: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
const ACTIVITY: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn request(id: &str, activity: &str, service: &str, method: &str, params: Vec<Bson>) -> Envelope {
    Envelope::Request(RequestMessage {
        id: id.into(),
        activity_id: activity.parse().unwrap(),
        endpoint: ServiceEndPoint::new("poll://abc123/", THUMBPRINT),
        service: service.into(),
        method: method.into(),
        params,
    })
}

#[test]
fn every_vector_decodes_and_reencodes_byte_exact() {
    let all = vectors();
    assert_eq!(all.len(), 7, "the shared file has seven vectors");
    for (name, bytes) in all {
        let envelope = Envelope::from_bson_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            envelope.to_bson_bytes().unwrap(),
            bytes,
            "{name} re-encodes byte-exact"
        );
        let mut compressed = Vec::new();
        deflate::compress(&bytes, &mut compressed);
        let (inflated, used) = deflate::inflate(&compressed, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (inflated, used),
            (bytes, compressed.len()),
            "{name} survives deflate"
        );
    }
}

#[test]
fn builders_produce_the_vectors() {
    let caps_id = format!("ICapabilitiesServiceV2::GetCapabilitiesAsync[1] / {ACTIVITY}");
    let get_caps = request(
        &caps_id,
        ACTIVITY,
        capabilities::SERVICE,
        capabilities::GET_CAPABILITIES,
        vec![],
    );
    assert_eq!(
        get_caps.to_bson_bytes().unwrap(),
        vector("request_get_capabilities")
    );

    let caps = Envelope::Response(ResponseMessage {
        id: caps_id,
        error: None,
        result: capabilities::response(capabilities::TENTACLE_CAPABILITIES),
    });
    assert_eq!(
        caps.to_bson_bytes().unwrap(),
        vector("response_get_capabilities")
    );
    assert_eq!(
        Envelope::Null.to_bson_bytes().unwrap(),
        vector("keepalive_null")
    );

    let upload_activity = "c4b2a190-7e6f-4d5c-9b8a-0f1e2d3c4b5a";
    let stream = DataStreamRef {
        id: "a3c9e1f2-5b6d-4c7e-8f90-123456789abc".parse().unwrap(),
        length: 5,
    };
    let upload = request(
        &format!("IFileTransferService::UploadFileAsync[4] / {upload_activity}"),
        upload_activity,
        "IFileTransferService",
        "UploadFile",
        vec![Bson::from("Work/hello.txt"), stream.to_bson(true)],
    );
    assert_eq!(
        upload.to_bson_bytes().unwrap(),
        vector("request_upload_file")
    );
    assert_eq!(upload.data_streams(), vec![stream]);
}

#[test]
fn unknown_service_error_reads_with_its_casing() {
    let Envelope::Response(response) =
        Envelope::from_bson_bytes(&vector("response_unknown_service")).unwrap()
    else {
        panic!("a response")
    };
    let error = response.error.unwrap();
    assert_eq!(
        error.message,
        "Error: IFooService has not been registered through an IAutofacServiceSource"
    );
    assert_eq!(error.halibut_error_type, None);
    assert!(error
        .details
        .unwrap()
        .starts_with("Octopus.Tentacle.Communications.UnknownServiceNameException"));
    assert_eq!(response.result, Bson::Null);
}

#[test]
fn script_status_reads_and_rebuilds() {
    let Envelope::Response(response) =
        Envelope::from_bson_bytes(&vector("response_script_get_status")).unwrap()
    else {
        panic!("a response")
    };
    let status = script::ScriptStatus::from_bson(&response.result).unwrap();
    assert_eq!(status.state, script::ProcessState::Running);
    assert_eq!(status.next_log_sequence, 2);
    assert_eq!(status.logs.len(), 2);
    assert_eq!(status.logs[1].text, "warning: simulated");
    assert_eq!(
        status.logs[0].occurred.timestamp_millis(),
        1_704_164_645_678
    );
    assert_eq!(status.to_bson(), response.result);
}

#[test]
fn endpoint_reads_halibut_defaults() {
    let Envelope::Request(request) =
        Envelope::from_bson_bytes(&vector("request_script_get_status")).unwrap()
    else {
        panic!("a request")
    };
    assert_eq!(
        request.endpoint.polling_request_queue_timeout,
        Duration::from_secs(120)
    );
    assert_eq!(request.endpoint.base_uri, "poll://abc123/");
    assert_eq!(request.service, "IScriptServiceV2");
    assert_eq!(request.method, "GetStatus");
}

#[test]
fn malformed_envelopes_get_exact_errors() {
    let good = vector("keepalive_null");
    assert!(matches!(
        Envelope::from_bson_bytes(&good[..3]),
        Err(Error::Bson { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Envelope::from_bson_bytes(&trailing),
        Err(Error::Bson { .. })
    ));
    let no_message = bson::doc! { "Other": 1 }.to_vec().unwrap();
    assert!(
        matches!(Envelope::from_bson_bytes(&no_message), Err(Error::Envelope { reason }) if reason == "no Message field")
    );
    let bad_type = bson::doc! { "Message": { "$type": "Nope, Nope" } }
        .to_vec()
        .unwrap();
    assert!(
        matches!(Envelope::from_bson_bytes(&bad_type), Err(Error::Envelope { reason }) if reason.contains("Nope"))
    );
    let mut params = bson::Document::new();
    params.insert("bad\0key", 1);
    let unencodable = request("x", ACTIVITY, "S", "M", vec![bson::Bson::Document(params)]);
    assert!(matches!(
        unencodable.to_bson_bytes(),
        Err(Error::Bson { .. })
    ));
    let no_id = bson::doc! { "Message": { "$type": octopoll_wire::message::RESPONSE_TYPE } }
        .to_vec()
        .unwrap();
    assert!(
        matches!(Envelope::from_bson_bytes(&no_id), Err(Error::Envelope { reason }) if reason.contains("field id"))
    );
}

/// The stored-block keep-alive and the upload request with its stream, fed to a
/// reader one byte per write.
#[tokio::test]
async fn reader_accepts_input_one_byte_at_a_time() {
    let mut wire = hex("010e00f1ff");
    wire.extend_from_slice(&vector("keepalive_null"));
    deflate::compress(&vector("request_upload_file"), &mut wire);
    wire.extend_from_slice(&hex(
        "f2e1c9a36d5b7e4c8f90123456789abc050000000000000068656c6c6f0500000000000000",
    ));
    wire.extend_from_slice(b"\r\nNEXT\r\n");

    let (mut writer, reader) = tokio::io::duplex(16);
    let feeder = tokio::spawn(async move {
        for byte in wire {
            writer.write_all(&[byte]).await.unwrap();
        }
    });
    let mut exchange = Exchange::new(reader, Limits::default());
    let keepalive = exchange.read_message().await.unwrap().unwrap();
    assert_eq!(keepalive.envelope, Envelope::Null);
    let Message { envelope, streams } = exchange.read_message().await.unwrap().unwrap();
    assert!(matches!(envelope, Envelope::Request(r) if r.method == "UploadFile"));
    assert_eq!(streams.len(), 1);
    assert_eq!(&streams[0].bytes[..], b"hello");
    assert_eq!(
        exchange.read_control().await.unwrap(),
        Some(octopoll_wire::ControlMessage::Next)
    );
    feeder.await.unwrap();
}

#[tokio::test]
async fn stream_with_unknown_id_is_refused() {
    let mut wire = Vec::new();
    deflate::compress(&vector("request_upload_file"), &mut wire);
    DataStream {
        id: Uuid::nil(),
        bytes: bytes::Bytes::from_static(b"hello"),
    }
    .encode(&mut wire);
    let (mut writer, reader) = tokio::io::duplex(4096);
    writer.write_all(&wire).await.unwrap();
    let mut exchange = Exchange::new(reader, Limits::default());
    assert!(
        matches!(exchange.read_message().await, Err(Error::UnknownStream { id }) if id.is_nil())
    );
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 :/._-]{0,40}"
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        let request = (
            text(),
            any::<u128>(),
            text(),
            text(),
            proptest::collection::vec(text(), 0..4),
        )
            .prop_map(|(id, activity, service, method, params)| {
                Envelope::Request(RequestMessage {
                    id,
                    activity_id: Uuid::from_u128(activity),
                    endpoint: ServiceEndPoint::new("poll://abc123/", THUMBPRINT),
                    service,
                    method,
                    params: params.into_iter().map(Bson::from).collect(),
                })
            });
        let response =
            (text(), proptest::option::of(text()), any::<i64>()).prop_map(|(id, error, result)| {
                Envelope::Response(ResponseMessage {
                    id,
                    error: error.map(ServerError::thrown),
                    result: Bson::Int64(result),
                })
            });
        prop_oneof![Just(Envelope::Null), request, response]
    }

    proptest! {
        #[test]
        fn encode_compress_inflate_decode(envelope in envelope()) {
            let bytes = envelope.to_bson_bytes().unwrap();
            let mut wire = Vec::new();
            deflate::compress(&bytes, &mut wire);
            let (inflated, _) = deflate::inflate(&wire, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(Envelope::from_bson_bytes(&inflated).unwrap(), envelope);
        }
    }
}

#[test]
fn deeply_nested_documents_are_refused_without_recursion() {
    // 10,000 nested documents in a few tens of KiB: would overflow a recursive decoder.
    let depth = 10_000;
    let mut doc = vec![5u8, 0, 0, 0, 0];
    for _ in 0..depth {
        let mut outer = Vec::with_capacity(doc.len() + 8);
        let len = (4 + 1 + 2 + doc.len() + 1) as i32;
        outer.extend_from_slice(&len.to_le_bytes());
        outer.extend_from_slice(&[0x03, b'a', 0]);
        outer.extend_from_slice(&doc);
        outer.push(0);
        doc = outer;
    }
    let err = Envelope::from_bson_bytes(&doc).unwrap_err();
    assert!(
        matches!(&err, Error::Bson { reason } if reason.contains("nested deeper than 64")),
        "{err}"
    );
}

#[test]
fn code_with_scope_nested_deep_is_refused_without_recursion() {
    // JavaScript code-with-scope (0x0F) holds a whole document: 10,000 of them,
    // each the scope of the next, are about 200 KiB (12 KB deflated) and used to
    // overflow the stack of the conversion that followed the depth check.
    let depth = 10_000;
    let mut scope = vec![5u8, 0, 0, 0, 0];
    for _ in 0..depth {
        // code-with-scope: total length, the code as a string ("x"), the scope.
        let total = (4 + 4 + 2 + scope.len()) as i32;
        let mut value = total.to_le_bytes().to_vec();
        value.extend_from_slice(&2i32.to_le_bytes());
        value.extend_from_slice(b"x\0");
        value.extend_from_slice(&scope);
        let len = (4 + 3 + value.len() + 1) as i32;
        let mut doc = len.to_le_bytes().to_vec();
        doc.extend_from_slice(&[0x0F, b'a', 0]);
        doc.extend_from_slice(&value);
        doc.push(0);
        scope = doc;
    }
    let err = Envelope::from_bson_bytes(&scope).unwrap_err();
    assert!(
        matches!(&err, Error::Bson { reason } if reason.contains("JavaScriptCodeWithScope") && reason.contains("Halibut never writes")),
        "{err}"
    );
}

#[test]
fn bson_types_halibut_never_writes_are_refused_by_name() {
    use bson::oid::ObjectId;
    use bson::{Decimal128, JavaScriptCodeWithScope, Regex, Timestamp};
    let refused = [
        ("JavaScriptCode", Bson::JavaScriptCode("x".into())),
        (
            "JavaScriptCodeWithScope",
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x".into(),
                scope: bson::doc! {},
            }),
        ),
        ("Symbol", Bson::Symbol("x".into())),
        ("Undefined", Bson::Undefined),
        ("MaxKey", Bson::MaxKey),
        ("MinKey", Bson::MinKey),
        (
            "Timestamp",
            Bson::Timestamp(Timestamp {
                time: 1,
                increment: 1,
            }),
        ),
        (
            "Decimal128",
            Bson::Decimal128(Decimal128::from_bytes([0; 16])),
        ),
        (
            "RegularExpression",
            Bson::RegularExpression(Regex {
                pattern: "x".try_into().unwrap(),
                options: "".try_into().unwrap(),
            }),
        ),
    ];
    for (name, value) in refused {
        // Deep inside a response's result, where a peer's answer puts it.
        let bytes = bson::doc! {
            "Message": {
                "$type": "Halibut.Transport.Protocol.ResponseMessage, Halibut",
                "id": "x",
                "result": { "list": [ { "value": value } ] },
            }
        }
        .to_vec()
        .unwrap();
        let err = Envelope::from_bson_bytes(&bytes).unwrap_err();
        assert!(
            matches!(&err, Error::Bson { reason } if reason.contains(name) && reason.contains("never writes")),
            "{name}: {err}"
        );
    }
    // What Halibut does write still reads: an ObjectId among them.
    let bytes = bson::doc! {
        "Message": {
            "$type": "Halibut.Transport.Protocol.ResponseMessage, Halibut",
            "id": "x",
            "result": { "oid": ObjectId::from_bytes([1; 12]), "n": 1i64, "f": 0.5, "ok": true },
        }
    }
    .to_vec()
    .unwrap();
    assert!(Envelope::from_bson_bytes(&bytes).is_ok());
}

#[tokio::test]
async fn a_message_announcing_more_stream_bytes_than_allowed_is_refused() {
    let mut wire = Vec::new();
    deflate::compress(&vector("request_upload_file"), &mut wire);
    let (mut writer, reader) = tokio::io::duplex(4096);
    writer.write_all(&wire).await.unwrap();
    let limits = Limits {
        max_stream_bytes: 4,
        ..Limits::default()
    };
    let mut exchange = Exchange::new(reader, limits);
    assert!(matches!(
        exchange.read_message().await,
        Err(Error::TooLong { limit: 4, .. })
    ));
}

#[tokio::test]
async fn streams_announcing_more_than_a_u64_in_total_are_refused_not_wrapped() {
    // Three streams of i64::MAX: a plain sum overflows (a panic in a debug build,
    // a small number in a release one).
    let huge = |_| DataStreamRef {
        id: Uuid::new_v4(),
        length: i64::MAX,
    };
    let refs: Vec<Bson> = (0..3)
        .map(|i| DataStreamRef::to_bson(huge(i), true))
        .collect();
    let envelope = Envelope::Response(ResponseMessage {
        id: "x".into(),
        error: None,
        result: Bson::Array(refs),
    });
    let mut wire = Vec::new();
    deflate::compress(&envelope.to_bson_bytes().unwrap(), &mut wire);
    let (mut writer, reader) = tokio::io::duplex(4096);
    writer.write_all(&wire).await.unwrap();
    let mut exchange = Exchange::new(reader, Limits::default());
    assert!(matches!(
        exchange.read_message().await,
        Err(Error::TooLong {
            what: "data streams of one message",
            ..
        })
    ));
}

#[tokio::test]
async fn sending_a_message_without_its_announced_stream_is_an_error() {
    let (writer, _reader) = tokio::io::duplex(4096);
    let mut exchange = Exchange::new(writer, Limits::default());
    let upload = Envelope::from_bson_bytes(&vector("request_upload_file")).unwrap();
    assert!(matches!(
        exchange.write_message(&upload, &[]).await,
        Err(Error::MissingStream { .. })
    ));
}

#[tokio::test]
async fn a_stream_longer_than_announced_is_refused_before_buffering() {
    let id: Uuid = "a3c9e1f2-5b6d-4c7e-8f90-123456789abc".parse().unwrap();
    let mut wire = Vec::new();
    deflate::compress(&vector("request_upload_file"), &mut wire);
    DataStream {
        id,
        bytes: bytes::Bytes::from(vec![0u8; 50]),
    }
    .encode(&mut wire);
    let (mut writer, reader) = tokio::io::duplex(4096);
    writer.write_all(&wire).await.unwrap();
    let mut exchange = Exchange::new(reader, Limits::default());
    let result = exchange.read_message().await;
    assert!(
        matches!(
            result,
            Err(Error::StreamNotAsAnnounced {
                announced: 5,
                sent: 50,
                ..
            })
        ),
        "{result:?}"
    );
}

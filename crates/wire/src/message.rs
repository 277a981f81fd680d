//! Message envelopes: `{ "Message": <payload> }` with Halibut's request and response
//! types, encoded as Newtonsoft.Json.Bson writes them.

use std::time::Duration;

use bson::{doc, Bson, Document, RawBsonRef, RawDocument};
use uuid::Uuid;

use crate::bson::{guid, guid_from, timespan, timespan_from};
use crate::{Error, Limits, Result};

/// `$type` of a request.
pub const REQUEST_TYPE: &str = "Halibut.Transport.Protocol.RequestMessage, Halibut";
/// `$type` of a response.
pub const RESPONSE_TYPE: &str = "Halibut.Transport.Protocol.ResponseMessage, Halibut";
/// `$type` of a data stream reference where it is declared as `object`.
pub const DATA_STREAM_TYPE: &str = "Halibut.DataStream, Halibut";

/// What one message carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Envelope {
    /// The keep-alive a node sends when nothing was queued within the long-poll wait.
    Null,
    /// A call for the service to run.
    Request(RequestMessage),
    /// The service's answer.
    Response(ResponseMessage),
}

/// Halibut's `RequestMessage`.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMessage {
    /// `<Interface>::<Method>Async[<n>] / <activityId>`; opaque to the service, which echoes it.
    pub id: String,
    /// New per call.
    pub activity_id: Uuid,
    /// Where the caller thinks it is sending; a service ignores it.
    pub endpoint: ServiceEndPoint,
    /// Contract interface name without namespace, e.g. `IScriptServiceV2`.
    pub service: String,
    /// Method name without `Async`, e.g. `StartScript`.
    pub method: String,
    /// Arguments in order, each already in its wire form (complex ones with `$type`).
    pub params: Vec<Bson>,
}

/// Halibut's `ResponseMessage`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseMessage {
    /// The request's `id`.
    pub id: String,
    /// Set when the call failed.
    pub error: Option<ServerError>,
    /// The return value in wire form; `Bson::Null` for void.
    pub result: Bson,
}

impl ResponseMessage {
    /// The answer to request `id` that failed with `error` (no result).
    pub fn failed(id: impl Into<String>, error: ServerError) -> Self {
        Self {
            id: id.into(),
            error: Some(error),
            result: Bson::Null,
        }
    }
}

/// Halibut's `ServerError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The exception's message.
    pub message: String,
    /// The full .NET exception text.
    pub details: Option<String>,
    /// .NET type name for Halibut's own exceptions; else `None`.
    pub halibut_error_type: Option<String>,
}

/// Halibut's `ServiceEndPoint`, as a node describes the agent it calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndPoint {
    /// A queued request never collected fails after this (Halibut: 2 min).
    pub polling_request_queue_timeout: Duration,
    /// Listening retry sleep (Halibut: 1 s).
    pub retry_listening_sleep_interval: Duration,
    /// Connect attempts (Halibut: 5).
    pub retry_count_limit: i32,
    /// Retry window (Halibut: 5 min).
    pub connection_error_retry_timeout: Duration,
    /// TCP connect timeout (Halibut: 60 s).
    pub tcp_client_connect_timeout: Duration,
    /// `poll://<id>/` or `https://host:port/`, lowercased.
    pub base_uri: String,
    /// The agent's thumbprint.
    pub remote_thumbprint: String,
    /// Proxy settings, passed through untouched.
    pub proxy: Option<Document>,
    /// Host override (added to Halibut in 2026).
    pub force_resolve_host: Option<String>,
    /// Polling over WebSockets (out of scope; always false from octopoll).
    pub is_web_socket_endpoint: bool,
}

impl ServiceEndPoint {
    /// An endpoint with Halibut's default timeouts.
    pub fn new(base_uri: impl Into<String>, remote_thumbprint: impl Into<String>) -> Self {
        Self {
            polling_request_queue_timeout: Duration::from_secs(120),
            retry_listening_sleep_interval: Duration::from_secs(1),
            retry_count_limit: 5,
            connection_error_retry_timeout: Duration::from_secs(300),
            tcp_client_connect_timeout: Duration::from_secs(60),
            base_uri: base_uri.into(),
            remote_thumbprint: remote_thumbprint.into(),
            proxy: None,
            force_resolve_host: None,
            is_web_socket_endpoint: false,
        }
    }

    fn to_document(&self) -> Document {
        doc! {
            "PollingRequestQueueTimeout": timespan(self.polling_request_queue_timeout),
            "RetryListeningSleepInterval": timespan(self.retry_listening_sleep_interval),
            "RetryCountLimit": self.retry_count_limit,
            "ConnectionErrorRetryTimeout": timespan(self.connection_error_retry_timeout),
            "TcpClientConnectTimeout": timespan(self.tcp_client_connect_timeout),
            "BaseUri": self.base_uri.as_str(),
            "RemoteThumbprint": self.remote_thumbprint.as_str(),
            "Proxy": self.proxy.clone().map(Bson::Document).unwrap_or(Bson::Null),
            "ForceResolveHost": self.force_resolve_host.clone().map(Bson::String).unwrap_or(Bson::Null),
            "IsWebSocketEndpoint": self.is_web_socket_endpoint,
        }
    }

    /// Readers tolerate missing and extra fields; missing ones take Halibut's defaults.
    fn from_document(doc: &Document) -> Self {
        let defaults = Self::new("", "");
        let span = |key: &str, default| {
            field(doc, key)
                .and_then(Bson::as_str)
                .and_then(timespan_from)
                .unwrap_or(default)
        };
        let text = |key: &str| field(doc, key).and_then(Bson::as_str).map(str::to_owned);
        Self {
            polling_request_queue_timeout: span(
                "PollingRequestQueueTimeout",
                defaults.polling_request_queue_timeout,
            ),
            retry_listening_sleep_interval: span(
                "RetryListeningSleepInterval",
                defaults.retry_listening_sleep_interval,
            ),
            retry_count_limit: field(doc, "RetryCountLimit")
                .and_then(Bson::as_i32)
                .unwrap_or(defaults.retry_count_limit),
            connection_error_retry_timeout: span(
                "ConnectionErrorRetryTimeout",
                defaults.connection_error_retry_timeout,
            ),
            tcp_client_connect_timeout: span(
                "TcpClientConnectTimeout",
                defaults.tcp_client_connect_timeout,
            ),
            base_uri: text("BaseUri").unwrap_or_default(),
            remote_thumbprint: text("RemoteThumbprint").unwrap_or_default(),
            proxy: field(doc, "Proxy").and_then(Bson::as_document).cloned(),
            force_resolve_host: text("ForceResolveHost"),
            is_web_socket_endpoint: field(doc, "IsWebSocketEndpoint")
                .and_then(Bson::as_bool)
                .unwrap_or(false),
        }
    }
}

impl ServerError {
    /// An error as a service method that threw would send it.
    pub fn thrown(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: Some(format!(
                "System.Reflection.TargetInvocationException: Exception has been thrown by the target of an invocation.\n ---> {message}"
            )),
            message,
            halibut_error_type: None,
        }
    }
}

/// A reference to a data stream whose bytes follow the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataStreamRef {
    /// The stream's id, repeated in its frame.
    pub id: Uuid,
    /// Its length in bytes.
    pub length: i64,
}

impl DataStreamRef {
    /// The reference in wire form; `typed` adds `$type` where it is declared as `object`.
    pub fn to_bson(self, typed: bool) -> Bson {
        let mut doc = Document::new();
        if typed {
            doc.insert("$type", DATA_STREAM_TYPE);
        }
        doc.insert("id", guid(self.id));
        doc.insert("length", self.length);
        Bson::Document(doc)
    }

    /// Every data stream reference in `value`, in the order the serializer met them.
    ///
    /// A reference is a document of exactly `id` (a Guid) and `length` (an int64),
    /// with or without its `$type`: the shape Halibut deserializes as a `DataStream`.
    pub fn find_all(value: &Bson, found: &mut Vec<DataStreamRef>) {
        match value {
            Bson::Document(doc) => match Self::from_document(doc) {
                Some(reference) => found.push(reference),
                None => doc.values().for_each(|v| Self::find_all(v, found)),
            },
            Bson::Array(items) => items.iter().for_each(|v| Self::find_all(v, found)),
            _ => {}
        }
    }

    fn from_document(doc: &Document) -> Option<Self> {
        let typed = doc.get_str("$type").ok();
        let expected_len = if typed.is_some() { 3 } else { 2 };
        if doc.len() != expected_len || typed.is_some_and(|t| t != DATA_STREAM_TYPE) {
            return None;
        }
        let id = guid_from(doc.get("id")?)?;
        let length = doc.get_i64("length").ok()?;
        Some(Self { id, length })
    }
}

impl Envelope {
    /// The envelope's BSON document, byte-exact with Newtonsoft.Json.Bson's output.
    pub fn to_document(&self) -> Document {
        let message = match self {
            Envelope::Null => Bson::Null,
            Envelope::Request(request) => Bson::Document(doc! {
                "$type": REQUEST_TYPE,
                "id": request.id.as_str(),
                "activityId": guid(request.activity_id),
                "endpoint": request.endpoint.to_document(),
                "service": request.service.as_str(),
                "method": request.method.as_str(),
                "params": request.params.clone(),
            }),
            Envelope::Response(response) => Bson::Document(doc! {
                "$type": RESPONSE_TYPE,
                "id": response.id.as_str(),
                "error": response.error.as_ref().map(error_document).unwrap_or(Bson::Null),
                "result": response.result.clone(),
            }),
        };
        doc! { "Message": message }
    }

    /// Encodes the envelope to BSON bytes (before DEFLATE).
    ///
    /// Fails only for a document BSON cannot hold, such as a key containing NUL in
    /// caller-built params.
    pub fn to_bson_bytes(&self) -> Result<Vec<u8>> {
        self.to_document().to_vec().map_err(|e| Error::Bson {
            reason: format!("cannot encode the envelope: {e}"),
        })
    }

    /// Decodes an envelope from one inflated BSON document, within the default
    /// limits' [`Limits::max_decoded_bytes`].
    pub fn from_bson_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bson_bytes_within(bytes, Limits::default().max_decoded_bytes())
    }

    /// Decodes an envelope from one inflated BSON document whose values may take
    /// at most `max_decoded` bytes once decoded.
    pub fn from_bson_bytes_within(bytes: &[u8], max_decoded: usize) -> Result<Self> {
        let declared = bytes
            .get(..4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .ok_or_else(|| Error::Bson {
                reason: format!("{} bytes is shorter than a BSON header", bytes.len()),
            })?;
        if declared != bytes.len() as i64 {
            return Err(Error::Bson {
                reason: format!(
                    "document says {declared} bytes but the message holds {}",
                    bytes.len()
                ),
            });
        }
        let doc = owned_document(bytes, max_decoded)?;
        Self::from_document(&doc)
    }

    /// Reads an envelope from its document; field names match exactly, else ignoring case.
    pub fn from_document(doc: &Document) -> Result<Self> {
        let message = field(doc, "Message").ok_or_else(|| Error::envelope("no Message field"))?;
        let payload = match message {
            Bson::Null => return Ok(Envelope::Null),
            Bson::Document(payload) => payload,
            other => {
                return Err(Error::envelope(format!(
                    "Message is a {:?}, not a document or null",
                    other.element_type()
                )))
            }
        };
        match payload.get_str("$type") {
            Ok(REQUEST_TYPE) => request_from(payload).map(Envelope::Request),
            Ok(RESPONSE_TYPE) => response_from(payload).map(Envelope::Response),
            Ok(other) => Err(Error::envelope(format!("unknown message $type {other:?}"))),
            Err(_) => Err(Error::envelope("Message has no $type")),
        }
    }

    /// The data streams this envelope references, in wire order.
    pub fn data_streams(&self) -> Vec<DataStreamRef> {
        let mut found = Vec::new();
        match self {
            Envelope::Null => {}
            Envelope::Request(r) => r
                .params
                .iter()
                .for_each(|p| DataStreamRef::find_all(p, &mut found)),
            Envelope::Response(r) => DataStreamRef::find_all(&r.result, &mut found),
        }
        found
    }
}

/// Deepest nesting of documents and arrays accepted: Json.NET's default `MaxDepth`.
pub const MAX_DEPTH: usize = 64;

/// The document in `bytes`, owned, in one pass that:
/// - copies each value once (bson's own conversion copies every sub-document
///   again at each level, so 62 levels around a 16 MiB string cost a gigabyte);
/// - stops at [`MAX_DEPTH`] before its recursion could exhaust the stack;
/// - refuses the BSON types Halibut never writes (code-with-scope, which holds a
///   whole document, DBPointer, symbols, …), so nothing hides a document where
///   the depth is not counted;
/// - stops when the values would take more than `max_decoded` bytes of memory
///   (millions of tiny values cost far more decoded than on the wire).
fn owned_document(bytes: &[u8], max_decoded: usize) -> Result<Document> {
    let raw = RawDocument::from_bytes(bytes).map_err(raw_error)?;
    let mut decoder = Decoder {
        budget: max_decoded,
        remaining: max_decoded,
    };
    decoder.document(raw, 1)
}

/// What one value costs decoded beyond its payload: the enum itself, and in a
/// document the map entry (hash, key string, index) around it.
const VALUE_COST: usize = std::mem::size_of::<Bson>();
const ENTRY_COST: usize = std::mem::size_of::<String>() + 2 * std::mem::size_of::<usize>();

/// Builds owned values within a memory budget.
struct Decoder {
    budget: usize,
    remaining: usize,
}

impl Decoder {
    fn take(&mut self, bytes: usize) -> Result<()> {
        self.remaining = self.remaining.checked_sub(bytes).ok_or(Error::TooLong {
            what: "decoded message",
            limit: self.budget as u64,
        })?;
        Ok(())
    }

    fn document(&mut self, raw: &RawDocument, depth: usize) -> Result<Document> {
        let mut doc = Document::new();
        for element in raw.iter_elements() {
            let element = element.map_err(raw_error)?;
            let key = element.key().as_str();
            self.take(ENTRY_COST + key.len())?;
            let value = self.owned(element.value().map_err(raw_error)?, depth)?;
            doc.insert(key, value);
        }
        Ok(doc)
    }

    /// `value`, found at `depth` (the root document is at 1), as an owned
    /// [`Bson`]: the types Newtonsoft.Json.Bson writes for .NET values, and no others.
    fn owned(&mut self, value: RawBsonRef<'_>, depth: usize) -> Result<Bson> {
        self.take(VALUE_COST)?;
        let deeper = || {
            if depth >= MAX_DEPTH {
                Err(Error::Bson {
                    reason: format!("nested deeper than {MAX_DEPTH} levels"),
                })
            } else {
                Ok(depth + 1)
            }
        };
        Ok(match value {
            RawBsonRef::Document(nested) => Bson::Document(self.document(nested, deeper()?)?),
            RawBsonRef::Array(items) => {
                let depth = deeper()?;
                let mut owned = Vec::new();
                for item in items {
                    owned.push(self.owned(item.map_err(raw_error)?, depth)?);
                }
                Bson::Array(owned)
            }
            RawBsonRef::Double(v) => Bson::Double(v),
            RawBsonRef::String(v) => {
                self.take(v.len())?;
                Bson::String(v.to_owned())
            }
            RawBsonRef::Binary(v) => {
                self.take(v.bytes.len())?;
                Bson::Binary(v.to_binary())
            }
            RawBsonRef::ObjectId(v) => Bson::ObjectId(v),
            RawBsonRef::Boolean(v) => Bson::Boolean(v),
            RawBsonRef::DateTime(v) => Bson::DateTime(v),
            RawBsonRef::Null => Bson::Null,
            RawBsonRef::Int32(v) => Bson::Int32(v),
            RawBsonRef::Int64(v) => Bson::Int64(v),
            other => {
                let kind = other.element_type();
                return Err(Error::Bson {
                    reason: format!(
                        "a {kind:?} value (BSON type 0x{:02X}), which Halibut never writes",
                        kind as u8
                    ),
                });
            }
        })
    }
}

fn raw_error(error: bson::error::Error) -> Error {
    Error::Bson {
        reason: error.to_string(),
    }
}

fn error_document(error: &ServerError) -> Bson {
    let opt = |v: &Option<String>| v.clone().map(Bson::String).unwrap_or(Bson::Null);
    Bson::Document(doc! {
        "message": error.message.as_str(),
        "details": opt(&error.details),
        "HalibutErrorType": opt(&error.halibut_error_type),
    })
}

fn request_from(doc: &Document) -> Result<RequestMessage> {
    let text = |key: &'static str| required_str(doc, key);
    let activity_id = field(doc, "activityId")
        .and_then(guid_from)
        .ok_or_else(|| Error::envelope("request activityId is missing or not a Guid"))?;
    let endpoint = match field(doc, "endpoint") {
        Some(Bson::Document(endpoint)) => ServiceEndPoint::from_document(endpoint),
        _ => ServiceEndPoint::new("", ""),
    };
    let params = match field(doc, "params") {
        Some(Bson::Array(params)) => params.clone(),
        None | Some(Bson::Null) => Vec::new(),
        Some(_) => return Err(Error::envelope("request params is not an array")),
    };
    Ok(RequestMessage {
        id: text("id")?,
        activity_id,
        endpoint,
        service: text("service")?,
        method: text("method")?,
        params,
    })
}

fn response_from(doc: &Document) -> Result<ResponseMessage> {
    let error = match field(doc, "error") {
        None | Some(Bson::Null) => None,
        Some(Bson::Document(e)) => Some(ServerError {
            message: field(e, "message")
                .and_then(Bson::as_str)
                .unwrap_or_default()
                .to_owned(),
            details: field(e, "details")
                .and_then(Bson::as_str)
                .map(str::to_owned),
            halibut_error_type: field(e, "HalibutErrorType")
                .and_then(Bson::as_str)
                .map(str::to_owned),
        }),
        Some(_) => return Err(Error::envelope("response error is not a document")),
    };
    Ok(ResponseMessage {
        id: required_str(doc, "id")?,
        error,
        result: field(doc, "result").cloned().unwrap_or(Bson::Null),
    })
}

fn required_str(doc: &Document, key: &'static str) -> Result<String> {
    field(doc, key)
        .and_then(Bson::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::envelope(format!("field {key} is missing or not a string")))
}

/// A field by exact name, else by name ignoring ASCII case (Newtonsoft's rule).
pub fn field<'a>(doc: &'a Document, key: &str) -> Option<&'a Bson> {
    doc.get(key).or_else(|| {
        doc.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

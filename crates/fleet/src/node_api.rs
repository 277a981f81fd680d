//! The control API of a node running as its own process (`octopoll node`): what
//! the parent of a multi-process run (or a test, or a person with curl) asks of
//! it, over plain HTTP/1.1 or h2c.
//!
//! * `GET /api/node`: status — running, addresses, counters, polling pairs.
//! * `GET /api/node/pairs`: every registered machine's state with this node.
//! * `GET /api/machines`: the registered machines, in name order (with the key:
//!   it lists every certificate the cluster trusts).
//! * `POST /api/node/{kill|stop|start|restart}[?undo=true]`: a node fault.
//! * `POST /api/requests`: queue one request and answer with its outcome once
//!   it ends (a workload's request; dropping the call withdraws it).
//! * `POST /api/health`: health-check every registered machine from this node,
//!   polling and listening alike (`GetCapabilities`), and answer with each.
//!
//! Every `POST` needs the cluster's API key in `X-Octopus-ApiKey` (compared in
//! constant time): whoever can reach the port could otherwise stop the node or
//! send work to its agents. Reads need none (a health check reads `/api/node`).
//!
//! The types are shared with the client in [`super::remote`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use octopoll_node::{FailReason, Machine, Node, NodeId, NodeStats, Outcome, PairState};
use octopoll_wire::{DataStream, Envelope, RequestMessage, ServiceEndPoint, SubscriptionId};
use serde::{Deserialize, Serialize};

use octopoll_http::error;
use octopoll_lab::actions::NodeAction;
use octopoll_lab::actions::{node_action, Undo};

/// Largest request the API takes: a message and its streams, base64-encoded.
pub const MAX_BODY_BYTES: usize = 96 * 1024 * 1024;

/// What `GET /api/node` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Which node.
    pub node: NodeId,
    /// Whether it runs now (a killed or stopped node's process lives on).
    pub running: bool,
    /// Its comms port.
    pub comms: SocketAddr,
    /// Its registration API.
    pub api: SocketAddr,
    /// Machines its copy of the registry holds.
    pub machines: usize,
    /// Times the shared registry was found empty while this node knew machines
    /// (Redis restarted without its data; every agent must register again).
    #[serde(default)]
    pub registry_emptied: u64,
    /// Times this node lost the shared registry's change channel (closed, or
    /// silent past a ping) and followed it again.
    #[serde(default)]
    pub registry_channel_lost: u64,
    /// Subscriptions polling it now.
    pub polling: usize,
    /// Its counters.
    pub stats: NodeStats,
}

impl NodeStatus {
    /// `node`'s status now.
    pub fn of(node: &Node) -> Self {
        Self {
            node: node.id(),
            running: node.is_running(),
            comms: node.comms_addr(),
            api: node.api_addr(),
            machines: node.registry().len(),
            registry_emptied: node.registry().store_emptied(),
            registry_channel_lost: node.registry().store_channel_losses(),
            polling: node.polling_pairs(),
            stats: node.stats(),
        }
    }
}

/// One machine's state with the node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachinePair {
    /// The machine's name.
    pub name: String,
    /// Its polling subscription, `poll://…/`: where `POST /api/requests` sends.
    pub subscription: String,
    /// Its state with this node.
    pub state: PairState,
}

/// One machine's health check, as `POST /api/health` answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineHealth {
    /// The machine's name.
    pub name: String,
    /// How the node reaches it: `poll://…/` or `https://host:port/`.
    pub endpoint: String,
    /// Its capabilities when healthy.
    pub capabilities: Option<Vec<String>>,
    /// Why it is unhealthy.
    pub error: Option<String>,
}

/// What `POST /api/health` answers: every machine, in registration order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// Healthy machines.
    pub healthy: usize,
    /// Unhealthy machines.
    pub unhealthy: usize,
    /// Each machine's check.
    pub machines: Vec<MachineHealth>,
}

/// A data stream in a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBody {
    /// Its id, as the message references it.
    pub id: uuid::Uuid,
    /// Its bytes, base64.
    pub data: String,
}

/// `POST /api/requests`: one request for one subscription, written either as
/// the envelope's BSON (`message`: what octopoll's own processes send) or as a
/// call (`call`: for people, scripts and a Tentacle that is not octopoll's).
///
/// ```json
/// {"subscription": "poll://abc/", "call": {"service": "IEchoService", "method": "SayHello", "params": ["hi"]}}
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendBody {
    /// `poll://…/`.
    pub subscription: String,
    /// The request envelope's BSON, base64 (the bytes Halibut deflates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request as a call; its answer comes back as JSON in `reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// Its data streams.
    #[serde(default)]
    pub streams: Vec<StreamBody>,
}

/// A request written as a call of `service.method(params)`. Each param is JSON
/// in the form Halibut writes it (an object declared as `object` carries its
/// `$type`); integers go as 64-bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Contract interface name without namespace, e.g. `IScriptServiceV2`.
    pub service: String,
    /// Method name without `Async`, e.g. `StartScript`.
    pub method: String,
    /// The arguments in order.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// A decoded `POST /api/requests` body.
struct Decoded {
    subscription: SubscriptionId,
    request: RequestMessage,
    streams: Vec<DataStream>,
    /// A call: answer with the reply as JSON.
    reply: bool,
}

impl SendBody {
    /// The body for `request` with `streams`, for `subscription`.
    pub fn new(
        subscription: &SubscriptionId,
        request: RequestMessage,
        streams: &[DataStream],
    ) -> octopoll_wire::Result<Self> {
        Ok(Self {
            subscription: subscription.to_string(),
            message: Some(BASE64.encode(Envelope::Request(request).to_bson_bytes()?)),
            call: None,
            streams: streams.iter().map(StreamBody::of).collect(),
        })
    }

    /// The body for a call of `service.method(params)` on `subscription`.
    pub fn call(subscription: &SubscriptionId, call: Call) -> Self {
        Self {
            subscription: subscription.to_string(),
            message: None,
            call: Some(call),
            streams: Vec::new(),
        }
    }

    /// The request, its streams and its subscription, or what is wrong with them.
    fn decode(self) -> Result<Decoded, String> {
        let subscription: SubscriptionId = self
            .subscription
            .parse()
            .map_err(|e| format!("subscription: {e}"))?;
        let (request, reply) = match (self.message, self.call) {
            (Some(message), None) => {
                let bytes = BASE64
                    .decode(&message)
                    .map_err(|e| format!("message: not base64: {e}"))?;
                let Envelope::Request(request) =
                    Envelope::from_bson_bytes(&bytes).map_err(|e| format!("message: {e}"))?
                else {
                    return Err("message: not a request".into());
                };
                (request, false)
            }
            (None, Some(call)) => {
                let params = call
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, param)| {
                        bson::serialize_to_bson(param).map_err(|e| format!("call.params[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let endpoint = ServiceEndPoint::new(subscription.as_str(), "");
                let request =
                    RequestMessage::call(&call.service, &call.method, params, endpoint, 1);
                (request, true)
            }
            _ => return Err("give one of message (the BSON envelope, base64) or call".into()),
        };
        let streams = self
            .streams
            .into_iter()
            .map(|s| {
                let bytes = BASE64
                    .decode(&s.data)
                    .map_err(|e| format!("stream {}: not base64: {e}", s.id))?;
                Ok(DataStream {
                    id: s.id,
                    bytes: bytes.into(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Decoded {
            subscription,
            request,
            streams,
            reply,
        })
    }
}

impl StreamBody {
    fn of(stream: &DataStream) -> Self {
        StreamBody {
            id: stream.id,
            data: BASE64.encode(&stream.bytes),
        }
    }
}

/// How a request sent through `POST /api/requests` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOutcome {
    /// `None`: completed; else why it failed.
    pub failed: Option<FailReason>,
    /// Queued → collected, in microseconds, if it was collected.
    pub pickup_us: Option<u64>,
    /// A call's answer, when it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyBody>,
    /// The service's error message, when it answered with one (`agent-error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A call's answer: the result in JSON and the data streams that came with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyBody {
    /// The return value (`null` for a method that returns nothing).
    pub result: serde_json::Value,
    /// Data streams the result refers to.
    pub streams: Vec<StreamBody>,
}

impl SendOutcome {
    /// As the workload counts it.
    pub fn into_parts(self) -> (Result<(), FailReason>, Option<Duration>) {
        (
            self.failed.map_or(Ok(()), Err),
            self.pickup_us.map(Duration::from_micros),
        )
    }
}

/// The routes over `node`, apart from serving them.
pub fn router(node: Arc<Node>) -> Router {
    let key = node.config().api_key.clone();
    let keyed = Router::new()
        .route("/api/node/{action}", post(act))
        .route("/api/requests", post(send))
        .route("/api/health", post(health))
        .route("/api/machines", get(machines))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            require_key(key.clone(), request, next)
        }));
    Router::new()
        .route("/api/node", get(status))
        .route("/api/node/pairs", get(pairs))
        .merge(keyed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// Lets a request through only with the API key in `X-Octopus-ApiKey`, checked as
/// the node's registration API checks it.
pub async fn require_key(
    key: octopoll_pki::ApiKey,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match octopoll_node::api::authorize(&key, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => error(StatusCode::UNAUTHORIZED, refused.to_string()),
    }
}

async fn health(State(node): State<Arc<Node>>) -> Json<HealthAnswer> {
    let summary = node.health_check_all().await;
    let machines: Vec<MachineHealth> = summary
        .checks
        .into_iter()
        .map(|check| {
            let (capabilities, error) = match check.result {
                Ok(capabilities) => (Some(capabilities), None),
                Err(error) => (None, Some(error.to_string())),
            };
            MachineHealth {
                name: check.machine.name,
                endpoint: check.machine.endpoint.to_string(),
                capabilities,
                error,
            }
        })
        .collect();
    let healthy = machines.iter().filter(|m| m.error.is_none()).count();
    Json(HealthAnswer {
        healthy,
        unhealthy: machines.len() - healthy,
        machines,
    })
}

async fn status(State(node): State<Arc<Node>>) -> Json<NodeStatus> {
    Json(NodeStatus::of(&node))
}

fn by_name(node: &Node) -> Vec<Machine> {
    let mut machines = node.registry().machines();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines
}

async fn pairs(State(node): State<Arc<Node>>) -> Json<Vec<MachinePair>> {
    Json(
        by_name(&node)
            .into_iter()
            .filter_map(|m| {
                let subscription = m.subscription()?;
                Some(MachinePair {
                    state: node.pair_state(subscription),
                    subscription: subscription.to_string(),
                    name: m.name,
                })
            })
            .collect(),
    )
}

async fn machines(State(node): State<Arc<Node>>) -> Json<Vec<Machine>> {
    Json(by_name(&node))
}

async fn act(
    State(node): State<Arc<Node>>,
    Path(action): Path<String>,
    Query(Undo { undo }): Query<Undo>,
) -> Response {
    let action: NodeAction = match action.parse() {
        Ok(action) => action,
        Err(unknown) => return error(StatusCode::NOT_FOUND, unknown.to_string()),
    };
    tracing::info!(node = %node.id(), ?action, undo, "node action from the control API");
    match node_action(&node, action, undo).await {
        Ok(()) => Json(NodeStatus::of(&node)).into_response(),
        Err(failed) => error(StatusCode::INTERNAL_SERVER_ERROR, failed.to_string()),
    }
}

async fn send(State(node): State<Arc<Node>>, Json(body): Json<SendBody>) -> Response {
    let decoded = match body.decode() {
        Ok(decoded) => decoded,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Outcome {
        result,
        pickup,
        error: service_error,
    } = node
        .send(&decoded.subscription, decoded.request, decoded.streams)
        .await;
    let pickup_us = pickup.map(|p| p.as_micros() as u64);
    let (failed, reply) = match result {
        Ok(reply) if decoded.reply => {
            let result = match serde_json::to_value(&reply.response.result) {
                Ok(result) => result,
                Err(e) => return error(StatusCode::BAD_GATEWAY, format!("the reply as JSON: {e}")),
            };
            let streams = reply.streams.iter().map(StreamBody::of).collect();
            (None, Some(ReplyBody { result, streams }))
        }
        Ok(_) => (None, None),
        Err(reason) => (Some(reason), None),
    };
    Json(SendOutcome {
        failed,
        pickup_us,
        reply,
        error: service_error.map(|e| e.message),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBSCRIPTION: &str = "poll://abcdefghij0123456789/";

    fn body(json: serde_json::Value) -> SendBody {
        serde_json::from_value(json).expect("a body")
    }

    #[test]
    fn a_call_becomes_the_request_halibut_would_send() {
        let decoded = body(serde_json::json!({
            "subscription": SUBSCRIPTION,
            "call": {
                "service": "IScriptServiceV2",
                "method": "GetStatus",
                "params": [{"$type": "Ticket, Contracts", "TaskId": "T-1", "Count": 3}],
            },
        }))
        .decode()
        .expect("a valid call");
        assert!(decoded.reply, "a call is answered with its reply");
        let request = decoded.request;
        assert_eq!(
            (request.service.as_str(), request.method.as_str()),
            ("IScriptServiceV2", "GetStatus")
        );
        assert!(
            request
                .id
                .starts_with("IScriptServiceV2::GetStatusAsync[1] / "),
            "{}",
            request.id
        );
        assert_eq!(request.endpoint.base_uri, SUBSCRIPTION);
        let bson::Bson::Document(param) = &request.params[0] else {
            panic!("a document: {:?}", request.params)
        };
        assert_eq!(param.get_str("$type").ok(), Some("Ticket, Contracts"));
        assert_eq!(param.get_i64("Count").ok(), Some(3));
    }

    #[test]
    fn a_body_with_neither_or_both_forms_or_a_bad_subscription_is_refused() {
        let call =
            serde_json::json!({"service": "IEchoService", "method": "SayHello", "params": ["hi"]});
        let neither = body(serde_json::json!({"subscription": SUBSCRIPTION}));
        assert!(neither
            .decode()
            .is_err_and(|e| e.starts_with("give one of message")));
        let both =
            body(serde_json::json!({"subscription": SUBSCRIPTION, "message": "", "call": call}));
        assert!(both
            .decode()
            .is_err_and(|e| e.starts_with("give one of message")));
        let bad = body(serde_json::json!({"subscription": "https://x/", "call": call}));
        assert!(bad.decode().is_err_and(|e| e.starts_with("subscription: ")));
        // A type Halibut never writes (code-with-scope holds a whole document) is
        // refused with its name, before anything walks it.
        let scope = bson::Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
            code: "x".into(),
            scope: bson::doc! {},
        });
        let envelope = bson::doc! {"Message": {
            "$type": octopoll_wire::message::REQUEST_TYPE, "id": "x", "service": "s", "method": "m",
            "activityId": octopoll_wire::bson::guid(uuid::Uuid::nil()), "params": [scope],
        }};
        let message = BASE64.encode(envelope.to_vec().unwrap());
        let hostile = body(serde_json::json!({"subscription": SUBSCRIPTION, "message": message}));
        assert!(hostile
            .decode()
            .is_err_and(|e| e.starts_with("message: ") && e.contains("Halibut never writes")));
        let garbled = body(serde_json::json!({"subscription": SUBSCRIPTION, "message": "%%%"}));
        assert!(garbled
            .decode()
            .is_err_and(|e| e.starts_with("message: not base64")));
    }
}

//! The control API of a node running as its own process (`octopoll node`): what
//! the parent of a multi-process run (or a test, or a person with curl) asks of
//! it, over plain HTTP/1.1 or h2c.
//!
//! * `GET /api/node`: status — running, addresses, counters, polling pairs.
//! * `GET /api/node/pairs`: every registered machine's state with this node.
//! * `GET /api/machines`: the registered machines, in name order.
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
use octopoll_node::{FailReason, Machine, Node, NodeId, NodeStats, PairState};
use octopoll_wire::{DataStream, Envelope, RequestMessage, SubscriptionId};
use serde::{Deserialize, Serialize};

use crate::http::error;
use octopoll_lab::actions::node_action;
use octopoll_lab::actions::NodeAction;

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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamBody {
    /// Its id, as the message references it.
    pub id: uuid::Uuid,
    /// Its bytes, base64.
    pub data: String,
}

/// `POST /api/requests`: one request for one subscription.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendBody {
    /// `poll://…/`.
    pub subscription: String,
    /// The request envelope's BSON, base64 (the bytes Halibut deflates).
    pub message: String,
    /// Its data streams.
    pub streams: Vec<StreamBody>,
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
            message: BASE64.encode(Envelope::Request(request).to_bson_bytes()?),
            streams: streams
                .iter()
                .map(|s| StreamBody {
                    id: s.id,
                    data: BASE64.encode(&s.bytes),
                })
                .collect(),
        })
    }

    /// The request, its streams and its subscription, or what is wrong with them.
    fn decode(self) -> Result<(SubscriptionId, RequestMessage, Vec<DataStream>), String> {
        let subscription: SubscriptionId = self
            .subscription
            .parse()
            .map_err(|e| format!("subscription: {e}"))?;
        let bytes = BASE64
            .decode(&self.message)
            .map_err(|e| format!("message: not base64: {e}"))?;
        let Envelope::Request(request) =
            Envelope::from_bson_bytes(&bytes).map_err(|e| format!("message: {e}"))?
        else {
            return Err("message: not a request".into());
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
        Ok((subscription, request, streams))
    }
}

/// How a request sent through `POST /api/requests` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOutcome {
    /// `None`: completed; else why it failed.
    pub failed: Option<FailReason>,
    /// Queued → collected, in microseconds, if it was collected.
    pub pickup_us: Option<u64>,
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
    let writes = Router::new()
        .route("/api/node/{action}", post(act))
        .route("/api/requests", post(send))
        .route("/api/health", post(health))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            require_key(key.clone(), request, next)
        }));
    Router::new()
        .route("/api/node", get(status))
        .route("/api/node/pairs", get(pairs))
        .route("/api/machines", get(machines))
        .merge(writes)
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
                Some(MachinePair {
                    state: node.pair_state(m.subscription()?),
                    name: m.name,
                })
            })
            .collect(),
    )
}

async fn machines(State(node): State<Arc<Node>>) -> Json<Vec<Machine>> {
    Json(by_name(&node))
}

/// `?undo=true`: the action that ends a kill or stop (a start).
#[derive(Debug, Deserialize)]
struct Undo {
    #[serde(default)]
    undo: bool,
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
    let (subscription, request, streams) = match body.decode() {
        Ok(decoded) => decoded,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let outcome = node.send(&subscription, request, streams).await;
    Json(SendOutcome {
        failed: outcome.result.err(),
        pickup_us: outcome.pickup.map(|p| p.as_micros() as u64),
    })
    .into_response()
}

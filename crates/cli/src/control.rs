//! The control API of a run: the cluster's state, and the scenario's node faults
//! callable by hand while the run goes (`--control ADDR`). When the run has the
//! chaos proxies, their toxiproxy-shaped routes (`/proxies`, `/reset`) are served
//! beside it, so network faults are callable the same way.
//!
//! * `GET /api/cluster`: every node (running or not, connections, queue, counters),
//!   coverage and the coverage matrix.
//! * `POST /api/nodes/{n}/kill`, `…/stop`, `…/start`, `…/restart`: what a
//!   `[[faults]]` entry with that action does, now; answers with the node's state.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use octopoll_node::{ClusterView, Node, NodeId, NodeStats};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::faults::node_action;
use crate::network::Network;
use crate::scenario::fault::NodeAction;

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    cluster: ClusterView,
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterState {
    /// Every node, node 1 first.
    pub nodes: Vec<NodeState>,
    /// Polling pairs / all pairs.
    pub coverage: f64,
    /// Agents per pair state and node.
    pub coverage_matrix: octopoll_node::CoverageMatrix,
}

/// One node's state.
#[derive(Debug, Serialize)]
pub struct NodeState {
    /// `node-1`, …
    pub node: String,
    /// Whether it runs (false after a kill or stop until it starts again).
    pub running: bool,
    /// Its comms address.
    pub comms_addr: String,
    /// Its counters.
    #[serde(flatten)]
    pub stats: NodeStats,
}

impl NodeState {
    fn of(node: &Node) -> Self {
        Self {
            node: node.id().to_string(),
            running: node.is_running(),
            comms_addr: node.comms_addr().to_string(),
            stats: node.stats(),
        }
    }
}

/// The control routes, with the chaos proxies' routes merged in when there are any.
pub fn router(cluster: ClusterView, network: Option<&Network>) -> Router {
    let control = Router::new()
        .route("/api/cluster", get(cluster_state))
        .route("/api/nodes/{node}/{action}", post(act))
        .with_state(Arc::new(ControlState { cluster }));
    match network {
        Some(network) => control.merge(octopoll_chaos::api::router(network.chaos().clone())),
        None => control,
    }
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let serving = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(error) = serving.await {
        tracing::warn!(%error, "control API stopped");
    }
}

async fn cluster_state(State(state): State<Arc<ControlState>>) -> Json<ClusterState> {
    let matrix = state.cluster.coverage_matrix();
    Json(ClusterState {
        nodes: state
            .cluster
            .nodes()
            .iter()
            .map(|n| NodeState::of(n))
            .collect(),
        coverage: matrix.coverage().ratio(),
        coverage_matrix: matrix,
    })
}

async fn act(
    State(state): State<Arc<ControlState>>,
    Path((node, action)): Path<(String, String)>,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (
            status,
            Json(serde_json::json!({ "error": message, "status": status.as_u16() })),
        )
            .into_response()
    };
    let id = match node.strip_prefix("node-").unwrap_or(&node).parse::<u16>() {
        Ok(n) => NodeId(n),
        Err(_) => return error(StatusCode::NOT_FOUND, format!("no node {node:?}")),
    };
    let Some(target) = state.cluster.node(id).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("{id} does not exist"));
    };
    let action = match action.as_str() {
        "kill" => NodeAction::Kill,
        "stop" => NodeAction::Stop,
        "start" => NodeAction::Start,
        "restart" => NodeAction::Restart,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}: kill, stop, start or restart"),
            )
        }
    };
    tracing::info!(node = %id, ?action, "fault from the control API");
    match node_action(&target, action, false).await {
        Ok(()) => Json(NodeState::of(&target)).into_response(),
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{Lab, LabConfig};
    use std::time::Duration;

    mod reqwest_free {
        //! A tiny HTTP/1.1 client over a TCP socket, enough for these tests.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub struct Client(pub std::net::SocketAddr);

        impl Client {
            pub async fn call(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
                let mut stream = tokio::net::TcpStream::connect(self.0).await.unwrap();
                let request = format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).await.unwrap();
                let status = response[9..12].parse().unwrap();
                let body = response.split_once("\r\n\r\n").unwrap().1;
                (
                    status,
                    serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
                )
            }

            pub async fn get(&self, path: &str) -> serde_json::Value {
                self.call("GET", path).await.1
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_are_killed_and_started_through_the_api_and_the_cluster_state_shows_it() {
        let mut config = LabConfig::new(3, 4);
        config.chaos = true;
        let lab = Lab::start(config).await.unwrap();
        lab.wait_for_full_coverage(Duration::from_secs(10))
            .await
            .expect("full mesh");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = reqwest_free::Client(listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(serve(
            listener,
            router(lab.cluster.view(), lab.network.as_ref()),
            shutdown.clone(),
        ));

        let state = client.get("/api/cluster").await;
        assert_eq!(state["coverage"], 1.0);
        assert_eq!(state["nodes"][1]["running"], true);

        let (status, killed) = client.call("POST", "/api/nodes/2/kill").await;
        assert_eq!(status, 200, "{killed}");
        assert_eq!(killed["running"], false);
        let state = client.get("/api/cluster").await;
        let coverage = state["coverage"].as_f64().unwrap();
        assert!(
            (coverage - 2.0 / 3.0).abs() < 1e-9,
            "node 2's pairs are gone: {state}"
        );

        let (status, started) = client.call("POST", "/api/nodes/node-2/start").await;
        assert_eq!(status, 200, "{started}");
        assert_eq!(started["running"], true);
        lab.wait_for_full_coverage(Duration::from_secs(10))
            .await
            .expect("the agents come back to node 2");

        let (status, body) = client.call("POST", "/api/nodes/7/kill").await;
        assert_eq!(
            (status, body["status"].as_u64()),
            (404, Some(404)),
            "{body}"
        );
        let (status, body) = client.call("POST", "/api/nodes/1/explode").await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("kill, stop, start or restart"));

        // The chaos proxies' routes sit beside the control routes.
        let (status, proxies) = client.call("GET", "/proxies").await;
        assert_eq!(status, 200);
        assert!(proxies.get("node-2").is_some(), "{proxies}");

        shutdown.cancel();
        serving.await.unwrap();
        lab.stop().await;
    }
}

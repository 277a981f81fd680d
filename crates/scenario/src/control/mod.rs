//! The control API of a run, and the live dashboard page on top of it
//! (`--control ADDR`, also spelled `--dashboard`). When the run has the chaos
//! proxies, their toxiproxy-shaped routes (`/proxies`, `/reset`) are served beside
//! it, so network faults are callable the same way.
//!
//! * `GET /`: the dashboard, one page with no build step and no CDN: a grid of
//!   agents × nodes coloured by pair state, a card per node (up or down,
//!   connections, queue, throughput) with kill/stop/start/restart buttons, a
//!   timeline of coverage and faults, and a button that queues a burst of work.
//! * `GET /api/cluster`: every node (running or not, connections, queue,
//!   counters), coverage, the coverage matrix, the grid, and the timeline.
//! * `GET /api/events`: the same, as server-sent events, once a second.
//! * `POST /api/nodes/{n}/kill`, `…/stop`, `…/start`, `…/restart`: what a
//!   `[[faults]]` entry with that action does, now; answers with the node's state.
//! * `POST /api/burst?count=N`: queues N requests at once (1 to 10,000).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use octopoll_node::{ClusterView, CoverageMatrix, Node, NodeStats, PairState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fault::{Action, Target};
use crate::testbed::Dispatcher;
use crate::workload::{request_for, spawn_request, Ledger, Recipient, Shape};
use octopoll_http::error;
use octopoll_lab::actions::NodeAction;
use octopoll_lab::actions::{node_action, Undo};
use octopoll_lab::fronts::ChaosFronts;

/// The dashboard page.
const PAGE: &str = include_str!("dashboard.html");
/// Coverage points kept for the timeline (an hour at one a second).
const HISTORY: usize = 3600;
/// Most requests one burst queues.
const MAX_BURST: u64 = 10_000;

/// What lets the dashboard queue work: the run's workload pieces.
#[derive(Clone)]
pub struct Burst {
    /// Where the requests are counted.
    pub ledger: Arc<Ledger>,
    /// Where their tasks run.
    pub tracker: TaskTracker,
    /// Cancelled when the run ends (unfinished requests fail `run-ended`).
    pub run_ended: CancellationToken,
    /// The agents, in name order.
    pub machines: Vec<Recipient>,
    /// How requests are shaped.
    pub shape: Shape,
    /// The run's seed.
    pub seed: u64,
}

/// A fault on the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineFault {
    /// Seconds since the control API started.
    pub at_s: f64,
    /// `kill node-2`, …
    pub what: String,
}

/// What the handlers share.
pub struct ControlState {
    cluster: ClusterView,
    started: Instant,
    history: Mutex<VecDeque<(f64, f64)>>,
    faults: Mutex<Vec<TimelineFault>>,
    /// Set once the workload exists (after the mesh formed).
    burst: OnceLock<Burst>,
    burst_numbers: AtomicU64,
    /// Cancelled when the run is over: actions are refused, event streams end.
    over: CancellationToken,
}

impl ControlState {
    /// State for a run's cluster.
    pub fn new(cluster: ClusterView) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            started: Instant::now(),
            history: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
            burst: OnceLock::new(),
            burst_numbers: AtomicU64::new(1_000_000_000),
            over: CancellationToken::new(),
        })
    }

    /// Lets the page queue work from now on.
    pub fn enable_burst(&self, burst: Burst) {
        let _ = self.burst.set(burst);
    }

    /// The run is over: from now on actions answer 409 and event streams end,
    /// so nothing is queued or started after the run has counted its requests.
    pub fn close(&self) {
        self.over.cancel();
    }

    /// Puts a fault on the timeline (scenario faults and the API's alike).
    pub fn record_fault(&self, what: String) {
        let at_s = self.started.elapsed().as_secs_f64();
        lock(&self.faults).push(TimelineFault { at_s, what });
    }

    fn snapshot(&self) -> ClusterState {
        // One pass over the (agent, node) pairs: the grid, and the matrix from it.
        let grid: Vec<AgentRow> = self
            .cluster
            .pair_states()
            .into_iter()
            .map(|(name, states)| AgentRow { name, states })
            .collect();
        let mut matrix = CoverageMatrix::new(
            self.cluster
                .nodes()
                .iter()
                .map(|n| n.id().to_string())
                .collect(),
        );
        for row in &grid {
            matrix.add_agent(row.states.iter().copied());
        }
        ClusterState {
            elapsed_s: self.started.elapsed().as_secs_f64(),
            nodes: self
                .cluster
                .nodes()
                .iter()
                .map(|n| NodeState::of(n))
                .collect(),
            coverage: self.cluster.coverage().ratio(),
            coverage_matrix: matrix,
            grid,
            history: lock(&self.history).iter().copied().collect(),
            faults: lock(&self.faults).clone(),
        }
    }

    /// Samples coverage for the timeline once a second until `shutdown`.
    pub async fn keep_history(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.over.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let point = (
                self.started.elapsed().as_secs_f64(),
                self.cluster.coverage().ratio(),
            );
            let mut history = lock(&self.history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(point);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterState {
    /// Seconds since the control API started.
    pub elapsed_s: f64,
    /// Every node, node 1 first.
    pub nodes: Vec<NodeState>,
    /// Polling pairs / all pairs.
    pub coverage: f64,
    /// Agents per pair state and node.
    pub coverage_matrix: CoverageMatrix,
    /// Every agent's state with every node, in name order.
    pub grid: Vec<AgentRow>,
    /// Coverage once a second: (seconds, coverage).
    pub history: Vec<(f64, f64)>,
    /// Faults so far.
    pub faults: Vec<TimelineFault>,
}

/// One agent's row of the grid.
#[derive(Debug, Serialize)]
pub struct AgentRow {
    /// Its machine name.
    pub name: String,
    /// Its state with each node.
    pub states: Vec<PairState>,
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

/// The page and the control routes, with the chaos proxies' routes merged in when
/// there are any.
pub fn router(state: Arc<ControlState>, fronts: Option<&ChaosFronts>) -> Router {
    let control = Router::new()
        .route("/", get(page))
        .route("/api/cluster", get(cluster_state))
        .route("/api/events", get(events))
        .route("/api/nodes/{node}/{action}", post(act))
        .route("/api/burst", post(burst))
        .with_state(state);
    match fronts {
        Some(fronts) => control.merge(octopoll_chaos::api::router(
            fronts.chaos().clone(),
            octopoll_chaos::api::ListenPolicy::Loopback,
        )),
        None => control,
    }
}

async fn page(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    // Every `<` escaped (only strings can hold one), so no value can end or
    // confuse the script element it is embedded in.
    let initial = serde_json::to_string(&state.snapshot())
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c");
    let page = PAGE.replacen("/*INITIAL_STATE*/null", &initial, 1);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

async fn cluster_state(State(state): State<Arc<ControlState>>) -> Json<ClusterState> {
    Json(state.snapshot())
}

async fn events(
    State(state): State<Arc<ControlState>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let stream = futures_util::stream::unfold((state, ticks), |(state, mut ticks)| async move {
        tokio::select! {
            // The run is over: end the stream, so the server can shut down.
            _ = state.over.cancelled() => return None,
            _ = ticks.tick() => {}
        }
        let event = Event::default()
            .json_data(state.snapshot())
            .unwrap_or_else(|_| Event::default().comment("state did not serialize"));
        Some((Ok(event), (state, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn act(
    State(state): State<Arc<ControlState>>,
    Path((node, action)): Path<(String, String)>,
    Query(Undo { undo }): Query<Undo>,
) -> Response {
    if state.over.is_cancelled() {
        return error(StatusCode::CONFLICT, "the run is over".into());
    }
    let Ok(Target::Node(id)) = Target::parse(&node) else {
        return error(StatusCode::NOT_FOUND, format!("no node {node:?}"));
    };
    let Some(target) = state.cluster.node(id).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("{id} does not exist"));
    };
    // An unknown action names no resource: 404, as the node process's API answers.
    let action: NodeAction = match action.parse() {
        Ok(action) => action,
        Err(unknown) => return error(StatusCode::NOT_FOUND, unknown.to_string()),
    };
    let fault = Action::Node(action);
    tracing::info!(node = %id, action = fault.name(), undo, "fault from the control API");
    let what = if undo { "undo " } else { "" };
    state.record_fault(format!("{what}{} {id}", fault.name()));
    match node_action(&target, action, undo).await {
        Ok(()) => Json(NodeState::of(&target)).into_response(),
        Err(failed) => error(StatusCode::INTERNAL_SERVER_ERROR, failed.to_string()),
    }
}

/// `?count=N`.
#[derive(Debug, Deserialize)]
struct BurstQuery {
    count: Option<u64>,
}

async fn burst(
    State(state): State<Arc<ControlState>>,
    Query(query): Query<BurstQuery>,
) -> Response {
    if state.over.is_cancelled() {
        return error(StatusCode::CONFLICT, "the run is over".into());
    }
    let Some(burst) = state.burst.get() else {
        return error(
            StatusCode::CONFLICT,
            "the workload has not started yet".into(),
        );
    };
    if burst.machines.is_empty() {
        return error(StatusCode::CONFLICT, "no agent is registered".into());
    }
    let count = query.count.unwrap_or(50);
    if !(1..=MAX_BURST).contains(&count) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("count must be 1 to {MAX_BURST}, got {count}"),
        );
    }
    let nodes: Vec<Dispatcher> = state
        .cluster
        .nodes()
        .iter()
        .filter(|n| n.is_running())
        .map(|n| Dispatcher::Local(n.sender()))
        .collect();
    if nodes.is_empty() {
        return error(StatusCode::CONFLICT, "every node is down".into());
    }
    use rand::{Rng, SeedableRng};
    for _ in 0..count {
        let number = state.burst_numbers.fetch_add(1, Ordering::Relaxed);
        let mut rng = rand::rngs::StdRng::seed_from_u64(burst.seed ^ number);
        let machine = &burst.machines[rng.random_range(0..burst.machines.len())];
        let node = nodes[rng.random_range(0..nodes.len())].clone();
        let request = request_for(
            &mut rng,
            &burst.shape,
            &machine.subscription,
            &machine.thumbprint,
            number,
        );
        spawn_request(
            &burst.tracker,
            &burst.ledger,
            node,
            machine.subscription.clone(),
            request,
            burst.run_ended.clone(),
            Instant::now(),
        );
    }
    state.record_fault(format!("burst {count}"));
    Json(serde_json::json!({ "queued": count })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_lab::{Lab, LabConfig};
    use std::time::Duration;

    mod reqwest_free {
        //! A tiny HTTP/1.1 client over a TCP socket, enough for these tests.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub struct Client(pub std::net::SocketAddr);

        impl Client {
            pub async fn call(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
                let mut stream = tokio::net::TcpStream::connect(self.0).await.unwrap();
                let request = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.0
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
        crate::testbed::wait_for_full_coverage(&lab, Duration::from_secs(10))
            .await
            .expect("full mesh");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = reqwest_free::Client(listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let state = ControlState::new(lab.cluster.view());
        let serving = tokio::spawn(octopoll_http::serve(
            listener,
            router(state, lab.fronts.as_ref()),
            octopoll_http::ServeLimits::default(),
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

        // Undoing a kill starts the node, as a fault's end does.
        let (status, started) = client
            .call("POST", "/api/nodes/node-2/kill?undo=true")
            .await;
        assert_eq!(status, 200, "{started}");
        assert_eq!(started["running"], true);
        crate::testbed::wait_for_full_coverage(&lab, Duration::from_secs(10))
            .await
            .expect("the agents come back to node 2");

        let (status, body) = client.call("POST", "/api/nodes/7/kill").await;
        assert_eq!(
            (status, body["status"].as_u64()),
            (404, Some(404)),
            "{body}"
        );
        // Pulses belong to the Redis queue: this cluster's nodes have none.
        let (status, body) = client.call("POST", "/api/nodes/1/lose-pulses").await;
        assert_eq!(status, 500, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("does not use the Redis queue"),
            "{body}"
        );
        assert_eq!(
            client.get("/api/cluster").await["nodes"][0]["running"],
            true
        );
        let (status, body) = client.call("POST", "/api/nodes/1/explode").await;
        assert_eq!(status, 404, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("kill, stop, start, restart or lose-pulses"));

        // The chaos proxies' routes sit beside the control routes.
        let (status, proxies) = client.call("GET", "/proxies").await;
        assert_eq!(status, 200);
        assert!(proxies.get("node-2").is_some(), "{proxies}");

        shutdown.cancel();
        serving.await.unwrap().unwrap();
        lab.stop().await;
    }
}

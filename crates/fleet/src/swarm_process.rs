//! `octopoll swarm`: a share of a run's agents as a process of its own. It makes
//! the share's identities, registers them with a node's API, and (at once, or
//! when its parent says so, so that every share starts together) polls every node
//! it was given. Its control API:
//!
//! * `GET /api/swarm`: agents, polling links, identified connections, failures;
//! * `POST /api/swarm/poll`: start polling (a swarm started with `--hold`); it
//!   needs the API key in `X-Octopus-ApiKey`, as the node's writes do.
//!
//! SIGTERM, Ctrl-C or its parent going away stop every agent gracefully.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use octopoll_agent::swarm::RegisteredSwarm;
use octopoll_agent::{RegistrationTarget, ServerAddress, Swarm, SwarmConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::child::{announce, Announcement, Listening};
use octopoll_http::error;

/// Everything a swarm process needs.
#[derive(Clone, Debug)]
pub struct SwarmSettings {
    /// The share: how many agents, from which index, named how, polling how.
    pub swarm: SwarmConfig,
    /// Where they register.
    pub target: RegistrationTarget,
    /// The comms addresses every agent polls (one trusted server entry each).
    pub nodes: Vec<ServerAddress>,
    /// Where the control API listens.
    pub control: SocketAddr,
    /// Register, then wait for `POST /api/swarm/poll` before polling.
    pub hold: bool,
}

/// What `GET /api/swarm` (and the stopped announcement) tells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStatus {
    /// Agents in this share.
    pub agents: usize,
    /// Whether they poll yet.
    pub polling: bool,
    /// Polling links (agents × nodes × connections per node).
    pub links: usize,
    /// Links holding an identified connection now.
    pub connections: usize,
    /// Connections or attempts that failed so far.
    pub failures: u64,
    /// Requests answered so far.
    pub answered: u64,
}

/// The share before and after it polls.
enum Phase {
    Held(RegisteredSwarm),
    Polling(Swarm),
    /// Between the two, or after a failed start.
    Empty,
}

struct Share {
    agents: usize,
    phase: Mutex<Phase>,
}

impl Share {
    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> SwarmStatus {
        match &*self.lock() {
            Phase::Polling(swarm) => SwarmStatus {
                agents: self.agents,
                polling: true,
                links: swarm.links(),
                connections: swarm.connections(),
                failures: swarm.agents().iter().map(|a| a.failures()).sum(),
                answered: swarm.agents().iter().map(|a| a.requests_answered()).sum(),
            },
            _ => SwarmStatus {
                agents: self.agents,
                ..SwarmStatus::default()
            },
        }
    }

    /// Starts a held share polling; a share polling already is left alone.
    fn poll(&self) -> Result<(), String> {
        let mut phase = self.lock();
        match std::mem::replace(&mut *phase, Phase::Empty) {
            Phase::Held(registered) => match registered.poll() {
                Ok(swarm) => {
                    *phase = Phase::Polling(swarm);
                    info!(agents = self.agents, "swarm share polling");
                    Ok(())
                }
                Err(error) => Err(format!("starting the agents failed: {error}")),
            },
            other => {
                *phase = other;
                Ok(())
            }
        }
    }
}

fn router(share: Arc<Share>, key: octopoll_pki::ApiKey) -> Router {
    let writes = Router::new()
        .route("/api/swarm/poll", post(poll))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            crate::node_api::require_key(key.clone(), request, next)
        }));
    Router::new()
        .route("/api/swarm", get(status))
        .merge(writes)
        .with_state(share)
}

async fn status(State(share): State<Arc<Share>>) -> Json<SwarmStatus> {
    Json(share.status())
}

async fn poll(State(share): State<Arc<Share>>) -> Response {
    match share.poll() {
        Ok(()) => Json(share.status()).into_response(),
        Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

/// Registers the share, serves its control API, polls (now or when told), and
/// runs until `stop`; returns the final status.
pub async fn run(settings: SwarmSettings, stop: CancellationToken) -> anyhow::Result<SwarmStatus> {
    let agents = settings.swarm.agents;
    let first = settings.swarm.first;
    let key = settings.target.api_key.clone();
    let control = octopoll_node::tcp::bind(settings.control).with_context(|| {
        format!(
            "the swarm's control API could not bind {}",
            settings.control
        )
    })?;
    let control_addr = control.local_addr()?;
    let registered = tokio::select! {
        registered = Swarm::register(settings.swarm, &settings.target, &settings.nodes) => registered,
        _ = stop.cancelled() => anyhow::bail!("stopped while registering"),
    }
    .with_context(|| {
        format!(
            "registering agents {} to {} with {}",
            first + 1,
            first + agents,
            settings.target.api_url
        )
    })?;
    let share = Arc::new(Share {
        agents,
        phase: Mutex::new(Phase::Held(registered)),
    });
    if !settings.hold {
        share.poll().map_err(anyhow::Error::msg)?;
    }
    let serving = CancellationToken::new();
    let server = tokio::spawn(octopoll_http::serve(
        control,
        router(share.clone(), key),
        octopoll_http::ServeLimits::default(),
        serving.clone(),
    ));
    info!(agents, first = first + 1, nodes = settings.nodes.len(), control = %control_addr, "swarm process ready");
    announce::<_, ()>(&Announcement::Ready(Listening {
        control: control_addr,
        comms: None,
        api: None,
    }))?;
    stop.cancelled().await;
    let last = share.status();
    let phase = std::mem::replace(&mut *share.lock(), Phase::Empty);
    if let Phase::Polling(swarm) = phase {
        swarm.stop().await;
    }
    serving.cancel();
    let _ = server.await;
    announce::<(), _>(&Announcement::Stopped(last.clone()))?;
    Ok(last)
}

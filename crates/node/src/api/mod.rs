//! The registration REST API a Tentacle talks to before it polls (`register-with`,
//! `poll-server`), served over HTTPS.
//!
//! * `GET /api`: what answered (no key needed).
//! * `GET /api/configuration/certificates/certificate-global`: the node's thumbprint.
//! * `POST /api/machines`: registers a polling (`TentacleActive`) or listening
//!   (`TentaclePassive`) Tentacle; `GET` lists them.
//! * `DELETE /api/machines/{id}`: deregisters one (`deregister-from`).
//!
//! Every route but `/api` needs the `X-Octopus-ApiKey` header. Registrations are
//! rate-limited per node (429 with `Retry-After` over the rate), bodies are capped,
//! and each request must arrive whole within a bound (see [`crate::NodeConfig`]).

mod error;
pub mod https;
mod machines;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use octopoll_pki::{ApiKey, Thumbprint};
use octopoll_wire::api::{CertificateResource, RootResource, CERTIFICATE_PATH, MACHINES_PATH};

pub use error::{authorize, ApiError};

use crate::{MachineRegistry, NodeId};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Which node serves.
    pub node: NodeId,
    /// The key callers must present.
    pub api_key: ApiKey,
    /// The node's comms certificate thumbprint.
    pub thumbprint: Thumbprint,
    /// The cluster's registry.
    pub registry: MachineRegistry,
    /// Registrations per second this node accepts (`registrations_per_second`,
    /// `registration_burst`).
    pub registrations: Arc<RegistrationLimiter>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Bound on one whole request.
    pub request_timeout: Duration,
    /// This start's request queue (for `GET /api/serverstatus/redis`).
    pub queue: Arc<dyn crate::RequestQueue>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("node", &self.node)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// The registration rate limit of one node: a GCRA bucket (the `governor` crate).
#[derive(Debug)]
pub struct RegistrationLimiter {
    limiter: governor::DefaultDirectRateLimiter,
    per_second: u32,
}

impl RegistrationLimiter {
    /// `per_second` sustained, `burst` at once (each at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = per_second.max(1);
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            per_second,
        }
    }

    /// Takes one registration's turn, or says how long to wait for one.
    pub fn check(&self) -> Result<(), ApiError> {
        use governor::clock::{Clock, DefaultClock};
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                per_second: self.per_second,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

/// The API's routes, apart from serving them (tests call it directly).
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/api", get(root))
        .route(CERTIFICATE_PATH, get(certificate))
        .route(REDIS_STATUS_PATH, get(redis_status))
        .route(MACHINES_PATH, post(machines::register).get(machines::list))
        .route(
            &format!("{MACHINES_PATH}/{{id}}"),
            axum::routing::delete(machines::delete),
        )
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            within_request_timeout,
        ))
        .with_state(state)
}

/// Ends a request that takes longer than the request timeout (a body trickled in
/// byte by byte, say) with 408.
async fn within_request_timeout(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(state.request_timeout).into_response(),
    }
}

async fn root(State(state): State<Arc<ApiState>>) -> Json<RootResource> {
    Json(RootResource {
        application: "Octopus Deploy (octopoll mock node)".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "3.0.0".into(),
        node: Some(state.node.to_string()),
    })
}

/// Octopus's health of multi-node polling over Redis.
pub const REDIS_STATUS_PATH: &str = "/api/serverstatus/redis";

/// Whether this node's queue goes through Redis, and whether Redis answers now.
async fn redis_status(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<crate::queue::RedisStatus>, ApiError> {
    error::authorize(&state.api_key, &headers)?;
    Ok(Json(state.queue.redis_status().await))
}

async fn certificate(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<CertificateResource>, ApiError> {
    error::authorize(&state.api_key, &headers)?;
    Ok(Json(CertificateResource {
        id: "certificate-global".into(),
        thumbprint: state.thumbprint.to_string(),
    }))
}

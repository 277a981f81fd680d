//! The registration REST API a Tentacle talks to before it polls (`register-with`,
//! `poll-server`), served over HTTPS.
//!
//! * `GET /api`: what answered (no key needed).
//! * `GET /api/configuration/certificates/certificate-global`: the node's thumbprint.
//! * `POST /api/machines`: registers a polling Tentacle.
//!
//! Every route but `/api` needs the `X-Octopus-ApiKey` header.

mod error;
pub mod https;
mod machines;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use octopoll_pki::{ApiKey, Thumbprint};
use octopoll_wire::api::{CertificateResource, RootResource, CERTIFICATE_PATH, MACHINES_PATH};

pub use error::ApiError;

use crate::{MachineRegistry, NodeId};

/// Largest request body accepted; a machine registration is well under 1 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Which node serves.
    pub node: NodeId,
    /// The key callers must present.
    pub api_key: ApiKey,
    /// The node's comms certificate thumbprint.
    pub thumbprint: Thumbprint,
    /// The cluster's registry.
    pub registry: MachineRegistry,
}

/// The API's routes, apart from serving them (tests call it directly).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api", get(root))
        .route(CERTIFICATE_PATH, get(certificate))
        .route(MACHINES_PATH, post(machines::register).get(machines::list))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(state))
}

async fn root(State(state): State<Arc<ApiState>>) -> Json<RootResource> {
    Json(RootResource {
        application: "Octopus Deploy (octopoll mock node)".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "3.0.0".into(),
        node: Some(state.node.to_string()),
    })
}

async fn certificate(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<CertificateResource>, ApiError> {
    error::authorize(&state, &headers)?;
    Ok(Json(CertificateResource {
        id: "certificate-global".into(),
        thumbprint: state.thumbprint.to_string(),
    }))
}

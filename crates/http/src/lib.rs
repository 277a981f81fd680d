//! What octopoll's local HTTP APIs share: the node and swarm control APIs, the
//! run's dashboard and control API, its metrics and the chaos proxy's API. They
//! are served one way ([`serve()`]: a cap on connections, deadlines on silent
//! and slow clients), answer errors in one JSON shape ([`error`]) and keep other
//! web pages out ([`guard::local_only`]): any page a user opens could otherwise
//! kill nodes or open proxies through them.

pub mod guard;
pub mod serve;

pub use guard::{local_only, Refusal};
pub use serve::{serve, ServeLimits};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A JSON error, as every octopoll control API answers one:
/// `{"error": message, "status": code}` (toxiproxy's shape).
pub fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message, "status": status.as_u16() })),
    )
        .into_response()
}

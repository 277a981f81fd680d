//! The API's one error type: a status and a short reason for the caller, in
//! Octopus's `ErrorMessage` shape; details stay in the log.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use octopoll_wire::api::{ErrorResource, API_KEY_HEADER};

use super::ApiState;

/// An API failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `X-Octopus-ApiKey` header.
    #[error("missing X-Octopus-ApiKey header")]
    MissingKey,
    /// The key does not match.
    #[error("invalid API key")]
    WrongKey,
    /// The body is malformed; names the bad field.
    #[error("{0}")]
    BadRequest(String),
    /// The registration conflicts with an existing machine.
    #[error("{0}")]
    Conflict(String),
    /// The shared machine registry could not be reached: try again.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::WrongKey => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::info!(status = %self.status(), error = %self, "API request refused");
        let body = ErrorResource {
            error_message: self.to_string(),
            errors: vec![],
        };
        (self.status(), Json(body)).into_response()
    }
}

/// Checks the API key header in constant time; never logs the key.
pub(super) fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get(API_KEY_HEADER).ok_or(ApiError::MissingKey)?;
    let presented = presented.to_str().map_err(|_| ApiError::WrongKey)?;
    if state.api_key.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::WrongKey)
    }
}

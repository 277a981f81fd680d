//! The API's one error type: a status and a short reason for the caller, in
//! Octopus's `ErrorMessage` shape; details stay in the log.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use octopoll_wire::api::{ErrorResource, API_KEY_HEADER};

use octopoll_pki::ApiKey;

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
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than `max_api_body_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The registration conflicts with an existing machine.
    #[error("{0}")]
    Conflict(String),
    /// The shared machine registry could not be reached: try again.
    #[error("{0}")]
    Unavailable(String),
    /// Registrations arrive faster than `registrations_per_second`: try again after
    /// the delay (sent as `Retry-After`, whole seconds, at least 1).
    #[error("too many registrations: this node accepts {per_second} per second; retry after {retry_after_secs} s")]
    TooManyRequests {
        /// The configured rate.
        per_second: u32,
        /// When to try again.
        retry_after_secs: u64,
    },
    /// The request took longer than `api_request_timeout`.
    #[error("the request took longer than {0:?}")]
    RequestTimeout(std::time::Duration),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::WrongKey => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
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
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
        }
        response
    }
}

/// Checks the `X-Octopus-ApiKey` header against `key` in constant time, as every
/// octopoll API that needs the key does ([`ApiError::MissingKey`] or
/// [`ApiError::WrongKey`] if it fails); never logs the key.
pub fn authorize(key: &ApiKey, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get(API_KEY_HEADER).ok_or(ApiError::MissingKey)?;
    let presented = presented.to_str().map_err(|_| ApiError::WrongKey)?;
    if key.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::WrongKey)
    }
}

//! Toxiproxy's HTTP API over a [`Chaos`] registry, so toxiproxy clients and habits
//! work unchanged.
//!
//! * `GET /version` (`{"version": "…"}`)
//! * `GET /proxies`, `POST /proxies`
//! * `POST /populate`: create or replace a list of proxies
//! * `GET|PATCH|POST|DELETE /proxies/{name}` (`POST` updates too, as before
//!   toxiproxy 2.6)
//! * `GET|POST /proxies/{name}/toxics`
//! * `GET|PATCH|POST|DELETE /proxies/{name}/toxics/{toxic}`
//! * `POST /reset`
//!
//! Errors answer `{"error": "...", "status": N}` with status N, as toxiproxy does.
//!
//! Served with [`serve`], the API is behind [`octopoll_http::local_only`]: no other
//! web page can drive it. A proxy relays to anywhere, so proxies created or moved
//! through the API listen on loopback addresses only, unless the API was started
//! with [`ListenPolicy::Any`] (`octopoll proxy --allow-public-listen`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::{ProxyConfig, ProxyInfo, ProxyUpdate};
use crate::toxic::{Toxic, ToxicUpdate};
use crate::{Chaos, Error};

/// An API failure, answered in toxiproxy's error shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The registry refused.
    #[error(transparent)]
    Chaos(#[from] Error),
    /// The body is not the JSON expected.
    #[error("bad request body: {0}")]
    BadRequest(String),
    /// A listen address the API's policy does not allow.
    #[error("proxies created through the API listen on loopback addresses only, not {0} (start `octopoll proxy --allow-public-listen` to allow any)")]
    PublicListen(std::net::SocketAddr),
}

impl ApiError {
    /// The HTTP status toxiproxy gives this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Chaos(Error::ProxyExists(_) | Error::ToxicExists { .. }) => {
                StatusCode::CONFLICT
            }
            ApiError::Chaos(Error::NoSuchProxy(_) | Error::NoSuchToxic { .. }) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Chaos(Error::InvalidToxic(_) | Error::InvalidProxy(_))
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PublicListen(_) => StatusCode::FORBIDDEN,
            ApiError::Chaos(Error::Bind { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message with its causes, e.g. the OS error behind a failed bind.
    fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = std::error::Error::source(cause);
        }
        message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.message();
        tracing::info!(%status, error = %message, "chaos API request refused");
        let body = serde_json::json!({"error": message, "status": status.as_u16()});
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Where proxies created or moved through the API may listen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenPolicy {
    /// Loopback addresses only: a proxy on every interface would relay the
    /// network to anywhere for whoever reaches it.
    #[default]
    Loopback,
    /// Any address.
    Any,
}

impl ListenPolicy {
    fn allow(self, listen: std::net::SocketAddr) -> ApiResult<()> {
        match self {
            ListenPolicy::Loopback if !listen.ip().is_loopback() => {
                Err(ApiError::PublicListen(listen))
            }
            _ => Ok(()),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct ApiState {
    chaos: Chaos,
    listen: ListenPolicy,
}

impl FromRef<ApiState> for Chaos {
    fn from_ref(state: &ApiState) -> Chaos {
        state.chaos.clone()
    }
}

impl FromRef<ApiState> for ListenPolicy {
    fn from_ref(state: &ApiState) -> ListenPolicy {
        state.listen
    }
}

/// The API's routes over `chaos`, with new proxies' addresses held to `listen`.
pub fn router(chaos: Chaos, listen: ListenPolicy) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/proxies", get(list).post(create))
        .route("/populate", post(populate))
        .route(
            "/proxies/{name}",
            get(show).patch(update).post(update).delete(delete),
        )
        .route("/proxies/{name}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{name}/toxics/{toxic}",
            get(show_toxic)
                .patch(update_toxic)
                .post(update_toxic)
                .delete(remove_toxic),
        )
        .with_state(ApiState { chaos, listen })
}

/// Serves the API on `listener`, behind the guard that keeps other web pages
/// out, until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    chaos: Chaos,
    listen: ListenPolicy,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = octopoll_http::ServeLimits::default();
    octopoll_http::serve(listener, router(chaos, listen), limits, shutdown).await
}

/// Parses a JSON body, answering 400 on anything else.
fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION")}))
}

async fn reset(State(chaos): State<Chaos>) -> ApiResult<StatusCode> {
    chaos.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(chaos): State<Chaos>) -> Json<BTreeMap<String, ProxyInfo>> {
    let proxies = chaos.list().await;
    Json(proxies.into_iter().map(|p| (p.name.clone(), p)).collect())
}

async fn create(
    State(chaos): State<Chaos>,
    State(listen): State<ListenPolicy>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProxyInfo>)> {
    let config: ProxyConfig = parse(&body)?;
    listen.allow(config.listen)?;
    let info = chaos.create(config).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Creates each proxy of the list, replacing one of the same name whose
/// settings differ (one that already matches is left as it is, connections
/// and toxics included). Every entry is checked before any is touched; a
/// proxy that then cannot start ends the call with its error, the ones
/// before it in place.
async fn populate(
    State(chaos): State<Chaos>,
    State(listen): State<ListenPolicy>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let configs: Vec<ProxyConfig> = parse(&body)?;
    let mut names = std::collections::BTreeSet::new();
    for config in &configs {
        listen.allow(config.listen)?;
        if !names.insert(config.name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "proxy {:?} is in the list twice",
                config.name
            )));
        }
    }
    let mut proxies = Vec::with_capacity(configs.len());
    for config in configs {
        let existing = chaos.get(&config.name).await.ok();
        let info = match existing {
            Some(info) if matches(&info, &config) => info,
            Some(_) => {
                chaos.delete(&config.name).await?;
                chaos.create(config).await?
            }
            None => chaos.create(config).await?,
        };
        proxies.push(info);
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "proxies": proxies })),
    ))
}

/// Whether a running proxy already is what `config` asks for (port 0: any
/// port on the same address).
fn matches(info: &ProxyInfo, config: &ProxyConfig) -> bool {
    let listen = info.listen == config.listen
        || (config.listen.port() == 0 && info.listen.ip() == config.listen.ip());
    listen && info.upstream == config.upstream && info.enabled == config.enabled
}

async fn show(State(chaos): State<Chaos>, Path(name): Path<String>) -> ApiResult<Json<ProxyInfo>> {
    Ok(Json(chaos.get(&name).await?))
}

async fn update(
    State(chaos): State<Chaos>,
    State(listen): State<ListenPolicy>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ProxyInfo>> {
    let update: ProxyUpdate = parse(&body)?;
    if let Some(to) = update.listen {
        listen.allow(to)?;
    }
    Ok(Json(chaos.update(&name, update).await?))
}

async fn delete(State(chaos): State<Chaos>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    chaos.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxics(
    State(chaos): State<Chaos>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Toxic>>> {
    Ok(Json(chaos.toxics(&name).await?))
}

async fn add_toxic(
    State(chaos): State<Chaos>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Toxic>> {
    // An unknown proxy is a 404 even when the body is bad too.
    chaos.get(&name).await?;
    let toxic: Toxic = parse(&body)?;
    Ok(Json(chaos.add_toxic(&name, toxic).await?))
}

async fn show_toxic(
    State(chaos): State<Chaos>,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult<Json<Toxic>> {
    Ok(Json(chaos.toxic(&name, &toxic).await?))
}

async fn update_toxic(
    State(chaos): State<Chaos>,
    Path((name, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Toxic>> {
    let update: ToxicUpdate = parse(&body)?;
    Ok(Json(chaos.update_toxic(&name, &toxic, update).await?))
}

async fn remove_toxic(
    State(chaos): State<Chaos>,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    chaos.remove_toxic(&name, &toxic).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;

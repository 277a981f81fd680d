//! `POST /api/machines`, `GET /api/machines` and `DELETE /api/machines/{id}`:
//! polling (`TentacleActive`, `poll://…/`) and listening (`TentaclePassive`,
//! `https://host:port/`) machines alike.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use octopoll_pki::Thumbprint;
use octopoll_wire::api::{EndpointResource, MachineResource, TENTACLE_ACTIVE, TENTACLE_PASSIVE};

use super::error::authorize;
use super::{ApiError, ApiState};
use crate::registry::{NewMachine, RegisterError, Registered};
use crate::{Endpoint, Machine};

pub(super) async fn register(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<MachineResource>, JsonRejection>,
) -> Result<(StatusCode, Json<MachineResource>), ApiError> {
    authorize(&state.api_key, &headers)?;
    state.registrations.check()?;
    let Json(resource) = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(rejection.body_text())
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let new = validate(resource)?;
    let (status, machine) = match state.registry.register(new).await {
        Ok(Registered::Created(machine)) => {
            tracing::info!(node = %state.node, machine = %machine.name, thumbprint = %machine.thumbprint, "machine registered");
            (StatusCode::CREATED, machine)
        }
        Ok(Registered::Unchanged(machine)) => (StatusCode::OK, machine),
        Err(RegisterError::Conflict(conflict)) => {
            return Err(ApiError::Conflict(conflict.to_string()))
        }
        Err(error) => return Err(ApiError::Unavailable(error.to_string())),
    };
    Ok((status, Json(resource_of(&machine))))
}

pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state.api_key, &headers)?;
    let machine = state
        .registry
        .machines()
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no machine {id:?}")))?;
    state
        .registry
        .deregister(&machine.thumbprint)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::info!(node = %state.node, machine = %machine.name, "machine deregistered");
    Ok(StatusCode::OK)
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<MachineResource>>, ApiError> {
    authorize(&state.api_key, &headers)?;
    Ok(Json(
        state.registry.machines().iter().map(resource_of).collect(),
    ))
}

fn validate(resource: MachineResource) -> Result<NewMachine, ApiError> {
    let bad = |field: &str, why: String| ApiError::BadRequest(format!("{field}: {why}"));
    if resource.name.trim().is_empty() {
        return Err(bad("Name", "must not be empty".into()));
    }
    let endpoint = resource.endpoint;
    let uri = || endpoint.uri.parse::<Endpoint>();
    let parsed = match endpoint.communication_style.as_str() {
        TENTACLE_ACTIVE => uri()
            .ok()
            .filter(|e| e.subscription().is_some())
            .ok_or_else(|| {
                bad(
                    "Endpoint.Uri",
                    format!(
                        "{:?} is not a polling subscription (poll://…/), which TentacleActive needs",
                        endpoint.uri
                    ),
                )
            })?,
        TENTACLE_PASSIVE => match uri() {
            Ok(listening @ Endpoint::Listening(_)) => listening,
            Ok(Endpoint::Polling(_)) => {
                return Err(bad(
                    "Endpoint.Uri",
                    format!(
                        "{:?} is a polling subscription, but TentaclePassive needs the Tentacle's address (https://host:10933/)",
                        endpoint.uri
                    ),
                ))
            }
            Err(e) => return Err(bad("Endpoint.Uri", e.to_string())),
        },
        other => {
            return Err(bad(
                "Endpoint.CommunicationStyle",
                format!("unknown style {other:?}: TentacleActive or TentaclePassive"),
            ))
        }
    };
    let thumbprint: Thumbprint = endpoint
        .thumbprint
        .parse()
        .map_err(|e| bad("Endpoint.Thumbprint", format!("{e}")))?;
    Ok(NewMachine {
        name: resource.name,
        thumbprint,
        endpoint: parsed,
        roles: resource.roles,
        environments: resource.environment_ids,
    })
}

fn resource_of(machine: &Machine) -> MachineResource {
    MachineResource {
        id: Some(machine.id.clone()),
        name: machine.name.clone(),
        endpoint: match &machine.endpoint {
            Endpoint::Polling(subscription) => {
                EndpointResource::polling(subscription, machine.thumbprint)
            }
            Endpoint::Listening(address) => {
                EndpointResource::listening(address, machine.thumbprint)
            }
        },
        roles: machine.roles.clone(),
        environment_ids: machine.environments.clone(),
    }
}

//! `POST /api/machines` and `GET /api/machines`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use octopoll_pki::Thumbprint;
use octopoll_wire::api::{EndpointResource, MachineResource, TENTACLE_ACTIVE, TENTACLE_PASSIVE};
use octopoll_wire::SubscriptionId;

use super::error::authorize;
use super::{ApiError, ApiState};
use crate::registry::{NewMachine, RegisterError, Registered};
use crate::Machine;

pub(super) async fn register(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<MachineResource>, JsonRejection>,
) -> Result<(StatusCode, Json<MachineResource>), ApiError> {
    authorize(&state, &headers)?;
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
    authorize(&state, &headers)?;
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
    authorize(&state, &headers)?;
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
    match endpoint.communication_style.as_str() {
        TENTACLE_ACTIVE => {}
        TENTACLE_PASSIVE => {
            return Err(bad(
                "Endpoint.CommunicationStyle",
                "TentaclePassive (listening) is not supported by this mock node yet; use TentacleActive".into(),
            ))
        }
        other => return Err(bad("Endpoint.CommunicationStyle", format!("unknown style {other:?}"))),
    }
    let subscription: SubscriptionId = endpoint
        .uri
        .parse()
        .map_err(|e| bad("Endpoint.Uri", format!("{e}")))?;
    let thumbprint: Thumbprint = endpoint
        .thumbprint
        .parse()
        .map_err(|e| bad("Endpoint.Thumbprint", format!("{e}")))?;
    Ok(NewMachine {
        name: resource.name,
        thumbprint,
        subscription,
        roles: resource.roles,
        environments: resource.environment_ids,
    })
}

fn resource_of(machine: &Machine) -> MachineResource {
    MachineResource {
        id: Some(machine.id.clone()),
        name: machine.name.clone(),
        endpoint: EndpointResource {
            communication_style: TENTACLE_ACTIVE.into(),
            uri: machine.subscription.to_string(),
            thumbprint: machine.thumbprint.to_string(),
        },
        roles: machine.roles.clone(),
        environment_ids: machine.environments.clone(),
    }
}

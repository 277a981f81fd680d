//! The Octopus REST resources of Tentacle registration, as JSON bodies.
//!
//! Field names are Octopus's (PascalCase). Only what registration needs is here;
//! unknown fields from a real server are ignored when reading.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SubscriptionId;

/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "X-Octopus-ApiKey";
/// Path of the server certificate resource.
pub const CERTIFICATE_PATH: &str = "/api/configuration/certificates/certificate-global";
/// Path of the machines collection.
pub const MACHINES_PATH: &str = "/api/machines";
/// `CommunicationStyle` of a polling Tentacle.
pub const TENTACLE_ACTIVE: &str = "TentacleActive";
/// `CommunicationStyle` of a listening Tentacle.
pub const TENTACLE_PASSIVE: &str = "TentaclePassive";

/// `GET /api`: what the server is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootResource {
    /// Product name.
    pub application: String,
    /// Server version.
    pub version: String,
    /// API version.
    pub api_version: String,
    /// Which node answered (octopoll addition, useful behind a balancer).
    #[serde(default)]
    pub node: Option<String>,
}

/// `GET /api/configuration/certificates/certificate-global`: the server's comms certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateResource {
    /// `certificate-global`.
    pub id: String,
    /// Its thumbprint, uppercase hex.
    pub thumbprint: String,
}

/// How Octopus reaches the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointResource {
    /// `TentacleActive` (polling) or `TentaclePassive` (listening).
    pub communication_style: String,
    /// `poll://<id>/` for polling.
    pub uri: String,
    /// The Tentacle's certificate thumbprint.
    pub thumbprint: String,
}

impl EndpointResource {
    /// A polling Tentacle's: `TentacleActive` under its `poll://…/` subscription.
    pub fn polling(subscription: &SubscriptionId, thumbprint: impl fmt::Display) -> Self {
        Self {
            communication_style: TENTACLE_ACTIVE.into(),
            uri: subscription.to_string(),
            thumbprint: thumbprint.to_string(),
        }
    }

    /// A listening Tentacle's: `TentaclePassive` at its `https://host:port/`.
    pub fn listening(uri: impl fmt::Display, thumbprint: impl fmt::Display) -> Self {
        Self {
            communication_style: TENTACLE_PASSIVE.into(),
            uri: uri.to_string(),
            thumbprint: thumbprint.to_string(),
        }
    }
}

/// `POST /api/machines` body and answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MachineResource {
    /// `Machines-<n>`; absent when creating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name, unique.
    pub name: String,
    /// How to reach it.
    pub endpoint: EndpointResource,
    /// Target roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Environment ids.
    #[serde(default)]
    pub environment_ids: Vec<String>,
}

/// The body of every error answer, in Octopus's shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResource {
    /// One line saying what was wrong.
    pub error_message: String,
    /// Details, one per problem.
    #[serde(default)]
    pub errors: Vec<String>,
}

//! Tentacle service contracts in wire form: what a node asks and an agent answers.
//!
//! Complex values carry `$type` where Halibut's serializer writes it (a param or a
//! result declared as `object`), never on nested typed properties.

pub mod capabilities;
pub mod echo;
pub mod script;

use bson::Bson;
use uuid::Uuid;

use crate::{RequestMessage, ServiceEndPoint};

impl RequestMessage {
    /// A call of `service.method(params)`, with an id in Halibut's form:
    /// `<service>::<method>Async[<n>] / <activity id>`.
    pub fn call(
        service: &str,
        method: &str,
        params: Vec<Bson>,
        endpoint: ServiceEndPoint,
        call_number: u64,
    ) -> Self {
        let activity_id = Uuid::new_v4();
        Self {
            id: format!("{service}::{method}Async[{call_number}] / {activity_id}"),
            activity_id,
            endpoint,
            service: service.to_owned(),
            method: method.to_owned(),
            params,
        }
    }
}

/// The `$type` name of a Tentacle contract type.
pub(crate) fn contract_type(namespace: &str, name: &str) -> String {
    format!("Octopus.Tentacle.Contracts.{namespace}{name}, Octopus.Tentacle.Contracts")
}

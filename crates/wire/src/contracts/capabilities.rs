//! `ICapabilitiesServiceV2.GetCapabilities`.

use bson::{doc, Bson};

use super::contract_type;
use crate::{RequestMessage, ServiceEndPoint};

/// The contract's interface name.
pub const SERVICE: &str = "ICapabilitiesServiceV2";
/// Its one method.
pub const GET_CAPABILITIES: &str = "GetCapabilities";

/// What a non-Kubernetes Tentacle reports: a server then never calls V1 `IScriptService`.
pub const TENTACLE_CAPABILITIES: &[&str] =
    &["IScriptService", "IFileTransferService", "IScriptServiceV2"];

/// `GetCapabilities()` for `endpoint`: what Octopus's health check sends.
pub fn request(endpoint: ServiceEndPoint, call_number: u64) -> RequestMessage {
    RequestMessage::call(SERVICE, GET_CAPABILITIES, Vec::new(), endpoint, call_number)
}

/// The `CapabilitiesResponseV2` result listing `capabilities`.
pub fn response(capabilities: &[&str]) -> Bson {
    Bson::Document(doc! {
        "$type": contract_type("Capabilities.", "CapabilitiesResponseV2"),
        "SupportedCapabilities": capabilities.iter().map(|c| Bson::from(*c)).collect::<Vec<_>>(),
    })
}

/// The capability names in a `CapabilitiesResponseV2` result.
pub fn parse_response(result: &Bson) -> Option<Vec<String>> {
    let list = result
        .as_document()?
        .get_array("SupportedCapabilities")
        .ok()?;
    list.iter().map(|c| c.as_str().map(str::to_owned)).collect()
}

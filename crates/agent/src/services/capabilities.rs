//! `ICapabilitiesServiceV2`: answers like a non-Kubernetes Tentacle.

use octopoll_wire::contracts::capabilities::{response, GET_CAPABILITIES, TENTACLE_CAPABILITIES};
use octopoll_wire::RequestMessage;

use super::{method_not_found, CallResult};

pub(super) use octopoll_wire::contracts::capabilities::SERVICE;

pub(super) fn call(request: &RequestMessage) -> CallResult {
    match request.method.as_str() {
        GET_CAPABILITIES => Ok((response(TENTACLE_CAPABILITIES), Vec::new())),
        other => Err(method_not_found("CapabilitiesServiceV2", other)),
    }
}

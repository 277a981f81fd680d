//! `IEchoService`: Halibut's test service, the cheapest round trip.

use octopoll_wire::contracts::echo::{answer, SAY_HELLO};
use octopoll_wire::{RequestMessage, ServerError};

use super::{method_not_found, CallResult};

pub(super) use octopoll_wire::contracts::echo::SERVICE;

pub(super) fn call(request: &RequestMessage) -> CallResult {
    match request.method.as_str() {
        SAY_HELLO => {
            let name = request
                .params
                .first()
                .and_then(bson::Bson::as_str)
                .ok_or_else(|| ServerError::thrown("SayHello takes one string parameter"))?;
            Ok((answer(name), Vec::new()))
        }
        other => Err(method_not_found("EchoService", other)),
    }
}

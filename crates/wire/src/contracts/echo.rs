//! `IEchoService.SayHello`: Halibut's own test service, the cheapest round trip.

use bson::Bson;

use crate::{RequestMessage, ServiceEndPoint};

/// The contract's interface name.
pub const SERVICE: &str = "IEchoService";
/// Its method.
pub const SAY_HELLO: &str = "SayHello";

/// `SayHello(name)` for `endpoint`.
pub fn request(endpoint: ServiceEndPoint, name: &str, call_number: u64) -> RequestMessage {
    RequestMessage::call(SERVICE, SAY_HELLO, params(name), endpoint, call_number)
}

/// The params of `SayHello(name)`.
pub fn params(name: &str) -> Vec<Bson> {
    vec![Bson::from(name)]
}

/// The answer, as Halibut's test service gives it: the name and `...`.
pub fn answer(name: &str) -> Bson {
    Bson::from(format!("{name}..."))
}

//! The simulated Tentacle services an agent answers requests with.
//!
//! Dispatch mirrors a real Tentacle: a service it does not host gets Tentacle's
//! "has not been registered" error, an unknown method Halibut's "not found" error,
//! and a method that fails the `TargetInvocationException` shape.

mod capabilities;
mod echo;
mod file_transfer;
mod script;

use bson::Bson;
use octopoll_wire::{DataStream, RequestMessage, ResponseMessage, ServerError};

use crate::ServiceConfig;
pub use script::ScriptService;

/// What a service call returns: a result or a thrown error, and any streams.
pub(crate) type CallResult = Result<(Bson, Vec<DataStream>), ServerError>;

/// The services one agent hosts.
#[derive(Debug)]
pub struct Services {
    script: ScriptService,
}

impl Services {
    /// The services, configured.
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            script: ScriptService::new(config.script_base_duration),
        }
    }

    /// Runs `request` and builds the response (with the request's id) and its streams.
    pub async fn dispatch(
        &self,
        request: &RequestMessage,
        streams: Vec<DataStream>,
    ) -> (ResponseMessage, Vec<DataStream>) {
        let result = match request.service.as_str() {
            capabilities::SERVICE => capabilities::call(request),
            echo::SERVICE => echo::call(request),
            script::SERVICE => self.script.call(request).await,
            file_transfer::SERVICE => file_transfer::call(request, streams),
            other => Err(ServerError {
                message: format!("Error: {other} has not been registered through an IAutofacServiceSource"),
                details: Some(format!(
                    "Octopus.Tentacle.Communications.UnknownServiceNameException: Error: {other} has not been registered through an IAutofacServiceSource"
                )),
                halibut_error_type: None,
            }),
        };
        let (result, error, out_streams) = match result {
            Ok((result, streams)) => (result, None, streams),
            Err(error) => (Bson::Null, Some(error), Vec::new()),
        };
        let response = ResponseMessage {
            id: request.id.clone(),
            error,
            result,
        };
        (response, out_streams)
    }
}

/// Halibut's error for a method the service does not have.
pub(crate) fn method_not_found(implementation: &str, method: &str) -> ServerError {
    ServerError {
        message: format!("Method {implementation}::{method}Async not found"),
        details: None,
        halibut_error_type: Some("Halibut.Exceptions.MethodNotFoundHalibutClientException".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_wire::ServiceEndPoint;

    fn call(service: &str, method: &str, params: Vec<Bson>) -> RequestMessage {
        RequestMessage::call(
            service,
            method,
            params,
            ServiceEndPoint::new("poll://a/", ""),
            1,
        )
    }

    #[tokio::test]
    async fn unknown_service_and_method_answer_like_tentacle() {
        let services = Services::new(ServiceConfig::default());
        let (response, _) = services
            .dispatch(&call("IScriptService", "StartScript", vec![]), vec![])
            .await;
        let error = response.error.unwrap();
        assert_eq!(
            error.message,
            "Error: IScriptService has not been registered through an IAutofacServiceSource"
        );
        assert_eq!(error.halibut_error_type, None);

        let (response, _) = services
            .dispatch(&call("IEchoService", "Nope", vec![]), vec![])
            .await;
        assert!(response
            .error
            .unwrap()
            .message
            .contains("NopeAsync not found"));
    }

    #[tokio::test]
    async fn echo_and_capabilities_answer() {
        let services = Services::new(ServiceConfig::default());
        let request = call("IEchoService", "SayHello", vec![Bson::from("Alice")]);
        let (response, _) = services.dispatch(&request, vec![]).await;
        assert_eq!(response.id, request.id);
        assert_eq!(response.result, Bson::from("Alice..."));
        let (response, _) = services
            .dispatch(
                &call("ICapabilitiesServiceV2", "GetCapabilities", vec![]),
                vec![],
            )
            .await;
        let caps =
            octopoll_wire::contracts::capabilities::parse_response(&response.result).unwrap();
        assert!(caps.contains(&"IScriptServiceV2".to_string()));
    }
}

//! Health checks, as Octopus runs them: `ICapabilitiesServiceV2.GetCapabilities`
//! on a machine, whichever way the node reaches it. A polling machine's check is
//! queued for its subscription and collected by one of its connections; a
//! listening machine's is a call the node makes to its address.

use std::collections::BTreeMap;

use futures_util::stream::{self, StreamExt};
use octopoll_wire::contracts::capabilities;
use octopoll_wire::ServiceEndPoint;

use crate::listening::ListeningError;
use crate::{Endpoint, FailReason, Machine, Node};

/// How many machines [`Node::health_check_all`] checks at once.
const CONCURRENT_CHECKS: usize = 64;

/// Why a machine is unhealthy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The call to a listening machine failed.
    #[error(transparent)]
    Listening(#[from] ListeningError),
    /// No connection of the polling machine collected or answered the check.
    #[error("the polling machine did not answer the health check: {0}")]
    Polling(FailReason),
    /// The machine answered, but not with a capabilities list.
    #[error("the machine answered the health check wrongly: {0}")]
    Answer(String),
}

/// One machine's check.
#[derive(Debug)]
pub struct HealthCheck {
    /// The machine.
    pub machine: Machine,
    /// Its capabilities, or why it is unhealthy.
    pub result: Result<Vec<String>, HealthError>,
}

/// Every machine's check, from one node.
#[derive(Debug, Default)]
pub struct HealthSummary {
    /// The checks, in registration order.
    pub checks: Vec<HealthCheck>,
}

impl HealthSummary {
    /// `(healthy, unhealthy)` machines by kind (`polling`, `listening`).
    pub fn by_kind(&self) -> BTreeMap<&'static str, (usize, usize)> {
        let mut counts = BTreeMap::new();
        for check in &self.checks {
            let (healthy, unhealthy) = counts.entry(check.machine.endpoint.kind()).or_default();
            match check.result {
                Ok(_) => *healthy += 1,
                Err(_) => *unhealthy += 1,
            }
        }
        counts
    }

    /// The unhealthy machines' checks.
    pub fn unhealthy(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.iter().filter(|c| c.result.is_err())
    }
}

impl Node {
    /// Health-checks `machine` from this node: its capabilities, or why it is
    /// unhealthy. A polling machine's check waits at most the pickup timeout for
    /// a connection to this node to collect it.
    pub async fn health_check(&self, machine: &Machine) -> Result<Vec<String>, HealthError> {
        match &machine.endpoint {
            Endpoint::Listening(address) => Ok(self
                .health_check_listening(&address.authority(), machine.thumbprint)
                .await?),
            Endpoint::Polling(subscription) => {
                let request = capabilities::request(
                    ServiceEndPoint::new(subscription.as_str(), machine.thumbprint.to_string()),
                    1,
                );
                let reply = self
                    .send(subscription, request, vec![])
                    .await
                    .result
                    .map_err(HealthError::Polling)?;
                if let Some(error) = &reply.response.error {
                    return Err(HealthError::Answer(error.message.clone()));
                }
                capabilities::parse_response(&reply.response.result).ok_or_else(|| {
                    HealthError::Answer(
                        "GetCapabilities answered without a capabilities list".into(),
                    )
                })
            }
        }
    }

    /// Health-checks every registered machine, polling and listening, from this
    /// node, a few dozen at a time.
    pub async fn health_check_all(&self) -> HealthSummary {
        let checks = stream::iter(self.registry().machines())
            .map(|machine| async move {
                let result = self.health_check(&machine).await;
                HealthCheck { machine, result }
            })
            .buffered(CONCURRENT_CHECKS)
            .collect()
            .await;
        HealthSummary { checks }
    }
}

//! The parent's side of its children's control APIs: a node process
//! ([`RemoteNode`]: status, pairs, machines, faults, requests) and a swarm
//! process ([`RemoteSwarm`]). One HTTP/2 connection per child carries every call,
//! however many requests wait on a node at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use octopoll_node::{FailReason, Machine, NodeId};
use octopoll_pki::ApiKey;
use octopoll_wire::api::API_KEY_HEADER;
use octopoll_wire::{DataStream, RequestMessage, SubscriptionId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use crate::node_api::{HealthAnswer, MachinePair, NodeStatus, SendBody, SendOutcome};
use crate::swarm_process::SwarmStatus;
use octopoll_lab::actions::NodeAction;

/// Bound on a status call or a fault (a graceful stop drains within seconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A control call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The child could not be reached.
    #[error("{url} could not be reached")]
    Unreachable {
        /// What was called.
        url: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// It answered with an error.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// What was called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// A client of one child's control API.
#[derive(Clone, Debug)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    /// Sent with every write.
    key: ApiKey,
}

impl ControlClient {
    /// A client of the API at `addr`, over HTTP/2 without TLS (loopback, or the
    /// private network of a container run), writing with `key`.
    pub fn new(addr: SocketAddr, key: ApiKey) -> Self {
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP/2 client always builds");
        Self {
            http,
            base: format!("http://{addr}"),
            key,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: String,
    ) -> Result<T, RemoteError> {
        let response = request
            .send()
            .await
            .map_err(|source| RemoteError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(RemoteError::Refused {
                url,
                status: status.as_u16(),
                message: body["error"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned(),
            });
        }
        response
            .json()
            .await
            .map_err(|source| RemoteError::Unreachable { url, source })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .http
            .get(&url)
            .header(API_KEY_HEADER, self.key.expose());
        self.call(request.timeout(CALL_TIMEOUT), url).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .post(&url)
            .header(API_KEY_HEADER, self.key.expose())
            .json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        self.call(request, url).await
    }
}

/// A node process, as its parent drives it. Clones share it.
#[derive(Clone, Debug)]
pub struct RemoteNode {
    id: NodeId,
    client: ControlClient,
    /// Whether it runs, as the parent last saw or made it: the workload queues
    /// only on running nodes, without asking first.
    running: Arc<AtomicBool>,
    /// Faults asked for so far: a status read from before the last one is stale.
    acts: Arc<AtomicU64>,
}

impl RemoteNode {
    /// Node `id` whose control API is at `control`; `key` is the cluster's API key.
    pub fn new(id: NodeId, control: SocketAddr, key: ApiKey) -> Self {
        Self {
            id,
            client: ControlClient::new(control, key),
            running: Arc::new(AtomicBool::new(true)),
            acts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Which node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether it runs, as last seen.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Its status now. A node process that does not answer counts as down.
    pub async fn status(&self) -> Result<NodeStatus, RemoteError> {
        let acts = self.acts.load(Ordering::Acquire);
        let status = self.client.get::<NodeStatus>("/api/node").await;
        // A fault asked for meanwhile knows better than this answer.
        if self.acts.load(Ordering::Acquire) == acts {
            let running = status.as_ref().is_ok_and(|s| s.running);
            self.running.store(running, Ordering::Release);
        }
        status
    }

    /// Every registered machine's state with it, by name.
    pub async fn pairs(&self) -> Result<Vec<MachinePair>, RemoteError> {
        self.client.get("/api/node/pairs").await
    }

    /// The registered machines, in name order.
    pub async fn machines(&self) -> Result<Vec<Machine>, RemoteError> {
        self.client.get("/api/machines").await
    }

    /// Health-checks every registered machine from it (`POST /api/health`).
    pub async fn health(&self) -> Result<HealthAnswer, RemoteError> {
        self.client
            .post("/api/health", &(), Some(CALL_TIMEOUT))
            .await
    }

    /// Does `action` to it (its undo when `undo`).
    pub async fn act(&self, action: NodeAction, undo: bool) -> Result<NodeStatus, RemoteError> {
        let name = serde_json::to_value(action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let path = format!("/api/node/{name}?undo={undo}");
        // Marked down before a kill or stop is asked for, so no request is
        // queued on a node going away.
        self.acts.fetch_add(1, Ordering::AcqRel);
        if matches!(action, NodeAction::Kill | NodeAction::Stop) && !undo {
            self.running.store(false, Ordering::Release);
        }
        let status: NodeStatus = self.client.post(&path, &(), Some(CALL_TIMEOUT)).await?;
        self.running.store(status.running, Ordering::Release);
        Ok(status)
    }

    /// Queues `request` on it and waits for its outcome; a node that cannot be
    /// reached fails it with `node-lost`. Dropping the future withdraws it.
    pub async fn send(
        &self,
        subscription: &SubscriptionId,
        request: RequestMessage,
        streams: &[DataStream],
    ) -> (Result<(), FailReason>, Option<Duration>) {
        let body = match SendBody::new(subscription, request, streams) {
            Ok(body) => body,
            Err(error) => {
                warn!(node = %self.id, %error, "a request could not be encoded");
                return (Err(FailReason::ProtocolError), None);
            }
        };
        match self
            .client
            .post::<SendOutcome>("/api/requests", &body, None)
            .await
        {
            Ok(outcome) => outcome.into_parts(),
            Err(RemoteError::Unreachable { .. }) => (Err(FailReason::NodeLost), None),
            Err(error) => {
                warn!(node = %self.id, %error, "a node process refused a request");
                (Err(FailReason::ProtocolError), None)
            }
        }
    }
}

/// A swarm process, as its parent drives it.
#[derive(Clone, Debug)]
pub struct RemoteSwarm {
    client: ControlClient,
}

impl RemoteSwarm {
    /// The swarm whose control API is at `control`; `key` is the cluster's API key.
    pub fn new(control: SocketAddr, key: ApiKey) -> Self {
        Self {
            client: ControlClient::new(control, key),
        }
    }

    /// Its status now.
    pub async fn status(&self) -> Result<SwarmStatus, RemoteError> {
        self.client.get("/api/swarm").await
    }

    /// Starts its agents polling.
    pub async fn poll(&self) -> Result<SwarmStatus, RemoteError> {
        self.client
            .post("/api/swarm/poll", &(), Some(CALL_TIMEOUT))
            .await
    }
}

//! One node: its listeners, queue and counters, and the handle callers use to send
//! requests to the Tentacles polling it.

use std::net::SocketAddr;
use std::sync::Arc;

use octopoll_pki::{Identity, Thumbprint};
use octopoll_wire::{DataStream, RequestMessage, SubscriptionId};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::coverage::PairState;
use crate::metrics::NodeMetrics;
use crate::queue::{FailReason, NodeQueue, Outcome, PendingRequest, RequestCounters, RequestQueue};
use crate::{Error, MachineRegistry, NodeConfig, NodeId, NodeStats, Result};

/// What a node's tasks share.
pub(crate) struct NodeShared {
    pub(crate) config: NodeConfig,
    pub(crate) registry: MachineRegistry,
    pub(crate) queue: Arc<dyn RequestQueue>,
    /// Requests queued on this node, and how they ended.
    pub(crate) counters: Arc<RequestCounters>,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) acceptor: TlsAcceptor,
    /// Cancelled when the drain bound of a stop expires: connection tasks still
    /// running are dropped, which ends any request they hold (see `PendingRequest`'s `Drop`).
    pub(crate) abort: CancellationToken,
}

/// A running node. Dropping it does not stop it; call [`Node::stop`].
pub struct Node {
    shared: Arc<NodeShared>,
    thumbprint: Thumbprint,
    comms_addr: SocketAddr,
    api_addr: SocketAddr,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Node {
    /// Starts a node with a queue of its own on already-bound listeners (bind port 0
    /// in tests and read the port back from [`Node::comms_addr`]).
    pub fn start(
        config: NodeConfig,
        identity: &Identity,
        registry: MachineRegistry,
        comms: TcpListener,
        api: TcpListener,
    ) -> Result<Self> {
        let queue = Arc::new(NodeQueue::per_node(config.id));
        Self::start_with_queue(config, identity, registry, queue, comms, api)
    }

    /// Starts a node that queues its requests in `queue` (a view of a queue other
    /// nodes may share).
    pub fn start_with_queue(
        config: NodeConfig,
        identity: &Identity,
        registry: MachineRegistry,
        queue: Arc<dyn RequestQueue>,
        comms: TcpListener,
        api: TcpListener,
    ) -> Result<Self> {
        let tls_error = |source| Error::Tls {
            node: config.id,
            source,
        };
        let polling_tls = octopoll_pki::tls::polling_server_config(identity, registry.trusted())
            .map_err(tls_error)?;
        let https_tls = octopoll_pki::tls::https_server_config(identity).map_err(tls_error)?;
        let local = |l: &TcpListener, what| {
            l.local_addr().map_err(|source| Error::LocalAddr {
                what,
                node: config.id,
                source,
            })
        };
        let comms_addr = local(&comms, "polling listener")?;
        let api_addr = local(&api, "registration API")?;
        let shared = Arc::new(NodeShared {
            registry: registry.clone(),
            queue,
            counters: Arc::default(),
            metrics: Arc::new(NodeMetrics::default()),
            acceptor: TlsAcceptor::from(Arc::new(polling_tls)),
            abort: CancellationToken::new(),
            config,
        });
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        tracker.spawn(crate::listener::run(
            comms,
            shared.clone(),
            tracker.clone(),
            shutdown.child_token(),
        ));
        let router = api::router(ApiState {
            node: shared.config.id,
            api_key: shared.config.api_key.clone(),
            thumbprint: identity.thumbprint(),
            registry,
        });
        tracker.spawn(api::https::serve(
            api,
            router,
            Arc::new(https_tls),
            tracker.clone(),
            shutdown.child_token(),
        ));
        info!(node = %shared.config.id, %comms_addr, %api_addr, "node started");
        Ok(Self {
            shared,
            thumbprint: identity.thumbprint(),
            comms_addr,
            api_addr,
            tracker,
            shutdown,
        })
    }

    /// Which node this is.
    pub fn id(&self) -> NodeId {
        self.shared.config.id
    }

    /// The comms (polling) port's address.
    pub fn comms_addr(&self) -> SocketAddr {
        self.comms_addr
    }

    /// The registration API's address (HTTPS).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The registration API's base URL, `https://<addr>`.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    /// The thumbprint this node presents.
    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// A cheap, cloneable handle that queues requests on this node.
    pub fn sender(&self) -> NodeSender {
        NodeSender {
            shared: self.shared.clone(),
        }
    }

    /// Queues `request` for `subscription` on this node; see [`NodeSender::send`].
    pub async fn send(
        &self,
        subscription: &SubscriptionId,
        request: RequestMessage,
        streams: Vec<DataStream>,
    ) -> Outcome {
        self.sender().send(subscription, request, streams).await
    }

    /// How many polling connections `subscription` holds to this node now.
    pub fn connections_of(&self, subscription: &SubscriptionId) -> usize {
        self.shared.metrics.connections_of(subscription)
    }

    /// Where `subscription` stands with this node, judged by its long-poll interval.
    pub fn pair_state(&self, subscription: &SubscriptionId) -> PairState {
        self.shared
            .metrics
            .pair_state(subscription, self.shared.config.long_poll)
    }

    /// A snapshot of the node's counters.
    pub fn stats(&self) -> NodeStats {
        let (created, completed, failed) = self.shared.counters.snapshot();
        NodeStats {
            queued: self.shared.queue.depth(),
            requests_created: created,
            requests_completed: completed,
            requests_failed: failed,
            ..self.shared.metrics.snapshot()
        }
    }

    /// Stops gracefully: stops accepting, fails queued requests with `node-stopped`,
    /// lets exchanges in flight finish within the drain bound, then drops whatever
    /// still runs (its requests fail with `connection-lost`). Returns the final stats,
    /// in which every request created has ended.
    pub async fn stop(self) -> NodeStats {
        self.shutdown.cancel();
        let failed = self.shared.queue.stop(FailReason::NodeStopped);
        self.tracker.close();
        if tokio::time::timeout(self.shared.config.drain, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(node = %self.id(), tasks = self.tracker.len(), "drain bound expired; dropping the tasks still running");
            self.shared.abort.cancel();
            self.tracker.wait().await;
        }
        info!(node = %self.id(), failed_queued = failed, "node stopped");
        self.stats()
    }
}

/// Queues requests on one node; clones share the node.
#[derive(Clone)]
pub struct NodeSender {
    shared: Arc<NodeShared>,
}

impl NodeSender {
    /// Which node this sends to.
    pub fn node(&self) -> NodeId {
        self.shared.config.id
    }

    /// Queues `request` for `subscription` on this node and waits for its outcome.
    ///
    /// Only a connection of that subscription *to this node* can collect it (in
    /// shared-queue mode, to any node sharing the queue). If none
    /// does within the pickup timeout it fails with `pickup-timeout`. Dropping the
    /// future before it ends withdraws a request not collected yet.
    pub async fn send(
        &self,
        subscription: &SubscriptionId,
        request: RequestMessage,
        streams: Vec<DataStream>,
    ) -> Outcome {
        let queue = &*self.shared.queue;
        let (pending, mut outcome) =
            PendingRequest::new(self.node(), request, streams, self.shared.counters.clone());
        let _withdraw = Withdraw {
            pending: &pending,
            queue,
            subscription,
        };
        queue.enqueue(subscription, pending.clone());
        tokio::select! {
            done = &mut outcome => return done.unwrap_or_else(|_| dropped()),
            _ = tokio::time::sleep(self.shared.config.pickup_timeout) => {}
        }
        queue.withdraw(subscription, &pending, FailReason::PickupTimeout);
        // Collected before the timeout: the connection bounds the wait for the response.
        outcome.await.unwrap_or_else(|_| dropped())
    }
}

fn dropped() -> Outcome {
    Outcome {
        result: Err(FailReason::ConnectionLost),
        pickup: None,
    }
}

/// Withdraws a request still queued when its caller stops waiting.
struct Withdraw<'a> {
    pending: &'a Arc<PendingRequest>,
    queue: &'a dyn RequestQueue,
    subscription: &'a SubscriptionId,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.queue
            .withdraw(self.subscription, self.pending, FailReason::RunEnded);
    }
}

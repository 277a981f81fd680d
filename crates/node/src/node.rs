//! One node: its listeners, queue and counters, and the handle callers use to send
//! requests to the Tentacles polling it. A node can be stopped gracefully, killed,
//! and started again on the same addresses (the failover faults).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use octopoll_pki::{Identity, Thumbprint};
use octopoll_wire::{DataStream, RequestMessage, SubscriptionId};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api::{self, ApiState};
use crate::coverage::PairState;
use crate::metrics::NodeMetrics;
use crate::queue::{
    FailReason, InProcessQueue, NodeQueue, Outcome, PendingRequest, RequestCounters, RequestQueue,
};
use crate::shared::NodeShared;
use crate::{Error, MachineRegistry, NodeConfig, NodeId, NodeStats, Result};

/// Where a node's queue comes from, each time it starts.
#[derive(Clone)]
pub enum QueueSource {
    /// A fresh queue of its own per start: a killed node loses what it held.
    PerNode,
    /// A view of a queue the cluster's nodes share.
    Shared(Arc<InProcessQueue>),
    /// Halibut's Redis queue, through this node's own link to it.
    #[cfg(feature = "redis")]
    Redis(Arc<crate::queue::RedisQueueLink>),
}

impl QueueSource {
    fn queue_for(&self, node: NodeId) -> Arc<dyn RequestQueue> {
        match self {
            QueueSource::PerNode => Arc::new(NodeQueue::per_node(node)),
            QueueSource::Shared(queue) => Arc::new(queue.for_node(node)),
            #[cfg(feature = "redis")]
            QueueSource::Redis(link) => Arc::new(link.queue_for(node)),
        }
    }
}

/// How a node's last run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Down {
    Stopped,
    Killed,
}

/// A node's running part: replaced on every start.
struct Running {
    shared: Arc<NodeShared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// What stays the same across a node's restarts.
struct NodeInner {
    config: NodeConfig,
    identity: Identity,
    registry: MachineRegistry,
    queue: QueueSource,
    comms_addr: SocketAddr,
    api_addr: SocketAddr,
    /// Kept across restarts, so a node's figures cover the whole run.
    metrics: Arc<NodeMetrics>,
    counters: Arc<RequestCounters>,
    /// The registration rate limit, kept across restarts.
    registrations: Arc<api::RegistrationLimiter>,
    state: Mutex<Result<Running, Down>>,
    /// The comms and API ports, held (bound, not listening) while the node is down.
    reserved: Mutex<Option<(TcpSocket, TcpSocket)>>,
}

impl NodeInner {
    fn running(&self) -> Option<Arc<NodeShared>> {
        self.lock().as_ref().ok().map(|r| r.shared.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Result<Running, Down>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A node: started, stopped, killed and started again on the same addresses.
/// Dropping it does not stop it; call [`Node::stop`] or [`Node::kill`].
pub struct Node {
    inner: Arc<NodeInner>,
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
        Self::start_with_queue(config, identity, registry, QueueSource::PerNode, comms, api)
    }

    /// Starts a node whose queue comes from `queue` (a view of a queue other nodes
    /// may share).
    pub fn start_with_queue(
        config: NodeConfig,
        identity: &Identity,
        registry: MachineRegistry,
        queue: QueueSource,
        comms: TcpListener,
        api: TcpListener,
    ) -> Result<Self> {
        let local = |l: &TcpListener, what| {
            l.local_addr().map_err(|source| Error::LocalAddr {
                what,
                node: config.id,
                source,
            })
        };
        let comms_addr = local(&comms, "polling listener")?;
        let api_addr = local(&api, "registration API")?;
        let registrations = Arc::new(api::RegistrationLimiter::new(
            config.registrations_per_second,
            config.registration_burst,
        ));
        let inner = Arc::new(NodeInner {
            config,
            identity: identity.clone(),
            registry,
            queue,
            comms_addr,
            api_addr,
            metrics: Arc::new(NodeMetrics::default()),
            counters: Arc::default(),
            registrations,
            state: Mutex::new(Err(Down::Stopped)),
            reserved: Mutex::new(None),
        });
        let running = run(&inner, comms, api)?;
        *inner.lock() = Ok(running);
        Ok(Self { inner })
    }

    /// Starts a stopped or killed node again on the addresses it had, with a new
    /// queue (per-node mode) or a new view of the shared one. Does nothing if it runs.
    pub fn start_again(&self) -> Result<()> {
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.is_ok() {
            return Ok(());
        }
        let reserved = inner
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (comms, api) = match reserved {
            Some((comms, api)) => (
                Some(comms.listen(crate::tcp::LISTEN_BACKLOG)),
                Some(api.listen(crate::tcp::LISTEN_BACKLOG)),
            ),
            None => (None, None),
        };
        let open = |listening: Option<std::io::Result<TcpListener>>, addr: SocketAddr, what| {
            listening
                .unwrap_or_else(|| crate::tcp::bind(addr))
                .map_err(|source| Error::Bind {
                    what,
                    node: inner.config.id,
                    addr,
                    source,
                })
        };
        let comms = open(comms, inner.comms_addr, "polling listener")?;
        let api = open(api, inner.api_addr, "registration API")?;
        *state = Ok(run(inner, comms, api)?);
        Ok(())
    }

    /// Which node this is.
    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    /// Whether it runs now.
    pub fn is_running(&self) -> bool {
        self.inner.lock().is_ok()
    }

    /// The comms (polling) port's address.
    pub fn comms_addr(&self) -> SocketAddr {
        self.inner.comms_addr
    }

    /// The registration API's address (HTTPS).
    pub fn api_addr(&self) -> SocketAddr {
        self.inner.api_addr
    }

    /// The registration API's base URL, `https://<addr>`.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.inner.api_addr)
    }

    /// The thumbprint this node presents.
    pub fn thumbprint(&self) -> Thumbprint {
        self.inner.identity.thumbprint()
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Calls the listening Tentacle at `address` (`host:port`), which must present
    /// `thumbprint`, as this node: connect, identify, one request, `END`. The
    /// connect timeout is Tentacle's 60 s; the response is due within the
    /// node's response timeout.
    pub async fn call_listening(
        &self,
        address: &str,
        thumbprint: Thumbprint,
        request: RequestMessage,
        streams: Vec<DataStream>,
    ) -> std::result::Result<crate::Reply, crate::listening::ListeningError> {
        crate::listening::call(
            &self.inner.identity,
            address,
            thumbprint,
            request,
            streams,
            self.listening_bounds(),
        )
        .await
    }

    /// A health check of the listening Tentacle at `address`
    /// (`GetCapabilities`): its capabilities, or why it is unhealthy.
    pub async fn health_check_listening(
        &self,
        address: &str,
        thumbprint: Thumbprint,
    ) -> std::result::Result<Vec<String>, crate::listening::ListeningError> {
        crate::listening::health_check(
            &self.inner.identity,
            address,
            thumbprint,
            self.listening_bounds(),
        )
        .await
    }

    fn listening_bounds(&self) -> crate::listening::CallLimits {
        let config = &self.inner.config;
        crate::listening::CallLimits {
            connect_timeout: config.handshake_queue_timeout,
            exchange_timeout: config.response_timeout,
            limits: config.limits,
        }
    }

    /// A cheap, cloneable handle that queues requests on this node, whichever of
    /// its runs is current when it sends.
    pub fn sender(&self) -> NodeSender {
        NodeSender {
            inner: self.inner.clone(),
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
        self.inner.metrics.connections_of(subscription)
    }

    /// Where `subscription` stands with this node, judged by its long-poll interval.
    pub fn pair_state(&self, subscription: &SubscriptionId) -> PairState {
        self.inner
            .metrics
            .pair_state(subscription, self.inner.config.long_poll)
    }

    /// How many subscriptions poll this node now: [`Node::pair_state`] counted
    /// over every subscription that ever connected, in one pass.
    pub fn polling_pairs(&self) -> usize {
        self.inner
            .metrics
            .polling_pairs(self.inner.config.long_poll)
    }

    /// The registry the node serves.
    pub fn registry(&self) -> &MachineRegistry {
        &self.inner.registry
    }

    /// A fault on a node of the Redis queue: drops every pulse it receives
    /// (`true`), so only its collectors' long-poll timeouts find new work, or
    /// hears them again. `false` returned: this node's queue has no pulses.
    pub fn lose_pulses(&self, lose: bool) -> bool {
        match &self.inner.queue {
            #[cfg(feature = "redis")]
            QueueSource::Redis(link) => {
                link.lose_pulses(lose);
                true
            }
            _ => {
                let _ = lose;
                false
            }
        }
    }

    /// A snapshot of the node's counters, over all its runs.
    pub fn stats(&self) -> NodeStats {
        let (created, completed, failed) = self.inner.counters.snapshot();
        let running = self.inner.running();
        NodeStats {
            queued: running.as_ref().map_or(0, |s| s.queue.depth()),
            handshaking: running.as_ref().map_or(0, |s| {
                s.config.max_concurrent_handshakes.max(1) - s.handshakes.available_permits()
            }),
            requests_created: created,
            requests_completed: completed,
            requests_failed: failed,
            ..self.inner.metrics.snapshot()
        }
    }

    /// Stops gracefully: stops accepting, fails queued requests with `node-stopped`,
    /// lets exchanges in flight finish within the drain bound, then drops whatever
    /// still runs (its requests fail with `connection-lost-in-flight`). Returns the
    /// final stats. A node already down just returns its stats.
    pub async fn stop(&self) -> NodeStats {
        let Some(running) = self.take(Down::Stopped) else {
            return self.stats();
        };
        running.shutdown.cancel();
        let failed = running.shared.queue.stop(FailReason::NodeStopped);
        running.tracker.close();
        if tokio::time::timeout(self.inner.config.drain, running.tracker.wait())
            .await
            .is_err()
        {
            warn!(node = %self.id(), tasks = running.tracker.len(), "drain bound expired; dropping the tasks still running");
            running.shared.abort.cancel();
            running.tracker.wait().await;
        }
        info!(node = %self.id(), failed_queued = failed, "node stopped");
        self.reserve_ports();
        self.stats()
    }

    /// Kills the node, as if its process died: stops accepting, drops every
    /// connection at once (no `END`, no drain: the sockets close as a dead
    /// process's would), and loses its in-memory queue. Requests it had queued or in
    /// flight fail with `node-killed`. Returns the final stats.
    pub async fn kill(&self) -> NodeStats {
        let Some((running, failed)) = self.cut() else {
            return self.stats();
        };
        running.tracker.wait().await;
        warn!(node = %self.id(), failed_queued = failed, "node killed");
        self.reserve_ports();
        self.stats()
    }

    /// Kills the node without waiting for its tasks to end, for code that cannot
    /// `await` (dropping a [`Cluster`](crate::Cluster) does this): what
    /// [`Node::kill`] does, but the tasks and sockets end a moment later, on their own,
    /// and the ports are not held for a restart.
    pub fn abort(&self) {
        self.cut();
    }

    /// What a kill does at once: marks the node killed, cancels its tasks and fails
    /// its queue (`node-killed`); the running state and how many queued requests
    /// failed, or `None` if it was not running.
    fn cut(&self) -> Option<(Running, usize)> {
        let running = self.take(Down::Killed)?;
        running.shared.killed.store(true, Ordering::Release);
        running.shutdown.cancel();
        running.shared.abort.cancel();
        let failed = running.shared.queue.stop(FailReason::NodeKilled);
        running.tracker.close();
        Some((running, failed))
    }

    /// Holds the ports of a node that is down until it starts again.
    fn reserve_ports(&self) {
        let inner = &self.inner;
        match (
            crate::tcp::reserve(inner.comms_addr),
            crate::tcp::reserve(inner.api_addr),
        ) {
            (Ok(comms), Ok(api)) => {
                *inner.reserved.lock().unwrap_or_else(|e| e.into_inner()) = Some((comms, api));
            }
            (Err(error), _) | (_, Err(error)) => {
                debug!(node = %self.id(), %error, "could not hold the ports while down");
            }
        }
    }

    fn take(&self, how: Down) -> Option<Running> {
        std::mem::replace(&mut *self.inner.lock(), Err(how)).ok()
    }
}

/// Starts one run of `inner` on bound listeners.
fn run(inner: &NodeInner, comms: TcpListener, api: TcpListener) -> Result<Running> {
    let config = &inner.config;
    let tls_error = |source| Error::Tls {
        node: config.id,
        source,
    };
    let identity = &inner.identity;
    let polling_tls = octopoll_pki::tls::polling_server_config(identity, inner.registry.trusted())
        .map_err(tls_error)?;
    let https_tls = octopoll_pki::tls::https_server_config(identity).map_err(tls_error)?;
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        registry: inner.registry.clone(),
        queue: inner.queue.queue_for(config.id),
        metrics: inner.metrics.clone(),
        acceptor: TlsAcceptor::from(Arc::new(polling_tls)),
        abort: CancellationToken::new(),
        killed: AtomicBool::new(false),
        handshakes: Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_handshakes.max(1),
        )),
        strangers: Default::default(),
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
        node: config.id,
        api_key: config.api_key.clone(),
        thumbprint: identity.thumbprint(),
        registry: inner.registry.clone(),
        registrations: inner.registrations.clone(),
        max_body_bytes: config.max_api_body_bytes,
        request_timeout: config.api_request_timeout,
        queue: shared.queue.clone(),
    });
    tracker.spawn(api::https::serve(
        api,
        router,
        api::https::ApiGuards {
            header_timeout: config.api_header_timeout,
            max_connections: config.max_api_connections,
            metrics: inner.metrics.clone(),
        },
        Arc::new(https_tls),
        tracker.clone(),
        shutdown.child_token(),
        shared.abort.clone(),
    ));
    info!(node = %config.id, comms_addr = %inner.comms_addr, api_addr = %inner.api_addr, "node started");
    Ok(Running {
        shared,
        tracker,
        shutdown,
    })
}

/// Queues requests on one node; clones share the node.
#[derive(Clone)]
pub struct NodeSender {
    inner: Arc<NodeInner>,
}

impl NodeSender {
    /// Which node this sends to.
    pub fn node(&self) -> NodeId {
        self.inner.config.id
    }

    /// Queues `request` for `subscription` on this node and waits for its outcome.
    ///
    /// Only a connection of that subscription *to this node* can collect it (in
    /// shared-queue mode, to any node sharing the queue). If none does within the
    /// pickup timeout it fails with `pickup-timeout`. A node that is down fails it at
    /// once with `node-stopped` or `node-killed`. Dropping the future before it ends
    /// withdraws a request not collected yet.
    pub async fn send(
        &self,
        subscription: &SubscriptionId,
        request: RequestMessage,
        streams: Vec<DataStream>,
    ) -> Outcome {
        let (pending, mut outcome) =
            PendingRequest::new(self.node(), request, streams, self.inner.counters.clone());
        let current = self
            .inner
            .lock()
            .as_ref()
            .map(|running| running.shared.clone())
            .map_err(|down| *down);
        let shared = match current {
            Ok(shared) => shared,
            Err(down) => {
                pending.try_fail_queued(match down {
                    Down::Stopped => FailReason::NodeStopped,
                    Down::Killed => FailReason::NodeKilled,
                });
                return outcome.await.unwrap_or_else(|_| dropped());
            }
        };
        let queue = &*shared.queue;
        let _withdraw = Withdraw {
            pending: &pending,
            queue,
            subscription,
        };
        queue.enqueue(subscription, pending.clone());
        tokio::select! {
            done = &mut outcome => return done.unwrap_or_else(|_| dropped()),
            _ = tokio::time::sleep(shared.config.pickup_timeout) => {}
        }
        queue.withdraw(subscription, &pending, FailReason::PickupTimeout);
        // Collected before the timeout: the connection bounds the wait for the response.
        outcome.await.unwrap_or_else(|_| dropped())
    }
}

fn dropped() -> Outcome {
    Outcome {
        result: Err(FailReason::ConnectionLostInFlight),
        pickup: None,
        error: None,
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

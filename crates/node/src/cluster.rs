//! A cluster: N nodes sharing one machine registry and one server certificate, as
//! Octopus HA nodes share their database (and with it the certificate), laid out
//! on one address with a port per node or on an address per node with one port.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use octopoll_pki::{ApiKey, Identity};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::coverage::{Coverage, CoverageMatrix};
use crate::node::QueueSource;
use crate::queue::{InProcessQueue, QueueMode, RedisQueueConfig};
use crate::{Error, MachineRegistry, Node, NodeConfig, NodeId, NodeStats, Result};

/// How the nodes of a cluster are addressed (the two layouts the Octopus HA docs
/// recommend for polling Tentacles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Addressing {
    /// One address; node *i* listens on the base port + *i* − 1 (10943, 10944, …).
    #[default]
    UniquePort,
    /// Node *i* listens on the base IPv4 address + *i* − 1 (127.0.0.1, 127.0.0.2, …),
    /// every node on the same port. With port 0, node 1 picks a free port and the
    /// others take the same one.
    UniqueAddress,
}

/// How to lay out a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes, at least 1.
    pub nodes: u16,
    /// Settings every node shares (its `id` is replaced per node).
    pub node: NodeConfig,
    /// The address node 1 binds (loopback by default).
    pub bind: IpAddr,
    /// Port per node, or address per node.
    pub addressing: Addressing,
    /// Comms port of node 1 (see [`Addressing`] for the others). 0 picks free ports.
    pub comms_port: u16,
    /// API port of node 1, likewise. 0 picks free ports.
    pub api_port: u16,
    /// A queue per node, or one shared by all nodes.
    pub queue: QueueMode,
    /// Where the Redis queue is, for [`QueueMode::Redis`].
    pub redis_queue: Option<RedisQueueConfig>,
    /// A node's own way to the Redis queue: a TCP relay (the chaos proxy of a
    /// fault on that one node's link) in place of `redis_queue`'s address.
    pub redis_queue_via: BTreeMap<NodeId, SocketAddr>,
}

impl ClusterConfig {
    /// `nodes` nodes on free loopback ports with default settings.
    pub fn new(nodes: u16, api_key: ApiKey) -> Self {
        Self {
            nodes,
            node: NodeConfig::new(NodeId(1), api_key),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            addressing: Addressing::UniquePort,
            comms_port: 0,
            api_port: 0,
            queue: QueueMode::PerNode,
            redis_queue: None,
            redis_queue_via: BTreeMap::new(),
        }
    }

    /// The address node `n` (from 1) binds for a listener whose node-1 port is
    /// `port` (0 stays 0: a free port).
    pub fn node_addr(&self, n: u16, port: u16) -> Result<SocketAddr> {
        match self.addressing {
            Addressing::UniquePort => {
                let port = if port == 0 { 0 } else { port + (n - 1) };
                Ok(SocketAddr::new(self.bind, port))
            }
            Addressing::UniqueAddress => {
                let IpAddr::V4(base) = self.bind else {
                    return Err(Error::AddressRange {
                        base: self.bind,
                        nodes: self.nodes,
                    });
                };
                let ip = u32::from(base)
                    .checked_add(u32::from(n - 1))
                    .map(Ipv4Addr::from)
                    .filter(|ip| ip.octets()[0] == base.octets()[0])
                    .ok_or(Error::AddressRange {
                        base: self.bind,
                        nodes: self.nodes,
                    })?;
                Ok(SocketAddr::new(IpAddr::V4(ip), port))
            }
        }
    }

    /// Where node `node` reaches the Redis queue: through its relay in
    /// [`redis_queue_via`](Self::redis_queue_via), if it has one.
    pub fn redis_queue_of(&self, node: NodeId) -> Result<Option<RedisQueueConfig>> {
        match (&self.redis_queue, self.redis_queue_via.get(&node)) {
            (Some(queue), Some(&relay)) => queue
                .through(relay)
                .map(Some)
                .ok_or(Error::RedisQueueNotOnTcp { node }),
            (queue, _) => Ok(queue.clone()),
        }
    }

    /// Checks the layout fits: at least one node, ports and addresses in range.
    pub fn check(&self) -> Result<()> {
        if self.nodes == 0 {
            return Err(Error::NoNodes);
        }
        if self.addressing == Addressing::UniquePort {
            for (what, base) in [("comms", self.comms_port), ("API", self.api_port)] {
                if base != 0 && base.checked_add(self.nodes - 1).is_none() {
                    return Err(Error::PortRange {
                        what,
                        base,
                        nodes: self.nodes,
                    });
                }
            }
        }
        self.node_addr(self.nodes, 0).map(drop)
    }
}

/// Coverage by `matrix`: per pair, or through the queue the nodes share.
fn coverage(queue: QueueMode, nodes: &[Arc<Node>], matrix: &CoverageMatrix) -> Coverage {
    match queue {
        QueueMode::PerNode => matrix.coverage(),
        QueueMode::Shared | QueueMode::Redis => {
            let running = nodes.iter().filter(|n| n.is_running()).count();
            matrix.coverage_through_shared_queue(running)
        }
    }
}

/// Node `node`'s own link to the Redis queue.
async fn redis_queue(config: Option<&RedisQueueConfig>, node: &NodeConfig) -> Result<QueueSource> {
    let config = config.ok_or(Error::NoRedisQueue)?;
    #[cfg(feature = "redis")]
    {
        crate::queue::RedisQueueLink::connect(config, node)
            .await
            .map(QueueSource::Redis)
            .map_err(|source| Error::RedisQueue {
                node: node.id,
                source,
            })
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (config, node);
        Err(Error::RedisUnsupported)
    }
}

/// A running cluster.
pub struct Cluster {
    queue: QueueMode,
    nodes: Vec<Arc<Node>>,
    registry: MachineRegistry,
    identity: Identity,
}

impl Cluster {
    /// Binds and starts every node with the shared `identity`.
    pub async fn start(config: ClusterConfig, identity: Identity) -> Result<Self> {
        config.check()?;
        let comms = bind_all(&config, config.comms_port, "polling listener")?;
        let api = bind_all(&config, config.api_port, "registration API")?;
        let registry = MachineRegistry::new();
        let shared = InProcessQueue::new();
        let mut nodes = Vec::with_capacity(usize::from(config.nodes));
        for ((n, comms), api) in (1..=config.nodes).zip(comms).zip(api) {
            let id = NodeId(n);
            let node_config = NodeConfig {
                id,
                ..config.node.clone()
            };
            let queue = match config.queue {
                QueueMode::PerNode => Ok(QueueSource::PerNode),
                QueueMode::Shared => Ok(QueueSource::Shared(shared.clone())),
                QueueMode::Redis => match config.redis_queue_of(id) {
                    Ok(queue) => redis_queue(queue.as_ref(), &node_config).await,
                    Err(error) => Err(error),
                },
            };
            let started = queue.and_then(|queue| {
                Node::start_with_queue(node_config, &identity, registry.clone(), queue, comms, api)
            });
            match started {
                Ok(node) => nodes.push(Arc::new(node)),
                Err(error) => {
                    // Leave nothing half-started behind.
                    for node in nodes {
                        node.stop().await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(Self {
            queue: config.queue,
            nodes,
            registry,
            identity,
        })
    }

    /// The nodes, node 1 first. Clone an `Arc` to act on a node from another task
    /// (kill it, start it again).
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    /// Whether the nodes share one queue.
    pub fn queue_mode(&self) -> QueueMode {
        self.queue
    }

    /// The shared registry.
    pub fn registry(&self) -> &MachineRegistry {
        &self.registry
    }

    /// The certificate every node presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Coverage of registered machines over all nodes, now (through the shared
    /// queue, when the nodes share one).
    pub fn coverage(&self) -> Coverage {
        coverage(self.queue, &self.nodes, &self.coverage_matrix())
    }

    /// Every registered machine's state with every node, now, counted per node.
    pub fn coverage_matrix(&self) -> CoverageMatrix {
        coverage_matrix(&self.nodes, &self.registry)
    }

    /// A cheap, cloneable, `'static` handle on the nodes and the registry, for a
    /// task that outlives a borrow of the cluster (a control API).
    pub fn view(&self) -> ClusterView {
        ClusterView {
            queue: self.queue,
            nodes: self.nodes.clone(),
            registry: self.registry.clone(),
        }
    }

    /// Held polling connections over all nodes.
    pub fn connections(&self) -> usize {
        self.nodes.iter().map(|n| n.stats().connections).sum()
    }

    /// Stops every node gracefully, all at once; returns each node's final stats,
    /// node 1 first.
    ///
    /// The stats are read once every node has stopped: in shared-queue mode one
    /// node's request may be ending on another node's connection until then.
    pub async fn stop(mut self) -> Vec<(NodeId, NodeStats)> {
        let mut stopping = tokio::task::JoinSet::new();
        for node in std::mem::take(&mut self.nodes) {
            stopping.spawn(async move {
                node.stop().await;
                node
            });
        }
        let mut stopped = Vec::new();
        while let Some(node) = stopping.join_next().await {
            match node {
                Ok(node) => stopped.push(node),
                Err(error) => tracing::error!(%error, "a node's stop task failed"),
            }
        }
        let mut stats: Vec<_> = stopped.iter().map(|n| (n.id(), n.stats())).collect();
        stats.sort_by_key(|(id, _)| *id);
        stats
    }
}

/// Dropping a cluster that was not stopped kills its nodes ([`Node::abort`]): a
/// test that panics halfway leaves no node running.
impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.abort();
        }
    }
}

/// The nodes and registry of a running cluster, shareable with other tasks.
#[derive(Clone)]
pub struct ClusterView {
    queue: QueueMode,
    nodes: Vec<Arc<Node>>,
    registry: MachineRegistry,
}

impl ClusterView {
    /// Coverage now, as [`Cluster::coverage`] counts it.
    pub fn coverage(&self) -> Coverage {
        coverage(self.queue, &self.nodes, &self.coverage_matrix())
    }

    /// The nodes, node 1 first.
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    /// Every registered machine's state with every node, now.
    pub fn coverage_matrix(&self) -> CoverageMatrix {
        coverage_matrix(&self.nodes, &self.registry)
    }

    /// Each registered polling machine by name, with its state with every node
    /// (node 1 first), in name order: the cells of a dashboard's grid.
    pub fn pair_states(&self) -> Vec<(String, Vec<crate::PairState>)> {
        let mut machines = self.registry.machines();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        machines
            .into_iter()
            .filter_map(|m| {
                let subscription = m.subscription()?;
                let states = self
                    .nodes
                    .iter()
                    .map(|n| n.pair_state(subscription))
                    .collect();
                Some((m.name, states))
            })
            .collect()
    }
}

fn coverage_matrix(nodes: &[Arc<Node>], registry: &MachineRegistry) -> CoverageMatrix {
    let mut matrix = CoverageMatrix::new(nodes.iter().map(|n| n.id().to_string()).collect());
    // Listening machines hold no polling links: coverage is about the pollers.
    for machine in registry.machines() {
        if let Some(subscription) = machine.subscription() {
            matrix.add_agent(nodes.iter().map(|n| n.pair_state(subscription)));
        }
    }
    matrix
}

/// How often a unique-address cluster on port 0 tries again when the port node 1
/// picked is taken on another node's address.
const SAME_PORT_ATTEMPTS: usize = 8;

/// Binds one listener per node for the listener whose node-1 port is `port`.
fn bind_all(config: &ClusterConfig, port: u16, what: &'static str) -> Result<Vec<TcpListener>> {
    let same_port_retry = config.addressing == Addressing::UniqueAddress && port == 0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match bind_once(config, port, what) {
            Err(Error::Bind { source, .. })
                if same_port_retry
                    && source.kind() == io::ErrorKind::AddrInUse
                    && attempt < SAME_PORT_ATTEMPTS => {}
            other => return other,
        }
    }
}

fn bind_once(
    config: &ClusterConfig,
    mut port: u16,
    what: &'static str,
) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(usize::from(config.nodes));
    for n in 1..=config.nodes {
        let node = NodeId(n);
        let addr = config.node_addr(n, port)?;
        let listener = crate::tcp::bind(addr).map_err(|source| Error::Bind {
            what,
            node,
            addr,
            source,
        })?;
        if config.addressing == Addressing::UniqueAddress && port == 0 {
            // Every node takes the port node 1 was given.
            port = listener
                .local_addr()
                .map_err(|source| Error::LocalAddr { what, node, source })?
                .port();
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addressing: Addressing, nodes: u16) -> ClusterConfig {
        ClusterConfig {
            addressing,
            ..ClusterConfig::new(nodes, ApiKey::random())
        }
    }

    #[test]
    fn unique_port_counts_up_ports_on_one_address() {
        let mut c = config(Addressing::UniquePort, 3);
        c.comms_port = 10943;
        assert_eq!(
            c.node_addr(3, 10943).unwrap(),
            "127.0.0.1:10945".parse().unwrap()
        );
        c.comms_port = 65534;
        assert!(matches!(c.check(), Err(Error::PortRange { .. })));
    }

    #[test]
    fn unique_address_counts_up_addresses_on_one_port() {
        let c = config(Addressing::UniqueAddress, 3);
        assert_eq!(
            c.node_addr(3, 10943).unwrap(),
            "127.0.0.3:10943".parse().unwrap()
        );
        let mut edge = config(Addressing::UniqueAddress, 3);
        edge.bind = "127.255.255.254".parse().unwrap();
        assert!(matches!(edge.check(), Err(Error::AddressRange { .. })));
        let mut v6 = config(Addressing::UniqueAddress, 2);
        v6.bind = "::1".parse().unwrap();
        assert!(matches!(v6.check(), Err(Error::AddressRange { .. })));
    }

    #[tokio::test]
    async fn unique_address_nodes_share_the_port_node_one_picked() {
        let c = config(Addressing::UniqueAddress, 3);
        let listeners = bind_all(&c, 0, "polling listener").unwrap();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(addrs[1].ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(addrs[2].ip(), "127.0.0.3".parse::<IpAddr>().unwrap());
        assert!(addrs
            .iter()
            .all(|a| a.port() == addrs[0].port() && a.port() != 0));
    }
}

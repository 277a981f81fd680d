//! A cluster: N nodes sharing one machine registry and one server certificate, as
//! Octopus HA nodes share their database (and with it the certificate).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use octopoll_pki::{ApiKey, Identity};
use serde::Serialize;

use crate::{Error, MachineRegistry, Node, NodeConfig, NodeId, NodeStats, Result};

/// How to lay out a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes, at least 1.
    pub nodes: u16,
    /// Settings every node shares (its `id` is replaced per node).
    pub node: NodeConfig,
    /// The address every node binds (loopback by default).
    pub bind: IpAddr,
    /// Comms port of node 1; node *i* gets `comms_port + i - 1`. 0 picks free ports.
    pub comms_port: u16,
    /// API port of node 1, likewise. 0 picks free ports.
    pub api_port: u16,
}

impl ClusterConfig {
    /// `nodes` nodes on free loopback ports with default settings.
    pub fn new(nodes: u16, api_key: ApiKey) -> Self {
        Self {
            nodes,
            node: NodeConfig::new(NodeId(1), api_key),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            comms_port: 0,
            api_port: 0,
        }
    }
}

/// Polling coverage: of all (registered machine, node) pairs, how many hold a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Pairs with at least one identified polling connection.
    pub connected_pairs: usize,
    /// Registered machines × nodes.
    pub total_pairs: usize,
}

impl Coverage {
    /// connected / total; 0 when there is nothing to cover.
    pub fn ratio(&self) -> f64 {
        if self.total_pairs == 0 {
            0.0
        } else {
            self.connected_pairs as f64 / self.total_pairs as f64
        }
    }

    /// Whether every pair is connected (and there is at least one).
    pub fn is_full(&self) -> bool {
        self.total_pairs > 0 && self.connected_pairs == self.total_pairs
    }
}

/// A running cluster.
pub struct Cluster {
    nodes: Vec<Node>,
    registry: MachineRegistry,
    identity: Identity,
}

impl Cluster {
    /// Binds and starts every node with the shared `identity`.
    pub async fn start(config: ClusterConfig, identity: Identity) -> Result<Self> {
        if config.nodes == 0 {
            return Err(Error::NoNodes);
        }
        for (what, base) in [("comms", config.comms_port), ("API", config.api_port)] {
            if base != 0 && base.checked_add(config.nodes - 1).is_none() {
                return Err(Error::PortRange {
                    what,
                    base,
                    nodes: config.nodes,
                });
            }
        }
        let registry = MachineRegistry::new();
        let mut nodes = Vec::with_capacity(usize::from(config.nodes));
        for n in 1..=config.nodes {
            match start_node(&config, n, &identity, &registry) {
                Ok(node) => nodes.push(node),
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
            nodes,
            registry,
            identity,
        })
    }

    /// The nodes, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    /// The shared registry.
    pub fn registry(&self) -> &MachineRegistry {
        &self.registry
    }

    /// The certificate every node presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Coverage of registered machines over all nodes, now.
    pub fn coverage(&self) -> Coverage {
        let machines = self.registry.machines();
        let connected_pairs = machines
            .iter()
            .map(|m| {
                self.nodes
                    .iter()
                    .filter(|n| n.connections_of(&m.subscription) > 0)
                    .count()
            })
            .sum();
        Coverage {
            connected_pairs,
            total_pairs: machines.len() * self.nodes.len(),
        }
    }

    /// Held polling connections over all nodes.
    pub fn connections(&self) -> usize {
        self.nodes.iter().map(|n| n.stats().connections).sum()
    }

    /// Stops every node gracefully, all at once; returns each node's final stats,
    /// node 1 first.
    pub async fn stop(self) -> Vec<(NodeId, NodeStats)> {
        let mut stopping = tokio::task::JoinSet::new();
        for node in self.nodes {
            stopping.spawn(async move { (node.id(), node.stop().await) });
        }
        let mut stats = Vec::new();
        while let Some(stopped) = stopping.join_next().await {
            match stopped {
                Ok(stopped) => stats.push(stopped),
                Err(error) => tracing::error!(%error, "a node's stop task failed"),
            }
        }
        stats.sort_by_key(|(id, _)| *id);
        stats
    }
}

/// Binds and starts node `n` of `config` (ports are checked to fit already).
fn start_node(
    config: &ClusterConfig,
    n: u16,
    identity: &Identity,
    registry: &MachineRegistry,
) -> Result<Node> {
    let id = NodeId(n);
    let port = |base: u16| if base == 0 { 0 } else { base + (n - 1) };
    let bind = |port: u16, what| {
        let addr = SocketAddr::new(config.bind, port);
        crate::tcp::bind(addr).map_err(|source| Error::Bind {
            what,
            node: id,
            addr,
            source,
        })
    };
    let comms = bind(port(config.comms_port), "polling listener")?;
    let api = bind(port(config.api_port), "registration API")?;
    let node_config = NodeConfig {
        id,
        ..config.node.clone()
    };
    Node::start(node_config, identity, registry.clone(), comms, api)
}

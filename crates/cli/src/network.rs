//! The chaos proxy in front of each node, and the network faults done through it.

use std::net::{IpAddr, SocketAddr};

use octopoll_node::NodeId;

use crate::scenario::fault::NetworkAction;

/// The proxies between the agents and the nodes (one per node).
#[derive(Clone, Debug)]
pub struct Network {
    proxies: Vec<(NodeId, SocketAddr)>,
}

impl Network {
    /// Starts a proxy on a free port of `bind` in front of each node.
    pub async fn start(_bind: IpAddr, nodes: &[(NodeId, SocketAddr)]) -> anyhow::Result<Self> {
        Ok(Self {
            proxies: nodes.to_vec(),
        })
    }

    /// The address agents use for each node, node 1 first.
    pub fn fronts(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(|(_, a)| *a).collect()
    }

    /// Applies `action` between the agents and `node`.
    pub async fn apply(&self, node: NodeId, action: &NetworkAction) -> Result<(), String> {
        Err(format!("{action:?} on {node}: not yet"))
    }

    /// Undoes `action` on `node`.
    pub async fn lift(&self, node: NodeId, action: &NetworkAction) -> Result<(), String> {
        Err(format!("{action:?} on {node}: not yet"))
    }

    /// Stops every proxy.
    pub async fn stop(&self) {}
}

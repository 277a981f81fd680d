//! How agents reach the nodes: the two layouts the Octopus HA docs recommend for
//! polling Tentacles, the same without a balancer, and the load-balanced
//! anti-pattern they warn against.

use std::fmt;

use octopoll_node::Addressing;
use serde::{Deserialize, Serialize};

/// A way for polling agents to reach every node (or, for `load-balanced`, not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Each node on its own address (127.0.0.1, 127.0.0.2, …), all on the same comms
    /// port; each agent polls every address.
    UniqueAddress,
    /// One address, a port per node (10943, 10944, …) forwarded by a real HAProxy in
    /// `mode tcp` to each node; each agent polls every port.
    UniquePort,
    /// One address, a port per node, agents connecting to the nodes directly (no
    /// balancer). The default: it needs nothing installed.
    #[default]
    UniquePortDirect,
    /// The anti-pattern: every agent has one address, a HAProxy frontend balancing
    /// round-robin over all nodes, so each connection lands on one node.
    LoadBalanced,
}

/// Which balancer a topology puts in front of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancing {
    /// None: agents connect to the nodes.
    Direct,
    /// One frontend port per node.
    PortPerNode,
    /// One frontend over all nodes, round-robin.
    RoundRobin,
}

impl Topology {
    /// Every topology, in documentation order.
    pub const ALL: [Topology; 4] = [
        Topology::UniqueAddress,
        Topology::UniquePort,
        Topology::UniquePortDirect,
        Topology::LoadBalanced,
    ];

    /// How the nodes themselves are addressed. Behind a balancer they listen on free
    /// ports of the bind address; the balancer takes the public ports.
    pub fn addressing(self) -> Addressing {
        match self {
            Topology::UniqueAddress => Addressing::UniqueAddress,
            _ => Addressing::UniquePort,
        }
    }

    /// The balancer in front of the nodes.
    pub fn balancing(self) -> Balancing {
        match self {
            Topology::UniqueAddress | Topology::UniquePortDirect => Balancing::Direct,
            Topology::UniquePort => Balancing::PortPerNode,
            Topology::LoadBalanced => Balancing::RoundRobin,
        }
    }

    /// The flag value, e.g. `unique-address`.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::UniqueAddress => "unique-address",
            Topology::UniquePort => "unique-port",
            Topology::UniquePortDirect => "unique-port-direct",
            Topology::LoadBalanced => "load-balanced",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_match_display_and_serde() {
        for topology in Topology::ALL {
            #[cfg(feature = "clap")]
            {
                use clap::ValueEnum;
                let flag = topology.to_possible_value().unwrap();
                assert_eq!(flag.get_name(), topology.as_str());
            }
            assert_eq!(
                serde_json::to_string(&topology).unwrap(),
                format!("\"{topology}\"")
            );
        }
    }
}

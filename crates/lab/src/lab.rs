//! A lab: a cluster of nodes on loopback, a balancer in front of it if the
//! topology has one, and a swarm of agents registered with it and polling the
//! addresses the topology gives them, in this process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use octopoll_agent::{
    BackoffConfig, RegistrationTarget, RegistrationTrust, ServerAddress, Swarm, SwarmConfig,
};
use octopoll_node::{Cluster, ClusterConfig, Coverage, CoverageMatrix, NodeId, NodeStats};
use octopoll_pki::{ApiKey, Identity, KeyType};

use crate::haproxy::{self, BalancerConfig, Haproxy};
pub use crate::network::Network;
use crate::topology::{Balancing, Topology};

/// Attempts at starting HAProxy on free ports picked a moment before (another
/// process may take one in between).
const BALANCER_ATTEMPTS: usize = 3;

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Cluster layout and node settings (`cluster.nodes` is the node count).
    pub cluster: ClusterConfig,
    /// Swarm settings (`swarm.agents` is the agent count).
    pub swarm: SwarmConfig,
    /// Key type of the server certificate.
    pub server_key_type: KeyType,
    /// How agents reach the nodes. With a balancer, `cluster.comms_port` is the
    /// balancer's first public port and the nodes listen on free ports behind it.
    pub topology: Topology,
    /// The HAProxy binary; looked up on PATH when `None`.
    pub haproxy: Option<PathBuf>,
    /// Put the chaos proxy between the agents (or HAProxy) and every node, for
    /// network faults.
    pub chaos: bool,
}

impl LabConfig {
    /// `nodes` nodes and `agents` agents on free loopback ports, with fast reconnects.
    pub fn new(nodes: u16, agents: usize) -> Self {
        let mut swarm = SwarmConfig::new(agents);
        swarm.agent.polling.backoff = BackoffConfig::FAST;
        Self {
            cluster: ClusterConfig::new(nodes, ApiKey::random()),
            swarm,
            server_key_type: KeyType::EcdsaP256,
            topology: Topology::default(),
            haproxy: None,
            chaos: false,
        }
    }
}

/// How the mesh formed after the swarm started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// When every polling link of every agent had identified; `None` if that did
    /// not happen in time.
    pub settled_after: Option<Duration>,
    /// When every agent polled every node (never, in the load-balanced topology).
    pub full_coverage_after: Option<Duration>,
}

/// A running lab.
pub struct Lab {
    /// The nodes.
    pub cluster: Cluster,
    /// The agents.
    pub swarm: Swarm,
    /// The balancer, in the topologies that have one.
    pub balancer: Option<Haproxy>,
    /// The chaos proxies in front of the nodes, if asked for.
    pub network: Option<Network>,
    /// The layout.
    pub topology: Topology,
}

impl Lab {
    /// Starts the cluster and the topology's balancer, then registers the swarm with
    /// node 1's API (pinning the cluster's certificate) and points every agent at
    /// the addresses the topology gives it.
    pub async fn start(config: LabConfig) -> anyhow::Result<Self> {
        let topology = config.topology;
        // Before anything starts, so a missing HAProxy costs nothing.
        let haproxy_binary = match topology.balancing() {
            Balancing::Direct => None,
            _ => Some(haproxy::find_binary(config.haproxy.as_deref())?),
        };
        let key_type = config.server_key_type;
        let identity =
            tokio::task::spawn_blocking(move || Identity::generate("octopoll-server", key_type))
                .await?
                .context("generating the server certificate")?;
        let mut cluster_config = config.cluster;
        cluster_config.addressing = topology.addressing();
        let public_port = cluster_config.comms_port;
        if haproxy_binary.is_some() {
            cluster_config.comms_port = 0;
        }
        let api_key = cluster_config.node.api_key.clone();
        let node = cluster_config.node.clone();
        let bind = cluster_config.bind;
        let cluster = Cluster::start(cluster_config, identity.clone())
            .await
            .context("starting the cluster")?;
        let mut node_addrs: Vec<SocketAddr> =
            cluster.nodes().iter().map(|n| n.comms_addr()).collect();
        // The chaos proxies go right in front of the nodes: agents (or HAProxy)
        // connect to them instead.
        let network = if config.chaos {
            let nodes: Vec<_> = cluster
                .nodes()
                .iter()
                .map(|n| (n.id(), n.comms_addr()))
                .collect();
            match Network::start(bind, &nodes).await {
                Ok(network) => {
                    node_addrs = network.fronts();
                    Some(network)
                }
                Err(error) => {
                    cluster.stop().await;
                    return Err(error.context("starting the chaos proxies"));
                }
            }
        } else {
            None
        };
        let balancer = match haproxy_binary {
            None => None,
            Some(binary) => {
                // The balancer must never be what cuts an idle poll or a long request.
                let idle = node.long_poll.max(node.response_timeout) + Duration::from_secs(30);
                let connections = config.swarm.agents
                    * node_addrs.len()
                    * config.swarm.agent.polling.connections_per_node.max(1);
                let started = start_balancer(
                    &binary,
                    topology,
                    bind,
                    public_port,
                    &node_addrs,
                    idle,
                    connections,
                );
                match started.await {
                    Ok(balancer) => Some(balancer),
                    Err(error) => {
                        cluster.stop().await;
                        if let Some(network) = &network {
                            network.stop().await;
                        }
                        return Err(error);
                    }
                }
            }
        };
        let nodes: Vec<ServerAddress> = match &balancer {
            Some(balancer) => balancer.frontends().iter().map(|&a| a.into()).collect(),
            None => node_addrs.iter().map(|&a| a.into()).collect(),
        };
        let target = RegistrationTarget {
            api_url: cluster.nodes()[0].api_url(),
            api_key,
            trust: RegistrationTrust::Pinned(identity.thumbprint()),
        };
        let mut swarm_config = config.swarm;
        let agents = swarm_config.agents;
        // Tentacle waits 60 s for the next request; with a longer long-poll that would
        // drop every idle connection, so the agents wait the long-poll plus a margin.
        let long_poll = node.long_poll;
        let polling = &mut swarm_config.agent.polling;
        polling.receive_request_timeout = polling
            .receive_request_timeout
            .max(long_poll + Duration::from_secs(30));
        let swarm = match Swarm::start(swarm_config, &target, &nodes).await {
            Ok(swarm) => swarm,
            Err(error) => {
                cluster.stop().await;
                if let Some(balancer) = balancer {
                    balancer.stop().await;
                }
                if let Some(network) = &network {
                    network.stop().await;
                }
                return Err(error).with_context(|| format!("starting {agents} agents"));
            }
        };
        Ok(Self {
            cluster,
            swarm,
            balancer,
            network,
            topology,
        })
    }

    /// Polling coverage now.
    pub fn coverage(&self) -> Coverage {
        self.cluster.coverage()
    }

    /// A handle on the chaos proxies, if the lab has them.
    pub fn network(&self) -> Option<Network> {
        self.network.clone()
    }

    /// Every agent's state with every node, now.
    pub fn coverage_matrix(&self) -> CoverageMatrix {
        self.cluster.coverage_matrix()
    }

    /// Stops the agents (they send `END`), then the nodes, then the balancer;
    /// returns each node's final stats, node 1 first.
    pub async fn stop(self) -> Vec<(NodeId, NodeStats)> {
        self.swarm.stop().await;
        let stats = self.cluster.stop().await;
        if let Some(balancer) = self.balancer {
            balancer.stop().await;
        }
        if let Some(network) = &self.network {
            network.stop().await;
        }
        stats
    }
}

/// Requests stopped nodes created but never ended: 0 unless an invariant broke
/// (negative: ended more often than created).
pub fn unfinished(stats: &[(NodeId, NodeStats)]) -> i64 {
    stats
        .iter()
        .map(|(_, s)| s.requests_created as i64 - (s.requests_completed + s.requests_failed) as i64)
        .sum()
}

/// Starts HAProxy for `topology` in front of `nodes`, its frontends on `bind` from
/// `public_port` on (free ports when 0).
async fn start_balancer(
    binary: &std::path::Path,
    topology: Topology,
    bind: IpAddr,
    public_port: u16,
    nodes: &[SocketAddr],
    idle: Duration,
    connections: usize,
) -> anyhow::Result<Haproxy> {
    let count = match topology.balancing() {
        Balancing::RoundRobin => 1,
        _ => nodes.len(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let frontends = if public_port == 0 {
            free_ports(bind, count).context("picking free ports for HAProxy")?
        } else {
            (0..count)
                .map(|i| {
                    let port = u16::try_from(i)
                        .ok()
                        .and_then(|i| public_port.checked_add(i))
                        .with_context(|| {
                            format!("balancer port {public_port} + {count} nodes runs past 65535")
                        })?;
                    Ok(SocketAddr::new(bind, port))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let config = match topology.balancing() {
            Balancing::RoundRobin => {
                BalancerConfig::round_robin(frontends[0], nodes, idle, connections)
            }
            _ => BalancerConfig::per_node(&frontends, nodes, idle, connections),
        };
        match Haproxy::start(binary, &config).await {
            Ok(balancer) => return Ok(balancer),
            Err(error) if public_port == 0 && attempt < BALANCER_ATTEMPTS => {
                tracing::warn!(%error, attempt, "HAProxy did not start on the ports picked; trying others");
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "starting HAProxy for the {topology} topology on {}",
                        frontends
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }
        }
    }
}

/// `count` ports free on `ip` a moment ago.
fn free_ports(ip: IpAddr, count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let held = (0..count)
        .map(|_| std::net::TcpListener::bind(SocketAddr::new(ip, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| l.local_addr()).collect()
}

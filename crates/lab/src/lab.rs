//! A lab: a cluster of nodes on loopback, a balancer in front of it if the
//! topology has one, and a swarm of agents registered with it and polling the
//! addresses the topology gives them, in this process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use octopoll_agent::{
    AgentHandle, BackoffConfig, RegistrationTarget, RegistrationTrust, ServerAddress, Swarm,
    SwarmConfig,
};
use octopoll_node::{
    Cluster, ClusterConfig, Coverage, CoverageMatrix, Machine, Node, NodeId, NodeStats, Outcome,
    QueueMode,
};
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::RequestMessage;

use crate::actions::{ActionError, NodeAction};
use crate::fronts::ChaosFronts;
use crate::haproxy::{self, BalancerConfig, BalancerError, Haproxy};
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
    /// Put the chaos proxy between the agents (or HAProxy) and every node, and
    /// between every node and a Redis queue on TCP, for network faults.
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

/// Why a lab did not start, did not become ready, or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology needs HAProxy and none was found.
    #[error(transparent)]
    NoBalancer(BalancerError),
    /// The server certificate could not be made.
    #[error("generating the server certificate")]
    Certificate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The nodes did not start (a port taken, a bad setting).
    #[error("starting the cluster")]
    Cluster(#[source] octopoll_node::Error),
    /// The chaos proxies did not start.
    #[error("starting the chaos proxies")]
    Fronts(#[source] octopoll_chaos::Error),
    /// No free ports could be picked for HAProxy.
    #[error("picking free ports for HAProxy")]
    FreePorts(#[source] std::io::Error),
    /// The balancer's ports would run past 65535.
    #[error("balancer port {first} + {count} nodes runs past 65535")]
    PortsPast65535 {
        /// The first public port asked for.
        first: u16,
        /// How many ports the topology needs.
        count: usize,
    },
    /// HAProxy did not start.
    #[error("starting HAProxy for the {topology} topology on {frontends}")]
    Balancer {
        /// The topology.
        topology: Topology,
        /// The frontends it was to listen on.
        frontends: String,
        /// Why.
        #[source]
        source: BalancerError,
    },
    /// The agents could not be registered or started.
    #[error("starting {agents} agents")]
    Swarm {
        /// How many.
        agents: usize,
        /// Why.
        #[source]
        source: octopoll_agent::Error,
    },
    /// Not every agent polled every node in time.
    #[error(
        "after {} ms, {} of {} agent × node pairs were polling (every agent must poll every node)",
        waited.as_millis(),
        coverage.polling_pairs,
        coverage.total_pairs
    )]
    NotCovered {
        /// How long it waited.
        waited: Duration,
        /// The coverage when it gave up.
        coverage: Coverage,
    },
    /// There is no such node.
    #[error("there is no {0} in this lab")]
    NoSuchNode(NodeId),
    /// There is no such agent.
    #[error("there is no agent {index}: the lab has {agents} (0 to {})", agents.saturating_sub(1))]
    NoSuchAgent {
        /// The index asked for.
        index: usize,
        /// How many agents the lab has.
        agents: usize,
    },
    /// A node action failed (a node that would not start again).
    #[error(transparent)]
    Action(ActionError),
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
    pub fronts: Option<ChaosFronts>,
    /// The layout.
    pub topology: Topology,
}

impl Lab {
    /// Starts the cluster and the topology's balancer, then registers the swarm with
    /// node 1's API (pinning the cluster's certificate) and points every agent at
    /// the addresses the topology gives them. What started before a failure is
    /// dropped, which ends it.
    ///
    /// With `chaos`, a chaos proxy goes in front of every node, and on a Redis
    /// queue reached over TCP one more on each node's way to Redis.
    pub async fn start(config: LabConfig) -> Result<Self, LabError> {
        let fronts = config.chaos.then(ChaosFronts::new);
        let started = Self::start_with(config, fronts.clone()).await;
        if let (Err(_), Some(fronts)) = (&started, fronts) {
            // Proxies outlive their handles; nothing else ends them.
            fronts.stop().await;
        }
        started
    }

    async fn start_with(
        config: LabConfig,
        mut fronts: Option<ChaosFronts>,
    ) -> Result<Self, LabError> {
        let topology = config.topology;
        // Before anything starts, so a missing HAProxy costs nothing.
        let haproxy_binary = match topology.balancing() {
            Balancing::Direct => None,
            _ => Some(
                haproxy::find_binary(config.haproxy.as_deref()).map_err(LabError::NoBalancer)?,
            ),
        };
        let key_type = config.server_key_type;
        let identity =
            tokio::task::spawn_blocking(move || Identity::generate("octopoll-server", key_type))
                .await
                .map_err(|error| LabError::Certificate(Box::new(error)))?
                .map_err(|error| LabError::Certificate(Box::new(error)))?;
        let mut cluster_config = config.cluster;
        cluster_config.addressing = topology.addressing();
        let public_port = cluster_config.comms_port;
        if haproxy_binary.is_some() {
            cluster_config.comms_port = 0;
        }
        let api_key = cluster_config.node.api_key.clone();
        let node = cluster_config.node.clone();
        let bind = cluster_config.bind;
        // Each node reaches a Redis queue on TCP through a proxy of its own, for
        // faults on one node's link.
        let redis_server = match cluster_config.queue {
            QueueMode::Redis => cluster_config
                .redis_queue
                .as_ref()
                .and_then(|queue| queue.tcp_server()),
            _ => None,
        };
        if let (Some(fronts), Some(server)) = (&fronts, redis_server) {
            // Only this process's nodes use them: on loopback, whatever they bind.
            let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
            cluster_config.redis_queue_via = fronts
                .front_redis(loopback, cluster_config.nodes, &server)
                .await
                .map_err(LabError::Fronts)?;
        }
        let cluster = Cluster::start(cluster_config, identity.clone())
            .await
            .map_err(LabError::Cluster)?;
        let mut node_addrs: Vec<SocketAddr> =
            cluster.nodes().iter().map(|n| n.comms_addr()).collect();
        // The chaos proxies go right in front of the nodes: agents (or HAProxy)
        // connect to them instead.
        if let Some(fronts) = &mut fronts {
            let nodes: Vec<_> = cluster
                .nodes()
                .iter()
                .map(|n| (n.id(), n.comms_addr()))
                .collect();
            fronts
                .front_nodes(bind, &nodes)
                .await
                .map_err(LabError::Fronts)?;
            node_addrs = fronts.addresses();
        }
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
                Some(started.await?)
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
        let swarm = Swarm::start(swarm_config, &target, &nodes)
            .await
            .map_err(|source| LabError::Swarm { agents, source })?;
        Ok(Self {
            cluster,
            swarm,
            balancer,
            fronts,
            topology,
        })
    }

    /// Starts the lab and waits up to `within` until every agent polls every node:
    /// the lab a test wants, or an error that says how far the mesh got (and the lab
    /// is dropped). Not for the `load-balanced` topology, whose coverage never becomes
    /// full.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), octopoll_lab::LabError> {
    /// use std::time::Duration;
    /// use octopoll_lab::{Lab, LabConfig};
    ///
    /// let lab = Lab::start_ready(LabConfig::new(2, 3), Duration::from_secs(20)).await?;
    /// assert!(lab.coverage().is_full());
    /// assert_eq!(lab.machines().len(), 3);
    /// lab.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_ready(config: LabConfig, within: Duration) -> Result<Self, LabError> {
        let lab = Self::start(config).await?;
        lab.wait_for_full_coverage(within).await?;
        Ok(lab)
    }

    /// Waits up to `within` until every agent polls every node; how long that took,
    /// or [`LabError::NotCovered`] with the coverage at the end.
    pub async fn wait_for_full_coverage(&self, within: Duration) -> Result<Duration, LabError> {
        let started = tokio::time::Instant::now();
        crate::wait::until(within, || self.coverage(), Coverage::is_full)
            .await
            .map(|_| started.elapsed())
            .map_err(|timeout| LabError::NotCovered {
                waited: timeout.waited,
                coverage: timeout.last,
            })
    }

    /// Node `n` (1-based, as the nodes are named).
    pub fn node(&self, n: u16) -> Result<&Arc<Node>, LabError> {
        self.cluster
            .node(NodeId(n))
            .ok_or(LabError::NoSuchNode(NodeId(n)))
    }

    /// Agent `index` (0-based, in the order they registered).
    pub fn agent(&self, index: usize) -> Result<&AgentHandle, LabError> {
        let agents = self.swarm.agents();
        agents.get(index).ok_or(LabError::NoSuchAgent {
            index,
            agents: agents.len(),
        })
    }

    /// Does `action` to node `n` now, as a scenario's fault would: kill it (its
    /// connections dropped, its queue lost), stop it gracefully, start it again on its
    /// addresses, or restart it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), octopoll_lab::LabError> {
    /// use std::time::Duration;
    /// use octopoll_lab::{Lab, LabConfig, NodeAction};
    ///
    /// let lab = Lab::start_ready(LabConfig::new(2, 2), Duration::from_secs(20)).await?;
    /// lab.act(2, NodeAction::Kill).await?;
    /// assert!(!lab.node(2)?.is_running());
    /// lab.act(2, NodeAction::Start).await?;
    /// lab.wait_for_full_coverage(Duration::from_secs(20)).await?;
    /// lab.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn act(&self, n: u16, action: NodeAction) -> Result<(), LabError> {
        crate::actions::node_action(self.node(n)?, action, false)
            .await
            .map_err(LabError::Action)
    }

    /// Queues `request` for agent `agent` on node `n` and waits for how it ended: the
    /// agent's response (or why there is none) and how long the agent took to collect
    /// it. The request's endpoint must name the agent's subscription
    /// ([`AgentHandle::subscription`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use octopoll_lab::{Lab, LabConfig};
    /// use octopoll_wire::contracts::echo;
    /// use octopoll_wire::ServiceEndPoint;
    ///
    /// let lab = Lab::start_ready(LabConfig::new(1, 1), Duration::from_secs(20)).await?;
    /// let agent = ServiceEndPoint::new(lab.agent(0)?.subscription().as_str(), "");
    /// let reply = lab.send(1, 0, echo::request(agent, "hello", 1)).await?.result?;
    /// assert_eq!(reply.response.result, echo::answer("hello"));
    /// lab.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(
        &self,
        n: u16,
        agent: usize,
        request: RequestMessage,
    ) -> Result<Outcome, LabError> {
        let node = self.node(n)?;
        let subscription = self.agent(agent)?.subscription();
        Ok(node.send(subscription, request, Vec::new()).await)
    }

    /// The machines registered with the cluster, in name order.
    pub fn machines(&self) -> Vec<Machine> {
        let mut machines = self.cluster.registry().machines();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        machines
    }

    /// Polling coverage now.
    pub fn coverage(&self) -> Coverage {
        self.cluster.coverage()
    }

    /// A handle on the chaos proxies, if the lab has them.
    pub fn fronts(&self) -> Option<ChaosFronts> {
        self.fronts.clone()
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
        if let Some(fronts) = &self.fronts {
            fronts.stop().await;
        }
        stats
    }
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
) -> Result<Haproxy, LabError> {
    let count = match topology.balancing() {
        Balancing::RoundRobin => 1,
        _ => nodes.len(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let frontends = if public_port == 0 {
            free_ports(bind, count).map_err(LabError::FreePorts)?
        } else {
            (0..count)
                .map(|i| {
                    u16::try_from(i)
                        .ok()
                        .and_then(|i| public_port.checked_add(i))
                        .map(|port| SocketAddr::new(bind, port))
                        .ok_or(LabError::PortsPast65535 {
                            first: public_port,
                            count,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
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
            Err(source) => {
                return Err(LabError::Balancer {
                    topology,
                    frontends: frontends
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    source,
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

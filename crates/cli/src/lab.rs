//! A lab: a cluster of nodes on loopback and a swarm of agents registered with it
//! and polling every node, in this process.

use std::time::Duration;

use anyhow::Context;
use octopoll_agent::{
    BackoffConfig, RegistrationTarget, RegistrationTrust, ServerAddress, Swarm, SwarmConfig,
};
use octopoll_node::{Cluster, ClusterConfig, Coverage};
use octopoll_pki::{ApiKey, Identity, KeyType};
use tokio::time::Instant;

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// Cluster layout and node settings (`cluster.nodes` is the node count).
    pub cluster: ClusterConfig,
    /// Swarm settings (`swarm.agents` is the agent count).
    pub swarm: SwarmConfig,
    /// Key type of the server certificate.
    pub server_key_type: KeyType,
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
        }
    }
}

/// A running lab.
pub struct Lab {
    /// The nodes.
    pub cluster: Cluster,
    /// The agents.
    pub swarm: Swarm,
}

impl Lab {
    /// Starts the cluster, then registers the swarm with node 1's API (pinning the
    /// cluster's certificate) and points every agent at every node.
    pub async fn start(config: LabConfig) -> anyhow::Result<Self> {
        let key_type = config.server_key_type;
        let identity =
            tokio::task::spawn_blocking(move || Identity::generate("octopoll-server", key_type))
                .await?
                .context("generating the server certificate")?;
        let cluster_config = config.cluster;
        let api_key = cluster_config.node.api_key.clone();
        let long_poll = cluster_config.node.long_poll;
        let cluster = Cluster::start(cluster_config, identity.clone())
            .await
            .context("starting the cluster")?;
        let nodes: Vec<ServerAddress> = cluster
            .nodes()
            .iter()
            .map(|n| n.comms_addr().into())
            .collect();
        let target = RegistrationTarget {
            api_url: cluster.nodes()[0].api_url(),
            api_key,
            trust: RegistrationTrust::Pinned(identity.thumbprint()),
        };
        let mut swarm_config = config.swarm;
        let agents = swarm_config.agents;
        // Tentacle waits 60 s for the next request; with a longer long-poll that would
        // drop every idle connection, so the agents wait the long-poll plus a margin.
        let polling = &mut swarm_config.agent.polling;
        polling.receive_request_timeout = polling
            .receive_request_timeout
            .max(long_poll + Duration::from_secs(30));
        let swarm = match Swarm::start(swarm_config, &target, &nodes).await {
            Ok(swarm) => swarm,
            Err(error) => {
                cluster.stop().await;
                return Err(error).with_context(|| format!("starting {agents} agents"));
            }
        };
        Ok(Self { cluster, swarm })
    }

    /// Polling coverage now.
    pub fn coverage(&self) -> Coverage {
        self.cluster.coverage()
    }

    /// Waits until every agent polls every node, or `within` passes; returns how
    /// long it took, or `None` if coverage never became full.
    pub async fn wait_for_full_coverage(&self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.coverage().is_full() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.coverage().is_full().then(|| started.elapsed())
    }

    /// Stops the agents (they send `END`), then the nodes; returns how many requests
    /// the nodes created but never ended (0 unless an invariant broke).
    pub async fn stop(self) -> i64 {
        self.swarm.stop().await;
        let stats = self.cluster.stop().await;
        stats
            .iter()
            .map(|(_, s)| {
                s.requests_created as i64 - (s.requests_completed + s.requests_failed) as i64
            })
            .sum()
    }
}

//! Many agents in one process: make identities, register each over HTTPS, then poll.
//!
//! A swarm may be one share of a larger one spread over processes: agent *i*
//! (from [`SwarmConfig::first`]) gets its name, subscription and jitter from the
//! seed and *i* alone, so the same seed gives the same agents however the whole
//! is split.

use std::sync::Arc;

use octopoll_pki::{ApiKey, Identity, KeyType, Thumbprint};
use octopoll_wire::api::{EndpointResource, MachineResource};
use octopoll_wire::SubscriptionId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::{
    Agent, AgentConfig, AgentHandle, RegistrationClient, RegistrationTrust, Result, ServerAddress,
    TrustedServer,
};

/// How to build a swarm.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// How many agents.
    pub agents: usize,
    /// The index of the first one in the whole swarm (0 unless this is a share).
    pub first: usize,
    /// Agents in the whole swarm, for the width of the names (0: this is all of it).
    pub total: usize,
    /// Names are `<prefix>-0001`, … (five digits past 9,999 agents).
    pub name_prefix: String,
    /// Certificate key type.
    pub key_type: KeyType,
    /// Seed for subscription ids and jitter: the same seed gives the same swarm.
    pub seed: u64,
    /// Registrations in flight at once.
    pub register_concurrency: usize,
    /// Every agent's settings.
    pub agent: AgentConfig,
}

impl SwarmConfig {
    /// `agents` agents with default settings.
    pub fn new(agents: usize) -> Self {
        Self {
            agents,
            first: 0,
            total: 0,
            name_prefix: "agent".into(),
            key_type: KeyType::EcdsaP256,
            seed: 0,
            register_concurrency: 16,
            agent: AgentConfig::default(),
        }
    }
}

/// Where agents register: one node's API (`register-with`).
#[derive(Clone, Debug)]
pub struct RegistrationTarget {
    /// `https://host:port` of the node's API.
    pub api_url: String,
    /// The API key.
    pub api_key: ApiKey,
    /// How to check the API's certificate.
    pub trust: RegistrationTrust,
}

/// A swarm whose agents are registered but not polling yet.
pub struct RegisteredSwarm {
    agents: Vec<(Agent, f64)>,
}

impl RegisteredSwarm {
    /// How many agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether it has no agents.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Starts every agent polling every node it was given.
    pub fn poll(self) -> Result<Swarm> {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let handles = self
            .agents
            .into_iter()
            .map(|(agent, jitter)| agent.spawn_with_jitter(&tracker, &shutdown, jitter))
            .collect::<Result<Vec<_>>>()?;
        info!(agents = handles.len(), "swarm polling");
        Ok(Swarm {
            agents: handles,
            tracker,
            shutdown,
        })
    }
}

/// A running swarm.
pub struct Swarm {
    agents: Vec<AgentHandle>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Swarm {
    /// Registers `config.agents` agents with `target`, trusting the thumbprint its
    /// API reports, and starts each polling every node in `nodes`.
    pub async fn start(
        config: SwarmConfig,
        target: &RegistrationTarget,
        nodes: &[ServerAddress],
    ) -> Result<Self> {
        Self::register(config, target, nodes).await?.poll()
    }

    /// Makes the agents and registers them with `target`, each trusting the
    /// thumbprint its API reports for every node in `nodes`; none polls yet.
    pub async fn register(
        config: SwarmConfig,
        target: &RegistrationTarget,
        nodes: &[ServerAddress],
    ) -> Result<RegisteredSwarm> {
        let client = RegistrationClient::new(&target.trust)?;
        let server_thumbprint = client
            .server_thumbprint(&target.api_url, &target.api_key)
            .await?;
        let identities = generate(config.agents, config.key_type).await?;
        let total = config.total.max(config.first + config.agents);
        let width = if total > 9_999 { 5 } else { 4 };
        let agents: Vec<(Agent, f64)> = identities
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let index = config.first + i;
                let mut rng = agent_rng(config.seed, index);
                let subscription = SubscriptionId::random(&mut rng);
                let agent = Agent {
                    name: format!("{}-{:0width$}", config.name_prefix, index + 1),
                    servers: trusted_servers(nodes, server_thumbprint, &subscription),
                    identity,
                    subscription,
                    config: config.agent.clone(),
                };
                (agent, rng.random::<f64>())
            })
            .collect();
        register_all(&client, target, &agents, config.register_concurrency).await?;
        Ok(RegisteredSwarm { agents })
    }

    /// The running agents.
    pub fn agents(&self) -> &[AgentHandle] {
        &self.agents
    }

    /// Polling links over all agents: what [`Swarm::connections`] is when all are up.
    pub fn links(&self) -> usize {
        self.agents.iter().map(AgentHandle::links).sum()
    }

    /// Identified polling connections over all agents.
    pub fn connections(&self) -> usize {
        self.agents.iter().map(AgentHandle::connections).sum()
    }

    /// Stops every polling loop: exchanges in hand finish and send `END`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Dropping a swarm that was not stopped ends its polling loops (they close their
/// connections on their own a moment later).
impl Drop for Swarm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The trusted server entries of an agent polling every node in `nodes`.
pub fn trusted_servers(
    nodes: &[ServerAddress],
    thumbprint: Thumbprint,
    subscription: &SubscriptionId,
) -> Vec<TrustedServer> {
    nodes
        .iter()
        .map(|address| TrustedServer {
            thumbprint,
            address: address.clone(),
            subscription: subscription.clone(),
        })
        .collect()
}

/// The registration body of a polling agent named `name`.
pub fn machine_resource(
    name: &str,
    thumbprint: Thumbprint,
    subscription: &SubscriptionId,
) -> MachineResource {
    MachineResource {
        id: None,
        name: name.to_owned(),
        endpoint: EndpointResource::polling(subscription, thumbprint),
        roles: vec!["octopoll".into()],
        environment_ids: vec!["Environments-1".into()],
    }
}

/// Generates `count` identities off the async runtime (RSA takes a while).
async fn generate(count: usize, key_type: KeyType) -> Result<Vec<Identity>> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(count.max(1));
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let share = count / workers + usize::from(worker < count % workers);
        tasks.spawn_blocking(move || {
            (0..share)
                .map(|_| Identity::generate("octopoll-agent", key_type))
                .collect::<Result<Vec<_>, _>>()
        });
    }
    let mut identities = Vec::with_capacity(count);
    while let Some(batch) = tasks.join_next().await {
        identities.extend(batch??);
    }
    Ok(identities)
}

/// Agent `index`'s own generator: its subscription and jitter depend on the seed
/// and its index only.
fn agent_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

async fn register_all(
    client: &RegistrationClient,
    target: &RegistrationTarget,
    agents: &[(Agent, f64)],
    concurrency: usize,
) -> Result<()> {
    let target = Arc::new(target.clone());
    for chunk in agents.chunks(concurrency.max(1)) {
        let mut calls = JoinSet::new();
        for (agent, _) in chunk {
            let (client, target, body) = (
                client.clone(),
                target.clone(),
                machine_resource(
                    &agent.name,
                    agent.identity.thumbprint(),
                    &agent.subscription,
                ),
            );
            calls.spawn(async move {
                client
                    .register(&target.api_url, &target.api_key, &body)
                    .await
            });
        }
        while let Some(result) = calls.join_next().await {
            result??;
        }
    }
    Ok(())
}

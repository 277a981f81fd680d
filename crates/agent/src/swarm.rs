//! Many agents in one process: make identities, register each over HTTPS, then poll.

use std::sync::Arc;

use octopoll_pki::{ApiKey, Identity, KeyType, Thumbprint};
use octopoll_wire::api::{EndpointResource, MachineResource, TENTACLE_ACTIVE};
use octopoll_wire::SubscriptionId;
use rand::rngs::StdRng;
use rand::SeedableRng;
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
    /// Names are `<prefix>-0001`, …
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
        let client = RegistrationClient::new(&target.trust)?;
        let server_thumbprint = client
            .server_thumbprint(&target.api_url, &target.api_key)
            .await?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let identities = generate(config.agents, config.key_type).await?;
        let agents: Vec<Agent> = identities
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let subscription = SubscriptionId::random(&mut rng);
                Agent {
                    name: format!("{}-{:04}", config.name_prefix, i + 1),
                    servers: trusted_servers(nodes, server_thumbprint, &subscription),
                    identity,
                    subscription,
                    config: config.agent.clone(),
                }
            })
            .collect();
        register_all(&client, target, &agents, config.register_concurrency).await?;

        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let handles = agents
            .into_iter()
            .map(|agent| agent.spawn(&tracker, &shutdown, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        info!(agents = handles.len(), nodes = nodes.len(), "swarm polling");
        Ok(Self {
            agents: handles,
            tracker,
            shutdown,
        })
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
        endpoint: EndpointResource {
            communication_style: TENTACLE_ACTIVE.into(),
            uri: subscription.to_string(),
            thumbprint: thumbprint.to_string(),
        },
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

async fn register_all(
    client: &RegistrationClient,
    target: &RegistrationTarget,
    agents: &[Agent],
    concurrency: usize,
) -> Result<()> {
    let target = Arc::new(target.clone());
    for chunk in agents.chunks(concurrency.max(1)) {
        let mut calls = JoinSet::new();
        for agent in chunk {
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

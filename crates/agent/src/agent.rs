//! One simulated polling Tentacle: identity, subscription, trusted servers, and the
//! polling loops it runs.

use std::sync::Arc;

use octopoll_pki::Identity;
use octopoll_wire::SubscriptionId;
use rand::{Rng, SeedableRng};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use crate::poller::{LinkState, Poller};
use crate::services::Services;
use crate::{AgentConfig, Result, TrustedServer};

/// An agent before it runs.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Its machine name.
    pub name: String,
    /// Its certificate.
    pub identity: Identity,
    /// Its polling subscription, the same towards every node.
    pub subscription: SubscriptionId,
    /// The nodes it polls, one entry per node (`poll-server` adds one).
    pub servers: Vec<TrustedServer>,
    /// How it behaves.
    pub config: AgentConfig,
}

/// A running agent's polling links, per server entry.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    name: String,
    subscription: SubscriptionId,
    links: Vec<(TrustedServer, Arc<LinkState>)>,
}

/// An agent running on its own, as [`Agent::start`] returns it.
#[derive(Debug)]
pub struct RunningAgent {
    handle: AgentHandle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl RunningAgent {
    /// Its polling links.
    pub fn handle(&self) -> &AgentHandle {
        &self.handle
    }

    /// Stops every polling loop: exchanges in hand finish and send `END`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl std::ops::Deref for RunningAgent {
    type Target = AgentHandle;

    fn deref(&self) -> &AgentHandle {
        &self.handle
    }
}

impl Agent {
    /// Starts polling every server entry, with its own task tracker and shutdown.
    pub fn start(self) -> Result<RunningAgent> {
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let handle = self.spawn(&tracker, &shutdown, &mut rand::rng())?;
        Ok(RunningAgent {
            handle,
            tracker,
            shutdown,
        })
    }

    /// Spawns one polling loop per server entry and connection on `tracker` (a
    /// swarm shares one tracker among thousands of agents).
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        rng: &mut impl Rng,
    ) -> Result<AgentHandle> {
        let jitter = rng.random::<f64>();
        self.spawn_with_jitter(tracker, shutdown, jitter)
    }

    /// [`Agent::spawn`] with the backoff jitter in `[0, 1)` given: every link of
    /// the agent draws its own from it, reproducibly.
    pub fn spawn_with_jitter(
        self,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        jitter: f64,
    ) -> Result<AgentHandle> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(jitter.to_bits());
        let services = Arc::new(Services::new(self.config.services.clone()));
        let mut links = Vec::new();
        // One TLS config per pinned thumbprint, not per server: HA nodes share theirs.
        let mut connectors: Vec<(octopoll_pki::Thumbprint, TlsConnector)> = Vec::new();
        for server in &self.servers {
            let connector = match connectors.iter().find(|(t, _)| *t == server.thumbprint) {
                Some((_, connector)) => connector.clone(),
                None => {
                    let tls = octopoll_pki::tls::polling_client_config(
                        &self.identity,
                        server.thumbprint,
                    )?;
                    let connector = TlsConnector::from(Arc::new(tls));
                    connectors.push((server.thumbprint, connector.clone()));
                    connector
                }
            };
            for connection in 0..self.config.polling.connections_per_node.max(1) {
                let state = Arc::new(LinkState::default());
                let poller = Poller {
                    server: server.clone(),
                    config: self.config.polling.clone(),
                    connector: connector.clone(),
                    services: services.clone(),
                    state: state.clone(),
                    jitter: rng.random::<f64>(),
                    thumbprint: self.identity.thumbprint(),
                };
                let span = info_span!(
                    "agent",
                    agent = %self.name,
                    subscription = %self.subscription,
                    server = %server.address,
                    connection,
                );
                tracker.spawn(poller.run(shutdown.child_token()).instrument(span));
                links.push((server.clone(), state));
            }
        }
        Ok(AgentHandle {
            name: self.name,
            subscription: self.subscription,
            links,
        })
    }
}

impl AgentHandle {
    /// The agent's machine name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's subscription.
    pub fn subscription(&self) -> &SubscriptionId {
        &self.subscription
    }

    /// The trusted server entries it polls, one per entry (not per connection).
    pub fn servers(&self) -> Vec<&TrustedServer> {
        let mut servers: Vec<&TrustedServer> = Vec::new();
        for (server, _) in &self.links {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        servers
    }

    /// Polling links: one per trusted server entry and connection.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Identified connections now.
    pub fn connections(&self) -> usize {
        self.links.iter().filter(|(_, s)| s.is_identified()).count()
    }

    /// Requests answered, over all links.
    pub fn requests_answered(&self) -> u64 {
        self.links.iter().map(|(_, s)| s.requests()).sum()
    }

    /// The last connection error of each link that had one.
    pub fn last_errors(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|(_, s)| s.last_error())
            .collect()
    }

    /// Failed connection attempts, over all links.
    pub fn failures(&self) -> u64 {
        self.links.iter().map(|(_, s)| s.failures()).sum()
    }
}

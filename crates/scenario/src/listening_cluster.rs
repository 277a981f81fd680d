//! The clustered listening Tentacle of `clustered-listening-tentacles.md`, for
//! `octopoll run --listening-cluster`: two listening Tentacles sharing one
//! certificate (exported as a PFX from one, imported into the other, as the
//! docs do) behind one client access point — a TCP forwarder (the chaos proxy)
//! pointing at whichever member is active.
//!
//! The run registers the access point over HTTPS as one listening machine,
//! health-checks it through a running node every `check_interval`, and fails
//! the pair over at `failover_at`: the active member dies, one check runs while
//! the cluster moves over (the node sees its target down, as Octopus would),
//! then the forwarder points at the passive member. The node never learns there
//! are two; with `shared_certificate = false` it refuses the passive member,
//! naming both thumbprints, and the run's threshold says so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use octopoll_agent::{ListeningConfig, ListeningTentacle, RegistrationClient, RegistrationTrust};
use octopoll_chaos::{Chaos, ProxyConfig, ProxyUpdate};
use octopoll_node::{ListeningAddress, Machine, Node};
use octopoll_pki::{ApiKey, Identity, KeyType, Thumbprint};
use octopoll_report::listening::ListeningClusterReport;
use octopoll_wire::api::{EndpointResource, MachineResource};

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The forwarder's name in the chaos proxy.
const ACCESS_POINT: &str = "tentacle-cluster";
/// The PFX password of the docs' example.
const PFX_PASSWORD: &str = "Yourpfxpassword";
/// How many distinct health-check errors the report keeps.
const ERRORS_KEPT: usize = 3;

/// How the run exercises the pair.
#[derive(Clone, Debug, PartialEq)]
pub struct ListeningClusterConfig {
    /// Time between health checks of the cluster's target.
    pub check_interval: Duration,
    /// When the active member fails, from the start of the workload; `None`:
    /// halfway through the run.
    pub failover_at: Option<Duration>,
    /// Whether the members share one certificate, as the docs require.
    pub shared_certificate: bool,
}

impl Default for ListeningClusterConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(2),
            failover_at: None,
            shared_certificate: true,
        }
    }
}

/// The running pair and its access point.
pub struct ListeningCluster {
    chaos: Chaos,
    /// The first member, until it fails.
    active: Option<ListeningTentacle>,
    passive: ListeningTentacle,
    machine: Machine,
    config: ListeningClusterConfig,
}

impl ListeningCluster {
    /// Starts both members trusting `node`'s certificate and the forwarder to
    /// the first, and registers the access point through `node`'s API.
    pub async fn start(
        node: &Node,
        api_key: &ApiKey,
        config: &ListeningClusterConfig,
    ) -> anyhow::Result<Self> {
        let shared = config.shared_certificate;
        let (active_identity, passive_identity) = tokio::task::spawn_blocking(move || {
            let active = Identity::generate("Octopus Tentacle", KeyType::Rsa2048)?;
            let passive = if shared {
                // The docs' dance: new-certificate --export-pfx, import-certificate.
                let pfx = octopoll_pki::pfx::export(&active, PFX_PASSWORD)?;
                octopoll_pki::pfx::import(&pfx, PFX_PASSWORD)?
            } else {
                Identity::generate("Octopus Tentacle (other)", KeyType::Rsa2048)?
            };
            Ok::<_, octopoll_pki::Error>((active, passive))
        })
        .await?
        .context("making the listening cluster's certificates")?;
        let server = node.thumbprint();
        let active = member(&active_identity, "cluster-member-1", server).await?;
        let passive = member(&passive_identity, "cluster-member-2", server).await?;
        let chaos = Chaos::new();
        let access_point = chaos
            .create(ProxyConfig::new(
                ACCESS_POINT,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                active.local_addr().to_string(),
            ))
            .await
            .context("starting the listening cluster's access point")?
            .listen;
        let address = ListeningAddress::new(access_point.ip().to_string(), access_point.port())?;
        let client = RegistrationClient::new(&RegistrationTrust::Pinned(server))?;
        let resource = MachineResource {
            id: None,
            name: "TentacleCluster".into(),
            endpoint: EndpointResource::listening(&address, active_identity.thumbprint()),
            roles: vec!["clustered".into()],
            environment_ids: vec!["Environments-1".into()],
        };
        client
            .register(&node.api_url(), api_key, &resource)
            .await
            .context("registering the listening cluster")?;
        let machine = node
            .registry()
            .resolve(&active_identity.thumbprint())
            .await?
            .context("the listening cluster is not in the registry after registering")?;
        info!(target = %machine.endpoint, "listening cluster registered");
        Ok(Self {
            chaos,
            active: Some(active),
            passive,
            machine,
            config: config.clone(),
        })
    }

    /// Health-checks the target every `check_interval` through a running node
    /// and fails the pair over at `failover_at` (unset: halfway through
    /// `duration`), counted from `started`, until `until`.
    pub async fn exercise(
        &mut self,
        nodes: &[std::sync::Arc<Node>],
        duration: Duration,
        started: Instant,
        until: &CancellationToken,
    ) -> ListeningClusterReport {
        let failover_at = self.config.failover_at.unwrap_or(duration / 2);
        let mut report = ListeningClusterReport {
            target: self.machine.endpoint.to_string(),
            shared_certificate: self.config.shared_certificate,
            checks: 0,
            failed: 0,
            failed_after_failover: 0,
            failover_at_s: None,
            errors: Vec::new(),
            every_machine: BTreeMap::new(),
        };
        let mut ticks = tokio::time::interval(self.config.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = until.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // This tick's check is the one that lands while the cluster moves
            // over: the first member is dead, the access point still at it.
            let moving = self.active.is_some() && started.elapsed() >= failover_at;
            if moving {
                report.failover_at_s = Some(started.elapsed().as_secs_f64());
                if let Some(active) = self.active.take() {
                    active.stop().await;
                }
                info!("listening cluster: the active member failed");
            }
            let failed_over = self.active.is_none() && !moving;
            self.check(nodes, failed_over, &mut report).await;
            if moving {
                match self.activate_passive().await {
                    Ok(()) => info!("listening cluster: the passive member is active"),
                    Err(error) => {
                        warn!(%error, "listening cluster: the passive member could not be activated")
                    }
                }
            }
        }
        report
    }

    /// One health check of the target; `failed_over`: the passive member serves it.
    async fn check(
        &self,
        nodes: &[std::sync::Arc<Node>],
        failed_over: bool,
        report: &mut ListeningClusterReport,
    ) {
        let Some(node) = nodes.iter().find(|n| n.is_running()) else {
            return;
        };
        let bound = self.config.check_interval.max(Duration::from_secs(5));
        let outcome = tokio::time::timeout(bound, node.health_check(&self.machine)).await;
        report.checks += 1;
        let error = match outcome {
            Ok(Ok(_)) => return,
            // The error and its causes on one line.
            Ok(Err(error)) => format!("{:#}", anyhow::Error::new(error)),
            Err(_) => format!("no answer within {bound:?}"),
        };
        report.failed += 1;
        if failed_over {
            report.failed_after_failover += 1;
        }
        warn!(node = %node.id(), %error, "listening cluster: health check failed");
        if report.errors.len() < ERRORS_KEPT && !report.errors.contains(&error) {
            report.errors.push(error);
        }
    }

    async fn activate_passive(&self) -> anyhow::Result<()> {
        self.chaos
            .update(
                ACCESS_POINT,
                ProxyUpdate {
                    upstream: Some(self.passive.local_addr().to_string()),
                    ..ProxyUpdate::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Ends the cluster's part of a run: one health check of every machine,
    /// polling and listening, from `node` (a running one, if any) into
    /// `report`; then the members and the forwarder stop.
    pub async fn finish(
        self,
        mut report: ListeningClusterReport,
        node: Option<&Node>,
    ) -> ListeningClusterReport {
        if let Some(node) = node {
            report.every_machine = node
                .health_check_all()
                .await
                .by_kind()
                .into_iter()
                .map(|(kind, (healthy, unhealthy))| (kind.to_owned(), [healthy, unhealthy]))
                .collect();
        }
        if let Some(active) = self.active {
            active.stop().await;
        }
        self.passive.stop().await;
        self.chaos.shutdown().await;
        report
    }
}

async fn member(
    identity: &Identity,
    name: &str,
    server: Thumbprint,
) -> anyhow::Result<ListeningTentacle> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding a listening cluster member")?;
    Ok(ListeningTentacle::start(
        identity,
        ListeningConfig::trusting(name, vec![server]),
        listener,
    )?)
}

//! A lab whose every node is a process of its own and whose agents are split
//! over more: what a run too large for one process's open-file limit runs on.
//! It starts a Redis for the nodes' shared registry (unless one is given), writes
//! the cluster file and certificate into a temporary directory, starts
//! `octopoll node` per node and `octopoll swarm` per share, and drives them all
//! through their control APIs. Every child is stopped when the lab stops, and
//! killed if the lab is dropped (an error, Ctrl-C).

use crate::fault::{FaultError, RedisHandle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use octopoll_node::{Coverage, CoverageMatrix, Machine, NodeId, NodeStats, PairState, QueueMode};
use octopoll_pki::Identity;
use tracing::{info, warn};

use crate::config::RunConfig;
use crate::testbed::{Dispatcher, NodeView, Snapshot, Stopped, SwarmTally, Testbed};
use octopoll_fleet::child::{ChildProcess, Listening};
use octopoll_fleet::cluster_file::{ClusterFile, NodeEntry, API_KEY_ENV};
use octopoll_fleet::process_args::KeyTypeName;
use octopoll_fleet::process_args::{Shard, SwarmArgs};
use octopoll_fleet::redis_server::LocalRedis;
use octopoll_fleet::remote::{RemoteNode, RemoteSwarm};
use octopoll_fleet::swarm_process::SwarmStatus;
use octopoll_fleet::usage::UsageSampler;
use octopoll_lab::actions::NodeAction;
use octopoll_lab::fronts::ChaosFronts;
use octopoll_lab::topology::Topology;

/// How long a node process may take to be ready.
const NODE_READY: Duration = Duration::from_secs(30);
/// How long a swarm process may take to make and register its agents: a minute,
/// and for each agent of its share a generous guess at making its key (RSA-2048
/// keys take tens of milliseconds each, on a core shared with everything else)
/// and registering it.
fn swarm_ready_bound(agents: usize, key_type: octopoll_pki::KeyType) -> Duration {
    let per_agent = match key_type {
        octopoll_pki::KeyType::Rsa2048 => Duration::from_millis(150),
        _ => Duration::from_millis(10),
    };
    Duration::from_secs(60) + per_agent * agents as u32
}

/// A node process and the parent's handle on its control API.
struct NodeChild {
    process: ChildProcess,
    remote: RemoteNode,
}

/// A swarm process and its control API.
struct SwarmChild {
    process: ChildProcess,
    remote: RemoteSwarm,
}

/// Nodes and swarm shares in processes of their own.
pub struct ProcessLab {
    nodes: Vec<NodeChild>,
    swarms: Vec<SwarmChild>,
    redis: Option<LocalRedis>,
    /// The redis-server of the nodes' Redis queue, when octopoll started it: one
    /// of its own, apart from the registry's, so that the run's Redis faults hit
    /// the queue alone (the registry stands in for Octopus's database).
    queue_redis: Option<RedisHandle>,
    /// The registry's URL and this run's namespace in it, deleted at the end.
    registry: (String, String),
    usage: UsageSampler,
    topology: Topology,
    queue: QueueMode,
    agents: usize,
    /// Polling links the agents hold when every one is up.
    links: usize,
    /// The cluster file and certificate the nodes read.
    _dir: tempfile::TempDir,
    /// `octopoll guard --remove` of that directory, for when this process is
    /// killed before the TempDir can delete it; killed when the lab drops.
    _janitor: tokio::process::Child,
}

impl ProcessLab {
    /// Starts the registry, the nodes and `swarms` agent processes for `config`.
    /// The agents register, then wait: [`Testbed::mesh_starting`] sets them polling.
    pub async fn start(config: &RunConfig, swarms: usize) -> anyhow::Result<Self> {
        let program = match &config.program {
            Some(program) => program.clone(),
            None => std::env::current_exe().context("finding the octopoll binary")?,
        };
        let (redis, registry) = match &config.redis {
            Some(url) => (None, url.clone()),
            None => {
                let redis = LocalRedis::start_guarded(None, &program)
                    .await
                    .context("starting the Redis server the node processes share")?;
                let url = redis.url();
                (Some(redis), url)
            }
        };
        let queue_redis = match (config.lab.cluster.queue, &config.redis) {
            (QueueMode::Redis, None) => Some(
                LocalRedis::start_guarded(None, &program)
                    .await
                    .context("starting the Redis server the nodes' queue goes through")?,
            ),
            _ => None,
        };
        // Given a Redis, the queue shares it with the registry (Octopus may use one
        // for both too).
        let queue_url = match &queue_redis {
            Some(redis) => redis.url(),
            None => registry.clone(),
        };
        let queue_redis = queue_redis.map(|redis| Arc::new(tokio::sync::Mutex::new(redis)));
        let dir = tempfile::Builder::new()
            .prefix("octopoll-cluster-")
            .tempdir()
            .context("making the cluster's temporary directory")?;
        let janitor = janitor(&program, dir.path())?;
        let key_type = config.lab.server_key_type;
        let identity =
            tokio::task::spawn_blocking(move || Identity::generate("octopoll-server", key_type))
                .await?
                .context("generating the server certificate")?;
        // A namespace of this run's own: a Redis of the user's may hold other runs.
        let namespace = format!("run-{}", uuid::Uuid::new_v4().simple());
        let cluster_file = write_cluster(
            config,
            &identity,
            (&registry, &namespace),
            &queue_url,
            dir.path(),
        )?;
        let api_key = config.lab.cluster.node.api_key.expose().to_owned();

        let nodes = start_nodes(config, &program, &cluster_file, &api_key).await?;
        let comms: Vec<String> = nodes.iter().map(|(_, l)| comms_of(l)).collect();
        let node_children: Vec<NodeChild> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (process, ready))| NodeChild {
                remote: RemoteNode::new(
                    NodeId(i as u16 + 1),
                    ready.control,
                    config.lab.cluster.node.api_key.clone(),
                ),
                process,
            })
            .collect();
        let apis: Vec<String> = join_all(node_children.iter().map(|n| n.remote.status()))
            .await
            .into_iter()
            .map(|s| s.map(|s| format!("https://{}", s.api)))
            .collect::<Result<_, _>>()
            .context("asking the node processes for their addresses")?;
        let swarm_children =
            start_swarms(config, &program, swarms, &apis, &comms, &identity, &api_key).await?;
        let mut watched: Vec<(String, u32)> = Vec::new();
        for child in node_children
            .iter()
            .map(|n| &n.process)
            .chain(swarm_children.iter().map(|s| &s.process))
        {
            if let Some(pid) = child.pid() {
                watched.push((child.name().to_owned(), pid));
            }
        }
        watched.push(("octopoll".into(), std::process::id()));
        info!(
            nodes = node_children.len(),
            swarms, "node and agent processes ready"
        );
        Ok(Self {
            nodes: node_children,
            swarms: swarm_children,
            redis,
            queue_redis,
            registry: (registry, namespace),
            usage: UsageSampler::start(watched),
            topology: config.lab.topology,
            queue: config.lab.cluster.queue,
            agents: config.lab.swarm.agents,
            links: config.lab.swarm.agents
                * usize::from(config.lab.cluster.nodes)
                * config.lab.swarm.agent.polling.connections_per_node.max(1),
            _dir: dir,
            _janitor: janitor,
        })
    }

    fn node(&self, id: NodeId) -> Option<&RemoteNode> {
        self.nodes
            .iter()
            .map(|n| &n.remote)
            .find(|remote| remote.id() == id)
    }

    /// The redis-server of the nodes' queue, when octopoll started one: what the
    /// run's Redis faults act on.
    pub fn queue_redis(&self) -> Option<RedisHandle> {
        self.queue_redis.clone()
    }
}

/// `octopoll guard --remove DIR`: it deletes `dir` when this process's end of
/// its stdin closes, however this process ends. Its stdin is held in the child.
fn janitor(
    program: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(program)
        .arg("guard")
        .arg("--remove")
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} guard", program.display()))
}

fn comms_of(listening: &Listening) -> String {
    listening
        .comms
        .map_or_else(String::new, |addr| addr.to_string())
}

/// Writes the certificate and the cluster file for `config`'s nodes into `dir`.
fn write_cluster(
    config: &RunConfig,
    identity: &Identity,
    (registry, namespace): (&str, &str),
    queue: &str,
    dir: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let (certificate, private_key) = octopoll_pki::pem::paths(dir, "node");
    octopoll_pki::pem::save(identity, dir, "node").context("writing the server certificate")?;
    let cluster = &config.lab.cluster;
    let mut comms_port = cluster.comms_port;
    if config.lab.topology.addressing() == octopoll_node::Addressing::UniqueAddress
        && comms_port == 0
    {
        // Every node must take the same port, and separate processes cannot agree
        // on one they pick: take one free now.
        comms_port = std::net::TcpListener::bind((cluster.bind, 0))
            .and_then(|l| l.local_addr())
            .context("picking a free comms port")?
            .port();
    }
    let mut layout = cluster.clone();
    layout.addressing = config.lab.topology.addressing();
    layout.check()?;
    let nodes = (1..=cluster.nodes)
        .map(|n| {
            Ok(NodeEntry {
                comms: layout.node_addr(n, comms_port)?,
                api: layout.node_addr(n, cluster.api_port)?,
                control: SocketAddr::from(([127, 0, 0, 1], 0)),
            })
        })
        .collect::<Result<Vec<_>, octopoll_node::Error>>()?;
    let node = &cluster.node;
    let file = ClusterFile {
        name: namespace.to_owned(),
        registry: Some(registry.to_owned()),
        multi_node_polling_redis: (cluster.queue == QueueMode::Redis).then(|| queue.to_owned()),
        redis_drop_delay: cluster
            .redis_queue
            .as_ref()
            .map(|queue| queue.timing.drop_delay_max),
        api_key: None,
        certificate,
        private_key,
        long_poll: node.long_poll,
        pickup_timeout: node.pickup_timeout,
        drain: node.drain,
        max_concurrent_handshakes: node.max_concurrent_handshakes,
        limits: octopoll_fleet::limits::LimitKeys::of(node),
        nodes,
    };
    let path = dir.join("cluster.toml");
    let text = file.render().context("writing the cluster file")?;
    std::fs::write(&path, text).context("writing the cluster file")?;
    Ok(path)
}

async fn start_nodes(
    config: &RunConfig,
    program: &std::path::Path,
    cluster_file: &std::path::Path,
    api_key: &str,
) -> anyhow::Result<Vec<(ChildProcess, Listening)>> {
    let starting = (1..=config.lab.cluster.nodes).map(|n| {
        let args = vec![
            "node".to_string(),
            format!("--cluster-file={}", cluster_file.display()),
            format!("--node={n}"),
        ];
        async move {
            // The key reaches the children through the environment, never argv.
            let env = [(API_KEY_ENV, api_key)];
            ChildProcess::start::<Listening>(
                &NodeId(n).to_string(),
                program,
                &args,
                &env,
                NODE_READY,
            )
            .await
        }
    });
    join_all(starting).await.into_iter().collect()
}

async fn start_swarms(
    config: &RunConfig,
    program: &std::path::Path,
    swarms: usize,
    apis: &[String],
    comms: &[String],
    identity: &Identity,
    api_key: &str,
) -> anyhow::Result<Vec<SwarmChild>> {
    let swarm = &config.lab.swarm;
    let polling = &swarm.agent.polling;
    // Tentacle waits 60 s for the next request; with a longer long-poll that would
    // drop every idle connection, so the agents wait the long-poll plus a margin.
    let receive_timeout = polling
        .receive_request_timeout
        .max(config.lab.cluster.node.long_poll + Duration::from_secs(30));
    let ramp = polling
        .ramp
        .as_ref()
        .map_or(0.0, |r| r.rate() / swarms as f64);
    let starting = (0..swarms).map(|i| {
        let args = SwarmArgs {
            agents: swarm.agents as u64,
            shard: Shard {
                index: i + 1,
                count: swarms,
            },
            // Shares register through different nodes: the registry is shared.
            register: apis[i % apis.len()].clone(),
            api_key: String::new(),
            server_thumbprint: Some(identity.thumbprint().to_string()),
            server_certificate: None,
            insecure: false,
            poll: comms.to_vec(),
            name_prefix: swarm.name_prefix.clone(),
            seed: swarm.seed,
            key_type: key_type_name(swarm.key_type),
            connections_per_node: polling.connections_per_node.max(1) as u64,
            backoff: polling.backoff.strategy,
            backoff_min: polling.backoff.min,
            backoff_max: polling.backoff.max,
            receive_timeout,
            ramp,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            hold: true,
            parent_watch: false,
        };
        let name = format!("agents {}", args.shard);
        let share = octopoll_fleet::plan::share(swarm.agents, i, swarms).len();
        let bound = swarm_ready_bound(share, swarm.key_type);
        async move {
            let env = [(API_KEY_ENV, api_key)];
            let (process, ready) =
                ChildProcess::start::<Listening>(&name, program, &args.to_args(), &env, bound)
                    .await?;
            Ok::<_, anyhow::Error>(SwarmChild {
                remote: RemoteSwarm::new(ready.control, config.lab.cluster.node.api_key.clone()),
                process,
            })
        }
    });
    join_all(starting).await.into_iter().collect()
}

fn key_type_name(key_type: octopoll_pki::KeyType) -> KeyTypeName {
    match key_type {
        octopoll_pki::KeyType::Rsa2048 => KeyTypeName::Rsa,
        _ => KeyTypeName::Ecdsa,
    }
}

impl Testbed for ProcessLab {
    fn topology(&self) -> Topology {
        self.topology
    }

    fn queue_mode(&self) -> QueueMode {
        self.queue
    }

    fn agents(&self) -> usize {
        self.agents
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.remote.id()).collect()
    }

    fn dispatcher(&self, node: NodeId) -> Option<Dispatcher> {
        self.node(node).cloned().map(Dispatcher::Remote)
    }

    fn is_running(&self, node: NodeId) -> bool {
        self.node(node).is_some_and(RemoteNode::is_running)
    }

    async fn machines(&self) -> Vec<Machine> {
        for node in &self.nodes {
            match node.remote.machines().await {
                Ok(machines) => return machines,
                Err(error) => warn!(%error, "a node process could not list the machines"),
            }
        }
        Vec::new()
    }

    async fn snapshot(&self) -> Snapshot {
        let statuses = join_all(self.nodes.iter().map(|n| n.remote.status())).await;
        let mut machines = 0;
        let mut polling = 0;
        let nodes = self
            .nodes
            .iter()
            .zip(statuses)
            .map(|(node, status)| match status {
                Ok(status) => {
                    machines = machines.max(status.machines);
                    polling += status.polling;
                    NodeView {
                        id: status.node,
                        up: status.running,
                        stats: status.stats,
                    }
                }
                // A node process that does not answer is down, as far as anyone can tell.
                Err(_) => NodeView {
                    id: node.remote.id(),
                    up: false,
                    stats: NodeStats::default(),
                },
            })
            .collect::<Vec<_>>();
        let coverage = match self.queue {
            // Through Redis, an agent polling any node is reached from every running
            // one: which agents poll somewhere takes each node's pairs.
            QueueMode::Redis => {
                let running = nodes.iter().filter(|n| n.up).count();
                self.coverage_matrix()
                    .await
                    .coverage_through_shared_queue(running)
            }
            _ => Coverage {
                polling_pairs: polling,
                total_pairs: machines * nodes.len(),
            },
        };
        Snapshot { coverage, nodes }
    }

    async fn coverage_matrix(&self) -> CoverageMatrix {
        let names: Vec<String> = self.node_ids().iter().map(ToString::to_string).collect();
        let width = names.len();
        let mut matrix = CoverageMatrix::new(names);
        let pairs = join_all(self.nodes.iter().map(|n| n.remote.pairs())).await;
        let mut by_machine: std::collections::BTreeMap<String, Vec<PairState>> =
            std::collections::BTreeMap::new();
        for (column, pairs) in pairs.into_iter().enumerate() {
            for pair in pairs.unwrap_or_default() {
                by_machine
                    .entry(pair.name)
                    .or_insert_with(|| vec![PairState::Never; width])[column] = pair.state;
            }
        }
        for states in by_machine.into_values() {
            matrix.add_agent(states);
        }
        matrix
    }

    async fn swarm(&self) -> SwarmTally {
        let statuses = join_all(self.swarms.iter().map(|s| s.remote.status())).await;
        // Links counted from what the run asked for: a share that does not answer,
        // or never started polling, leaves its links unconnected, not uncounted.
        statuses.into_iter().flatten().fold(
            SwarmTally {
                links: self.links,
                ..SwarmTally::default()
            },
            |tally, s| SwarmTally {
                connections: tally.connections + s.connections,
                failures: tally.failures + s.failures,
                ..tally
            },
        )
    }

    fn act(
        &self,
        node: NodeId,
        action: NodeAction,
        undo: bool,
    ) -> impl std::future::Future<Output = Result<(), FaultError>> + Send + 'static {
        let found = self.node(node).cloned();
        async move {
            let found = found.ok_or(FaultError::NoSuchNode(node))?;
            found
                .act(action, undo)
                .await
                .map(drop)
                .map_err(|error| FaultError::Remote { node, error })
        }
    }

    fn fronts(&self) -> Option<ChaosFronts> {
        None
    }

    async fn mesh_starting(&self) {
        self.usage.mark_before_mesh();
        for result in join_all(self.swarms.iter().map(|s| s.remote.poll())).await {
            if let Err(error) = result {
                warn!(%error, "an agent process did not start polling");
            }
        }
    }

    async fn mesh_formed(&self) {
        self.usage.mark_at_mesh();
    }

    async fn stop(self) -> Stopped {
        let swarm = Testbed::swarm(&self).await;
        let processes = self.usage.finish();
        // Agents first (they say END), then the nodes, then their registry.
        let finals: Vec<Option<SwarmStatus>> =
            join_all(self.swarms.into_iter().map(|s| s.process.stop())).await;
        let swarm = SwarmTally {
            failures: finals
                .iter()
                .flatten()
                .map(|s| s.failures)
                .sum::<u64>()
                .max(swarm.failures),
            ..swarm
        };
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.remote.id()).collect();
        let stats: Vec<Option<NodeStats>> =
            join_all(self.nodes.into_iter().map(|n| n.process.stop())).await;
        let nodes = ids
            .into_iter()
            .zip(stats)
            .map(|(id, stats)| {
                let stats = stats.unwrap_or_else(|| {
                    warn!(node = %id, "the node process did not report its final counters");
                    NodeStats::default()
                });
                (id, stats)
            })
            .collect();
        let (url, namespace) = &self.registry;
        if let Err(error) = octopoll_node::MachineRegistry::forget(url, namespace).await {
            warn!(%error, "could not delete the run's machines from the registry");
        }
        if let Some(redis) = self.redis {
            redis.stop().await;
        }
        if let Some(redis) = self.queue_redis {
            redis.lock().await.kill().await;
        }
        Stopped {
            nodes,
            swarm,
            processes,
        }
    }
}

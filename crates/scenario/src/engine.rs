//! `octopoll run`: start a lab, wait for the mesh, drive the workload, drain, report.

use std::sync::Arc;

use anyhow::Context as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long request tasks may take to record `run-ended` once the run ends.
const TASKS_BOUND: Duration = Duration::from_secs(10);

use crate::config::RunConfig;
use crate::control::{Burst, ControlState};
use crate::listening_cluster::ListeningCluster;
use crate::process_lab::ProcessLab;
use crate::progress::{NodeReading, Progress, Reading};
use crate::telemetry::Telemetry;
use crate::testbed::{wait_for_full_coverage, wait_for_mesh, Dispatcher, Testbed};
use crate::workload::{request_for, spawn_request, Ledger, Recipient};
use crate::{control, injector, sampler};
use octopoll_fleet::plan::Plan;
use octopoll_lab::{Lab, Mesh};
use octopoll_node::Node;
use octopoll_report::RunRecord;
use octopoll_report::{timeline, Report};

/// What a run leaves: its report and its per-second time series.
#[derive(Debug)]
pub struct Finished {
    /// The report.
    pub report: Report,
    /// The per-second CSV (see [`octopoll_report::timeline::csv`]).
    pub csv: String,
    /// The self-contained HTML report (see [`octopoll_report::html`]).
    pub html: String,
    /// The thresholds and invariants as JUnit XML (see [`octopoll_report::junit`]).
    pub junit: String,
}

/// Runs the whole scenario and returns its report: in this process when it fits
/// the open-file limit (or `processes` is 0), else with each node in a process of
/// its own and the agents split over as many as they need. On an error the lab
/// is dropped, which ends its nodes and agents (or kills their processes).
pub async fn execute(config: RunConfig, progress: &mut Progress) -> anyhow::Result<Finished> {
    execute_until(config, progress, CancellationToken::new()).await
}

/// How long an interrupted run waits for the requests in flight, at most.
pub const INTERRUPTED_DRAIN: Duration = Duration::from_secs(3);

/// [`execute`], stopped early when `interrupt` is cancelled (Ctrl-C): the mesh
/// wait or the workload ends, no fault not yet due is carried out, requests in
/// flight get up to [`INTERRUPTED_DRAIN`], and the report of what ran comes
/// back marked `interrupted`.
pub async fn execute_until(
    mut config: RunConfig,
    progress: &mut Progress,
    interrupt: CancellationToken,
) -> anyhow::Result<Finished> {
    config.lab.swarm.seed = config.seed;
    if interrupt.is_cancelled() {
        anyhow::bail!("interrupted before the run started");
    }
    match config.plan()? {
        Plan::InProcess => {
            // Every listener the run serves is bound before anything starts, so a
            // taken port costs nothing but the error.
            let listeners = Listeners::bind(&config).await?;
            let redis = redis_queue(&mut config)
                .await?
                .map(|redis| Arc::new(tokio::sync::Mutex::new(redis)));
            let lab = Lab::start(config.lab.clone()).await?;
            let mut in_process = InProcess::serve(&lab, listeners).await?;
            in_process.redis = redis.clone();
            let finished = run_on(lab, &config, in_process, progress, &interrupt).await;
            if let Some(redis) = redis {
                redis.lock().await.kill().await;
            }
            finished
        }
        Plan::Processes { swarms } => {
            info!(
                swarms,
                "the run is larger than one process holds; using node and agent processes"
            );
            let lab = ProcessLab::start(&config, swarms).await?;
            let in_process = InProcess {
                redis: lab.queue_redis(),
                ..InProcess::default()
            };
            run_on(lab, &config, in_process, progress, &interrupt).await
        }
    }
}

/// Points an in-process run's Redis queue at `--redis`, or at a redis-server of
/// its own (returned, to be stopped after the run; on TCP when the chaos
/// proxies are on); nothing for other queues.
async fn redis_queue(
    config: &mut RunConfig,
) -> anyhow::Result<Option<octopoll_fleet::redis_server::LocalRedis>> {
    let cluster = &mut config.lab.cluster;
    let given = cluster
        .redis_queue
        .as_ref()
        .is_some_and(|q| !q.url.is_empty());
    if cluster.queue != octopoll_node::QueueMode::Redis || given {
        return Ok(None);
    }
    let (redis, url) = match &config.redis {
        Some(url) => (None, url.clone()),
        None => {
            // With the chaos proxies on, each node reaches Redis through one of
            // its own (for faults on one node's link), which relays TCP.
            // On loopback, whatever the nodes bind: it has no password.
            let started = if config.lab.chaos {
                let ip = std::net::Ipv4Addr::LOCALHOST.into();
                octopoll_fleet::redis_server::LocalRedis::start_on_tcp(None, ip).await
            } else {
                octopoll_fleet::redis_server::LocalRedis::start(None).await
            };
            let redis =
                started.context("starting the Redis server the run's queue goes through")?;
            let url = redis.url();
            (Some(redis), url)
        }
    };
    // A prefix of this run's own: a Redis of the user's may hold other runs. A
    // queue set up without a URL (a test's timings) keeps its settings.
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    let mut queue = cluster
        .redis_queue
        .take()
        .unwrap_or_else(|| octopoll_node::RedisQueueConfig::new("", prefix.clone()));
    queue.url = url;
    if queue.prefix.is_empty() {
        queue.prefix = prefix;
    }
    cluster.redis_queue = Some(queue);
    Ok(redis)
}

/// What only a run in this process has (a split run refuses to be asked for
/// them): the dashboard and metrics it serves, and the nodes the listening
/// cluster registers with and is checked through; and, in either kind of run,
/// the redis-server its Redis faults act on.
#[derive(Default)]
struct InProcess {
    dashboard: Option<Arc<ControlState>>,
    telemetry: Option<Arc<Telemetry>>,
    nodes: Vec<Arc<Node>>,
    /// The redis-server of the run's queue, for its Redis faults.
    redis: Option<crate::fault::RedisHandle>,
    /// Ends the servers when the run ends.
    _serving: Option<DropGuard>,
}

/// The listeners an in-process run serves its metrics and control API on.
struct Listeners {
    metrics: Option<tokio::net::TcpListener>,
    control: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds what `config` asks for.
    async fn bind(config: &RunConfig) -> anyhow::Result<Self> {
        let bind = |addr: Option<std::net::SocketAddr>, flag: &'static str| async move {
            let Some(addr) = addr else { return Ok(None) };
            tokio::net::TcpListener::bind(addr)
                .await
                .map(Some)
                .map_err(|error| {
                    anyhow::Error::new(error).context(format!(
                        "binding {flag} {addr} (pass another --{flag} HOST:PORT)"
                    ))
                })
        };
        Ok(Self {
            metrics: bind(config.metrics, "metrics").await?,
            control: bind(config.control, "control").await?,
        })
    }
}

impl InProcess {
    /// Serves the control API and metrics of `lab` on `listeners`.
    async fn serve(lab: &Lab, listeners: Listeners) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let telemetry = listeners.metrics.as_ref().map(|_| Telemetry::new());
        if let (Some(listener), Some(telemetry)) = (listeners.metrics, &telemetry) {
            eprintln!(
                "Prometheus metrics on http://{}/metrics",
                listener.local_addr()?
            );
            let router = crate::telemetry::router(
                telemetry.clone(),
                lab.cluster.view(),
                lab.swarm.agents().to_vec(),
            );
            tokio::spawn(octopoll_http::serve(
                listener,
                router,
                octopoll_http::ServeLimits::default(),
                stop.clone(),
            ));
        }
        let dashboard = match listeners.control {
            Some(listener) => {
                let dashboard = ControlState::new(lab.cluster.view());
                let proxies = if lab.fronts.is_some() {
                    " and the chaos proxies' /proxies"
                } else {
                    ""
                };
                eprintln!(
                    "dashboard on http://{0}/ (control API: GET /api/cluster, POST /api/nodes/{{n}}/kill|stop|start|restart{proxies})",
                    listener.local_addr()?
                );
                let router = control::router(dashboard.clone(), lab.fronts.as_ref());
                tokio::spawn(octopoll_http::serve(
                    listener,
                    router,
                    octopoll_http::ServeLimits::default(),
                    stop.clone(),
                ));
                tokio::spawn(dashboard.clone().keep_history(stop.clone()));
                Some(dashboard)
            }
            None => None,
        };
        Ok(Self {
            dashboard,
            telemetry,
            nodes: lab.cluster.nodes().to_vec(),
            redis: None,
            _serving: Some(stop.drop_guard()),
        })
    }
}

/// Runs the scenario on a started lab, wherever its parts live: the mesh, then
/// the workload, faults and sampling side by side, then the report.
async fn run_on<T: Testbed>(
    lab: T,
    config: &RunConfig,
    in_process: InProcess,
    progress: &mut Progress,
    interrupt: &CancellationToken,
) -> anyhow::Result<Finished> {
    // What stops the run early: an interrupt, or a breached abort_on_fail
    // threshold (which is no interrupt).
    let stop = interrupt.child_token();
    let mesh = form_mesh(&lab, config, &stop).await;
    let listening_cluster = match (&config.listening_cluster, in_process.nodes.first()) {
        (Some(cluster), Some(node)) => {
            Some(ListeningCluster::start(node, &node.config().api_key, cluster).await?)
        }
        _ => None,
    };
    // In name order. Read before the clock starts: with thousands of agents in
    // other processes the list takes a moment, which no request should wait for.
    let machines = Recipient::all_in(&lab.machines().await);
    let driven = drive(
        &lab,
        config,
        &in_process,
        &machines,
        &mesh,
        listening_cluster,
        progress,
        &stop,
    )
    .await;
    let node_names: Vec<String> = lab.node_ids().iter().map(ToString::to_string).collect();
    let stopped = lab.stop().await;
    let counts = driven.ledger.counts();
    let faults = injector::spans(&config.faults, &driven.executed, driven.run_end)
        .iter()
        .map(|span| timeline::analyse(span, &driven.samples, &counts))
        .collect();
    let mut report = Report::of_run(
        RunRecord {
            name: config.name.clone(),
            facts: driven.facts,
            counts: &counts,
            nodes: &stopped.nodes,
            agent_failures: stopped.swarm.failures,
            processes: stopped.processes,
            faults,
            listening_cluster: driven.listening_cluster,
            samples: &driven.samples,
            key_type: config.lab.swarm.key_type.to_string(),
            host: octopoll_report::report::Host {
                cores: std::thread::available_parallelism().map_or(1, usize::from),
                open_files: octopoll_fleet::plan::open_file_limit(),
            },
            scenario: config.scenario.clone(),
        },
        &config.thresholds,
    );
    report.interrupted = interrupt.is_cancelled();
    report.aborted = driven.aborted;
    let csv = timeline::csv(&driven.samples, &counts, &node_names);
    let html = octopoll_report::html::render(&report, &driven.samples, &counts, &node_names);
    let junit = octopoll_report::junit::render(&report);
    Ok(Finished {
        report,
        csv,
        html,
        junit,
    })
}

/// Waits for every polling link (or the mesh timeout: the run goes on either way).
async fn form_mesh<T: Testbed>(lab: &T, config: &RunConfig, interrupt: &CancellationToken) -> Mesh {
    lab.mesh_starting().await;
    let mesh = tokio::select! {
        mesh = wait_for_mesh(lab, config.mesh_timeout) => mesh,
        () = interrupt.cancelled() => Mesh { settled_after: None, full_coverage_after: None },
    };
    match mesh.settled_after {
        Some(after) => info!(
            ?after,
            full = mesh.full_coverage_after.is_some(),
            "mesh ready"
        ),
        None => {
            let swarm = lab.swarm().await;
            warn!(
                connected = swarm.connections,
                links = swarm.links,
                "not every polling link connected within the mesh timeout; running anyway"
            )
        }
    }
    lab.mesh_formed().await;
    mesh
}

/// What the workload, the faults and the sampling leave.
struct Driven {
    ledger: Arc<Ledger>,
    facts: octopoll_report::RunFacts,
    executed: Vec<injector::Executed>,
    samples: Vec<octopoll_report::timeline::CoverageSample>,
    listening_cluster: Option<octopoll_report::listening::ListeningClusterReport>,
    /// From the start of the workload to the end of sampling.
    run_end: Duration,
    /// The abort_on_fail threshold that stopped the workload, if one did.
    aborted: Option<octopoll_report::report::Aborted>,
}

/// The run's clock starts with the mesh formed: the workload, the faults, the
/// sampler (and the listening cluster) side by side. Sampling goes on until the
/// drain is over, every fault has been carried out (undos included), and the
/// mesh has healed or the recovery bound has passed. Every request task has
/// ended (or is counted lost) when this returns.
// Each argument is a different part of the run, borrowed for this one call.
#[allow(clippy::too_many_arguments)]
async fn drive<T: Testbed>(
    lab: &T,
    config: &RunConfig,
    in_process: &InProcess,
    machines: &[Recipient],
    mesh: &Mesh,
    mut listening_cluster: Option<ListeningCluster>,
    progress: &mut Progress,
    interrupt: &CancellationToken,
) -> Driven {
    let ledger = Arc::new(match &in_process.telemetry {
        Some(telemetry) => Ledger::with_telemetry(telemetry.clone()),
        None => Ledger::default(),
    });
    let started = ledger.started();
    let tracker = TaskTracker::new();
    let run_ended = CancellationToken::new();
    let dashboard = in_process.dashboard.as_deref();
    if let Some(dashboard) = dashboard {
        dashboard.enable_burst(Burst {
            ledger: ledger.clone(),
            tracker: tracker.clone(),
            run_ended: run_ended.clone(),
            machines: machines.to_vec(),
            shape: config.shape(),
            seed: config.seed,
        });
    }
    let (workload_done, faults_done) = (CancellationToken::new(), CancellationToken::new());
    let recovery_bound = recovery_bound(config);
    let cluster_run = async {
        let cluster = listening_cluster.as_mut()?;
        let nodes = &in_process.nodes;
        Some(
            cluster
                .exercise(nodes, config.duration, started, &workload_done)
                .await,
        )
    };
    let (facts, executed, samples, cluster_report, aborted) = tokio::join!(
        async {
            let workload = Workload {
                lab,
                config,
                ledger: &ledger,
                machines,
                interrupt,
            };
            // Progress is sampled beside the workload, never inside its loop: a slow
            // sample must not make requests late.
            let driving = CancellationToken::new();
            tokio::join!(
                async {
                    workload.drive(&tracker, &run_ended).await;
                    driving.cancel();
                },
                workload.show_progress(&mut *progress, &driving),
            );
            let facts = sampler::run_facts(
                lab,
                config.seed,
                started.elapsed().as_secs_f64(),
                mesh.full_coverage_after,
            )
            .await;
            workload.drain(progress).await;
            workload_done.cancel();
            facts
        },
        async {
            let executed = injector::run(
                lab,
                &config.faults,
                started,
                dashboard,
                in_process.redis.as_ref(),
                interrupt,
            )
            .await;
            faults_done.cancel();
            executed
        },
        sampler::sample(lab, started, async {
            workload_done.cancelled().await;
            faults_done.cancelled().await;
            if !config.faults.is_empty() && !interrupt.is_cancelled() {
                tokio::select! {
                    _ = wait_for_full_coverage(lab, recovery_bound) => {}
                    () = interrupt.cancelled() => {}
                }
            }
        }),
        cluster_run,
        crate::abort::watch(
            lab,
            &config.thresholds,
            &ledger,
            started,
            interrupt,
            &workload_done
        ),
    );
    let run_end = started.elapsed();
    // Nothing more from the dashboard once the requests are being counted.
    if let Some(dashboard) = dashboard {
        dashboard.close();
    }
    run_ended.cancel();
    tracker.close();
    // Each task ends at once on `run_ended`; one that does not is counted as lost.
    if tokio::time::timeout(TASKS_BOUND, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            tasks = tracker.len(),
            "request tasks did not end after the run ended"
        );
    }
    progress.finish();
    let listening_cluster = match listening_cluster.zip(cluster_report) {
        Some((cluster, report)) => {
            let running = in_process.nodes.iter().find(|n| n.is_running());
            Some(cluster.finish(report, running.map(|n| &**n)).await)
        }
        None => None,
    };
    Driven {
        ledger,
        facts,
        executed,
        samples,
        listening_cluster,
        run_end,
        aborted,
    }
}

/// How long sampling may go on after the workload, for the mesh to heal from the
/// last fault: the longest reconnect delay, plus time for the handshakes.
fn recovery_bound(config: &RunConfig) -> Duration {
    config.lab.swarm.agent.polling.backoff.max + Duration::from_secs(10)
}

/// The run's requests: queued on schedule, each counted once.
struct Workload<'a, T> {
    lab: &'a T,
    config: &'a RunConfig,
    ledger: &'a Arc<Ledger>,
    /// The agents, in name order (registration order varies from run to run).
    machines: &'a [Recipient],
    /// Ends the workload early (and shortens the drain).
    interrupt: &'a CancellationToken,
}

impl<T: Testbed> Workload<'_, T> {
    async fn drive(&self, tracker: &TaskTracker, run_ended: &CancellationToken) {
        let (lab, config, machines) = (self.lab, self.config, self.machines);
        let nodes = lab.node_ids();
        let dispatchers: Vec<Dispatcher> =
            nodes.iter().filter_map(|&n| lab.dispatcher(n)).collect();
        let shape = config.shape();
        let mut pacer =
            crate::pacer::Pacer::new(self.ledger.started(), config.rate, config.duration);
        if machines.is_empty() {
            return;
        }
        loop {
            let batch = tokio::select! {
                batch = pacer.next_batch() => batch,
                () = self.interrupt.cancelled() => None,
            };
            let Some(batch) = batch else { break };
            for n in batch {
                let scheduled = pacer.scheduled(n);
                // Requests are numbered from 1. Each draws from its own generator, so
                // the same seed gives the same requests whatever a fault did to the
                // ones before.
                let number = n + 1;
                let mut rng =
                    StdRng::seed_from_u64(config.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let machine = &machines[rng.random_range(0..machines.len())];
                // Work starts on a node that runs, as Octopus starts a task on a live node.
                let running: Vec<&Dispatcher> = dispatchers
                    .iter()
                    .filter(|d| lab.is_running(d.node()))
                    .collect();
                if running.is_empty() {
                    self.ledger.skipped();
                    continue;
                }
                let node = running[rng.random_range(0..running.len())].clone();
                let request = request_for(
                    &mut rng,
                    &shape,
                    &machine.subscription,
                    &machine.thumbprint,
                    number,
                );
                spawn_request(
                    tracker,
                    self.ledger,
                    node,
                    machine.subscription.clone(),
                    request,
                    run_ended.clone(),
                    scheduled,
                );
            }
        }
    }

    /// Shows a sample a second until `driving` is cancelled.
    async fn show_progress(&self, progress: &mut Progress, driving: &CancellationToken) {
        loop {
            progress.show(&self.sample("running").await);
            tokio::select! {
                _ = driving.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn drain(&self, progress: &mut Progress) {
        let started = Instant::now();
        let deadline = || {
            let drain = match self.interrupt.is_cancelled() {
                true => self.config.drain.min(INTERRUPTED_DRAIN),
                false => self.config.drain,
            };
            started + drain
        };
        let outstanding = || {
            let (queued, completed, failed) = self.ledger.tally();
            queued > completed + failed
        };
        let mut next_show = Instant::now();
        while outstanding() && Instant::now() < deadline() {
            if Instant::now() >= next_show {
                progress.show(&self.sample("draining").await);
                next_show += Duration::from_millis(500);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sample(&self, phase: &'static str) -> Reading {
        let (ledger, config) = (self.ledger, self.config);
        let elapsed = ledger.started().elapsed();
        let (queued, completed, failed) = ledger.tally();
        let per_node = ledger.per_node_tally();
        let snapshot = self.lab.snapshot().await;
        let next_fault = config
            .faults
            .iter()
            .flat_map(|f| {
                let undo = f
                    .duration
                    .map(|d| (f.at + d, format!("undo {}", f.describe())));
                std::iter::once((f.at, f.describe())).chain(undo)
            })
            .filter(|(at, _)| *at > elapsed)
            .min_by_key(|(at, _)| *at)
            .map(|(at, what)| format!("{what} (in {:.1}s)", (at - elapsed).as_secs_f64()));
        Reading {
            elapsed,
            total: config.duration,
            coverage: snapshot.coverage.ratio(),
            connections: snapshot.connections(),
            queued,
            completed,
            failed,
            phase,
            pickup_p99_ms: ledger.pickup_p99_ms(),
            next_fault,
            nodes: snapshot
                .nodes
                .iter()
                .map(|node| {
                    let (completed, failed) = per_node.get(&node.id).copied().unwrap_or_default();
                    NodeReading {
                        node: node.id.to_string(),
                        up: node.up,
                        agents: node.stats.subscriptions,
                        queue: node.stats.queued,
                        completed,
                        failed,
                    }
                })
                .collect(),
        }
    }
}

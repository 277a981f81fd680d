//! `octopoll run`: start a lab, wait for the mesh, drive the workload, drain, report.

use std::sync::Arc;
use std::time::Duration;

use octopoll_node::NodeSender;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long request tasks may take to record `run-ended` once the run ends.
const TASKS_BOUND: Duration = Duration::from_secs(10);

use crate::control::{Burst, ControlState};
use crate::lab::{Lab, LabConfig};
use crate::progress::{NodeSample, Progress, Sample};
use crate::report::{Report, RunFacts};
use crate::scenario::fault::Fault;
use crate::scenario::thresholds::Thresholds;
use crate::telemetry::Telemetry;
use crate::workload::{request_for, spawn_request, Ledger, Mix, Shape};
use crate::{control, faults, timeline};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The lab to start.
    pub lab: LabConfig,
    /// How long to queue requests.
    pub duration: Duration,
    /// Requests queued per second, over the whole cluster.
    pub rate: f64,
    /// Seed for request choice (and the swarm's ids and jitter).
    pub seed: u64,
    /// How long to wait for every agent to poll every node before the workload starts.
    pub mesh_timeout: Duration,
    /// How long to wait for unfinished requests after the workload, before failing
    /// them with `run-ended`.
    pub drain: Duration,
    /// Request kinds and weights.
    pub mix: Mix,
    /// Shortest simulated script run time.
    pub min_script_time: Duration,
    /// Longest simulated script run time.
    pub max_script_time: Duration,
    /// Extra text in each echo request.
    pub payload_bytes: usize,
    /// Bytes in each upload's data stream.
    pub stream_bytes: usize,
    /// Faults over time.
    pub faults: Vec<Fault>,
    /// Pass/fail limits.
    pub thresholds: Thresholds,
    /// The scenario's name, for the report.
    pub name: Option<String>,
    /// Serve the control API (and the chaos proxies' API) here during the run.
    pub control: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics on `/metrics` here during the run.
    pub metrics: Option<std::net::SocketAddr>,
}

impl RunConfig {
    /// The default run: 3 nodes, 100 agents, 30 s at 20 requests/s.
    pub fn new(lab: LabConfig) -> Self {
        Self {
            lab,
            duration: Duration::from_secs(30),
            rate: 20.0,
            seed: 1,
            mesh_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            mix: Mix::default(),
            min_script_time: Duration::ZERO,
            max_script_time: Duration::from_millis(200),
            payload_bytes: 0,
            stream_bytes: 4096,
            faults: Vec::new(),
            thresholds: Thresholds::default(),
            name: None,
            control: None,
            metrics: None,
        }
    }

    /// How each request is shaped.
    pub fn shape(&self) -> Shape {
        Shape {
            mix: self.mix,
            min_script_time: self.min_script_time,
            max_script_time: self.max_script_time,
            payload_bytes: self.payload_bytes,
            stream_bytes: self.stream_bytes,
        }
    }
}

/// What a run leaves: its report and its per-second time series.
#[derive(Debug)]
pub struct Finished {
    /// The report.
    pub report: Report,
    /// The per-second CSV (see [`crate::timeline::csv`]).
    pub csv: String,
    /// The self-contained HTML report (see [`crate::html`]).
    pub html: String,
}

/// Runs the whole scenario and returns its report.
pub async fn execute(mut config: RunConfig, progress: &mut Progress) -> anyhow::Result<Finished> {
    config.lab.swarm.seed = config.seed;
    let lab = Lab::start(config.lab.clone()).await?;
    let api_stop = CancellationToken::new();
    let _api_stop = api_stop.clone().drop_guard();
    let bind = |addr: std::net::SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "binding {flag} {addr} (pass another --{flag} HOST:PORT)"
            ))
        })
    };
    let telemetry = config.metrics.map(|_| Telemetry::new());
    if let (Some(addr), Some(telemetry)) = (config.metrics, &telemetry) {
        let listener = match bind(addr, "metrics").await {
            Ok(listener) => listener,
            Err(error) => {
                lab.stop().await;
                return Err(error);
            }
        };
        eprintln!(
            "Prometheus metrics on http://{}/metrics",
            listener.local_addr()?
        );
        let router = crate::telemetry::router(
            telemetry.clone(),
            lab.cluster.view(),
            lab.swarm.agents().to_vec(),
        );
        tokio::spawn(control::serve(listener, router, api_stop.clone()));
    }
    let dashboard = config
        .control
        .map(|_| ControlState::new(lab.cluster.view()));
    if let (Some(addr), Some(dashboard)) = (config.control, &dashboard) {
        let listener = match bind(addr, "control").await {
            Ok(listener) => listener,
            Err(error) => {
                lab.stop().await;
                return Err(error);
            }
        };
        let proxies = if lab.network.is_some() {
            " and the chaos proxies' /proxies"
        } else {
            ""
        };
        eprintln!(
            "dashboard on http://{0}/ (control API: GET /api/cluster, POST /api/nodes/{{n}}/kill|stop|start|restart{proxies})",
            listener.local_addr()?
        );
        let router = control::router(dashboard.clone(), lab.network.as_ref());
        tokio::spawn(control::serve(listener, router, api_stop.clone()));
        tokio::spawn(dashboard.clone().keep_history(api_stop.clone()));
    }
    let mesh = lab.wait_for_mesh(config.mesh_timeout).await;
    match mesh.settled_after {
        Some(after) => info!(
            ?after,
            full = mesh.full_coverage_after.is_some(),
            "mesh ready"
        ),
        None => warn!(
            connected = lab.swarm.connections(),
            links = lab.swarm.links(),
            "not every polling link connected within the mesh timeout; running anyway"
        ),
    }

    // The run's clock starts now, with the mesh formed: fault times count from here.
    let ledger = Arc::new(match &telemetry {
        Some(telemetry) => Ledger::with_telemetry(telemetry.clone()),
        None => Ledger::default(),
    });
    let started = ledger.started();
    let tracker = TaskTracker::new();
    let run_ended = CancellationToken::new();
    if let Some(dashboard) = &dashboard {
        let mut machines = lab.cluster.registry().machines();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        dashboard.enable_burst(Burst {
            ledger: ledger.clone(),
            tracker: tracker.clone(),
            run_ended: run_ended.clone(),
            machines,
            shape: config.shape(),
            seed: config.seed,
        });
    }
    let (workload_done, faults_done) = (CancellationToken::new(), CancellationToken::new());
    // The workload, the faults and the sampler run side by side. Sampling goes on
    // until the drain is over, every fault has been carried out (undos included),
    // and the mesh has healed or the recovery bound has passed.
    let recovery_bound = recovery_bound(&config);
    let (facts, executed, samples) = tokio::join!(
        async {
            drive(&lab, &config, &ledger, &tracker, &run_ended, progress).await;
            let facts = RunFacts::measure(
                &lab,
                config.seed,
                started.elapsed().as_secs_f64(),
                mesh.full_coverage_after,
            );
            drain(&lab, &config, &ledger, progress, started).await;
            workload_done.cancel();
            facts
        },
        async {
            let executed = faults::run(&lab, &config.faults, started, dashboard.as_deref()).await;
            faults_done.cancel();
            executed
        },
        timeline::sample(&lab, started, async {
            workload_done.cancelled().await;
            faults_done.cancelled().await;
            if !config.faults.is_empty() {
                let _ = lab.wait_for_full_coverage(recovery_bound).await;
            }
        }),
    );
    let run_end = started.elapsed();
    // Nothing more from the dashboard once the requests are being counted.
    if let Some(dashboard) = &dashboard {
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
    let agent_failures = lab.swarm.agents().iter().map(|a| a.failures()).sum();
    let node_names: Vec<String> = lab
        .cluster
        .nodes()
        .iter()
        .map(|n| n.id().to_string())
        .collect();
    let node_stats = lab.stop().await;
    let counts = ledger.counts();
    let mut report = Report::new(facts, &counts, &node_stats);
    report.name = config.name.clone();
    report.churn.agent_failures = agent_failures;
    report.faults = faults::spans(&config.faults, &executed, run_end)
        .iter()
        .map(|span| timeline::analyse(span, &samples, &counts))
        .collect();
    report.thresholds = config.thresholds.check(&report);
    let csv = timeline::csv(&samples, &counts, &node_names);
    let html = crate::html::render(&report, &samples, &counts, &node_names);
    Ok(Finished { report, csv, html })
}

/// How long sampling may go on after the workload, for the mesh to heal from the
/// last fault: the longest reconnect delay, plus time for the handshakes.
fn recovery_bound(config: &RunConfig) -> Duration {
    config.lab.swarm.agent.polling.backoff.max + Duration::from_secs(10)
}

async fn drive(
    lab: &Lab,
    config: &RunConfig,
    ledger: &Arc<Ledger>,
    tracker: &TaskTracker,
    run_ended: &CancellationToken,
    progress: &mut Progress,
) {
    let nodes = lab.cluster.nodes();
    let senders: Vec<NodeSender> = nodes.iter().map(|n| n.sender()).collect();
    // In name order (agent-0001, …): registration order varies from run to run.
    let mut machines = lab.cluster.registry().machines();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let shape = config.shape();
    let started = ledger.started();
    let mut next_sample = Duration::ZERO;
    let mut queued = 0u64;
    let period = Duration::from_secs_f64(1.0 / config.rate.max(0.001));
    while started.elapsed() < config.duration && !machines.is_empty() {
        // Catch up to the rate: every request due by now is queued now.
        let due = (started.elapsed().as_secs_f64() * config.rate) as u64 + 1;
        while queued < due {
            queued += 1;
            // Each request draws from its own generator, so the same seed gives the
            // same requests whatever a fault did to the ones before.
            let mut rng =
                StdRng::seed_from_u64(config.seed ^ queued.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let machine = &machines[rng.random_range(0..machines.len())];
            // Work starts on a node that runs, as Octopus starts a task on a live node.
            let running: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes[i].is_running())
                .collect();
            if running.is_empty() {
                ledger.skipped();
                continue;
            }
            let node = senders[running[rng.random_range(0..running.len())]].clone();
            let thumbprint = machine.thumbprint.to_string();
            let request = request_for(&mut rng, &shape, &machine.subscription, &thumbprint, queued);
            spawn_request(
                tracker,
                ledger,
                node,
                machine.subscription.clone(),
                request,
                run_ended.clone(),
            );
        }
        if started.elapsed() >= next_sample {
            progress.show(&sample(
                lab,
                ledger,
                started.elapsed(),
                config.duration,
                "running",
                &config.faults,
            ));
            next_sample += Duration::from_secs(1);
        }
        let until_next = period.min(config.duration.saturating_sub(started.elapsed()));
        tokio::time::sleep(until_next.max(Duration::from_millis(1))).await;
    }
}

async fn drain(
    lab: &Lab,
    config: &RunConfig,
    ledger: &Ledger,
    progress: &mut Progress,
    started: Instant,
) {
    let deadline = Instant::now() + config.drain;
    let outstanding = || {
        let (queued, completed, failed) = ledger.tally();
        queued > completed + failed
    };
    let mut next_show = Instant::now();
    while outstanding() && Instant::now() < deadline {
        if Instant::now() >= next_show {
            progress.show(&sample(
                lab,
                ledger,
                started.elapsed(),
                config.duration,
                "draining",
                &config.faults,
            ));
            next_show += Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(
    lab: &Lab,
    ledger: &Ledger,
    elapsed: Duration,
    total: Duration,
    phase: &'static str,
    faults: &[Fault],
) -> Sample {
    let (queued, completed, failed) = ledger.tally();
    let per_node = ledger.per_node_tally();
    let matrix = lab.coverage_matrix();
    let next_fault = faults
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
    Sample {
        elapsed,
        total,
        coverage: matrix.coverage().ratio(),
        connections: lab.cluster.connections(),
        queued,
        completed,
        failed,
        phase,
        pickup_p99_ms: ledger.pickup_p99_ms(),
        next_fault,
        nodes: lab
            .cluster
            .nodes()
            .iter()
            .map(|node| {
                let stats = node.stats();
                let (completed, failed) = per_node.get(&node.id()).copied().unwrap_or_default();
                NodeSample {
                    node: node.id().to_string(),
                    up: node.is_running(),
                    agents: stats.subscriptions,
                    queue: stats.queued,
                    completed,
                    failed,
                }
            })
            .collect(),
    }
}

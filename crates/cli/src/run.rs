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

use crate::lab::{Lab, LabConfig};
use crate::progress::{Progress, Sample};
use crate::report::{Report, RunFacts};
use crate::workload::{request_for, spawn_request, Ledger, Mix};

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
    /// Longest simulated script run time.
    pub max_script_time: Duration,
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
            max_script_time: Duration::from_millis(200),
        }
    }
}

/// Runs the whole scenario and returns its report.
pub async fn execute(mut config: RunConfig, progress: &mut Progress) -> anyhow::Result<Report> {
    config.lab.swarm.seed = config.seed;
    let lab = Lab::start(config.lab.clone()).await?;
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

    let ledger = Arc::new(Ledger::default());
    let tracker = TaskTracker::new();
    let run_ended = CancellationToken::new();
    let started = Instant::now();
    drive(&lab, &config, &ledger, &tracker, &run_ended, progress).await;
    let facts = RunFacts::measure(
        &lab,
        config.seed,
        started.elapsed().as_secs_f64(),
        mesh.full_coverage_after,
    );

    drain(&lab, &config, &ledger, progress, started).await;
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
    let node_stats = lab.stop().await;
    Ok(Report::new(facts, &ledger.counts(), &node_stats))
}

async fn drive(
    lab: &Lab,
    config: &RunConfig,
    ledger: &Arc<Ledger>,
    tracker: &TaskTracker,
    run_ended: &CancellationToken,
    progress: &mut Progress,
) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let senders: Vec<NodeSender> = lab.cluster.nodes().iter().map(|n| n.sender()).collect();
    let machines = lab.cluster.registry().machines();
    let started = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut queued = 0u64;
    let period = Duration::from_secs_f64(1.0 / config.rate.max(0.001));
    while started.elapsed() < config.duration && !machines.is_empty() {
        // Catch up to the rate: every request due by now is queued now.
        let due = (started.elapsed().as_secs_f64() * config.rate) as u64 + 1;
        while queued < due {
            queued += 1;
            let machine = &machines[rng.random_range(0..machines.len())];
            let node = senders[rng.random_range(0..senders.len())].clone();
            let thumbprint = machine.thumbprint.to_string();
            let request = request_for(
                &mut rng,
                config.mix,
                config.max_script_time,
                &machine.subscription,
                &thumbprint,
                queued,
            );
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
    while outstanding() && Instant::now() < deadline {
        progress.show(&sample(
            lab,
            ledger,
            started.elapsed(),
            config.duration,
            "draining",
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(
    lab: &Lab,
    ledger: &Ledger,
    elapsed: Duration,
    total: Duration,
    phase: &'static str,
) -> Sample {
    let (queued, completed, failed) = ledger.tally();
    Sample {
        elapsed,
        total,
        coverage: lab.coverage().ratio(),
        connections: lab.cluster.connections(),
        queued,
        completed,
        failed,
        phase,
    }
}

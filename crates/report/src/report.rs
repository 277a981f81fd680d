//! The report a run ends with: printed for people, written as JSON for CI.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use octopoll_node::{CoverageMatrix, FailReason, NodeId, NodeStats, PairState, QueueMode};
use serde::Serialize;

use crate::counts::Counts;
use crate::timeline::FaultReport;
use crate::verdict::Verdict;
use octopoll_lab::topology::Topology;

/// One process's use of the machine over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessFigures {
    /// `node-1`, `agents 1/2`, or `octopoll` for an in-process run.
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// The most CPU it used in one sampling second, in % of one core.
    pub peak_cpu_percent: f64,
    /// CPU seconds it used over the whole run.
    pub cpu_s: f64,
    /// Its resident memory before the agents connected, in KiB.
    pub rss_before_mesh_kib: u64,
    /// Its resident memory with the mesh formed, in KiB.
    pub rss_at_mesh_kib: u64,
    /// The most it held, in KiB.
    pub peak_rss_kib: u64,
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name, if it has one.
    pub name: Option<String>,
    /// octopoll's version.
    pub version: String,
    /// The certificates' key type (`ecdsa-p256`, `rsa-2048`, …).
    pub key_type: String,
    /// The machine it ran on.
    pub host: Host,
    /// The scenario as resolved (every layer merged, outputs left out), as one
    /// file's text: `octopoll run --from-report` runs it again.
    pub scenario: Option<String>,
    /// The run's shape and the mesh at the end (flattened into the top level).
    #[serde(flatten)]
    pub run: RunFacts,
    /// Request accounting.
    pub requests: Requests,
    /// Queue → collected latency.
    pub pickup_ms: Pickup,
    /// Failures by reason (`pickup-timeout`, `run-ended`, …).
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Per node.
    pub per_node: Vec<NodeLine>,
    /// What the figures mean, in words: why coverage is short, why work timed out.
    pub findings: Vec<String>,
    /// Connection churn over the run: what a reconnect storm costs.
    pub churn: Churn,
    /// Each fault and how the mesh recovered from it.
    pub faults: Vec<FaultReport>,
    /// Each threshold set and whether it held.
    pub thresholds: Vec<Verdict>,
    /// Queue → collected latency counted from when each request was scheduled:
    /// pickup plus however late the workload queued it (coordinated omission).
    pub pickup_from_schedule_ms: Pickup,
    /// Queued → response of the completed requests: the pickup, the agent's
    /// work and the way back.
    pub end_to_end_ms: Pickup,
    /// Coverage over the run, in up to 60 steps, each the lowest sampled in
    /// its stretch (the text report draws it as a sparkline).
    pub coverage_over_time: Vec<f64>,
    /// The run was stopped early (Ctrl-C, SIGTERM): the figures cover what ran.
    pub interrupted: bool,
    /// The threshold whose breach stopped the run early (`abort_on_fail`), if
    /// one did: the figures cover what ran.
    pub aborted: Option<Aborted>,
    /// What each process cost (node and agent processes in a multi-process run;
    /// empty for an in-process one).
    pub processes: Vec<ProcessFigures>,
    /// The clustered listening Tentacle's health checks and failover, if the run
    /// had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listening_cluster: Option<crate::listening::ListeningClusterReport>,
}

impl Report {
    /// Memory the mesh cost per held connection, both ends counted: the growth of
    /// every process's RSS from before the agents connected to the mesh formed,
    /// over the connections held. `None` without process figures.
    pub fn rss_per_connection_kib(&self) -> Option<f64> {
        let grew: i64 = self
            .processes
            .iter()
            .map(|p| p.rss_at_mesh_kib as i64 - p.rss_before_mesh_kib as i64)
            .sum();
        (self.run.connections > 0 && self.processes.iter().any(|p| p.rss_at_mesh_kib > 0))
            .then(|| grew.max(0) as f64 / self.run.connections as f64)
    }

    /// The thresholds that did not hold.
    pub fn breaches(&self) -> impl Iterator<Item = &Verdict> {
        self.thresholds.iter().filter(|v| !v.passed)
    }

    /// The run's verdict in one line, when it has thresholds: `PASSED: 4 of 4
    /// thresholds held`, `FAILED: 1 of 4 thresholds breached (…)`, or what
    /// stopped it early.
    pub fn verdict(&self) -> Option<String> {
        let total = self.thresholds.len();
        let breached: Vec<String> = self.breaches().map(Verdict::asked).collect();
        if let Some(aborted) = &self.aborted {
            return Some(format!(
                "FAILED: aborted at {:.1} s by {}",
                aborted.at_s,
                aborted.threshold.asked()
            ));
        }
        let noun = if total == 1 {
            "threshold"
        } else {
            "thresholds"
        };
        match breached.len() {
            _ if total == 0 => None,
            0 => Some(format!("PASSED: {total} of {total} {noun} held")),
            n => Some(format!(
                "FAILED: {n} of {total} {noun} breached ({})",
                breached.join("; ")
            )),
        }
    }
}

/// The machine a run ran on, as far as its figures depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Host {
    /// CPU cores this process may use.
    pub cores: usize,
    /// Open files a process may hold (its soft limit, as raised).
    pub open_files: u64,
}

/// A run stopped early by a breached `abort_on_fail` threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aborted {
    /// Seconds into the workload.
    pub at_s: f64,
    /// The threshold, as it stood then.
    pub threshold: Verdict,
}

/// Connection churn: polling connections that failed (each followed by a
/// reconnect attempt after the backoff) and handshakes the nodes completed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Churn {
    /// Polling connections or connection attempts that failed, over all agents.
    pub agent_failures: u64,
    /// Polling connections the nodes identified, first connections included.
    pub handshakes: u64,
    /// Handshakes the nodes refused (untrusted, wrong subscription, other).
    pub refused: u64,
}

/// Request counts; `lost` must be 0.
#[derive(Clone, Debug, Serialize)]
pub struct Requests {
    /// Queued.
    pub queued: u64,
    /// Completed with a response.
    pub completed: u64,
    /// Failed, any reason.
    pub failed: u64,
    /// Requests whose end was never recorded: `queued − completed − failed` as the
    /// workload counted them, plus requests the nodes created but had not ended when
    /// they stopped. Non-zero means an invariant broke.
    pub lost: u64,
    /// Ends recorded more than once (the same two sources, the other way round).
    /// Non-zero means an invariant broke.
    pub counted_twice: u64,
    /// Requests due while every node was down, so never queued (Octopus starts a
    /// task only on a live node).
    pub skipped: u64,
    /// Requests queued per second of workload: the rate achieved, beside the
    /// rate asked for.
    pub per_s: f64,
}

/// Pickup latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Pickup {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Pickup {
    /// Percentiles of a histogram in microseconds; zeros when it is empty.
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p95: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// One node's share.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLine {
    /// `node-1`, …
    pub node: String,
    /// Agents holding a connection to it at the end of the workload.
    pub agents_connected: usize,
    /// Of those, agents that polled it within the last long-poll interval.
    pub agents_polling: usize,
    /// Requests queued on it.
    pub queued: u64,
    /// Requests its connections collected (in shared-queue mode, from any node's queue).
    pub collected: u64,
    /// Requests queued on it that completed.
    pub completed: u64,
    /// Requests queued on it that failed.
    pub failed: u64,
    /// Those failures by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Pickup latency of requests queued on it.
    pub pickup_ms: Pickup,
}

/// What the report is built from besides the ledger.
#[derive(Clone, Debug, Serialize)]
pub struct RunFacts {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Agents in the swarm.
    pub agents: usize,
    /// How agents reach the nodes.
    pub topology: Topology,
    /// Per-node or shared pending request queue.
    pub queue: QueueMode,
    /// The seed that makes the run reproducible.
    pub seed: u64,
    /// Seconds the workload ran.
    pub duration_s: f64,
    /// Polling connections held at the end of the workload.
    pub connections: usize,
    /// Agent×node pairs polled within the last long-poll interval / all pairs, at
    /// the end of the workload.
    pub coverage: f64,
    /// Time from the swarm starting to every agent polling every node.
    pub full_coverage_ms: Option<u64>,
    /// Agents per pair state and node, at the end of the workload.
    pub coverage_matrix: CoverageMatrix,
}

impl Report {
    /// Builds the report from the run's facts, the workload's final counts, and the
    /// stopped nodes' final stats (for what they collected and left unfinished).
    pub fn new(facts: RunFacts, counts: &Counts, node_stats: &[(NodeId, NodeStats)]) -> Self {
        let nodes_unfinished = unfinished(node_stats);
        let reasons = |failed: &BTreeMap<FailReason, u64>| {
            failed
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        let matrix = &facts.coverage_matrix;
        let agents_in = |states: &[PairState], node: &NodeId| -> usize {
            let Some(column) = matrix.nodes.iter().position(|n| *n == node.to_string()) else {
                return 0;
            };
            matrix
                .rows
                .iter()
                .filter(|r| states.contains(&r.state))
                .filter_map(|r| r.agents.get(column))
                .sum()
        };
        let per_node = node_stats
            .iter()
            .map(|(node, stats)| {
                let counted = counts.per_node.get(node).cloned().unwrap_or_default();
                NodeLine {
                    node: node.to_string(),
                    agents_connected: agents_in(&[PairState::Polling, PairState::Stale], node),
                    agents_polling: agents_in(&[PairState::Polling], node),
                    queued: counted.queued,
                    collected: stats.collected,
                    completed: counted.completed,
                    failed: counted.failed_total(),
                    failed_by_reason: reasons(&counted.failed),
                    pickup_ms: Pickup::of(&counted.latency.pickup_us),
                }
            })
            .collect();
        let findings = findings(&facts, counts);
        let churn = Churn {
            agent_failures: 0,
            handshakes: node_stats.iter().map(|(_, s)| s.handshakes_ok).sum(),
            refused: node_stats.iter().map(|(_, s)| s.refused()).sum(),
        };
        let per_s = if facts.duration_s > 0.0 {
            counts.queued as f64 / facts.duration_s
        } else {
            0.0
        };
        Self {
            name: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            key_type: String::new(),
            host: Host::default(),
            scenario: None,
            churn,
            faults: Vec::new(),
            thresholds: Vec::new(),
            run: facts,
            requests: Requests {
                queued: counts.queued,
                completed: counts.completed,
                failed: counts.failed_total(),
                lost: positive(counts.unaccounted()) + positive(nodes_unfinished),
                counted_twice: positive(-counts.unaccounted()) + positive(-nodes_unfinished),
                skipped: counts.skipped,
                per_s,
            },
            pickup_ms: Pickup::of(&counts.latency.pickup_us),
            pickup_from_schedule_ms: Pickup::of(&counts.latency.pickup_from_schedule_us),
            end_to_end_ms: Pickup::of(&counts.latency.end_to_end_us),
            coverage_over_time: Vec::new(),
            interrupted: false,
            aborted: None,
            processes: Vec::new(),
            listening_cluster: None,
            failures_by_reason: reasons(&counts.failed),
            per_node,
            findings,
        }
    }
}

/// The sentences that explain short coverage and the failures it caused.
fn findings(run: &RunFacts, counts: &Counts) -> Vec<String> {
    let matrix = &run.coverage_matrix;
    let nodes = matrix.nodes.len();
    let mean = matrix.mean_nodes_reached();
    if matrix.agents() == 0 || mean > nodes as f64 - 0.05 {
        return Vec::new();
    }
    let mean = if (mean - mean.round()).abs() < 0.05 {
        format!("{}", mean.round())
    } else {
        format!("{mean:.1}")
    };
    let reach = format!("agents reach {mean} of {nodes} nodes on average");
    let timed_out = counts
        .failed
        .get(&FailReason::PickupTimeout)
        .copied()
        .unwrap_or(0);
    let finding = match run.queue {
        QueueMode::PerNode if timed_out > 0 => {
            format!(
                "{reach}; work queued on unreached nodes timed out ({timed_out} pickup-timeout)"
            )
        }
        QueueMode::Shared | QueueMode::Redis if timed_out == 0 => {
            format!("{reach}; the shared queue let a connection to any node collect the work")
        }
        _ => reach,
    };
    vec![finding]
}

fn positive(n: i64) -> u64 {
    n.max(0) as u64
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (run, r) = (&self.run, &self.requests);
        let name = self
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" {n}:"));
        let keys = if self.key_type.is_empty() {
            String::new()
        } else {
            format!(", {} keys", self.key_type)
        };
        writeln!(
            f,
            "octopoll {} report:{name} {} nodes, {} agents, {} topology, {} queue, {:.1} s, seed {}{keys}",
            self.version, run.nodes, run.agents, run.topology, run.queue, run.duration_s, run.seed
        )?;
        if self.interrupted {
            writeln!(
                f,
                "  INTERRUPTED  the run was stopped early; these figures cover what ran"
            )?;
        }
        if let Some(aborted) = &self.aborted {
            writeln!(
                f,
                "  ABORTED      at {:.1} s by {} (abort_on_fail); these figures cover what ran",
                aborted.at_s, aborted.threshold
            )?;
        }
        let full = run
            .full_coverage_ms
            .map_or("never full".to_string(), |ms| format!("full after {ms} ms"));
        writeln!(
            f,
            "  coverage     {:.3} ({} connections held; {full})",
            run.coverage, run.connections
        )?;
        if !self.coverage_over_time.is_empty() {
            writeln!(
                f,
                "  over time    {}  (lowest coverage in each of {} steps)",
                crate::timeline::sparkline(&self.coverage_over_time),
                self.coverage_over_time.len()
            )?;
        }
        write_matrix(f, &run.coverage_matrix)?;
        write!(
            f,
            "  requests     queued {} ({:.1}/s)  completed {}  failed {}  lost {}",
            r.queued, r.per_s, r.completed, r.failed, r.lost
        )?;
        if r.skipped > 0 {
            write!(f, "  (not queued: {} while every node was down)", r.skipped)?;
        }
        writeln!(f)?;
        let p = &self.pickup_ms;
        let s = &self.pickup_from_schedule_ms;
        writeln!(
            f,
            "  pickup ms    p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}   (from schedule: p99 {:.2}  p99.9 {:.2})",
            p.p50, p.p90, p.p95, p.p99, p.p999, p.max, s.p99, s.p999
        )?;
        let e = &self.end_to_end_ms;
        writeln!(
            f,
            "  end to end   p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms   (queued → response)",
            e.p50, e.p90, e.p95, e.p99, e.p999, e.max
        )?;
        if !self.failures_by_reason.is_empty() {
            writeln!(
                f,
                "  failures     {}",
                join_reasons(&self.failures_by_reason)
            )?;
        }
        for node in &self.per_node {
            write!(
                f,
                "  {:<12} polling {}  queued {}  collected {}  completed {}  failed {}",
                node.node,
                node.agents_polling,
                node.queued,
                node.collected,
                node.completed,
                node.failed
            )?;
            if !node.failed_by_reason.is_empty() {
                write!(f, " ({})", join_reasons(&node.failed_by_reason))?;
            }
            writeln!(
                f,
                "  pickup p50 {:.2} p99 {:.2} ms",
                node.pickup_ms.p50, node.pickup_ms.p99
            )?;
        }
        for finding in &self.findings {
            writeln!(f, "  why          {finding}")?;
        }
        let churn = &self.churn;
        writeln!(
            f,
            "  connections  {} handshakes, {} refused; agents saw {} failed connections or attempts",
            churn.handshakes, churn.refused, churn.agent_failures
        )?;
        for process in &self.processes {
            writeln!(
                f,
                "  process      {:<12} pid {:<7} cpu {:.1} s (peak {:.0} %)  rss {} MiB at the mesh (peak {} MiB)",
                process.role,
                process.pid,
                process.cpu_s,
                process.peak_cpu_percent,
                process.rss_at_mesh_kib / 1024,
                process.peak_rss_kib / 1024
            )?;
        }
        if let Some(per) = self.rss_per_connection_kib() {
            writeln!(
                f,
                "  memory       {per:.1} KiB per held connection, both ends (RSS at the mesh minus before it, over {} connections)",
                self.run.connections
            )?;
        }
        if !self.faults.is_empty() {
            writeln!(
                f,
                "  faults       (recovery seconds count from the end of each fault)"
            )?;
        }
        let secs = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.1}s"));
        for fault in &self.faults {
            write!(f, "    {}", fault.fault)?;
            if fault.disruptive {
                write!(
                    f,
                    ": coverage down to {:.3}; first reconnect {}, 99 % {}, full mesh {}",
                    fault.coverage_min,
                    secs(fault.first_reconnect_s),
                    secs(fault.mesh_99_s),
                    secs(fault.full_mesh_s)
                )?;
                if fault.ended_s.is_none() {
                    write!(f, " (not lifted)")?;
                }
                if !fault.failed_by_reason.is_empty() {
                    write!(f, "; failed {}", join_reasons(&fault.failed_by_reason))?;
                }
                if let Some(ended) = fault.in_flight_ended_s {
                    write!(f, "; work in flight at it ended within {ended:.1}s")?;
                }
                write!(f, "; peak {} handshakes/s", fault.peak_handshakes_per_s)?;
            }
            if let Some(error) = &fault.error {
                write!(f, "; ERROR {error}")?;
            }
            writeln!(f)?;
        }
        if let Some(cluster) = &self.listening_cluster {
            write_listening_cluster(f, cluster)?;
        }
        for verdict in &self.thresholds {
            writeln!(f, "  threshold    {verdict}")?;
        }
        if let Some(verdict) = self.verdict() {
            writeln!(f, "  verdict      {verdict}")?;
        }
        Ok(())
    }
}

/// The listening cluster's lines: its checks, its failover, every machine's health.
fn write_listening_cluster(
    f: &mut fmt::Formatter<'_>,
    cluster: &crate::listening::ListeningClusterReport,
) -> fmt::Result {
    let certificates = if cluster.shared_certificate {
        "one shared certificate"
    } else {
        "DIFFERENT certificates"
    };
    write!(
        f,
        "  listening    cluster at {} ({certificates}): {} health checks, {} failed",
        cluster.target, cluster.checks, cluster.failed
    )?;
    match cluster.failover_at_s {
        Some(at) => writeln!(
            f,
            "; failed over at {at:.1}s, {} failed after",
            cluster.failed_after_failover
        )?,
        None => writeln!(f, "; no failover")?,
    }
    for error in &cluster.errors {
        writeln!(f, "    {error}")?;
    }
    if !cluster.every_machine.is_empty() {
        let kinds: Vec<String> = cluster
            .every_machine
            .iter()
            .map(|(kind, [healthy, unhealthy])| {
                format!("{kind} {healthy} healthy, {unhealthy} unhealthy")
            })
            .collect();
        writeln!(
            f,
            "  health       every machine at the end: {}",
            kinds.join("; ")
        )?;
    }
    Ok(())
}

/// The coverage matrix: agents per state (rows) and node (columns); rows that are
/// all zero are left out, except `polling`.
fn write_matrix(f: &mut fmt::Formatter<'_>, matrix: &CoverageMatrix) -> fmt::Result {
    write!(f, "  {:<12}", "agents")?;
    for node in &matrix.nodes {
        write!(f, " {node:>8}")?;
    }
    writeln!(f)?;
    for row in &matrix.rows {
        if row.state != PairState::Polling && row.agents.iter().all(|&n| n == 0) {
            continue;
        }
        write!(f, "    {:<10}", row.state)?;
        for n in &row.agents {
            write!(f, " {n:>8}")?;
        }
        writeln!(f)?;
    }
    let reaching: Vec<String> = matrix
        .agents_reaching
        .iter()
        .enumerate()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    writeln!(f, "  nodes reached by agents  {}", reaching.join("  "))
}

fn join_reasons(reasons: &BTreeMap<String, u64>) -> String {
    reasons
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Requests stopped nodes created but never ended: 0 unless an invariant broke
/// (negative: ended more often than created).
pub fn unfinished(stats: &[(NodeId, NodeStats)]) -> i64 {
    stats
        .iter()
        .map(|(_, s)| s.requests_created as i64 - (s.requests_completed + s.requests_failed) as i64)
        .sum()
}

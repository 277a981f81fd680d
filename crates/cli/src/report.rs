//! The report a run ends with: printed for people, written as JSON for CI.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::workload::Counts;

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
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
}

/// Pickup latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Pickup {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// One node's share.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLine {
    /// `node-1`, …
    pub node: String,
    /// Requests queued on it.
    pub queued: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
}

/// What the report is built from besides the ledger.
#[derive(Clone, Debug, Serialize)]
pub struct RunFacts {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Agents in the swarm.
    pub agents: usize,
    /// The seed that makes the run reproducible.
    pub seed: u64,
    /// Seconds the workload ran.
    pub duration_s: f64,
    /// Polling connections held at the end of the workload.
    pub connections: usize,
    /// Connected agent×node pairs / all pairs, at the end of the workload.
    pub coverage: f64,
    /// Time from the swarm starting to every agent polling every node.
    pub full_coverage_ms: Option<u64>,
}

impl Report {
    /// Builds the report from the run's facts, the workload's final counts, and the
    /// requests the stopped nodes left unfinished.
    pub fn new(facts: RunFacts, counts: &Counts, nodes_unfinished: i64) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let histogram = &counts.pickup_us;
        let empty = histogram.is_empty();
        let pct = |q: f64| {
            if empty {
                0.0
            } else {
                ms(histogram.value_at_quantile(q))
            }
        };
        Self {
            run: facts,
            requests: Requests {
                queued: counts.queued,
                completed: counts.completed,
                failed: counts.failed_total(),
                lost: positive(counts.unaccounted()) + positive(nodes_unfinished),
                counted_twice: positive(-counts.unaccounted()) + positive(-nodes_unfinished),
            },
            pickup_ms: Pickup {
                p50: pct(0.5),
                p99: pct(0.99),
                max: if empty { 0.0 } else { ms(histogram.max()) },
            },
            failures_by_reason: counts
                .failed
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect(),
            per_node: counts
                .per_node
                .iter()
                .map(|(node, [queued, completed, failed])| NodeLine {
                    node: node.to_string(),
                    queued: *queued,
                    completed: *completed,
                    failed: *failed,
                })
                .collect(),
        }
    }
}

fn positive(n: i64) -> u64 {
    n.max(0) as u64
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (run, r) = (&self.run, &self.requests);
        writeln!(
            f,
            "octopoll report: {} nodes, {} agents, {:.1} s, seed {}",
            run.nodes, run.agents, run.duration_s, run.seed
        )?;
        let full = run
            .full_coverage_ms
            .map_or("never".to_string(), |ms| format!("after {ms} ms"));
        writeln!(
            f,
            "  coverage     {:.3} ({} connections held; full {full})",
            run.coverage, run.connections
        )?;
        writeln!(
            f,
            "  requests     queued {}  completed {}  failed {}  lost {}",
            r.queued, r.completed, r.failed, r.lost
        )?;
        let p = &self.pickup_ms;
        writeln!(
            f,
            "  pickup ms    p50 {:.2}  p99 {:.2}  max {:.2}",
            p.p50, p.p99, p.max
        )?;
        if !self.failures_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .failures_by_reason
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  failures     {}", reasons.join(", "))?;
        }
        for node in &self.per_node {
            writeln!(
                f,
                "  {:<12} queued {}  completed {}  failed {}",
                node.node, node.queued, node.completed, node.failed
            )?;
        }
        Ok(())
    }
}

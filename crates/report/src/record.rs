//! A finished run's record, and the report made from it in one call.

use octopoll_node::{NodeId, NodeStats};

use crate::counts::Counts;
use crate::listening::ListeningClusterReport;
use crate::report::{Host, ProcessFigures, Report, RunFacts};
use crate::thresholds::Thresholds;
use crate::timeline::{coverage_series, CoverageSample, FaultReport};

/// Everything a finished run leaves, from which [`Report::of_run`] makes its report.
#[derive(Debug)]
pub struct RunRecord<'a> {
    /// The scenario's name, if it has one.
    pub name: Option<String>,
    /// The run's shape and the mesh at the end of the workload.
    pub facts: RunFacts,
    /// The workload's final counts.
    pub counts: &'a Counts,
    /// Each stopped node's final counters, node 1 first.
    pub nodes: &'a [(NodeId, NodeStats)],
    /// Connections or attempts the agents saw fail.
    pub agent_failures: u64,
    /// What each process cost (empty for an in-process run).
    pub processes: Vec<ProcessFigures>,
    /// Each fault and how the mesh recovered from it.
    pub faults: Vec<FaultReport>,
    /// The clustered listening Tentacle's checks, if the run had one.
    pub listening_cluster: Option<ListeningClusterReport>,
    /// Coverage and connections sampled through the run.
    pub samples: &'a [CoverageSample],
    /// The certificates' key type.
    pub key_type: String,
    /// The machine it ran on.
    pub host: Host,
    /// The scenario as resolved, as one file's text.
    pub scenario: Option<String>,
}

/// Steps of [`Report::coverage_over_time`].
const COVERAGE_STEPS: usize = 60;

impl Report {
    /// The whole report of a finished run, judged against `thresholds`.
    pub fn of_run(run: RunRecord<'_>, thresholds: &Thresholds) -> Self {
        let mut report = Report::new(run.facts, run.counts, run.nodes);
        report.name = run.name;
        report.churn.agent_failures = run.agent_failures;
        report.processes = run.processes;
        report.faults = run.faults;
        report.listening_cluster = run.listening_cluster;
        report.coverage_over_time = coverage_series(run.samples, COVERAGE_STEPS);
        report.key_type = run.key_type;
        report.host = run.host;
        report.scenario = run.scenario;
        let figures = crate::thresholds::Figures {
            counts: run.counts,
            nodes: run.nodes,
            seconds: report.run.duration_s,
        };
        report.thresholds = thresholds.check(&report, &figures);
        report
    }
}

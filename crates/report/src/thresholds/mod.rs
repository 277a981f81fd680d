//! Pass/fail thresholds, like k6's: a handful of fixed keys (`coverage_min`,
//! `lost_max`, …) and any metric of [`expression`] with conditions on it
//! (`pickup_ms = ["p(95) < 20", "p(99.9) < 200"]`). A breached threshold
//! makes `octopoll run` exit 99; one marked `abort_on_fail` stops the run as
//! soon as it is breached (after its `delay_abort_eval`).

pub mod expression;
mod rules;

use std::collections::BTreeMap;

use octopoll_node::{NodeId, NodeStats};
use serde::{Deserialize, Serialize};

use crate::counts::{Counts, Latencies};
use crate::report::Report;
use crate::verdict::Verdict;
pub use expression::{Aggregate, Condition, ExpressionError, Metric, Op, Selector, FIXED_KEYS};
pub use rules::{Rule, Rules};

/// The `[thresholds]` table. Every key is optional; only those set are checked.
///
/// ```
/// # use octopoll_report::thresholds::Thresholds;
/// let thresholds: Thresholds = serde_json::from_str(r#"{
///     "lost_max": 0,
///     "pickup_ms": ["p(95) < 20", "p(99.9) < 200"],
///     "failed{reason:pickup-timeout}": "count == 0",
///     "end_to_end_ms{node:node-2}": {"threshold": "p(99) < 500", "abort_on_fail": true}
/// }"#).unwrap();
/// assert_eq!(thresholds.metrics.len(), 3);
/// assert_eq!(thresholds.abort_rules().count(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Thresholds {
    /// Lowest acceptable coverage at the end of the workload (0–1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_min: Option<f64>,
    /// Highest acceptable pickup p99, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_p99_ms: Option<f64>,
    /// Most failed requests allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_max: Option<u64>,
    /// Most lost requests allowed (anything but 0 means an invariant broke).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_max: Option<u64>,
    /// Longest acceptable time, in seconds, from a fault ending (a node started
    /// again, a toxic removed) to every agent polling every node again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_mesh_after_fault_s: Option<f64>,
    /// Most failed health checks of the clustered listening Tentacle (runs with
    /// one only). Unset, such a run holds the docs' promise: at most 1 — the
    /// check that lands while the cluster moves over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listening_cluster_failed_max: Option<u64>,
    /// Any metric, filtered or not, and the conditions it must meet. Every other
    /// key of the table lands here, so a misspelt fixed key is refused as an
    /// unknown metric.
    #[serde(flatten)]
    pub metrics: BTreeMap<Selector, Rules>,
}

/// What the metric thresholds read: the workload's counts, each node's
/// counters, and how long the workload has run (for rates).
#[derive(Clone, Copy, Debug)]
pub struct Figures<'a> {
    /// The workload's requests, counted.
    pub counts: &'a Counts,
    /// Each node's counters.
    pub nodes: &'a [(NodeId, NodeStats)],
    /// Seconds of workload so far.
    pub seconds: f64,
}

impl Figures<'_> {
    /// `aggregate` of what `selector` reads; `None` where nothing was measured
    /// (no request collected, no time passed) or the two do not go together.
    pub fn measure(&self, selector: &Selector, aggregate: Aggregate) -> Option<f64> {
        if selector.metric.is_latency() {
            let latency = match selector.node {
                Some(node) => &self.counts.per_node.get(&node)?.latency,
                None => &self.counts.latency,
            };
            return latency_figure(latency, selector.metric, aggregate);
        }
        let count = self.count(selector) as f64;
        match aggregate {
            Aggregate::Count => Some(count),
            Aggregate::Rate => (self.seconds > 0.0).then(|| count / self.seconds),
            Aggregate::Share => {
                let queued = self.count(&Selector {
                    metric: Metric::Queued,
                    reason: None,
                    ..*selector
                });
                (queued > 0).then(|| count / queued as f64)
            }
            _ => None,
        }
    }

    fn count(&self, selector: &Selector) -> u64 {
        let on_nodes = |of: fn(&NodeStats) -> u64| {
            self.nodes
                .iter()
                .filter(|(id, _)| selector.node.is_none_or(|n| n == *id))
                .map(|(_, stats)| of(stats))
                .sum()
        };
        let (queued, completed, failed) = match selector.node {
            Some(node) => match self.counts.per_node.get(&node) {
                Some(n) => (n.queued, n.completed, &n.failed),
                None => return 0,
            },
            None => (
                self.counts.queued,
                self.counts.completed,
                &self.counts.failed,
            ),
        };
        match selector.metric {
            Metric::Queued => queued,
            Metric::Completed => completed,
            Metric::Failed => match selector.reason {
                Some(reason) => failed.get(&reason).copied().unwrap_or(0),
                None => failed.values().sum(),
            },
            Metric::Handshakes => on_nodes(|s| s.handshakes_ok),
            Metric::Refused => on_nodes(NodeStats::refused),
            _ => 0,
        }
    }
}

/// `rule` on what `selector` reads, measured as `actual` (`None`:
/// nothing measured, a breach).
fn verdict_of(selector: &Selector, rule: &Rule, actual: Option<f64>) -> Verdict {
    let Condition { op, limit, .. } = rule.condition;
    let passed = actual.is_some_and(|a| op.holds(a, limit));
    let by = match (actual, op) {
        (None, _) => f64::INFINITY,
        (_, _) if passed => 0.0,
        (Some(a), Op::Lt | Op::Le) => (a - limit).max(0.0),
        (Some(a), Op::Gt | Op::Ge) => (limit - a).max(0.0),
        (Some(a), Op::Eq | Op::Ne) => (a - limit).abs(),
    };
    Verdict {
        name: selector.to_string(),
        condition: Some(rule.condition.to_string()),
        limit,
        actual,
        passed,
        by,
    }
}

/// A latency figure in milliseconds; `None` when nothing was recorded.
fn latency_figure(latency: &Latencies, metric: Metric, aggregate: Aggregate) -> Option<f64> {
    let histogram = match metric {
        Metric::PickupMs => &latency.pickup_us,
        Metric::PickupFromScheduleMs => &latency.pickup_from_schedule_us,
        _ => &latency.end_to_end_us,
    };
    if aggregate == Aggregate::Count {
        return Some(histogram.len() as f64);
    }
    if histogram.is_empty() {
        return None;
    }
    let micros = match aggregate {
        Aggregate::Percentile(p) => histogram.value_at_quantile(p / 100.0) as f64,
        Aggregate::Med => histogram.value_at_quantile(0.5) as f64,
        Aggregate::Avg => histogram.mean(),
        Aggregate::Min => histogram.min() as f64,
        Aggregate::Max => histogram.max() as f64,
        _ => return None,
    };
    Some(micros / 1000.0)
}

impl Thresholds {
    /// Checks every threshold set: the fixed keys against `report`, the
    /// metrics against `figures`.
    pub fn check(&self, report: &Report, figures: &Figures<'_>) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        if let Some(limit) = self.coverage_min {
            verdicts.push(Verdict::at_least(
                "coverage_min",
                limit,
                Some(report.run.coverage),
            ));
        }
        if let Some(limit) = self.pickup_p99_ms {
            verdicts.push(Verdict::at_most(
                "pickup_p99_ms",
                limit,
                Some(report.pickup_ms.p99),
            ));
        }
        if let Some(limit) = self.failed_max {
            let actual = report.requests.failed as f64;
            verdicts.push(Verdict::at_most("failed_max", limit as f64, Some(actual)));
        }
        if let Some(limit) = self.lost_max {
            let actual = report.requests.lost as f64;
            verdicts.push(Verdict::at_most("lost_max", limit as f64, Some(actual)));
        }
        if let Some(limit) = self.full_mesh_after_fault_s {
            // The slowest fault; one that never healed is `None`, a breach.
            let slowest = report
                .faults
                .iter()
                .filter(|f| f.disruptive)
                .map(|f| f.full_mesh_s)
                .try_fold(0.0_f64, |worst, s| s.map(|s| worst.max(s)));
            verdicts.push(Verdict::at_most("full_mesh_after_fault_s", limit, slowest));
        }
        if let Some(cluster) = &report.listening_cluster {
            let limit = self.listening_cluster_failed_max.unwrap_or(1);
            verdicts.push(Verdict::at_most(
                "listening_cluster_failed_max",
                limit as f64,
                Some(cluster.failed as f64),
            ));
        }
        verdicts.extend(self.check_metrics(figures));
        verdicts
    }

    /// Checks every metric condition against `figures`.
    pub fn check_metrics(&self, figures: &Figures<'_>) -> Vec<Verdict> {
        self.metrics
            .iter()
            .flat_map(|(selector, rules)| {
                rules.0.iter().map(move |rule| {
                    let actual = figures.measure(selector, rule.condition.aggregate);
                    verdict_of(selector, rule, actual)
                })
            })
            .collect()
    }

    /// How many fixed keys are set.
    pub fn fixed_set(&self) -> usize {
        [
            self.coverage_min.is_some(),
            self.pickup_p99_ms.is_some(),
            self.failed_max.is_some(),
            self.lost_max.is_some(),
            self.full_mesh_after_fault_s.is_some(),
            self.listening_cluster_failed_max.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// The metric conditions that stop the run when breached.
    pub fn abort_rules(&self) -> impl Iterator<Item = (&Selector, &Rule)> {
        self.metrics
            .iter()
            .flat_map(|(selector, rules)| rules.0.iter().map(move |rule| (selector, rule)))
            .filter(|(_, rule)| rule.abort_on_fail)
    }

    /// The first `abort_on_fail` condition breached by `figures`, past its
    /// `delay_abort_eval`; one with nothing measured yet waits.
    pub fn abort(&self, figures: &Figures<'_>) -> Option<Verdict> {
        self.abort_rules()
            .filter(|(_, rule)| figures.seconds >= rule.delay_abort_eval.as_secs_f64())
            .map(|(selector, rule)| {
                let actual = figures.measure(selector, rule.condition.aggregate);
                (actual, verdict_of(selector, rule, actual))
            })
            .find(|(actual, verdict)| actual.is_some() && !verdict.passed)
            .map(|(_, verdict)| verdict)
    }

    /// The first metric condition that cannot be taken of its metric (a rate
    /// of a latency, say): its key and why.
    pub fn misfit(&self) -> Option<(String, String)> {
        self.metrics.iter().find_map(|(selector, rules)| {
            rules
                .0
                .iter()
                .find_map(|rule| selector.admits(&rule.condition).err())
                .map(|why| (selector.to_string(), why))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::Queued;
    use octopoll_node::FailReason;
    use std::time::Duration;

    /// Node 1: 3 requests collected after 1, 2 and 30 ms, all completed; node
    /// 2: one pickup timeout and one node-lost; 10 handshakes and 2 refused on
    /// node 2.
    fn figures() -> (Counts, Vec<(NodeId, NodeStats)>) {
        let mut counts = Counts::default();
        let ms = Duration::from_millis;
        for pickup in [1, 2, 30] {
            let queued = counts.record_queued(NodeId(1), ms(0));
            counts.record_ended(queued, Ok(()), Some(ms(pickup)), ms(0), ms(pickup + 5));
        }
        for reason in [FailReason::PickupTimeout, FailReason::NodeLost] {
            let queued: Queued = counts.record_queued(NodeId(2), ms(0));
            counts.record_ended(queued, Err(reason), None, ms(0), ms(100));
        }
        let two = NodeStats {
            handshakes_ok: 10,
            refused_untrusted: 2,
            ..NodeStats::default()
        };
        (
            counts,
            vec![(NodeId(1), NodeStats::default()), (NodeId(2), two)],
        )
    }

    fn measured(selector: &str, aggregate: &str) -> Option<f64> {
        let (counts, nodes) = figures();
        let figures = Figures {
            counts: &counts,
            nodes: &nodes,
            seconds: 2.0,
        };
        let condition: Condition = format!("{aggregate} < 1").parse().unwrap();
        figures.measure(&selector.parse().unwrap(), condition.aggregate)
    }

    #[test]
    fn metrics_are_measured_per_node_and_reason() {
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < b * 0.01);
        assert!(near(measured("pickup_ms", "max"), 30.0));
        assert!(near(measured("pickup_ms", "p(50)"), 2.0));
        assert!(near(measured("end_to_end_ms", "min"), 6.0));
        assert_eq!(measured("pickup_ms", "count"), Some(3.0));
        assert_eq!(measured("pickup_ms{node:node-2}", "p(99)"), None);
        assert_eq!(measured("pickup_ms{node:node-3}", "avg"), None);
        assert_eq!(measured("failed", "count"), Some(2.0));
        assert_eq!(measured("failed", "rate"), Some(1.0));
        assert_eq!(measured("failed", "share"), Some(0.4));
        assert_eq!(measured("failed{node:2}", "share"), Some(1.0));
        assert_eq!(measured("failed{reason:node-lost}", "count"), Some(1.0));
        assert_eq!(
            measured("failed{node:1,reason:node-lost}", "count"),
            Some(0.0)
        );
        assert_eq!(measured("completed{node:1}", "count"), Some(3.0));
        assert_eq!(measured("handshakes", "rate"), Some(5.0));
        assert_eq!(measured("refused{node:node-1}", "count"), Some(0.0));
        assert_eq!(measured("refused", "count"), Some(2.0));
    }

    #[test]
    fn only_abort_rules_past_their_delay_and_with_a_figure_stop_a_run() {
        let thresholds: Thresholds = serde_json::from_str(
            r#"{
                "failed": {"threshold": "count == 0", "abort_on_fail": true, "delay_abort_eval": "5s"},
                "pickup_ms{node:node-2}": {"threshold": "p(99) < 1", "abort_on_fail": true},
                "pickup_ms": "max < 10"
            }"#,
        )
        .unwrap();
        let (counts, nodes) = figures();
        let at = |seconds| Figures {
            counts: &counts,
            nodes: &nodes,
            seconds,
        };
        // Node 2 collected nothing: its p99 waits; `failed` waits for 5 s; the
        // breached max does not abort.
        assert_eq!(thresholds.abort(&at(4.0)), None);
        let stopped = thresholds.abort(&at(5.0)).expect("failed is breached");
        assert_eq!(stopped.to_string(), "failed count == 0: 2 (BREACHED by 2)");
        let verdicts = thresholds.check_metrics(&at(5.0));
        let shown: Vec<String> = verdicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "pickup_ms max < 10: 30.015 (BREACHED by 20.015)",
                "pickup_ms{node:node-2} p(99) < 1: nothing measured (BREACHED)",
                "failed count == 0: 2 (BREACHED by 2)",
            ]
        );
    }

    #[test]
    fn the_fixed_keys_are_the_fields() {
        let every = Thresholds {
            coverage_min: Some(1.0),
            pickup_p99_ms: Some(1.0),
            failed_max: Some(1),
            lost_max: Some(1),
            full_mesh_after_fault_s: Some(1.0),
            listening_cluster_failed_max: Some(1),
            metrics: BTreeMap::new(),
        };
        let written = serde_json::to_value(&every).unwrap();
        let keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fixed = FIXED_KEYS.to_vec();
        fixed.sort_unstable();
        assert_eq!(keys, fixed);
        assert_eq!(every.fixed_set(), FIXED_KEYS.len());
        assert_eq!(Thresholds::default().fixed_set(), 0);
    }

    #[test]
    fn conditions_that_do_not_fit_their_metric_are_found() {
        let thresholds: Thresholds = serde_json::from_str(
            r#"{"pickup_ms": "p(99) < 5", "handshakes": ["count > 0", "share < 1"]}"#,
        )
        .unwrap();
        let (key, why) = thresholds.misfit().expect("share of handshakes");
        assert_eq!(key, "handshakes");
        assert!(why.contains("share is of completed or failed"), "{why}");
    }

    #[test]
    fn verdicts_say_which_way_and_by_how_much() {
        let low = Verdict::at_least("coverage_min", 0.99, Some(0.97));
        assert!(!low.passed);
        assert_eq!(
            low.to_string(),
            "coverage_min 0.99: 0.97 (BREACHED by 0.02)"
        );
        let fine = Verdict::at_most("failed_max", 5.0, Some(5.0));
        assert!(fine.passed);
        assert_eq!(fine.to_string(), "failed_max 5: 5 (passed)");
        let never = Verdict::at_most("full_mesh_after_fault_s", 15.0, None);
        assert!(!never.passed);
        assert_eq!(
            never.to_string(),
            "full_mesh_after_fault_s 15: never (BREACHED)"
        );
    }
}

//! Pass/fail thresholds, like k6's: each a limit on one figure of the report. A
//! breached threshold makes `octopoll run` exit 99.

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::verdict::Verdict;

/// The `[thresholds]` table. Every key is optional; only those set are checked.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Lowest acceptable coverage at the end of the workload (0–1).
    pub coverage_min: Option<f64>,
    /// Highest acceptable pickup p99, in milliseconds.
    pub pickup_p99_ms: Option<f64>,
    /// Most failed requests allowed.
    pub failed_max: Option<u64>,
    /// Most lost requests allowed (anything but 0 means an invariant broke).
    pub lost_max: Option<u64>,
    /// Longest acceptable time, in seconds, from a fault ending (a node started
    /// again, a toxic removed) to every agent polling every node again.
    pub full_mesh_after_fault_s: Option<f64>,
    /// Most failed health checks of the clustered listening Tentacle (runs with
    /// one only). Unset, such a run holds the docs' promise: at most 1 — the
    /// check that lands while the cluster moves over.
    pub listening_cluster_failed_max: Option<u64>,
}

impl Thresholds {
    /// Checks every threshold set against `report`.
    pub fn check(&self, report: &Report) -> Vec<Verdict> {
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
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

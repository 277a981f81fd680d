//! What a run saw of the docs' clustered listening Tentacle: its health checks and
//! its failover.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the run saw of the clustered listening Tentacle (a pair behind one access point).
#[derive(Clone, Debug, Serialize)]
pub struct ListeningClusterReport {
    /// The one target the node knows: the access point's URI.
    pub target: String,
    /// Whether the members shared one certificate.
    pub shared_certificate: bool,
    /// Health checks of the target during the run.
    pub checks: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Of those, failed after the passive member was active.
    pub failed_after_failover: u64,
    /// Seconds into the workload the active member failed, if it did.
    pub failover_at_s: Option<f64>,
    /// The distinct errors the failed checks gave (the first few).
    pub errors: Vec<String>,
    /// One health check of every registered machine at the end, by kind
    /// (`polling`, `listening`): `[healthy, unhealthy]`.
    pub every_machine: BTreeMap<String, [usize; 2]>,
}

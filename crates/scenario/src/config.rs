//! Everything a run needs, resolved from the layers of a scenario (see
//! [`crate::file`]) or built by hand.

use std::time::Duration;

use octopoll_fleet::plan::{self, Plan, PlanError};
use octopoll_lab::topology::Balancing;
use octopoll_lab::LabConfig;

use crate::fault::Fault;
use crate::listening_cluster::ListeningClusterConfig;
use crate::workload::{Mix, Shape};
use octopoll_report::thresholds::Thresholds;

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
    /// The scenario as resolved (every layer merged, outputs left out), as one
    /// file's text: the report embeds it so the run can be made again.
    pub scenario: Option<String>,
    /// Serve the control API (and the chaos proxies' API) here during the run.
    pub control: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics on `/metrics` here during the run.
    pub metrics: Option<std::net::SocketAddr>,
    /// Agent processes: `Some(0)` keeps everything in this process, `Some(n)` uses
    /// n (and a process per node), `None` decides by the open-file limit.
    pub processes: Option<usize>,
    /// The Redis the node processes share their registry through; `None` starts
    /// one of octopoll's own.
    pub redis: Option<String>,
    /// The `octopoll` binary the node and agent processes run; `None`: this one.
    pub program: Option<std::path::PathBuf>,
    /// Also run the docs' clustered listening Tentacle and fail it over.
    pub listening_cluster: Option<ListeningClusterConfig>,
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
            scenario: None,
            control: None,
            metrics: None,
            processes: None,
            redis: None,
            program: None,
            listening_cluster: None,
        }
    }

    /// Where the run's parts will live, or why the run cannot be split the way
    /// it must be (what multi-process runs do not do yet).
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let polling = &self.lab.swarm.agent.polling;
        let plan = Plan::choose(
            self.lab.swarm.agents as u64,
            u64::from(self.lab.cluster.nodes),
            polling.connections_per_node.max(1) as u64,
            self.processes,
            plan::open_file_limit(),
        )?;
        if let Plan::Processes { .. } = plan {
            let why = |what: String| PlanError::Unsupported {
                what,
                agents: self.lab.swarm.agents as u64,
                nodes: u64::from(self.lab.cluster.nodes),
            };
            let topology = self.lab.topology;
            if topology.balancing() != Balancing::Direct {
                return Err(why(format!(
                    "the {topology} topology puts every connection through one HAProxy process, which cannot hold them (use unique-port-direct or unique-address)"
                )));
            }
            if self.lab.cluster.queue == octopoll_node::QueueMode::Shared {
                return Err(why(
                    "the shared queue lives in one process: it is not available (queue = \"redis\" shares it across processes)".into(),
                ));
            }
            if self.lab.chaos || self.faults.iter().any(|f| f.action.is_network()) {
                return Err(why(
                    "the chaos proxy (network faults) is not available".into()
                ));
            }
            if self.control.is_some() || self.metrics.is_some() {
                return Err(why(
                    "the dashboard, control API and metrics are not available".into(),
                ));
            }
            if self.listening_cluster.is_some() {
                return Err(why(
                    "the listening cluster's health checks run from an in-process node: it is not available".into(),
                ));
            }
        }
        Ok(plan)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_multi_process_run_cannot_do_is_refused_before_it_starts() {
        let mut config = RunConfig::new(LabConfig::new(3, 100));
        config.processes = Some(2);
        assert!(matches!(config.plan(), Ok(Plan::Processes { .. })));
        config.listening_cluster = Some(ListeningClusterConfig::default());
        let error = config.plan().unwrap_err().to_string();
        assert!(error.contains("listening cluster"), "{error}");
        config.processes = Some(0);
        assert!(matches!(config.plan(), Ok(Plan::InProcess)));
    }
}

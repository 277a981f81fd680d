//! The whole-system benchmarks: real runs (split over processes at 10,000
//! agents) whose reports hold the figures — time to full mesh and memory per held
//! connection, dispatch latency at a fixed rate, and a restart storm's recovery
//! and peak node CPU. Each is a scenario layered over the default, as a user
//! would write it, so `octopoll run` with the same keys reproduces it.

use serde::Serialize;

use octopoll_report::report::{Pickup, Report};
use octopoll_scenario::execute;
use octopoll_scenario::file::Source;
use octopoll_scenario::layers::Layers;
use octopoll_scenario::progress::Progress;

/// The shipped reconnect-storm scenario (every node restarted at once).
const STORM: &str = include_str!("../../../scenarios/reconnect-storm.toml");

/// A run's report, from the default scenario with `layers` over it, in order.
async fn run(name: &str, layers_text: &[&str]) -> anyhow::Result<Report> {
    let mut layers = Layers::new();
    for (i, text) in layers_text.iter().enumerate() {
        layers.file(&Source::new(format!("{name} layer {}", i + 1), *text))?;
    }
    let config = layers.resolve()?;
    let mut progress = Progress::stderr(true);
    Ok(execute(config, &mut progress).await?.report)
}

/// The tables every benchmark run shares: free ports, the agents and key type
/// (top-level keys go before it in a layer).
fn base(agents: usize, key_type: &str) -> String {
    format!("[cluster]\ncomms_port = 0\n[agents]\ncount = {agents}\nkey_type = \"{key_type}\"\n")
}

/// Time to full mesh from a cold start, and memory per held connection.
#[derive(Clone, Debug, Serialize)]
pub struct MeshFigures {
    /// Agents.
    pub agents: usize,
    /// Connections held with the mesh formed.
    pub connections: usize,
    /// From the agents starting to connect to every agent polling every node.
    pub full_mesh_ms: Option<u64>,
    /// RSS growth of every process over the connections, both ends counted.
    pub rss_per_connection_kib: Option<f64>,
    /// Processes the run used (nodes, agent shares, this one).
    pub processes: usize,
}

/// Cold start of `agents` agents × 3 nodes.
pub async fn mesh(agents: usize, key_type: &str) -> anyhow::Result<MeshFigures> {
    let layer = format!(
        "duration = \"5s\"\nmesh_timeout = \"5m\"\n{}",
        base(agents, key_type)
    );
    let report = run("mesh", &[&layer]).await?;
    Ok(MeshFigures {
        agents,
        connections: report.run.connections,
        full_mesh_ms: report.run.full_coverage_ms,
        rss_per_connection_kib: report.rss_per_connection_kib(),
        processes: report.processes.len(),
    })
}

/// Pickup latency at a fixed rate of echo requests over every agent.
#[derive(Clone, Debug, Serialize)]
pub struct DispatchFigures {
    /// Agents.
    pub agents: usize,
    /// Requests a second.
    pub rate: f64,
    /// Requests queued.
    pub requests: u64,
    /// Queued → collected, as the nodes measured it.
    pub pickup_ms: Pickup,
    /// Scheduled → collected: corrected for coordinated omission.
    pub pickup_from_schedule_ms: Pickup,
    /// Failed or lost requests (0 expected).
    pub failed: u64,
}

/// `rate` echo requests a second for 30 s over `agents` agents.
pub async fn dispatch(agents: usize, rate: f64, key_type: &str) -> anyhow::Result<DispatchFigures> {
    let layer = format!(
        "duration = \"30s\"\nmesh_timeout = \"5m\"\n{}[workload]\nrate = {rate:.1}\nmix = {{ echo = 1 }}\n",
        base(agents, key_type)
    );
    let report = run("dispatch", &[&layer]).await?;
    Ok(DispatchFigures {
        agents,
        rate,
        requests: report.requests.queued,
        pickup_ms: report.pickup_ms.clone(),
        pickup_from_schedule_ms: report.pickup_from_schedule_ms.clone(),
        failed: report.requests.failed + report.requests.lost,
    })
}

/// Every node restarted at once under Halibut's reconnect bounds.
#[derive(Clone, Debug, Serialize)]
pub struct StormFigures {
    /// Agents.
    pub agents: usize,
    /// Seconds from the restart to every pair polling again.
    pub full_mesh_s: Option<f64>,
    /// Seconds from the restart to 99 % of pairs polling.
    pub mesh_99_s: Option<f64>,
    /// The busiest node process's peak CPU, in % of one core (in-process runs: the
    /// whole process).
    pub peak_node_cpu_percent: f64,
    /// Handshakes over the run (the first mesh included).
    pub handshakes: u64,
    /// Requests failed or lost across the storm.
    pub failed: u64,
}

/// The shipped reconnect-storm scenario with `agents` agents.
pub async fn storm(agents: usize, key_type: &str) -> anyhow::Result<StormFigures> {
    let report = run("storm", &[STORM, &base(agents, key_type)]).await?;
    let fault = report.faults.first();
    let nodes = report
        .processes
        .iter()
        .filter(|p| p.role.starts_with("node-"));
    let peak = nodes.map(|p| p.peak_cpu_percent).fold(0.0, f64::max);
    Ok(StormFigures {
        agents,
        full_mesh_s: fault.and_then(|f| f.full_mesh_s),
        mesh_99_s: fault.and_then(|f| f.mesh_99_s),
        peak_node_cpu_percent: peak,
        handshakes: report.churn.handshakes,
        failed: report.requests.failed + report.requests.lost,
    })
}

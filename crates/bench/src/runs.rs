//! The whole-system benchmarks: real runs (split over processes at 10,000
//! agents) whose reports hold the figures — time to full mesh and memory per held
//! connection, dispatch latency at a fixed rate, and a restart storm's recovery
//! and peak node CPU, the same dispatch through Halibut's Redis queue beside
//! the per-node one, and the Redis queue's faults: a node killed while it
//! processes requests, and Redis down past Halibut's retries. Each is a scenario layered over the default, as a user
//! would write it, so `octopoll run` with the same keys reproduces it.

use std::collections::BTreeMap;

use serde::Serialize;

/// The latency summary the figures carry.
pub use octopoll_report::report::Pickup;
use octopoll_report::report::Report;
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

/// The tables every benchmark run shares: free ports and `cluster` (more
/// `[cluster]` keys, each line ending in a newline), the agents and key type
/// (top-level keys go before it in a layer).
fn base(agents: usize, key_type: &str, cluster: &str) -> String {
    format!("[cluster]\ncomms_port = 0\n{cluster}[agents]\ncount = {agents}\nkey_type = \"{key_type}\"\n")
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
        base(agents, key_type, "")
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
    /// Queued → response.
    pub end_to_end_ms: Pickup,
    /// Failed or lost requests (0 expected).
    pub failed: u64,
}

/// `rate` echo requests a second for 30 s over `agents` agents.
pub async fn dispatch(agents: usize, rate: f64, key_type: &str) -> anyhow::Result<DispatchFigures> {
    dispatch_with(agents, rate, key_type, "").await
}

/// [`dispatch`], with `cluster` keys added to the `[cluster]` table.
async fn dispatch_with(
    agents: usize,
    rate: f64,
    key_type: &str,
    cluster: &str,
) -> anyhow::Result<DispatchFigures> {
    let layer = format!(
        "duration = \"30s\"\nmesh_timeout = \"5m\"\n{}[workload]\nrate = {rate:.1}\nmix = {{ echo = 1 }}\n",
        base(agents, key_type, cluster)
    );
    let report = run("dispatch", &[&layer]).await?;
    Ok(DispatchFigures {
        agents,
        rate,
        requests: report.requests.queued,
        pickup_ms: report.pickup_ms.clone(),
        pickup_from_schedule_ms: report.pickup_from_schedule_ms.clone(),
        end_to_end_ms: report.end_to_end_ms.clone(),
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
    let report = run("storm", &[STORM, &base(agents, key_type, "")]).await?;
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

/// Dispatch through each node's own queue and through Halibut's Redis queue, in
/// one invocation, and what the Redis queue costs in Redis commands.
#[derive(Clone, Debug, Serialize)]
pub struct QueueFigures {
    /// Every agent polling every node, per-node queues.
    pub per_node: DispatchFigures,
    /// Every agent polling every node, the nodes sharing the Redis queue.
    pub redis: DispatchFigures,
    /// Redis commands over the Redis run (`INFO commandstats`), per request.
    pub redis_commands_per_request: f64,
    /// The fewest the flow needs per request ([`MINIMUM_COMMANDS`]).
    pub minimum_commands_per_request: u64,
}

/// The commands one request needs at the least: the sender's HSET, PEXPIRE,
/// RPUSH, PEXPIRE, PUBLISH and its SUBSCRIBE and UNSUBSCRIBE of the response
/// channel; the processor's LPOP, HMGET and DEL (the claim), HSET, PEXPIRE and
/// PUBLISH (the response); the sender's HMGET and DEL (taking it).
pub const MINIMUM_COMMANDS: u64 = 15;

/// Commands Redis has run since its statistics were reset, `INFO commandstats`
/// summed (less the INFO itself).
async fn commands_run(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum())
}

/// `rate` echo requests a second over `agents` agents, per-node queues then the
/// Redis queue (on a redis-server of the benchmark's own, whose statistics it reads).
pub async fn queues(agents: usize, rate: f64, key_type: &str) -> anyhow::Result<QueueFigures> {
    let per_node = dispatch_with(agents, rate, key_type, "queue = \"per-node\"\n").await?;
    let redis_server = octopoll_fleet::redis_server::LocalRedis::start(None).await?;
    let url = redis_server.url();
    let client = redis::Client::open(url.as_str())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut connection)
        .await?;
    let redis = dispatch_with(
        agents,
        rate,
        key_type,
        &format!("queue = \"redis\"\nredis = \"{url}\"\n"),
    )
    .await;
    let commands = commands_run(&url).await;
    redis_server.stop().await;
    let (redis, commands) = (redis?, commands?);
    Ok(QueueFigures {
        redis_commands_per_request: commands as f64 / redis.requests.max(1) as f64,
        minimum_commands_per_request: MINIMUM_COMMANDS,
        per_node,
        redis,
    })
}

/// How one run came through its one fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultFigures {
    /// Requests queued over the run.
    pub requests: u64,
    /// Seconds from the fault until every request in flight at it had ended.
    pub in_flight_ended_s: Option<f64>,
    /// The most handshakes the nodes completed in one second after the fault.
    pub peak_handshakes_per_s: u64,
    /// Seconds from the end of the fault to every pair polling again.
    pub full_mesh_s: Option<f64>,
    /// Failures over the whole run, by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Requests lost (0 expected).
    pub lost: u64,
}

impl FaultFigures {
    fn of(report: &Report) -> Self {
        let fault = report.faults.first();
        Self {
            requests: report.requests.queued,
            in_flight_ended_s: fault.and_then(|f| f.in_flight_ended_s),
            peak_handshakes_per_s: fault.map_or(0, |f| f.peak_handshakes_per_s),
            full_mesh_s: fault.and_then(|f| f.full_mesh_s),
            failed_by_reason: report.failures_by_reason.clone(),
            lost: report.requests.lost + report.requests.counted_twice,
        }
    }
}

/// The Redis queue's faults at scale, each beside its baseline, in one invocation.
#[derive(Clone, Debug, Serialize)]
pub struct RedisFaultFigures {
    /// Agents.
    pub agents: usize,
    /// Requests a second.
    pub rate: f64,
    /// Node 2 killed under load, every node with its own queue.
    pub kill_per_node: FaultFigures,
    /// Node 2 killed under load, the nodes sharing the Redis queue: requests it
    /// was processing for other nodes end when their senders stop hearing it.
    pub kill_redis: FaultFigures,
    /// How long Redis was down (past Halibut's 30 s of retries).
    pub outage_s: u64,
    /// Redis down, each failed connection dropped after Halibut's random 0–30 s.
    pub outage_with_delay: FaultFigures,
    /// Redis down, each failed connection dropped at once.
    pub outage_without_delay: FaultFigures,
}

/// The seconds Redis stays down in [`redis_faults`]: past Halibut's 30 s of
/// retries plus a collector's 30 s long poll, so every collection fails and
/// every connection is dropped once.
pub const OUTAGE_S: u64 = 70;

/// `rate` requests a second over `agents` agents: node 2 killed at 10 s with
/// per-node queues and then with the Redis queue (half the requests scripts of
/// 1–2 s, so some are being processed at the kill); then Redis down for
/// [`OUTAGE_S`] with Halibut's random drop delay and without it (echo only).
pub async fn redis_faults(
    agents: usize,
    rate: f64,
    key_type: &str,
) -> anyhow::Result<RedisFaultFigures> {
    let layer = |top: &str, cluster: &str, workload: &str, fault: &str| {
        format!(
            "{top}mesh_timeout = \"5m\"\n{}[workload]\nrate = {rate:.1}\n{workload}[[faults]]\n{fault}",
            base(agents, key_type, cluster)
        )
    };
    // The drain outlasts Halibut's 60 s of processor silence.
    let kill = |queue: &str| {
        layer(
            "duration = \"40s\"\ndrain = \"90s\"\n",
            &format!("queue = \"{queue}\"\n"),
            "mix = { echo = 1, script = 1 }\nmin_script_time = \"1s\"\nmax_script_time = \"2s\"\n",
            "at = \"10s\"\naction = \"kill\"\ntarget = \"node-2\"\n",
        )
    };
    let kill_per_node =
        FaultFigures::of(&run("kill, per-node queues", &[&kill("per-node")]).await?);
    let kill_redis = FaultFigures::of(&run("kill, Redis queue", &[&kill("redis")]).await?);
    let outage = |delay: &str| {
        layer(
            &format!("duration = \"{}s\"\n", OUTAGE_S + 40),
            &format!("queue = \"redis\"\nredis_drop_delay = \"{delay}\"\n"),
            "mix = { echo = 1 }\n",
            &format!("at = \"5s\"\naction = \"redis-down\"\nduration = \"{OUTAGE_S}s\"\n"),
        )
    };
    let outage_with_delay = FaultFigures::of(&run("Redis down", &[&outage("30s")]).await?);
    let outage_without_delay =
        FaultFigures::of(&run("Redis down, no drop delay", &[&outage("0s")]).await?);
    Ok(RedisFaultFigures {
        agents,
        rate,
        kill_per_node,
        kill_redis,
        outage_s: OUTAGE_S,
        outage_with_delay,
        outage_without_delay,
    })
}

//! Scenario files: a run written down as TOML — topology, load, faults over time,
//! pass/fail thresholds — so one command runs it and CI gets an exit code.
//!
//! Values come in layers: the built-in default (`scenarios/default.toml`, compiled
//! in), then the scenario file, then the command line's flags. A key unknown to
//! the schema, a value of the wrong type, or an impossible value (0 nodes, a fault
//! after the end, a fault on node 7 of 3) is refused before anything starts, with
//! the file, line and key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use octopoll_agent::{BackoffConfig, BackoffStrategy};
use octopoll_node::QueueMode;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;

use crate::config::RunConfig;
use crate::fault::{Fault, FaultKeys, Target};
use crate::workload::Mix;
use octopoll_fleet::process_args::KeyTypeName;
use octopoll_lab::topology::Topology;
use octopoll_lab::LabConfig;
use octopoll_report::thresholds::Thresholds;

/// The built-in default scenario: what `octopoll run` runs with no file.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/default.toml");

/// Most agents a run has. Past what one process holds (each polling connection
/// costs a descriptor at both ends, and a process may hold 20,000 here), a run
/// splits itself over processes; past what one node process holds, it is refused.
pub const MAX_AGENTS: usize = 100_000;
/// Most nodes.
pub const MAX_NODES: u16 = 64;

/// A scenario as written: every key optional, so files and flags can be layered.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// A short name for reports.
    pub name: Option<String>,
    /// What the scenario shows.
    pub description: Option<String>,
    /// Seed for agent ids, request choice, jitter and `random` fault targets.
    pub seed: Option<u64>,
    /// How long to queue work.
    #[serde(default, with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// How long to wait for unfinished requests after the workload.
    #[serde(default, with = "humantime_serde::option")]
    pub drain: Option<Duration>,
    /// How long to wait for every polling connection before the workload.
    #[serde(default, with = "humantime_serde::option")]
    pub mesh_timeout: Option<Duration>,
    /// Multiplies `duration` and every fault's `at` and `duration` (0.25 runs a
    /// scenario in a quarter of the time).
    pub time_scale: Option<f64>,
    /// Agent processes: 0 keeps the run in this process; absent, the run decides
    /// by the open-file limit.
    pub processes: Option<usize>,
    /// The nodes.
    #[serde(default)]
    pub cluster: ClusterKeys,
    /// Bounds on what a peer can make a node hold or do.
    #[serde(default)]
    pub limits: octopoll_fleet::limits::LimitKeys,
    /// The agents.
    #[serde(default)]
    pub agents: AgentKeys,
    /// The work queued.
    #[serde(default)]
    pub workload: WorkloadKeys,
    /// Faults over time (a later layer's list replaces an earlier one's).
    pub faults: Option<Vec<FaultKeys>>,
    /// The docs' clustered listening Tentacle, failed over during the run.
    #[serde(default)]
    pub listening_cluster: crate::listening_keys::ListeningClusterKeys,
    /// Pass/fail limits.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Where the results go.
    #[serde(default)]
    pub output: OutputKeys,
}

/// `[output]`: the run's results and live views.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputKeys {
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Write the per-second time series as CSV here.
    pub csv: Option<PathBuf>,
    /// Write the self-contained HTML report with plots here.
    pub html: Option<PathBuf>,
    /// No live progress.
    pub quiet: Option<bool>,
    /// Serve the control API here during the run.
    pub control: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics on `/metrics` here during the run.
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[cluster]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterKeys {
    /// Node count.
    pub nodes: Option<u16>,
    /// How agents reach the nodes.
    pub topology: Option<Topology>,
    /// `per-node` or `shared`.
    pub queue: Option<QueueMode>,
    /// Address of node 1.
    pub bind: Option<IpAddr>,
    /// Comms port of node 1 (0: free ports).
    pub comms_port: Option<u16>,
    /// API port of node 1 (0: free ports).
    pub api_port: Option<u16>,
    /// Long-poll wait before the null request.
    #[serde(default, with = "humantime_serde::option")]
    pub long_poll: Option<Duration>,
    /// A request nobody collects fails after this.
    #[serde(default, with = "humantime_serde::option")]
    pub pickup_timeout: Option<Duration>,
    /// How long a stopping node lets exchanges in flight finish.
    #[serde(default, with = "humantime_serde::option")]
    pub node_drain: Option<Duration>,
    /// The HAProxy binary.
    pub haproxy: Option<PathBuf>,
    /// Put the fault proxy between the agents and every node even without network
    /// faults (network faults imply it).
    pub chaos: Option<bool>,
    /// Most TLS handshakes each node runs at once.
    pub max_concurrent_handshakes: Option<usize>,
    /// The Redis that node processes share their registry through (runs split
    /// over processes); absent, octopoll starts its own.
    pub redis: Option<String>,
}

/// `[agents]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKeys {
    /// Agent count.
    pub count: Option<usize>,
    /// `ecdsa` or `rsa`.
    pub key_type: Option<KeyTypeName>,
    /// Polling connections per node.
    pub connections_per_node: Option<usize>,
    /// Reconnect strategy.
    pub backoff: Option<BackoffStrategy>,
    /// Shortest reconnect delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_min: Option<Duration>,
    /// Longest reconnect delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_max: Option<Duration>,
    /// First connections per second over the whole swarm (0: all at once).
    pub ramp: Option<f64>,
}

/// `[workload]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadKeys {
    /// Requests per second over the cluster.
    pub rate: Option<f64>,
    /// Request kinds and weights.
    pub mix: Option<Mix>,
    /// Shortest simulated script run time.
    #[serde(default, with = "humantime_serde::option")]
    pub min_script_time: Option<Duration>,
    /// Longest simulated script run time.
    #[serde(default, with = "humantime_serde::option")]
    pub max_script_time: Option<Duration>,
    /// Bytes of text in each echo request.
    pub payload_bytes: Option<usize>,
    /// Bytes in each upload's data stream.
    pub stream_bytes: Option<usize>,
}

/// Where a scenario's text came from, for error messages.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file name as the user gave it (or `built-in default`).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A scenario refused before anything started.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {key}: {message}")]
pub struct ScenarioError {
    /// `file:line`, or the flag the value came from.
    pub location: String,
    /// The key, e.g. `cluster.nodes` or `faults[2].target`.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// A file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading scenario {path}")]
pub struct ReadError {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl ScenarioFile {
    /// Parses `source`, refusing unknown keys and wrong types with file, line and key.
    pub fn parse(source: &Source) -> Result<Self, ScenarioError> {
        toml::from_str(&source.text).map_err(|error| {
            let line = error.span().map(|span| line_at(&source.text, span.start));
            let location = match line {
                Some(line) => format!("{}:{line}", source.name),
                None => source.name.clone(),
            };
            let message = error.message().trim().to_string();
            let key = key_in_message(&message)
                .or_else(|| error.span().and_then(|s| key_at(&source.text, s.start)))
                .unwrap_or_else(|| "(file)".into());
            ScenarioError {
                location,
                key,
                message,
            }
        })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<(Self, Source), anyhow::Error> {
        let text = std::fs::read_to_string(path).map_err(|source| ReadError {
            path: path.to_owned(),
            source,
        })?;
        let source = Source {
            name: path.display().to_string(),
            text,
        };
        Ok((Self::parse(&source)?, source))
    }

    /// The built-in default.
    pub fn default_scenario() -> (Self, Source) {
        let source = Source {
            name: "built-in default (scenarios/default.toml)".into(),
            text: DEFAULT_SCENARIO.into(),
        };
        let file = Self::parse(&source).expect("the built-in default scenario parses");
        (file, source)
    }

    /// `self` with every key `over` sets replaced.
    pub fn overlay(self, over: ScenarioFile) -> ScenarioFile {
        let (c, o) = (self.cluster, over.cluster);
        let (a, oa) = (self.agents, over.agents);
        let (w, ow) = (self.workload, over.workload);
        ScenarioFile {
            name: over.name.or(self.name),
            description: over.description.or(self.description),
            seed: over.seed.or(self.seed),
            duration: over.duration.or(self.duration),
            drain: over.drain.or(self.drain),
            mesh_timeout: over.mesh_timeout.or(self.mesh_timeout),
            time_scale: over.time_scale.or(self.time_scale),
            processes: over.processes.or(self.processes),
            cluster: ClusterKeys {
                nodes: o.nodes.or(c.nodes),
                topology: o.topology.or(c.topology),
                queue: o.queue.or(c.queue),
                bind: o.bind.or(c.bind),
                comms_port: o.comms_port.or(c.comms_port),
                api_port: o.api_port.or(c.api_port),
                long_poll: o.long_poll.or(c.long_poll),
                pickup_timeout: o.pickup_timeout.or(c.pickup_timeout),
                node_drain: o.node_drain.or(c.node_drain),
                haproxy: o.haproxy.or(c.haproxy),
                chaos: o.chaos.or(c.chaos),
                max_concurrent_handshakes: o
                    .max_concurrent_handshakes
                    .or(c.max_concurrent_handshakes),
                redis: o.redis.or(c.redis),
            },
            limits: self.limits.overlay(over.limits),
            agents: AgentKeys {
                count: oa.count.or(a.count),
                key_type: oa.key_type.or(a.key_type),
                connections_per_node: oa.connections_per_node.or(a.connections_per_node),
                backoff: oa.backoff.or(a.backoff),
                backoff_min: oa.backoff_min.or(a.backoff_min),
                backoff_max: oa.backoff_max.or(a.backoff_max),
                ramp: oa.ramp.or(a.ramp),
            },
            workload: WorkloadKeys {
                rate: ow.rate.or(w.rate),
                mix: ow.mix.or(w.mix),
                min_script_time: ow.min_script_time.or(w.min_script_time),
                max_script_time: ow.max_script_time.or(w.max_script_time),
                payload_bytes: ow.payload_bytes.or(w.payload_bytes),
                stream_bytes: ow.stream_bytes.or(w.stream_bytes),
            },
            faults: over.faults.or(self.faults),
            listening_cluster: self.listening_cluster.overlay(over.listening_cluster),
            thresholds: self.thresholds.overlay(over.thresholds),
            output: OutputKeys {
                json: over.output.json.or(self.output.json),
                csv: over.output.csv.or(self.output.csv),
                html: over.output.html.or(self.output.html),
                quiet: over.output.quiet.or(self.output.quiet),
                control: over.output.control.or(self.output.control),
                metrics: over.output.metrics.or(self.output.metrics),
            },
        }
    }
}

/// Checks the merged layers into a run. `file` is the user's scenario (for
/// locating keys); values it does not set came from the default or the flags.
pub fn resolve(merged: &ScenarioFile, file: Option<&Source>) -> Result<RunConfig, ScenarioError> {
    let here = |table: Option<&str>, key: &str, index: Option<usize>| {
        let full = match (table, index) {
            (Some(t), Some(i)) => format!("{t}[{i}].{key}"),
            (Some(t), None) => format!("{t}.{key}"),
            (None, _) => key.to_string(),
        };
        let line = file.and_then(|f| locate(&f.text, table, index, key));
        let location = match (file, line) {
            (Some(f), Some(line)) => format!("{}:{line}", f.name),
            _ => format!("--{} (or the default)", key.replace('_', "-")),
        };
        (location, full)
    };
    let refuse = |table: Option<&str>, key: &str, index: Option<usize>, message: String| {
        let (location, key) = here(table, key, index);
        ScenarioError {
            location,
            key,
            message,
        }
    };

    let c = &merged.cluster;
    let nodes = c.nodes.unwrap_or(3);
    if !(1..=MAX_NODES).contains(&nodes) {
        return Err(refuse(
            Some("cluster"),
            "nodes",
            None,
            format!("{nodes} nodes: a cluster has 1 to {MAX_NODES}"),
        ));
    }
    let agents = merged.agents.count.unwrap_or(100);
    if !(1..=MAX_AGENTS).contains(&agents) {
        return Err(refuse(
            Some("agents"),
            "count",
            None,
            format!("{agents} agents: a run has 1 to {MAX_AGENTS}"),
        ));
    }
    let scale = merged.time_scale.unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
        return Err(refuse(
            None,
            "time_scale",
            None,
            format!("must be above 0 and at most 100, got {scale}"),
        ));
    }
    let too_long = |d: Duration| d > LONGEST;
    for (table, key, value) in [
        (None, "duration", merged.duration),
        (None, "drain", merged.drain),
        (None, "mesh_timeout", merged.mesh_timeout),
        (Some("cluster"), "long_poll", c.long_poll),
        (Some("cluster"), "pickup_timeout", c.pickup_timeout),
        (Some("cluster"), "node_drain", c.node_drain),
        (Some("agents"), "backoff_min", merged.agents.backoff_min),
        (Some("agents"), "backoff_max", merged.agents.backoff_max),
    ] {
        if value.is_some_and(too_long) {
            return Err(refuse(table, key, None, "must be at most 7 days".into()));
        }
    }
    let duration = merged
        .duration
        .unwrap_or(Duration::from_secs(30))
        .mul_f64(scale);
    if duration < Duration::from_millis(1) {
        return Err(refuse(
            None,
            "duration",
            None,
            "must be above 0 (after time_scale)".into(),
        ));
    }
    let rate = merged.workload.rate.unwrap_or(20.0);
    if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
        return Err(refuse(
            Some("workload"),
            "rate",
            None,
            format!("must be a positive number of requests per second, at most 100000, got {rate}"),
        ));
    }
    for (key, value) in [
        ("long_poll", c.long_poll),
        ("pickup_timeout", c.pickup_timeout),
    ] {
        if value.is_some_and(|v| v.is_zero()) {
            return Err(refuse(Some("cluster"), key, None, "must be above 0".into()));
        }
    }
    let connections_per_node = merged.agents.connections_per_node.unwrap_or(1);
    if !(1..=16).contains(&connections_per_node) {
        return Err(refuse(
            Some("agents"),
            "connections_per_node",
            None,
            format!("must be 1 to 16, got {connections_per_node}"),
        ));
    }
    let t = &merged.thresholds;
    for (key, value) in [
        ("pickup_p99_ms", t.pickup_p99_ms),
        ("full_mesh_after_fault_s", t.full_mesh_after_fault_s),
    ] {
        if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(refuse(
                Some("thresholds"),
                key,
                None,
                "must be a number of 0 or more".into(),
            ));
        }
    }
    if let Some(min) = merged.thresholds.coverage_min {
        if !(0.0..=1.0).contains(&min) {
            return Err(refuse(
                Some("thresholds"),
                "coverage_min",
                None,
                format!("must be from 0 to 1, got {min}"),
            ));
        }
    }

    let seed = merged.seed.unwrap_or(1);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xFA17);
    let mut faults = Vec::new();
    for (i, keys) in merged.faults.iter().flatten().enumerate() {
        let at_fault = |key: &str, message: String| refuse(Some("faults"), key, Some(i), message);
        let action =
            crate::fault::action_of(keys).map_err(|(key, message)| at_fault(key, message))?;
        let at = keys.at.ok_or_else(|| {
            at_fault("at", "missing: when the fault happens, e.g. \"10s\"".into())
        })?;
        if too_long(at) || keys.duration.is_some_and(too_long) {
            return Err(at_fault("at", "must be at most 7 days".into()));
        }
        let at = at.mul_f64(scale);
        if at >= duration {
            return Err(at_fault(
                "at",
                format!(
                    "{} is not before the end of the run ({})",
                    humantime::format_duration(at),
                    humantime::format_duration(duration)
                ),
            ));
        }
        let lasts = keys.duration.map(|d| d.mul_f64(scale));
        if let Some(lasts) = lasts {
            if !action.disrupts()
                || matches!(
                    action,
                    crate::fault::Action::Node(octopoll_lab::actions::NodeAction::Restart)
                )
            {
                return Err(at_fault(
                    "duration",
                    format!(
                        "{action} has no duration; only kill, stop and network faults are undone"
                    ),
                ));
            }
            if at + lasts >= duration {
                return Err(at_fault(
                    "duration",
                    format!(
                        "the fault ends at {}, not before the end of the run ({}): leave time to see it heal",
                        humantime::format_duration(at + lasts),
                        humantime::format_duration(duration)
                    ),
                ));
            }
        }
        let target_text = keys
            .target
            .as_deref()
            .ok_or_else(|| at_fault("target", "missing: node-N, all or random".into()))?;
        let target = Target::parse(target_text).map_err(|m| at_fault("target", m))?;
        if let Target::Node(id) = &target {
            if id.0 > nodes {
                return Err(at_fault(
                    "target",
                    format!("{id} does not exist: the cluster has {nodes} nodes"),
                ));
            }
        }
        faults.push(Fault {
            at,
            nodes: target.resolve(nodes, &mut rng),
            action,
            duration: lasts,
        });
    }
    faults.sort_by_key(|f| f.at);
    check_overlaps(&faults).map_err(|(i, message)| {
        let (location, key) = here(Some("faults"), "at", Some(i));
        ScenarioError {
            location,
            key,
            message,
        }
    })?;

    let mut lab = LabConfig::new(nodes, agents);
    lab.topology = c.topology.unwrap_or_default();
    lab.haproxy = c.haproxy.clone();
    lab.chaos = c.chaos.unwrap_or(false) || faults.iter().any(|f| f.action.is_network());
    let cluster = &mut lab.cluster;
    cluster.queue = c.queue.unwrap_or_default();
    if let Some(bind) = c.bind {
        cluster.bind = bind;
    }
    cluster.comms_port = c.comms_port.unwrap_or(10943);
    cluster.api_port = c.api_port.unwrap_or(0);
    if let Some(long_poll) = c.long_poll {
        cluster.node.long_poll = long_poll;
    }
    if let Some(pickup) = c.pickup_timeout {
        cluster.node.pickup_timeout = pickup;
    }
    if let Some(drain) = c.node_drain {
        cluster.node.drain = drain;
    }
    if let Some(handshakes) = c.max_concurrent_handshakes {
        if handshakes == 0 {
            return Err(refuse(
                Some("cluster"),
                "max_concurrent_handshakes",
                None,
                "must be at least 1".into(),
            ));
        }
        cluster.node.max_concurrent_handshakes = handshakes;
    }
    // A run's own swarm is never held back by the limits meant for strangers:
    // unless set, the registration burst covers every agent at once, and the
    // unauthenticated cap every connection a cold start opens to one node.
    let own_connections = agents.saturating_mul(connections_per_node);
    cluster.node.registration_burst = cluster
        .node
        .registration_burst
        .max(u32::try_from(agents).unwrap_or(u32::MAX));
    cluster.node.max_unauthenticated_connections = cluster
        .node
        .max_unauthenticated_connections
        .max(own_connections.saturating_add(1024));
    merged
        .limits
        .apply(&mut cluster.node)
        .map_err(|bad| refuse(Some("limits"), bad.key, None, bad.message))?;
    let key_type = merged.agents.key_type.unwrap_or(KeyTypeName::Ecdsa).into();
    lab.swarm.key_type = key_type;
    lab.server_key_type = key_type;
    lab.swarm.seed = seed;
    let polling = &mut lab.swarm.agent.polling;
    polling.connections_per_node = connections_per_node;
    polling.backoff = BackoffConfig {
        strategy: merged.agents.backoff.unwrap_or_default(),
        min: merged.agents.backoff_min.unwrap_or(BackoffConfig::FAST.min),
        max: merged.agents.backoff_max.unwrap_or(BackoffConfig::FAST.max),
    };
    let ramp = merged.agents.ramp.unwrap_or(0.0);
    if !(ramp.is_finite() && ramp >= 0.0) {
        return Err(refuse(
            Some("agents"),
            "ramp",
            None,
            format!(
                "must be 0 (no ramp) or a positive number of connections per second, got {ramp}"
            ),
        ));
    }
    polling.ramp = octopoll_agent::Ramp::per_second(ramp);
    if polling.backoff.max < polling.backoff.min {
        return Err(refuse(
            Some("agents"),
            "backoff_max",
            None,
            "must not be below backoff_min".into(),
        ));
    }

    let mut layout = lab.cluster.clone();
    layout.addressing = lab.topology.addressing();
    if let Err(error) = layout.check() {
        let key = match error {
            octopoll_node::Error::PortRange { .. } => "comms_port",
            _ => "bind",
        };
        return Err(refuse(Some("cluster"), key, None, error.to_string()));
    }
    let mut config = RunConfig::new(lab);
    config.name = merged.name.clone();
    config.seed = seed;
    config.duration = duration;
    config.rate = rate;
    if let Some(drain) = merged.drain {
        config.drain = drain;
    }
    if let Some(mesh) = merged.mesh_timeout {
        config.mesh_timeout = mesh;
    }
    let w = &merged.workload;
    if let Some(mix) = w.mix {
        if mix.total() == 0 {
            return Err(refuse(
                Some("workload"),
                "mix",
                None,
                "every weight is 0".into(),
            ));
        }
        config.mix = mix;
    }
    config.min_script_time = w.min_script_time.unwrap_or(config.min_script_time);
    config.max_script_time = w.max_script_time.unwrap_or(config.max_script_time);
    if config.max_script_time < config.min_script_time {
        return Err(refuse(
            Some("workload"),
            "max_script_time",
            None,
            "must not be below min_script_time".into(),
        ));
    }
    config.payload_bytes = w.payload_bytes.unwrap_or(config.payload_bytes);
    if config.payload_bytes > MAX_PAYLOAD_BYTES {
        return Err(refuse(
            Some("workload"),
            "payload_bytes",
            None,
            format!("must be at most {MAX_PAYLOAD_BYTES}"),
        ));
    }
    config.stream_bytes = w.stream_bytes.unwrap_or(config.stream_bytes);
    if config.stream_bytes > MAX_STREAM_BYTES {
        return Err(refuse(
            Some("workload"),
            "stream_bytes",
            None,
            format!("must be at most {MAX_STREAM_BYTES} (the data-stream limit)"),
        ));
    }
    config.faults = faults;
    config.thresholds = merged.thresholds.clone();
    config.control = merged.output.control;
    config.metrics = merged.output.metrics;
    config.processes = merged.processes;
    config.redis = c.redis.clone();
    config.listening_cluster = merged
        .listening_cluster
        .config(duration, scale)
        .map_err(|(key, message)| refuse(Some("listening_cluster"), key, None, message))?;
    Ok(config)
}

/// The longest time any duration in a scenario may be (before scaling).
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest echo payload: well inside the 16 MiB message limit.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// The largest upload stream: Halibut's per-message stream limit here.
const MAX_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// Refuses two faults that act on the same node at overlapping times when one of
/// them is undone later (its undo would race the other): a kill during a stop's
/// drain, two `down`s. Returns the later fault's index. Toxics may overlap.
fn check_overlaps(faults: &[Fault]) -> Result<(), (usize, String)> {
    use crate::fault::Action;
    use octopoll_lab::actions::NetworkAction;
    let exclusive =
        |a: &Action| matches!(a, Action::Node(_) | Action::Network(NetworkAction::Down));
    for (i, first) in faults.iter().enumerate() {
        let Some(lasts) = first.duration else {
            continue;
        };
        if !exclusive(&first.action) {
            continue;
        }
        for (j, later) in faults.iter().enumerate() {
            if j == i || !exclusive(&later.action) || later.at < first.at {
                continue;
            }
            let same_kind = first.action.is_network() == later.action.is_network();
            let shared = first.nodes.iter().find(|n| later.nodes.contains(n));
            if let (true, Some(node), true) = (same_kind, shared, later.at <= first.at + lasts) {
                return Err((
                    j.max(i),
                    format!(
                        "{} overlaps {} on {node}; let one end before the next starts",
                        later.describe(),
                        first.describe()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key a TOML error message names (`unknown field `nodez``).
fn key_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    message
        .starts_with("unknown field")
        .then(|| message[start..end].to_string())
}

/// The key on the line holding byte `offset`, if the line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_string())
}

/// The line of `key` in `[table]` (the `index`-th `[[table]]` for arrays), or at
/// the top level when `table` is `None`.
fn locate(text: &str, table: Option<&str>, index: Option<usize>, key: &str) -> Option<usize> {
    let mut current: Option<(String, usize)> = None;
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let seen = counts.entry(name.clone()).or_insert(0);
            current = Some((name, *seen));
            *seen += 1;
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split_once(']')) {
            current = Some((name.0.trim().to_string(), 0));
            continue;
        }
        let Some((k, _)) = trimmed.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let here = current.as_ref().map(|(t, i)| (t.as_str(), *i));
        let wanted = table.map(|t| (t, index.unwrap_or(0)));
        if here == wanted {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            name: "test.toml".into(),
            text: text.into(),
        }
    }

    fn resolve_text(text: &str) -> Result<RunConfig, ScenarioError> {
        let source = source(text);
        let file = ScenarioFile::parse(&source)?;
        let (default, _) = ScenarioFile::default_scenario();
        resolve(&default.overlay(file), Some(&source))
    }

    #[test]
    fn the_default_scenario_is_the_library_default() {
        let (default, _) = ScenarioFile::default_scenario();
        let config = resolve(&default, None).unwrap();
        let mut expected = RunConfig::new(LabConfig::new(3, 100));
        expected.lab.cluster.comms_port = 10943;
        assert_eq!(config.lab.cluster.nodes, expected.lab.cluster.nodes);
        assert_eq!(config.lab.swarm.agents, expected.lab.swarm.agents);
        assert_eq!(
            config.lab.cluster.comms_port,
            expected.lab.cluster.comms_port
        );
        assert_eq!(
            config.lab.cluster.node.long_poll,
            expected.lab.cluster.node.long_poll
        );
        assert_eq!(
            config.lab.cluster.node.pickup_timeout,
            expected.lab.cluster.node.pickup_timeout
        );
        assert_eq!(config.lab.topology, expected.lab.topology);
        assert_eq!(config.lab.swarm.agent.polling.backoff, BackoffConfig::FAST);
        assert_eq!(config.duration, expected.duration);
        assert_eq!(config.rate, expected.rate);
        assert_eq!(config.drain, expected.drain);
        assert_eq!(config.mesh_timeout, expected.mesh_timeout);
        assert_eq!(config.mix, expected.mix);
        assert_eq!(config.max_script_time, expected.max_script_time);
        assert!(config.faults.is_empty());
    }

    #[test]
    fn an_unknown_key_names_the_file_line_and_key() {
        let error = resolve_text("seed = 3\n[cluster]\nnodez = 3\n").unwrap_err();
        assert_eq!(error.location, "test.toml:3");
        assert_eq!(error.key, "nodez");
        assert!(error.message.contains("unknown field"), "{error}");
    }

    #[test]
    fn a_listening_cluster_failover_after_the_end_names_the_line_and_key() {
        let error =
            resolve_text("duration = \"10s\"\n[listening_cluster]\nfailover_at = \"12s\"\n")
                .unwrap_err();
        assert_eq!(
            (error.location.as_str(), error.key.as_str()),
            ("test.toml:3", "listening_cluster.failover_at")
        );
        assert!(error.message.contains("not before the end"), "{error}");
        let config = resolve_text("[listening_cluster]\nenabled = true\n").unwrap();
        assert_eq!(config.listening_cluster, Some(Default::default()));
        assert!(resolve_text("").unwrap().listening_cluster.is_none());
    }

    #[test]
    fn a_wrong_type_names_the_file_line_and_key() {
        let error = resolve_text("[cluster]\nnodes = \"three\"\n").unwrap_err();
        assert_eq!(error.location, "test.toml:2");
        assert_eq!(error.key, "nodes");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[test]
    fn impossible_values_name_the_file_line_and_key() {
        let zero = resolve_text("[cluster]\nnodes = 0\n").unwrap_err();
        assert_eq!(
            (zero.location.as_str(), zero.key.as_str()),
            ("test.toml:2", "cluster.nodes")
        );

        let overlap = resolve_text(
            "[[faults]]\nat = \"5s\"\naction = \"stop\"\ntarget = \"node-1\"\nduration = \"5s\"\n[[faults]]\nat = \"7s\"\naction = \"kill\"\ntarget = \"all\"\n",
        )
        .unwrap_err();
        assert_eq!(overlap.key, "faults[1].at");
        assert!(
            overlap.message.contains("overlaps stop node-1"),
            "{overlap}"
        );

        let late = resolve_text(
            "duration = \"20s\"\n[[faults]]\nat = \"5s\"\naction = \"kill\"\ntarget = \"node-1\"\n\n[[faults]]\nat = \"30s\"\naction = \"kill\"\ntarget = \"node-2\"\n",
        )
        .unwrap_err();
        assert_eq!(
            (late.location.as_str(), late.key.as_str()),
            ("test.toml:8", "faults[1].at")
        );
        assert!(late.message.contains("not before the end"), "{late}");

        let seventh =
            resolve_text("[[faults]]\nat = \"5s\"\naction = \"kill\"\ntarget = \"node-7\"\n")
                .unwrap_err();
        assert_eq!(seventh.key, "faults[0].target");
        assert_eq!(seventh.location, "test.toml:4");
        assert!(
            seventh.message.contains("the cluster has 3 nodes"),
            "{seventh}"
        );

        let toxic =
            resolve_text("[[faults]]\nat = \"5s\"\naction = \"latency\"\ntarget = \"all\"\n")
                .unwrap_err();
        assert_eq!(toxic.key, "faults[0].latency");
    }

    #[test]
    fn time_scale_shrinks_the_run_and_its_faults() {
        let config = resolve_text(
            "duration = \"40s\"\ntime_scale = 0.25\n[[faults]]\nat = \"10s\"\naction = \"kill\"\ntarget = \"node-2\"\nduration = \"15s\"\n",
        )
        .unwrap();
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.faults[0].at, Duration::from_millis(2500));
        assert_eq!(config.faults[0].duration, Some(Duration::from_millis(3750)));
        assert!(!config.lab.chaos, "node faults need no proxy");
    }

    #[test]
    fn network_faults_put_the_proxy_in_front_and_random_targets_follow_the_seed() {
        let text = "seed = 9\n[[faults]]\nat = \"1s\"\naction = \"down\"\ntarget = \"random\"\n";
        let one = resolve_text(text).unwrap();
        let two = resolve_text(text).unwrap();
        assert!(one.lab.chaos);
        assert_eq!(one.faults[0].nodes, two.faults[0].nodes);
    }
}

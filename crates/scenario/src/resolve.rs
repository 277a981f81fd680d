//! A merged scenario checked into a [`RunConfig`]: every impossible value (0
//! nodes, a fault after the end, a fault on node 7 of 3) refused before anything
//! starts, blamed on the layer that set it.

use std::time::Duration;

use octopoll_agent::BackoffConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::RunConfig;
use crate::fault::{Fault, Target};
use crate::file::{ScenarioError, ScenarioFile, MAX_AGENTS, MAX_NODES};
use crate::layers::{Layers, Origin};
use octopoll_lab::LabConfig;

impl Layers {
    /// The merged layers checked into a run: an impossible value (0 nodes, a
    /// fault after the end) is refused, naming where it was set.
    pub fn resolve(&self) -> Result<RunConfig, ScenarioError> {
        let mut config = resolve(&self.scenario()?, self)?;
        config.scenario = Some(self.resolved_text());
        Ok(config)
    }
}

/// Checks a merged scenario into a run. `layers` says where each value came
/// from, so a refusal names the file and line, or the flag, that set it.
pub(crate) fn resolve(merged: &ScenarioFile, layers: &Layers) -> Result<RunConfig, ScenarioError> {
    let shape = Shape::of(merged, layers)?;
    check_thresholds(merged, layers)?;
    let faults = faults(merged, layers, &shape)?;
    let network_faults = faults.iter().any(|f| f.action.is_network());
    let lab = lab(merged, layers, &shape, network_faults)?;
    let Shape {
        duration,
        scale,
        rate,
        seed,
        ..
    } = shape;
    let c = &merged.cluster;
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
            return Err(layers.refuse("workload.mix", "every weight is 0"));
        }
        config.mix = mix;
    }
    config.min_script_time = need(w.min_script_time, "workload.min_script_time")?;
    config.max_script_time = need(w.max_script_time, "workload.max_script_time")?;
    if config.max_script_time < config.min_script_time {
        return Err(layers.refuse(
            "workload.max_script_time",
            "must not be below min_script_time",
        ));
    }
    config.payload_bytes = need(w.payload_bytes, "workload.payload_bytes")?;
    if config.payload_bytes > MAX_PAYLOAD_BYTES {
        return Err(layers.refuse(
            "workload.payload_bytes",
            format!("must be at most {MAX_PAYLOAD_BYTES}"),
        ));
    }
    config.stream_bytes = need(w.stream_bytes, "workload.stream_bytes")?;
    if config.stream_bytes > MAX_STREAM_BYTES {
        return Err(layers.refuse(
            "workload.stream_bytes",
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
        .map_err(|(key, message)| layers.refuse(&format!("listening_cluster.{key}"), message))?;
    Ok(config)
}

/// The figures the rest of the checks depend on.
struct Shape {
    nodes: u16,
    agents: usize,
    connections_per_node: usize,
    /// Already scaled.
    duration: Duration,
    scale: f64,
    rate: f64,
    seed: u64,
}

impl Shape {
    /// The run's size and times, with every time bounded.
    fn of(merged: &ScenarioFile, layers: &Layers) -> Result<Self, ScenarioError> {
        let c = &merged.cluster;
        let nodes = need(c.nodes, "cluster.nodes")?;
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(layers.refuse(
                "cluster.nodes",
                format!("{nodes} nodes: a cluster has 1 to {MAX_NODES}"),
            ));
        }
        let agents = need(merged.agents.count, "agents.count")?;
        if !(1..=MAX_AGENTS).contains(&agents) {
            return Err(layers.refuse(
                "agents.count",
                format!("{agents} agents: a run has 1 to {MAX_AGENTS}"),
            ));
        }
        let scale = need(merged.time_scale, "time_scale")?;
        if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
            return Err(layers.refuse(
                "time_scale",
                format!("must be above 0 and at most 100, got {scale}"),
            ));
        }
        let too_long = |d: Duration| d > LONGEST;
        for (key, value) in [
            ("duration", merged.duration),
            ("drain", merged.drain),
            ("mesh_timeout", merged.mesh_timeout),
            ("cluster.long_poll", c.long_poll),
            ("cluster.pickup_timeout", c.pickup_timeout),
            ("cluster.node_drain", c.node_drain),
            ("cluster.redis_drop_delay", c.redis_drop_delay),
            ("agents.backoff_min", merged.agents.backoff_min),
            ("agents.backoff_max", merged.agents.backoff_max),
        ] {
            if value.is_some_and(too_long) {
                return Err(layers.refuse(key, "must be at most 7 days"));
            }
        }
        let duration = need(merged.duration, "duration")?.mul_f64(scale);
        if duration < Duration::from_millis(1) {
            return Err(layers.refuse("duration", "must be above 0 (after time_scale)"));
        }
        let rate = need(merged.workload.rate, "workload.rate")?;
        if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
            return Err(layers.refuse(
                "workload.rate",
                format!(
                    "must be a positive number of requests per second, at most 100000, got {rate}"
                ),
            ));
        }
        for (key, value) in [
            ("long_poll", c.long_poll),
            ("pickup_timeout", c.pickup_timeout),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                return Err(layers.refuse(&format!("cluster.{key}"), "must be above 0"));
            }
        }
        let connections_per_node = need(
            merged.agents.connections_per_node,
            "agents.connections_per_node",
        )?;
        if !(1..=16).contains(&connections_per_node) {
            return Err(layers.refuse(
                "agents.connections_per_node",
                format!("must be 1 to 16, got {connections_per_node}"),
            ));
        }
        Ok(Shape {
            nodes,
            agents,
            connections_per_node,
            duration,
            scale,
            rate,
            seed: need(merged.seed, "seed")?,
        })
    }
}

/// Thresholds that are numbers must be numbers that can hold.
fn check_thresholds(merged: &ScenarioFile, layers: &Layers) -> Result<(), ScenarioError> {
    let t = &merged.thresholds;
    for (key, value) in [
        ("pickup_p99_ms", t.pickup_p99_ms),
        ("full_mesh_after_fault_s", t.full_mesh_after_fault_s),
    ] {
        if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(layers.refuse(
                &format!("thresholds.{key}"),
                "must be a number of 0 or more",
            ));
        }
    }
    if let Some(min) = merged.thresholds.coverage_min {
        if !(0.0..=1.0).contains(&min) {
            return Err(layers.refuse(
                "thresholds.coverage_min",
                format!("must be from 0 to 1, got {min}"),
            ));
        }
    }
    if let Some((key, why)) = t.misfit() {
        return Err(layers.refuse(&format!("thresholds.{key}"), why));
    }
    Ok(())
}

/// The faults, in time order, each checked against the run and the cluster.
fn faults(
    merged: &ScenarioFile,
    layers: &Layers,
    shape: &Shape,
) -> Result<Vec<Fault>, ScenarioError> {
    let &Shape {
        nodes,
        duration,
        scale,
        seed,
        ..
    } = shape;
    let too_long = |d: Duration| d > LONGEST;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xFA17);
    let mut faults = Vec::new();
    for (i, keys) in merged.faults.iter().flatten().enumerate() {
        let at_fault =
            |key: &str, message: String| layers.refuse(&format!("faults[{i}].{key}"), message);
        let action =
            crate::fault::action_of(keys).map_err(|(key, message)| at_fault(key, message))?;
        let link = crate::fault::link_of(keys, &action)
            .map_err(|(key, message)| at_fault(key, message))?;
        if link == octopoll_lab::fronts::Link::Redis {
            if merged.cluster.queue != Some(octopoll_node::QueueMode::Redis) {
                return Err(at_fault(
                    "link",
                    "a node's link to Redis is the Redis queue's: set cluster.queue = \"redis\""
                        .into(),
                ));
            }
            let theirs = merged.cluster.redis.as_deref();
            if theirs.is_some_and(|url| {
                octopoll_node::RedisQueueConfig::new(url, "")
                    .tcp_server()
                    .is_none()
            }) {
                return Err(at_fault(
                    "link",
                    "the proxy on a node's link to Redis relays TCP: cluster.redis must be redis://HOST:PORT".into(),
                ));
            }
        }
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
                        | crate::fault::Action::Redis(crate::fault::RedisAction::Restart)
                )
            {
                return Err(at_fault(
                    "duration",
                    format!(
                        "{action} has no duration; only kill, stop, lose-pulses, redis-down and network faults are undone"
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
        let loses_pulses = matches!(
            action,
            crate::fault::Action::Node(octopoll_lab::actions::NodeAction::LosePulses)
        );
        if loses_pulses && merged.cluster.queue != Some(octopoll_node::QueueMode::Redis) {
            return Err(at_fault(
                "action",
                format!("{action} drops the Redis queue's pulses: set cluster.queue = \"redis\""),
            ));
        }
        if action.is_redis() {
            if keys.target.as_deref().is_some_and(|t| t != "redis") {
                return Err(at_fault(
                    "target",
                    format!("{action} acts on the queue's Redis: write target = \"redis\" or leave it out"),
                ));
            }
            if merged.cluster.queue != Some(octopoll_node::QueueMode::Redis) {
                return Err(at_fault(
                    "action",
                    format!("{action} needs the Redis queue: set cluster.queue = \"redis\""),
                ));
            }
            if merged.cluster.redis.is_some() {
                return Err(at_fault(
                    "action",
                    format!("{action} stops and starts octopoll's own redis-server: leave cluster.redis out"),
                ));
            }
            faults.push(Fault {
                at,
                nodes: Vec::new(),
                action,
                duration: lasts,
                link,
            });
            continue;
        }
        let target_text = keys
            .target
            .as_deref()
            .ok_or_else(|| at_fault("target", "missing: node-N, all, random (or redis)".into()))?;
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
            link,
        });
    }
    faults.sort_by_key(|f| f.at);
    check_overlaps(&faults)
        .map_err(|(i, message)| layers.refuse(&format!("faults[{i}].at"), message))?;

    Ok(faults)
}

/// The cluster and the swarm: the nodes' settings and limits, the agents'.
fn lab(
    merged: &ScenarioFile,
    layers: &Layers,
    shape: &Shape,
    network_faults: bool,
) -> Result<LabConfig, ScenarioError> {
    let &Shape {
        nodes,
        agents,
        connections_per_node,
        seed,
        ..
    } = shape;
    let c = &merged.cluster;
    let mut lab = LabConfig::new(nodes, agents);
    lab.topology = need(c.topology, "cluster.topology")?;
    lab.haproxy = c.haproxy.clone();
    lab.chaos = need(c.chaos, "cluster.chaos")? || network_faults;
    let cluster = &mut lab.cluster;
    cluster.queue = need(c.queue, "cluster.queue")?;
    if let Some(bind) = c.bind {
        cluster.bind = bind;
    }
    cluster.comms_port = need(c.comms_port, "cluster.comms_port")?;
    cluster.api_port = need(c.api_port, "cluster.api_port")?;
    if let Some(long_poll) = c.long_poll {
        cluster.node.long_poll = long_poll;
    }
    if let Some(pickup) = c.pickup_timeout {
        cluster.node.pickup_timeout = pickup;
    }
    if let Some(drain) = c.node_drain {
        cluster.node.drain = drain;
    }
    if let Some(delay) = c.redis_drop_delay {
        // Only a Redis queue reads it; set up here without a URL, which the run
        // fills in (its own redis-server, or the one named).
        cluster
            .redis_queue
            .get_or_insert_with(|| octopoll_node::RedisQueueConfig::new("", ""))
            .timing
            .drop_delay_max = delay;
    }
    if let Some(handshakes) = c.max_concurrent_handshakes {
        if handshakes == 0 {
            return Err(layers.refuse("cluster.max_concurrent_handshakes", "must be at least 1"));
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
        .map_err(|bad| layers.refuse(&format!("limits.{}", bad.key), bad.message))?;
    let key_type = need(merged.agents.key_type, "agents.key_type")?.into();
    lab.swarm.key_type = key_type;
    lab.server_key_type = key_type;
    lab.swarm.seed = seed;
    let polling = &mut lab.swarm.agent.polling;
    polling.connections_per_node = connections_per_node;
    polling.backoff = BackoffConfig {
        strategy: need(merged.agents.backoff, "agents.backoff")?,
        min: need(merged.agents.backoff_min, "agents.backoff_min")?,
        max: need(merged.agents.backoff_max, "agents.backoff_max")?,
    };
    let ramp = need(merged.agents.ramp, "agents.ramp")?;
    if !(ramp.is_finite() && ramp >= 0.0) {
        return Err(layers.refuse(
            "agents.ramp",
            format!(
                "must be 0 (no ramp) or a positive number of connections per second, got {ramp}"
            ),
        ));
    }
    polling.ramp = octopoll_agent::Ramp::per_second(ramp);
    if polling.backoff.max < polling.backoff.min {
        return Err(layers.refuse("agents.backoff_max", "must not be below backoff_min"));
    }

    let mut layout = lab.cluster.clone();
    layout.addressing = lab.topology.addressing();
    if let Err(error) = layout.check() {
        let key = match error {
            octopoll_node::Error::PortRange { .. } => "comms_port",
            _ => "bind",
        };
        return Err(layers.refuse(&format!("cluster.{key}"), error.to_string()));
    }
    Ok(lab)
}

/// A key the built-in default sets: present unless that file lost it.
fn need<T>(value: Option<T>, key: &str) -> Result<T, ScenarioError> {
    value.ok_or_else(|| ScenarioError {
        location: Origin::Default.to_string(),
        key: key.to_string(),
        message: "missing: the built-in default must set it".into(),
    })
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
            // Faults on different proxies (or a node and its proxy) may overlap.
            let same_kind =
                (first.action.is_network(), first.link) == (later.action.is_network(), later.link);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::Source;

    fn resolve_text(text: &str) -> Result<RunConfig, ScenarioError> {
        let mut layers = Layers::new();
        layers.file(&Source::new("test.toml", text))?;
        layers.resolve()
    }

    #[test]
    fn the_default_scenario_is_the_library_default() {
        let config = Layers::new().resolve().unwrap();
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
    fn impossible_values_name_the_file_line_and_key() {
        let zero = resolve_text("[cluster]\nnodes = 0\n").unwrap_err();
        assert_eq!(
            (zero.location.as_str(), zero.key.as_str()),
            ("test.toml:2", "cluster.nodes")
        );
        // A dotted key and an inline list are the same keys, on their own lines.
        let dotted = resolve_text("seed = 2\ncluster.nodes = 0\n").unwrap_err();
        assert_eq!(
            dotted.to_string(),
            "test.toml:2: cluster.nodes: 0 nodes: a cluster has 1 to 64"
        );
        let inline = resolve_text(
            "faults = [\n  { at = \"1s\", action = \"kill\", target = \"node-1\" },\n  { at = \"2s\", action = \"kill\" },\n]\n",
        )
        .unwrap_err();
        assert_eq!(
            (inline.location.as_str(), inline.key.as_str()),
            ("test.toml:3", "faults[1].target")
        );
        assert!(inline.message.starts_with("missing"), "{inline}");

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

    #[test]
    fn metric_thresholds_read_like_k6s_and_bad_ones_are_refused_with_the_key() {
        let config = resolve_text(
            "[thresholds]\nlost_max = 0\npickup_ms = [\"p(95) < 20\", \"p(99.9) < 200\"]\n\"failed{reason:pickup-timeout}\" = \"count == 0\"\n\"end_to_end_ms{node:node-2}\" = { threshold = \"p(99) < 500\", abort_on_fail = true, delay_abort_eval = \"10s\" }\n",
        )
        .unwrap();
        let t = &config.thresholds;
        assert_eq!(t.lost_max, Some(0));
        assert_eq!(t.metrics.len(), 3);
        assert_eq!(t.abort_rules().count(), 1);
        for (text, says) in [
            ("pickup_p99 = 5", "unknown metric; one of pickup_ms"),
            ("pickup_ms = \"p99 < 5\"", "unknown aggregate"),
            ("pickup_ms = 5", "a condition such as"),
            ("pickup_ms = \"rate < 5\"", "pickup_ms is a latency"),
            ("\"failed{reason:late}\" = \"count == 0\"", "unknown reason"),
        ] {
            let refused = resolve_text(&format!("[thresholds]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains("thresholds") && refused.contains(says),
                "{text}: {refused}"
            );
        }
    }

    #[test]
    fn a_fault_on_a_nodes_link_to_redis_needs_the_redis_queue_on_tcp_and_a_network_action() {
        let fault = |cluster: &str, action: &str| {
            resolve_text(&format!(
                "[cluster]\n{cluster}\n[[faults]]\nat = \"1s\"\naction = \"{action}\"\ntarget = \"node-2\"\nlink = \"redis\"\nduration = \"2s\"\n"
            ))
        };
        let config = fault("queue = \"redis\"", "down").unwrap();
        assert!(config.lab.chaos, "the link's proxy is a chaos proxy");
        assert_eq!(config.faults[0].link, octopoll_lab::fronts::Link::Redis);
        assert_eq!(
            config.faults[0].describe(),
            "down node-2-redis at 1s for 2s"
        );
        for (cluster, action, says) in [
            ("", "down", "set cluster.queue = \"redis\""),
            ("queue = \"redis\"", "kill", "is for network faults"),
            (
                "queue = \"redis\"\nredis = \"redis+unix:///tmp/r.sock\"",
                "down",
                "must be redis://HOST:PORT",
            ),
        ] {
            let refused = fault(cluster, action).unwrap_err().to_string();
            assert!(
                refused.contains("faults[0].link") && refused.contains(says),
                "{refused}"
            );
        }
        let theirs = fault(
            "queue = \"redis\"\nredis = \"redis://10.1.2.3:6379\"",
            "down",
        );
        assert!(theirs.is_ok(), "a Redis of the user's on TCP: {theirs:?}");
        let unknown = resolve_text(
            "[[faults]]\nat = \"1s\"\naction = \"down\"\ntarget = \"1\"\nlink = \"dns\"\n",
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("expected agents or redis"),
            "{unknown}"
        );
    }

    #[test]
    fn the_redis_drop_delay_reaches_the_queue_timing_and_is_bounded() {
        let queue = |text: &str| resolve_text(text).map(|c| c.lab.cluster.redis_queue);
        assert_eq!(
            queue("").unwrap().unwrap().timing.drop_delay_max,
            Duration::from_secs(30)
        );
        let none = queue("[cluster]\nqueue = \"redis\"\nredis_drop_delay = \"0s\"\n").unwrap();
        assert_eq!(none.unwrap().timing.drop_delay_max, Duration::ZERO);
        let long = queue("[cluster]\nredis_drop_delay = \"8d\"\n").unwrap_err();
        assert!(
            long.to_string().contains("cluster.redis_drop_delay"),
            "{long}"
        );
        let bad = queue("[cluster]\nredis_drop_delay = \"soon\"\n").unwrap_err();
        assert!(bad.to_string().contains("redis_drop_delay"), "{bad}");
    }

    #[test]
    fn redis_faults_need_the_redis_queue_of_the_runs_own_and_no_node_target() {
        let fault = |extra: &str| {
            format!("[cluster]\nqueue = \"redis\"\n[[faults]]\nat = \"1s\"\naction = \"redis-down\"\nduration = \"2s\"\n{extra}")
        };
        let config = resolve_text(&fault("")).unwrap();
        assert_eq!(config.faults[0].describe(), "redis-down redis at 1s for 2s");
        assert!(resolve_text(&fault("target = \"redis\"\n")).is_ok());
        let node = resolve_text(&fault("target = \"node-1\"\n")).unwrap_err();
        assert!(node.to_string().contains("faults[0].target"), "{node}");
        let per_node =
            resolve_text("[[faults]]\nat = \"1s\"\naction = \"redis-restart\"\n").unwrap_err();
        assert!(
            per_node.to_string().contains("needs the Redis queue"),
            "{per_node}"
        );
        let theirs = resolve_text(
            &(fault("").replace(
                "queue = \"redis\"",
                "queue = \"redis\"\nredis = \"redis://r:6379\"",
            )),
        )
        .unwrap_err();
        assert!(
            theirs.to_string().contains("leave cluster.redis out"),
            "{theirs}"
        );
        let pulses = |queue: &str| {
            resolve_text(&format!("[cluster]\nqueue = \"{queue}\"\n[[faults]]\nat = \"1s\"\naction = \"lose-pulses\"\ntarget = \"node-2\"\nduration = \"2s\"\n"))
        };
        let config = pulses("redis").unwrap();
        assert_eq!(
            config.faults[0].describe(),
            "lose-pulses node-2 at 1s for 2s"
        );
        let per_node = pulses("per-node").unwrap_err();
        assert!(
            per_node.to_string().contains("set cluster.queue"),
            "{per_node}"
        );
        let restart_for =
            resolve_text(&fault("").replace("redis-down", "redis-restart")).unwrap_err();
        assert!(
            restart_for.to_string().contains("has no duration"),
            "{restart_for}"
        );
    }
}

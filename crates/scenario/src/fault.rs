//! Faults: what a `[[faults]]` entry says, checked into a schedule of actions on
//! nodes and on the network between agents and nodes.

use std::fmt;
use std::time::Duration;

use octopoll_lab::actions::{NetworkAction, NodeAction, Streams, Toxic};
use octopoll_lab::fronts::{proxy_name, Link};
use octopoll_node::NodeId;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One `[[faults]]` entry as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultKeys {
    /// When, from the start of the workload (`10s`).
    #[serde(default, with = "humantime_serde::option")]
    pub at: Option<Duration>,
    /// What happens (`kill`, `latency`, …).
    pub action: Option<String>,
    /// Which node: `node-2`, `2`, `all` or `random` (picked with the seed).
    pub target: Option<String>,
    /// Undo the fault after this long (a killed node starts again, a toxic goes).
    #[serde(default, with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// Which of the node's links a network fault goes through: `agents` (the
    /// default: between the agents and the node) or `redis` (between the node
    /// and the Redis queue).
    pub link: Option<String>,
    /// Toxic direction for network faults: `upstream` (agent → node),
    /// `downstream` (node → agent) or `both` (the default).
    pub stream: Option<String>,
    /// Share of connections a toxic affects (toxiproxy's toxicity), 0–1.
    pub toxicity: Option<f32>,
    /// `latency`: milliseconds added.
    pub latency: Option<u64>,
    /// `latency`: ± milliseconds of jitter.
    pub jitter: Option<u64>,
    /// `bandwidth`: KB/s.
    pub rate: Option<u64>,
    /// `timeout`, `reset_peer`, `idle_timeout`: milliseconds.
    pub timeout: Option<u64>,
    /// `slicer`: average slice in bytes.
    pub average_size: Option<u64>,
    /// `slicer`: ± bytes.
    pub size_variation: Option<u64>,
    /// `slicer`: µs between slices; `slow_close`: ms before the close.
    pub delay: Option<u64>,
    /// `limit_data`: bytes before the connection closes.
    pub bytes: Option<u64>,
}

/// A fault on the Redis server a run's queue goes through (`target = "redis"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisAction {
    /// Killed; with a `duration`, started again (empty) when it runs out.
    Down,
    /// Killed and started again at once, empty: what a Redis without persistence
    /// that restarts looks like (the nodes' canaries notice).
    Restart,
}

/// A fault's action.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Action {
    /// On a node.
    Node(NodeAction),
    /// On the network in front of a node.
    Network(NetworkAction),
    /// On the queue's Redis.
    Redis(RedisAction),
}

impl Action {
    /// The name as written in a scenario.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Node(NodeAction::Kill) => "kill",
            Action::Node(NodeAction::Stop) => "stop",
            Action::Node(NodeAction::Start) => "start",
            Action::Node(NodeAction::Restart) => "restart",
            Action::Node(NodeAction::LosePulses) => "lose-pulses",
            Action::Network(NetworkAction::Down) => "down",
            Action::Network(NetworkAction::Partition) => "partition",
            Action::Network(NetworkAction::Toxic { toxic, .. }) => toxic.kind(),
            Action::Redis(RedisAction::Down) => "redis-down",
            Action::Redis(RedisAction::Restart) => "redis-restart",
        }
    }

    /// Whether it needs the chaos proxy in front of each node.
    pub fn is_network(&self) -> bool {
        matches!(self, Action::Network(_))
    }

    /// Whether it takes a node (or its network) out until something undoes it.
    pub fn disrupts(&self) -> bool {
        !matches!(self, Action::Node(NodeAction::Start))
    }

    /// Whether it acts on the queue's Redis rather than on nodes.
    pub fn is_redis(&self) -> bool {
        matches!(self, Action::Redis(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Every action name a scenario may use.
pub const ACTIONS: [&str; 17] = [
    "kill",
    "stop",
    "start",
    "restart",
    "lose-pulses",
    "latency",
    "bandwidth",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "slow_close",
    "idle_timeout",
    "down",
    "partition",
    "redis-down",
    "redis-restart",
];

/// Which nodes a fault hits, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One node.
    Node(NodeId),
    /// Every node at once.
    All,
    /// One node picked with the seed.
    Random,
}

impl Target {
    /// Parses `node-2`, `2`, `all` or `random`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "all" => return Ok(Target::All),
            "random" => return Ok(Target::Random),
            _ => {}
        }
        let number = text.strip_prefix("node-").unwrap_or(text);
        match number.parse::<u16>() {
            Ok(n) if n >= 1 => Ok(Target::Node(NodeId(n))),
            _ => Err(format!(
                "expected node-N (N from 1), all or random, got {text:?}"
            )),
        }
    }

    /// The nodes it means in a cluster of `nodes`, drawing `random` from `rng`.
    pub fn resolve(&self, nodes: u16, rng: &mut StdRng) -> Vec<NodeId> {
        match self {
            Target::Node(id) => vec![*id],
            Target::All => (1..=nodes).map(NodeId).collect(),
            Target::Random => vec![NodeId(rng.random_range(1..=nodes))],
        }
    }
}

/// A checked fault: what happens, to which nodes, when, for how long.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// From the start of the workload.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What happens.
    pub action: Action,
    /// The nodes it hits.
    #[serde(serialize_with = "node_names")]
    pub nodes: Vec<NodeId>,
    /// Undone after this long, if set.
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// The link a network action goes through ([`Link::Agents`] for the rest).
    #[serde(skip_serializing_if = "is_agents")]
    pub link: Link,
}

fn is_agents(link: &Link) -> bool {
    *link == Link::Agents
}

fn node_names<S: serde::Serializer>(nodes: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nodes.iter().map(ToString::to_string))
}

impl Fault {
    /// What it acts on, as the report and the dashboard's timeline name it:
    /// `node-1,node-2`, `redis`, or `node-2-redis` for a node's link to Redis.
    pub fn targets(&self) -> String {
        if self.action.is_redis() {
            return "redis".into();
        }
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|&node| proxy_name(node, self.link))
            .collect();
        nodes.join(",")
    }

    /// `kill node-2 at 10s for 15s`; `down node-2-redis at 3s for 2s` on a
    /// node's link to Redis.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} {} at {}",
            self.action,
            self.targets(),
            humantime::format_duration(self.at)
        );
        if let Some(duration) = self.duration {
            text.push_str(&format!(" for {}", humantime::format_duration(duration)));
        }
        text
    }
}

/// Checks an entry's `link`: which of a node's links its network `action` goes
/// through.
pub fn link_of(keys: &FaultKeys, action: &Action) -> Result<Link, (&'static str, String)> {
    match keys.link.as_deref() {
        None | Some("agents") => Ok(Link::Agents),
        Some("redis") if action.is_network() => Ok(Link::Redis),
        Some("redis") => Err((
            "link",
            format!("link = \"redis\" is for network faults (down, partition, latency, …), not {action}"),
        )),
        Some(other) => Err(("link", format!("expected agents or redis, got {other:?}"))),
    }
}

/// Checks one entry's action and attributes (the node range and timing are checked
/// by the caller, who knows the cluster and the run). Errors name the key.
pub fn action_of(keys: &FaultKeys) -> Result<Action, (&'static str, String)> {
    let name = keys
        .action
        .as_deref()
        .ok_or(("action", format!("missing; one of {}", ACTIONS.join(", "))))?;
    let stream = match keys.stream.as_deref() {
        None | Some("both") => Streams::Both,
        Some("upstream") => Streams::Upstream,
        Some("downstream") => Streams::Downstream,
        Some(other) => {
            return Err((
                "stream",
                format!("expected upstream, downstream or both, got {other:?}"),
            ))
        }
    };
    let set = [
        ("stream", keys.stream.is_some()),
        ("toxicity", keys.toxicity.is_some()),
        ("latency", keys.latency.is_some()),
        ("jitter", keys.jitter.is_some()),
        ("rate", keys.rate.is_some()),
        ("timeout", keys.timeout.is_some()),
        ("average_size", keys.average_size.is_some()),
        ("size_variation", keys.size_variation.is_some()),
        ("delay", keys.delay.is_some()),
        ("bytes", keys.bytes.is_some()),
    ];
    let allowed: &[&str] = match name {
        "latency" => &["stream", "toxicity", "latency", "jitter"],
        "bandwidth" => &["stream", "toxicity", "rate"],
        "timeout" | "reset_peer" => &["stream", "toxicity", "timeout"],
        "slicer" => &[
            "stream",
            "toxicity",
            "average_size",
            "size_variation",
            "delay",
        ],
        "limit_data" => &["stream", "toxicity", "bytes"],
        "slow_close" => &["stream", "toxicity", "delay"],
        "idle_timeout" => &["stream", "toxicity", "timeout"],
        _ => &[],
    };
    if let Some((key, _)) = set.iter().find(|(key, on)| *on && !allowed.contains(key)) {
        return Err((key, format!("{key} does not apply to a {name} fault")));
    }
    let toxicity = keys.toxicity.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&toxicity) {
        return Err(("toxicity", format!("must be from 0 to 1, got {toxicity}")));
    }
    let need =
        |value: Option<u64>, key: &'static str| value.ok_or((key, format!("{name} needs {key}")));
    if let Ok(action) = name.parse::<NodeAction>() {
        return Ok(Action::Node(action));
    }
    match name {
        "redis-down" => return Ok(Action::Redis(RedisAction::Down)),
        "redis-restart" => return Ok(Action::Redis(RedisAction::Restart)),
        _ => {}
    }
    let toxic = match name {
        "down" => return Ok(Action::Network(NetworkAction::Down)),
        "partition" => return Ok(Action::Network(NetworkAction::Partition)),
        "latency" => Toxic::Latency {
            latency: need(keys.latency, "latency")?,
            jitter: keys.jitter.unwrap_or(0),
        },
        "bandwidth" => match need(keys.rate, "rate")? {
            0 => return Err(("rate", "must be at least 1 KB/s".into())),
            rate => Toxic::Bandwidth { rate },
        },
        "timeout" => Toxic::Timeout {
            timeout: keys.timeout.unwrap_or(0),
        },
        "reset_peer" => Toxic::ResetPeer {
            timeout: keys.timeout.unwrap_or(0),
        },
        "slicer" => {
            let average_size = keys.average_size.unwrap_or(64);
            let size_variation = keys.size_variation.unwrap_or(0);
            if average_size == 0 || size_variation > average_size {
                return Err((
                    "size_variation",
                    "slicer needs average_size ≥ 1 and size_variation ≤ average_size".into(),
                ));
            }
            Toxic::Slicer {
                average_size,
                size_variation,
                delay: keys.delay.unwrap_or(0),
            }
        }
        "limit_data" => Toxic::LimitData {
            bytes: need(keys.bytes, "bytes")?,
        },
        "idle_timeout" => Toxic::IdleTimeout {
            timeout: need(keys.timeout, "timeout")?,
        },
        "slow_close" => Toxic::SlowClose {
            delay: need(keys.delay, "delay")?,
        },
        other => {
            return Err((
                "action",
                format!("unknown action {other:?}; one of {}", ACTIONS.join(", ")),
            ))
        }
    };
    Ok(Action::Network(NetworkAction::Toxic {
        toxic,
        stream,
        toxicity,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn keys(action: &str) -> FaultKeys {
        FaultKeys {
            action: Some(action.into()),
            ..FaultKeys::default()
        }
    }

    #[test]
    fn targets_parse_and_resolve() {
        assert_eq!(Target::parse("node-2"), Ok(Target::Node(NodeId(2))));
        assert_eq!(Target::parse("3"), Ok(Target::Node(NodeId(3))));
        assert!(Target::parse("node-0").is_err());
        assert!(Target::parse("seven").is_err());
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(Target::All.resolve(3, &mut rng).len(), 3);
        let picked = Target::Random.resolve(3, &mut rng);
        assert!(picked[0].0 >= 1 && picked[0].0 <= 3);
        let again = Target::Random.resolve(3, &mut StdRng::seed_from_u64(1));
        let first = Target::Random.resolve(3, &mut StdRng::seed_from_u64(1));
        assert_eq!(again, first, "the seed picks the same node");
        let picks: std::collections::HashSet<_> = (0..20)
            .map(|seed| Target::Random.resolve(3, &mut StdRng::seed_from_u64(seed)))
            .collect();
        assert!(picks.len() > 1, "other seeds pick other nodes");
    }

    #[test]
    fn actions_check_their_attributes() {
        assert_eq!(action_of(&keys("kill")), Ok(Action::Node(NodeAction::Kill)));
        assert_eq!(action_of(&keys("latency")).unwrap_err().0, "latency");
        let mut latency = keys("latency");
        latency.latency = Some(200);
        latency.stream = Some("upstream".into());
        assert_eq!(
            action_of(&latency),
            Ok(Action::Network(NetworkAction::Toxic {
                toxic: Toxic::Latency {
                    latency: 200,
                    jitter: 0
                },
                stream: Streams::Upstream,
                toxicity: 1.0
            }))
        );
        assert_eq!(action_of(&keys("explode")).unwrap_err().0, "action");
        let mut bad = keys("slicer");
        bad.average_size = Some(10);
        bad.size_variation = Some(20);
        assert_eq!(action_of(&bad).unwrap_err().0, "size_variation");
        let mut sideways = keys("latency");
        sideways.latency = Some(1);
        sideways.stream = Some("sideways".into());
        assert_eq!(action_of(&sideways).unwrap_err().0, "stream");
        let mut stray = keys("kill");
        stray.latency = Some(100);
        let (key, message) = action_of(&stray).unwrap_err();
        assert_eq!(key, "latency");
        assert!(
            message.contains("does not apply to a kill fault"),
            "{message}"
        );
        let (key, message) = action_of(&keys("idle_timeout")).unwrap_err();
        assert_eq!(
            (key, message.as_str()),
            ("timeout", "idle_timeout needs timeout")
        );
        let mut idle = keys("idle_timeout");
        idle.timeout = Some(20_000);
        assert_eq!(
            action_of(&idle),
            Ok(Action::Network(NetworkAction::Toxic {
                toxic: Toxic::IdleTimeout { timeout: 20_000 },
                stream: Streams::Both,
                toxicity: 1.0
            }))
        );
    }
}

/// Why a fault (or its undo) could not be carried out on a node.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The scenario named a node the testbed does not have.
    #[error("{0} does not exist")]
    NoSuchNode(NodeId),
    /// A node in this process refused the action.
    #[error("{node}: {error}")]
    Node {
        /// Which node.
        node: NodeId,
        /// Why.
        error: octopoll_lab::actions::ActionError,
    },
    /// A node process's control API did not carry it out.
    #[error("{node}: {error}")]
    Remote {
        /// Which node.
        node: NodeId,
        /// Why.
        error: octopoll_fleet::remote::RemoteError,
    },
    /// A network fault in a run without the chaos proxy.
    #[error("network faults need the chaos proxy in front of the nodes")]
    NoProxy,
    /// The chaos proxy in front of a node refused the change.
    #[error("{node}: {error}")]
    Network {
        /// Which node.
        node: NodeId,
        /// Why.
        error: octopoll_chaos::Error,
    },
    /// The task carrying it out ended without an answer.
    #[error("the fault's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A Redis fault in a run without a redis-server of octopoll's own.
    #[error("Redis faults need the run's own redis-server (queue = \"redis\", no --redis)")]
    NoRedis,
    /// The redis-server did not start again.
    #[error("starting redis-server again: {0}")]
    Redis(#[from] octopoll_fleet::redis_server::RedisError),
}

/// The redis-server a run's queue goes through, for its Redis faults.
pub type RedisHandle = std::sync::Arc<tokio::sync::Mutex<octopoll_fleet::redis_server::LocalRedis>>;

//! What can be done to a running lab: to a node (kill, stop, start, restart) and to
//! the network in front of it (toxics, down, partition; see [`crate::fronts`]).

use std::time::Duration;

use octopoll_node::{Node, NodeId};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// How often starting a node again is tried when its port is not free yet.
const START_ATTEMPTS: usize = 20;

/// Something done to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAction {
    /// Abrupt: connections dropped, in-memory queue lost.
    Kill,
    /// Graceful: queued work fails `node-stopped`, exchanges in flight drain.
    Stop,
    /// Start a stopped or killed node on its addresses.
    Start,
    /// Stop gracefully, then start.
    Restart,
    /// Drop every pulse of the Redis queue the node receives, until undone: only
    /// its long-poll timeouts find new work (Redis pub/sub may lose a message).
    LosePulses,
}

/// `kill`, `stop`, `start` or `restart`.
impl std::str::FromStr for NodeAction {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, UnknownAction> {
        match name {
            "kill" => Ok(NodeAction::Kill),
            "stop" => Ok(NodeAction::Stop),
            "start" => Ok(NodeAction::Start),
            "restart" => Ok(NodeAction::Restart),
            "lose-pulses" => Ok(NodeAction::LosePulses),
            _ => Err(UnknownAction(name.to_owned())),
        }
    }
}

/// `?undo=true` on a control API's node action: what ends it (a start after a
/// kill or stop, hearing pulses again after `lose-pulses`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Undo {
    /// Undo rather than do.
    #[serde(default)]
    pub undo: bool,
}

/// A name that is not a node action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}: kill, stop, start, restart or lose-pulses")]
pub struct UnknownAction(pub String);

/// A toxiproxy toxic, with its attributes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Toxic {
    /// Delay every chunk by `latency` ± `jitter` ms.
    Latency {
        /// Milliseconds.
        latency: u64,
        /// ± milliseconds.
        jitter: u64,
    },
    /// Limit to `rate` KB/s.
    Bandwidth {
        /// KB/s.
        rate: u64,
    },
    /// Hold data; close after `timeout` ms (0: hold until removed).
    Timeout {
        /// Milliseconds.
        timeout: u64,
    },
    /// Reset the connection (TCP RST) after `timeout` ms.
    ResetPeer {
        /// Milliseconds.
        timeout: u64,
    },
    /// Slice data into small pieces.
    Slicer {
        /// Bytes.
        average_size: u64,
        /// ± bytes.
        size_variation: u64,
        /// µs between slices.
        delay: u64,
    },
    /// Close once `bytes` have passed.
    LimitData {
        /// Bytes.
        bytes: u64,
    },
    /// Delay the close by `delay` ms.
    SlowClose {
        /// Milliseconds.
        delay: u64,
    },
    /// Forget a connection quiet for `timeout` ms, either way, as a NAT gateway or
    /// load balancer does: nothing passes after, and neither side is told (0:
    /// every connection goes dark at once).
    IdleTimeout {
        /// Milliseconds.
        timeout: u64,
    },
}

impl Toxic {
    /// toxiproxy's type name: `latency`, `reset_peer`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Timeout { .. } => "timeout",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Slicer { .. } => "slicer",
            Toxic::LimitData { .. } => "limit_data",
            Toxic::SlowClose { .. } => "slow_close",
            Toxic::IdleTimeout { .. } => "idle_timeout",
        }
    }
}

/// Which direction a toxic acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Streams {
    /// Agent → node.
    Upstream,
    /// Node → agent.
    Downstream,
    /// Both.
    Both,
}

/// Something done to the network between the agents and a node (through the chaos
/// proxy in front of it).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkAction {
    /// Add a toxic.
    Toxic {
        /// The toxic.
        toxic: Toxic,
        /// Its direction.
        stream: Streams,
        /// Share of connections affected.
        toxicity: f32,
    },
    /// Refuse new connections and cut existing ones (toxiproxy's disabled proxy).
    Down,
    /// Agents ↔ node in both directions: data is held (a `timeout` toxic with 0
    /// both ways), as on a network that silently drops packets.
    Partition,
}

/// A node action that could not be done (a node that would not start again).
#[derive(Debug, thiserror::Error)]
#[error("{node}: {error}")]
pub struct ActionError {
    /// Which node.
    pub node: NodeId,
    /// Why.
    pub error: octopoll_node::Error,
}

/// Does `action` to `node` (its undo when `undo`), as a fault or a control API does.
pub async fn node_action(node: &Node, action: NodeAction, undo: bool) -> Result<(), ActionError> {
    match (action, undo) {
        (NodeAction::Kill, false) => {
            node.kill().await;
            Ok(())
        }
        (NodeAction::Stop, false) => {
            node.stop().await;
            Ok(())
        }
        (NodeAction::Restart, _) => {
            node.stop().await;
            start(node).await
        }
        (NodeAction::Start, _) | (NodeAction::Kill | NodeAction::Stop, true) => start(node).await,
        (NodeAction::LosePulses, undo) => match node.lose_pulses(!undo) {
            true => Ok(()),
            false => Err(ActionError {
                node: node.id(),
                error: octopoll_node::Error::NoPulses { node: node.id() },
            }),
        },
    }
}

/// Starts `node` again, retrying briefly while its old sockets let go of the port.
async fn start(node: &Node) -> Result<(), ActionError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match node.start_again() {
            Ok(()) => return Ok(()),
            Err(error) if attempt < START_ATTEMPTS => {
                warn!(node = %node.id(), %error, "starting again failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(ActionError {
                    node: node.id(),
                    error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_actions_parse_by_name_and_an_unknown_one_lists_the_right_ones() {
        for (name, action) in [
            ("kill", NodeAction::Kill),
            ("stop", NodeAction::Stop),
            ("start", NodeAction::Start),
            ("restart", NodeAction::Restart),
            ("lose-pulses", NodeAction::LosePulses),
        ] {
            assert_eq!(name.parse::<NodeAction>(), Ok(action));
        }
        let unknown = "explode".parse::<NodeAction>().unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown action \"explode\": kill, stop, start, restart or lose-pulses"
        );
        assert!(
            "Kill".parse::<NodeAction>().is_err(),
            "names are lower case"
        );
    }
}

//! What a run needs of the nodes and agents it drives, wherever they live: all
//! in this process (a [`Lab`]), or each node in a process of its own and the
//! agents split over more ([`crate::process_lab::ProcessLab`]). The workload,
//! the faults, the sampling and the report are written once, against this.

use std::future::Future;
use std::time::Duration;

use octopoll_node::{
    Coverage, CoverageMatrix, FailReason, Machine, NodeId, NodeSender, NodeStats, QueueMode,
};
use octopoll_wire::{DataStream, RequestMessage, SubscriptionId};
use tokio::time::Instant;

use crate::fault::FaultError;
use octopoll_fleet::remote::RemoteNode;
use octopoll_lab::actions::NodeAction;
use octopoll_lab::fronts::ChaosFronts;
use octopoll_lab::topology::Topology;
use octopoll_lab::{wait, Lab, Mesh};

/// One node's figures now.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Which node.
    pub id: NodeId,
    /// Whether it runs.
    pub up: bool,
    /// Its counters (connections, subscriptions, queue depth …).
    pub stats: NodeStats,
}

/// The mesh and the nodes now: cheap enough to take ten times a second.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every node, node 1 first.
    pub nodes: Vec<NodeView>,
    /// Polling pairs over all pairs.
    pub coverage: Coverage,
}

impl Snapshot {
    /// Polling connections held over all nodes.
    pub fn connections(&self) -> usize {
        self.nodes.iter().map(|n| n.stats.connections).sum()
    }
}

/// The agents' side of the mesh now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmTally {
    /// Polling links (agents × addresses × connections per address).
    pub links: usize,
    /// Links holding an identified connection.
    pub connections: usize,
    /// Connections or attempts that failed so far.
    pub failures: u64,
}

/// What stopping leaves.
#[derive(Clone, Debug, Default)]
pub struct Stopped {
    /// Each node's final counters, node 1 first.
    pub nodes: Vec<(NodeId, NodeStats)>,
    /// The agents' side at the end.
    pub swarm: SwarmTally,
    /// Each process's figures (one entry for an in-process run).
    pub processes: Vec<octopoll_report::ProcessFigures>,
}

/// Queues requests on one node, in this process or in its own.
#[derive(Clone)]
pub enum Dispatcher {
    /// A node in this process.
    Local(NodeSender),
    /// A node process, through its control API.
    Remote(RemoteNode),
}

impl Dispatcher {
    /// Which node it queues on.
    pub fn node(&self) -> NodeId {
        match self {
            Dispatcher::Local(sender) => sender.node(),
            Dispatcher::Remote(node) => node.id(),
        }
    }

    /// Queues `request` for `subscription` and waits for how it ended and its
    /// pickup time. Dropping the future withdraws a request not collected yet.
    pub async fn send(
        &self,
        subscription: &SubscriptionId,
        (request, streams): (RequestMessage, Vec<DataStream>),
    ) -> (Result<(), FailReason>, Option<Duration>) {
        match self {
            Dispatcher::Local(sender) => {
                let outcome = sender.send(subscription, request, streams).await;
                (outcome.result.map(drop), outcome.pickup)
            }
            Dispatcher::Remote(node) => node.send(subscription, request, &streams).await,
        }
    }
}

/// The nodes and agents of a run.
pub trait Testbed: Send + Sync {
    /// How agents reach the nodes.
    fn topology(&self) -> Topology;
    /// Per-node or shared queue.
    fn queue_mode(&self) -> QueueMode;
    /// How many agents.
    fn agents(&self) -> usize;
    /// The nodes, node 1 first.
    fn node_ids(&self) -> Vec<NodeId>;
    /// Queues requests on `node`.
    fn dispatcher(&self, node: NodeId) -> Option<Dispatcher>;
    /// Whether `node` runs, cheaply (the workload asks before every request).
    fn is_running(&self, node: NodeId) -> bool;
    /// The registered machines, in name order.
    fn machines(&self) -> impl Future<Output = Vec<Machine>> + Send;
    /// The nodes and the coverage now.
    fn snapshot(&self) -> impl Future<Output = Snapshot> + Send;
    /// Every agent's state with every node, counted.
    fn coverage_matrix(&self) -> impl Future<Output = CoverageMatrix> + Send;
    /// The agents' side now.
    fn swarm(&self) -> impl Future<Output = SwarmTally> + Send;
    /// Does `action` to `node` (its undo when `undo`), as a fault does.
    fn act(
        &self,
        node: NodeId,
        action: NodeAction,
        undo: bool,
    ) -> impl Future<Output = Result<(), FaultError>> + Send + 'static;
    /// The chaos proxies in front of the nodes, if the run has them.
    fn fronts(&self) -> Option<ChaosFronts>;
    /// Marks the moment the mesh starts forming, for the memory figures.
    fn mesh_starting(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Marks the moment the mesh has formed, for the memory figures.
    fn mesh_formed(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Stops the agents, then the nodes; their final figures.
    fn stop(self) -> impl Future<Output = Stopped> + Send;
}

/// Waits until every polling link of every agent has identified, or `within`
/// passes; says when, and whether every agent then polled every node.
pub async fn wait_for_mesh(testbed: &impl Testbed, within: Duration) -> Mesh {
    let started = Instant::now();
    let settled = wait::until_async(within, || testbed.swarm(), |s| s.connections >= s.links)
        .await
        .ok()
        .map(|_| started.elapsed());
    // Node-side counts trail the agents' by a moment: give them one.
    let full_coverage_after = match settled {
        Some(_) => wait_for_full_coverage(testbed, Duration::from_secs(1))
            .await
            .map(|_| started.elapsed()),
        None => None,
    };
    Mesh {
        settled_after: settled,
        full_coverage_after,
    }
}

/// Waits until every agent polls every node, or `within` passes; returns how
/// long it took, or `None` if coverage never became full.
pub async fn wait_for_full_coverage(testbed: &impl Testbed, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    wait::until_async(within, || testbed.snapshot(), |s| s.coverage.is_full())
        .await
        .ok()
        .map(|_| started.elapsed())
}

impl Testbed for Lab {
    fn topology(&self) -> Topology {
        self.topology
    }

    fn queue_mode(&self) -> QueueMode {
        self.cluster.queue_mode()
    }

    fn agents(&self) -> usize {
        self.swarm.agents().len()
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.cluster.nodes().iter().map(|n| n.id()).collect()
    }

    fn dispatcher(&self, node: NodeId) -> Option<Dispatcher> {
        self.cluster
            .node(node)
            .map(|n| Dispatcher::Local(n.sender()))
    }

    fn is_running(&self, node: NodeId) -> bool {
        self.cluster.node(node).is_some_and(|n| n.is_running())
    }

    async fn machines(&self) -> Vec<Machine> {
        Lab::machines(self)
    }

    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self
                .cluster
                .nodes()
                .iter()
                .map(|n| NodeView {
                    id: n.id(),
                    up: n.is_running(),
                    stats: n.stats(),
                })
                .collect(),
            coverage: self.coverage(),
        }
    }

    async fn coverage_matrix(&self) -> CoverageMatrix {
        self.cluster.coverage_matrix()
    }

    async fn swarm(&self) -> SwarmTally {
        SwarmTally {
            links: self.swarm.links(),
            connections: self.swarm.connections(),
            failures: self.swarm.agents().iter().map(|a| a.failures()).sum(),
        }
    }

    fn act(
        &self,
        node: NodeId,
        action: NodeAction,
        undo: bool,
    ) -> impl Future<Output = Result<(), FaultError>> + Send + 'static {
        let found = self.cluster.node(node).cloned();
        async move {
            let found = found.ok_or(FaultError::NoSuchNode(node))?;
            octopoll_lab::actions::node_action(&found, action, undo)
                .await
                .map_err(|error| FaultError::Node { node, error })
        }
    }

    fn fronts(&self) -> Option<ChaosFronts> {
        self.fronts.clone()
    }

    async fn stop(self) -> Stopped {
        let swarm = Testbed::swarm(&self).await;
        let nodes = Lab::stop(self).await;
        Stopped {
            nodes,
            swarm,
            processes: Vec::new(),
        }
    }
}

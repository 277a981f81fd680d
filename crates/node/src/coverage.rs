//! Polling coverage: for every (registered machine, node) pair, whether work queued
//! on that node can reach that machine now.
//!
//! A pair is *polling* when the machine holds a connection to the node and one of
//! them is inside a long-poll wait now, or polled (was handed work or the null
//! request) within the last long-poll interval. A healthy idle connection is always
//! one or the other; one busy with a request longer than the interval is *stale*. Coverage is polling pairs over all pairs; the matrix counts
//! agents per state and node, so a load-balanced run shows at a glance that each
//! agent reaches one node of three.
//!
//! When the nodes share their queue (Halibut's Redis queue), work queued on any
//! node reaches an agent through whichever node it polls: a pair is covered when
//! its node runs and the agent polls *some* node
//! ([`CoverageMatrix::coverage_through_shared_queue`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where one (machine, node) pair stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairState {
    /// Connected, and waiting in a long-poll now or polled within the last interval.
    Polling,
    /// Connected, but no poll within the interval: busy with a long request, or stuck.
    Stale,
    /// Was connected; is not now.
    Lost,
    /// Never connected to this node.
    Never,
}

impl PairState {
    /// Every state, in report order.
    pub const ALL: [PairState; 4] = [
        PairState::Polling,
        PairState::Stale,
        PairState::Lost,
        PairState::Never,
    ];

    /// `polling`, `stale`, `lost` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Polling => "polling",
            PairState::Stale => "stale",
            PairState::Lost => "lost",
            PairState::Never => "never",
        }
    }
}

impl fmt::Display for PairState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Polling pairs over all pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Pairs in the [`PairState::Polling`] state.
    pub polling_pairs: usize,
    /// Registered machines × nodes.
    pub total_pairs: usize,
}

impl Coverage {
    /// polling / total; 0 when there is nothing to cover.
    pub fn ratio(&self) -> f64 {
        if self.total_pairs == 0 {
            0.0
        } else {
            self.polling_pairs as f64 / self.total_pairs as f64
        }
    }

    /// Whether every pair polls (and there is at least one).
    pub fn is_full(&self) -> bool {
        self.total_pairs > 0 && self.polling_pairs == self.total_pairs
    }
}

/// One row of a [`CoverageMatrix`]: how many agents are in `state`, per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixRow {
    /// The state.
    pub state: PairState,
    /// Agents in that state with each node, in the matrix's node order.
    pub agents: Vec<usize>,
}

/// Agents per pair state (rows) and node (columns), and how many nodes each agent reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoverageMatrix {
    /// Column names: `node-1`, …
    pub nodes: Vec<String>,
    /// One row per [`PairState`], in [`PairState::ALL`] order.
    pub rows: Vec<MatrixRow>,
    /// `agents_reaching[k]`: agents polling exactly `k` nodes.
    pub agents_reaching: Vec<usize>,
}

impl CoverageMatrix {
    /// An empty matrix over `nodes`.
    pub fn new(nodes: Vec<String>) -> Self {
        let width = nodes.len();
        Self {
            rows: PairState::ALL
                .iter()
                .map(|&state| MatrixRow {
                    state,
                    agents: vec![0; width],
                })
                .collect(),
            agents_reaching: vec![0; width + 1],
            nodes,
        }
    }

    /// Adds one agent, given its state with each node in column order.
    pub fn add_agent(&mut self, states: impl IntoIterator<Item = PairState>) {
        let mut reached = 0;
        for (column, state) in states.into_iter().enumerate().take(self.nodes.len()) {
            if let Some(row) = self.rows.iter_mut().find(|r| r.state == state) {
                row.agents[column] += 1;
            }
            reached += usize::from(state == PairState::Polling);
        }
        self.agents_reaching[reached] += 1;
    }

    /// Agents counted.
    pub fn agents(&self) -> usize {
        self.agents_reaching.iter().sum()
    }

    /// The coverage this matrix shows.
    pub fn coverage(&self) -> Coverage {
        Coverage {
            polling_pairs: self
                .agents_reaching
                .iter()
                .enumerate()
                .map(|(k, agents)| k * agents)
                .sum(),
            total_pairs: self.agents() * self.nodes.len(),
        }
    }

    /// The coverage when the nodes share their queue (Halibut's Redis queue): an
    /// agent polling any node is reached from every node that runs, so each of
    /// its pairs with a running node counts as polling. `running` nodes of the
    /// matrix's run; the others' pairs count as lost.
    pub fn coverage_through_shared_queue(&self, running: usize) -> Coverage {
        let reaching = self.agents() - self.agents_reaching.first().copied().unwrap_or(0);
        Coverage {
            polling_pairs: reaching * running.min(self.nodes.len()),
            total_pairs: self.agents() * self.nodes.len(),
        }
    }

    /// Nodes an agent reaches on average (polling pairs per agent).
    pub fn mean_nodes_reached(&self) -> f64 {
        match self.agents() {
            0 => 0.0,
            agents => self.coverage().polling_pairs as f64 / agents as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PairState::*;

    #[test]
    fn through_a_shared_queue_one_polled_node_covers_every_running_node() {
        let mut matrix =
            CoverageMatrix::new(vec!["node-1".into(), "node-2".into(), "node-3".into()]);
        // Load-balanced: each agent holds one connection to one node.
        matrix.add_agent([Polling, Never, Never]);
        matrix.add_agent([Never, Polling, Never]);
        assert_eq!(
            matrix.coverage().ratio(),
            2.0 / 6.0,
            "per node, two pairs of six"
        );
        assert!(matrix.coverage_through_shared_queue(3).is_full());
        // A node down cannot dispatch; an agent polling nothing is reached by none.
        assert_eq!(matrix.coverage_through_shared_queue(2).polling_pairs, 4);
        matrix.add_agent([Lost, Never, Never]);
        let coverage = matrix.coverage_through_shared_queue(3);
        assert_eq!((coverage.polling_pairs, coverage.total_pairs), (6, 9));
    }

    #[test]
    fn the_matrix_counts_agents_per_state_and_nodes_reached() {
        let mut matrix =
            CoverageMatrix::new(vec!["node-1".into(), "node-2".into(), "node-3".into()]);
        matrix.add_agent([Polling, Never, Never]);
        matrix.add_agent([Never, Polling, Lost]);
        matrix.add_agent([Polling, Polling, Stale]);
        assert_eq!(matrix.rows[0].agents, vec![2, 2, 0]);
        assert_eq!(matrix.rows[1].agents, vec![0, 0, 1]);
        assert_eq!(matrix.rows[2].agents, vec![0, 0, 1]);
        assert_eq!(matrix.rows[3].agents, vec![1, 1, 1]);
        assert_eq!(matrix.agents_reaching, vec![0, 2, 1, 0]);
        let coverage = matrix.coverage();
        assert_eq!((coverage.polling_pairs, coverage.total_pairs), (4, 9));
        assert!((matrix.mean_nodes_reached() - 4.0 / 3.0).abs() < 1e-9);
        assert!(!coverage.is_full());
    }

    #[test]
    fn no_agents_is_no_coverage() {
        let matrix = CoverageMatrix::new(vec!["node-1".into()]);
        assert_eq!(matrix.coverage().ratio(), 0.0);
        assert!(!matrix.coverage().is_full());
        assert_eq!(matrix.mean_nodes_reached(), 0.0);
    }
}

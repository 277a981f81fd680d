//! How many processes a run needs. A polling connection held in one process
//! costs a descriptor at each end, and a process may hold only so many (20,000
//! here, a hard limit). A run that fits stays in one process; a larger one puts
//! each node in a process of its own and splits the agents into shares that fit.

use std::fmt;

/// Descriptors a process keeps for itself beyond its connections: listeners,
/// registration calls, Redis, the runtime, logs.
const OVERHEAD: u64 = 400;
/// The share of the limit a process is planned to use, leaving room for
/// reconnects (a dropped connection's descriptor lingers a moment) and probes.
const HEADROOM: f64 = 0.8;

/// The open-file limit of this process (its soft limit, raised to the hard one
/// first where that is allowed).
pub fn open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Where a run's parts live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Everything in this process (both ends of every connection).
    InProcess,
    /// Each node in a process of its own, the agents split over `swarms` processes.
    Processes {
        /// Swarm processes.
        swarms: usize,
    },
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::InProcess => f.write_str("in one process"),
            Plan::Processes { swarms } => write!(
                f,
                "node processes and {swarms} agent process{}",
                if *swarms == 1 { "" } else { "es" }
            ),
        }
    }
}

/// A run no split of processes can hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// One node would hold more connections than a process can.
    #[error("{agents} agents × {per_node} connection(s) each is {connections} connections to every node, more than one node process can hold under this machine's limit of {limit} open files per process (at most {fits}): use fewer agents or --connections-per-node")]
    NodeTooBig {
        /// Agents.
        agents: u64,
        /// Connections per agent per node.
        per_node: u64,
        /// Their product.
        connections: u64,
        /// The open-file limit.
        limit: u64,
        /// Connections a node process can hold.
        fits: u64,
    },
    /// More swarm processes were asked for than there are agents.
    #[error(
        "--processes {swarms} is more agent processes than the {agents} agents to put in them"
    )]
    TooManyProcesses {
        /// Asked for.
        swarms: usize,
        /// Agents.
        agents: u64,
    },
    /// Something the run asks for lives in one process only.
    #[error("{what} in a run split over processes, and {agents} agents × {nodes} nodes is more than one process holds: run fewer agents, or pass --processes 0 to try it in one process")]
    Unsupported {
        /// What, and what to use instead.
        what: String,
        /// Agents.
        agents: u64,
        /// Nodes.
        nodes: u64,
    },
    /// The share asked for does not fit one process.
    #[error("{swarms} agent process(es) would hold {per_process} connections each, more than one process can under this machine's limit of {limit} open files per process: leave --processes out to size it, or ask for at least {needed}")]
    SharesTooBig {
        /// Asked for.
        swarms: usize,
        /// Connections each would hold.
        per_process: u64,
        /// The limit.
        limit: u64,
        /// The fewest that fit.
        needed: usize,
    },
}

/// The connections one process is planned to hold under `limit`.
pub fn capacity(limit: u64) -> u64 {
    ((limit as f64 * HEADROOM) as u64).saturating_sub(OVERHEAD)
}

impl Plan {
    /// The plan for `agents` agents polling `nodes` nodes over `per_node`
    /// connections each, under `limit` open files per process. `processes`:
    /// `Some(0)` insists on one process, `Some(n)` on n agent processes, `None`
    /// picks the fewest that fit.
    pub fn choose(
        agents: u64,
        nodes: u64,
        per_node: u64,
        processes: Option<usize>,
        limit: u64,
    ) -> Result<Self, PlanError> {
        let fits = capacity(limit);
        let links = agents * nodes * per_node;
        if processes == Some(0) || (processes.is_none() && 2 * links <= fits) {
            return Ok(Plan::InProcess);
        }
        let to_each_node = agents * per_node;
        if to_each_node > fits {
            return Err(PlanError::NodeTooBig {
                agents,
                per_node,
                connections: to_each_node,
                limit,
                fits,
            });
        }
        let needed = links.div_ceil(fits.max(1)).max(1) as usize;
        let swarms = match processes {
            None => needed,
            Some(n) if n as u64 > agents => {
                return Err(PlanError::TooManyProcesses { swarms: n, agents })
            }
            Some(n) if n < needed => {
                return Err(PlanError::SharesTooBig {
                    swarms: n,
                    per_process: links.div_ceil(n as u64),
                    limit,
                    needed,
                })
            }
            Some(n) => n,
        };
        Ok(Plan::Processes { swarms })
    }
}

/// Agents `[start, end)` of `total` for share `index` of `count` (from 0).
pub fn share(total: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    let count = count.max(1);
    (total * index / count)..(total * (index + 1) / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 20_000;

    #[test]
    fn a_run_that_fits_stays_in_one_process() {
        assert_eq!(Plan::choose(100, 3, 1, None, LIMIT), Ok(Plan::InProcess));
        // 2,500 × 3 × 2 descriptors = 15,000 ≤ 15,600.
        assert_eq!(Plan::choose(2_600, 3, 1, None, LIMIT), Ok(Plan::InProcess));
        assert_eq!(
            Plan::choose(2_700, 3, 1, None, LIMIT),
            Ok(Plan::Processes { swarms: 1 })
        );
    }

    #[test]
    fn ten_thousand_agents_split_so_every_process_fits() {
        let plan = Plan::choose(10_000, 3, 1, None, LIMIT).unwrap();
        assert_eq!(plan, Plan::Processes { swarms: 2 });
        assert!(30_000 / 2 <= capacity(LIMIT));
        // Two connections per node: 36,000 links, three shares.
        assert_eq!(
            Plan::choose(6_000, 3, 2, None, LIMIT),
            Ok(Plan::Processes { swarms: 3 })
        );
        // Twenty thousand to each node: no node process holds that.
        assert!(matches!(
            Plan::choose(10_000, 3, 2, None, LIMIT),
            Err(PlanError::NodeTooBig { .. })
        ));
    }

    #[test]
    fn impossible_splits_say_why() {
        let error = Plan::choose(20_000, 3, 1, None, LIMIT).unwrap_err();
        assert!(matches!(error, PlanError::NodeTooBig { .. }));
        assert!(
            error.to_string().contains("limit of 20000 open files"),
            "{error}"
        );
        let error = Plan::choose(10_000, 3, 1, Some(1), LIMIT).unwrap_err();
        assert!(error.to_string().contains("at least 2"), "{error}");
        assert!(matches!(
            Plan::choose(3, 3, 1, Some(4), LIMIT),
            Err(PlanError::TooManyProcesses { .. })
        ));
        assert_eq!(
            Plan::choose(10_000, 3, 1, Some(0), LIMIT),
            Ok(Plan::InProcess)
        );
        assert_eq!(
            Plan::choose(100, 3, 1, Some(2), LIMIT),
            Ok(Plan::Processes { swarms: 2 })
        );
    }

    #[test]
    fn shares_cover_every_agent_once() {
        let shares: Vec<_> = (0..3).map(|i| share(10, i, 3)).collect();
        assert_eq!(shares, vec![0..3, 3..6, 6..10]);
        assert_eq!(share(10, 0, 1), 0..10);
    }
}

//! Carrying out a scenario's faults on a running lab, on schedule: node kills,
//! stops, starts and restarts, Redis faults, and network faults through the
//! chaos proxy in front of each node (or on its way to Redis). A fault with a
//! `duration` is undone when it runs out.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::control::ControlState;
use crate::fault::{Action, Fault, FaultError, RedisAction, RedisHandle};
use crate::testbed::Testbed;
use octopoll_lab::actions::NodeAction;
use octopoll_report::timeline::FaultSpan;

/// One fault or undo as carried out.
#[derive(Clone, Debug)]
pub struct Executed {
    /// Which fault (index into the scenario's sorted faults).
    pub fault: usize,
    /// Whether this was the undo at the end of its duration.
    pub undo: bool,
    /// When it started, since the workload started.
    pub at: Duration,
    /// When it was done (a restarted node runs again), since the workload started.
    pub done: Duration,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Carries out `faults` against `lab` on their schedule from `started`, and
/// returns once every one (and every undo) is done. Each action runs in its own
/// task, so a slow graceful stop never delays the next fault. Once `interrupt`
/// is cancelled nothing more is started, actions under way are abandoned, and
/// what was done comes back.
pub async fn run(
    lab: &impl Testbed,
    faults: &[Fault],
    started: Instant,
    timeline: Option<&ControlState>,
    redis: Option<&RedisHandle>,
    interrupt: &tokio_util::sync::CancellationToken,
) -> Vec<Executed> {
    let mut events: Vec<(Duration, usize, bool)> = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        events.push((fault.at, i, false));
        if let Some(lasts) = fault.duration {
            events.push((fault.at + lasts, i, true));
        }
    }
    events.sort_by_key(|(at, i, undo)| (*at, *undo, *i));
    let mut running = JoinSet::new();
    for (at, index, undo) in events {
        tokio::select! {
            () = tokio::time::sleep_until(started + at) => {}
            () = interrupt.cancelled() => break,
        }
        let fault = &faults[index];
        info!(fault = %fault.describe(), undo, "fault");
        if let Some(timeline) = timeline {
            let what = if undo { "undo " } else { "" };
            timeline.record_fault(format!("{what}{} {}", fault.action, fault.targets()));
        }
        let when = started.elapsed();
        let work = carry_out(lab, fault, undo, index, redis.cloned());
        running.spawn(async move {
            let error = work.await.err().map(|error| {
                warn!(%error, "fault could not be carried out");
                error.to_string()
            });
            Executed {
                fault: index,
                undo,
                at: when,
                done: started.elapsed(),
                error,
            }
        });
    }
    let mut done = Vec::new();
    let mut abandoned = false;
    loop {
        let executed = tokio::select! {
            executed = running.join_next() => executed,
            () = interrupt.cancelled(), if !abandoned => {
                running.abort_all();
                abandoned = true;
                continue;
            }
        };
        let Some(executed) = executed else { break };
        match executed {
            Ok(executed) => done.push(executed),
            Err(error) if error.is_cancelled() => {}
            Err(error) => warn!(%error, "a fault task failed"),
        }
    }
    done.sort_by_key(|e| (e.at, e.fault));
    done
}

/// The work of one fault or undo, ready to run in a task of its own: every node
/// acted on at once.
fn carry_out(
    lab: &impl Testbed,
    fault: &Fault,
    undo: bool,
    tag: usize,
    redis: Option<RedisHandle>,
) -> impl std::future::Future<Output = Result<(), FaultError>> + Send + 'static {
    let mut nodes = JoinSet::new();
    let mut network = None;
    let mut on_redis = None;
    match &fault.action {
        Action::Node(action) => {
            for id in &fault.nodes {
                nodes.spawn(lab.act(*id, *action, undo));
            }
        }
        Action::Network(action) => network = Some((lab.fronts(), action.clone())),
        Action::Redis(action) => on_redis = Some(*action),
    }
    let (ids, link) = (fault.nodes.clone(), fault.link);
    async move {
        if let Some(action) = on_redis {
            let redis = redis.ok_or(FaultError::NoRedis)?;
            let mut redis = redis.lock().await;
            match (action, undo) {
                (RedisAction::Down, false) => redis.kill().await,
                (RedisAction::Down, true) => redis.start_again().await?,
                (RedisAction::Restart, _) => {
                    redis.kill().await;
                    redis.start_again().await?;
                }
            }
            return Ok(());
        }
        if let Some((fronts, action)) = network {
            let fronts = fronts.ok_or(FaultError::NoProxy)?;
            for node in ids {
                let result = if undo {
                    fronts.lift(node, link, &action, tag).await
                } else {
                    fronts.apply(node, link, &action, tag).await
                };
                result.map_err(|error| FaultError::Network { node, error })?;
            }
            return Ok(());
        }
        let mut first_error = None;
        while let Some(result) = nodes.join_next().await {
            if let Err(error) = result.map_err(FaultError::from).and_then(|r| r) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The span of each fault for the analysis: when it ended (when the action that
/// ends it was done: the undo, the later start, or the restart itself), and how far
/// its window reaches (the next disruptive fault, or `run_end`).
pub fn spans(faults: &[Fault], executed: &[Executed], run_end: Duration) -> Vec<FaultSpan> {
    let done = |fault: usize, undo: bool, planned: Duration| {
        executed
            .iter()
            .find(|e| e.fault == fault && e.undo == undo)
            .map_or(planned, |e| e.done)
    };
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let ended = match (&fault.action, fault.duration) {
                (_, Some(lasts)) => Some(done(i, true, fault.at + lasts)),
                (Action::Node(NodeAction::Restart) | Action::Redis(RedisAction::Restart), None) => {
                    Some(done(i, false, fault.at))
                }
                (Action::Node(NodeAction::Kill | NodeAction::Stop), None) => faults[i + 1..]
                    .iter()
                    .enumerate()
                    .find(|(_, later)| {
                        matches!(
                            later.action,
                            Action::Node(NodeAction::Start | NodeAction::Restart)
                        ) && fault.nodes.iter().all(|n| later.nodes.contains(n))
                    })
                    .map(|(j, later)| done(i + 1 + j, false, later.at)),
                _ => None,
            };
            let from = ended.unwrap_or(fault.at).max(fault.at);
            let window_end = faults[i + 1..]
                .iter()
                .filter(|later| later.action.disrupts() && later.at > from)
                .map(|later| later.at)
                .next()
                .unwrap_or(run_end);
            let undone = executed.iter().any(|e| e.fault == i && e.undo);
            let error = executed
                .iter()
                .filter(|e| e.fault == i)
                .find_map(|e| e.error.clone())
                .or_else(|| {
                    (fault.duration.is_some() && !undone && !executed.is_empty())
                        .then(|| "it was never undone".to_string())
                });
            FaultSpan {
                description: fault.describe(),
                at: fault.at,
                ended,
                disruptive: fault.action.disrupts(),
                window_end,
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_lab::actions::NetworkAction;
    use octopoll_node::NodeId;

    fn fault(at: u64, action: Action, node: u16, lasts: Option<u64>) -> Fault {
        Fault {
            at: Duration::from_secs(at),
            action,
            nodes: vec![NodeId(node)],
            duration: lasts.map(Duration::from_secs),
            link: Default::default(),
        }
    }

    #[test]
    fn a_restart_ends_when_the_node_runs_again() {
        let faults = vec![fault(10, Action::Node(NodeAction::Restart), 1, None)];
        let executed = vec![Executed {
            fault: 0,
            undo: false,
            at: Duration::from_secs(10),
            done: Duration::from_millis(10_400),
            error: None,
        }];
        let spans = spans(&faults, &executed, Duration::from_secs(60));
        assert_eq!(spans[0].ended, Some(Duration::from_millis(10_400)));
    }

    #[test]
    fn a_kill_ends_at_the_start_that_follows_it_or_its_duration() {
        let faults = vec![
            fault(10, Action::Node(NodeAction::Kill), 2, None),
            fault(25, Action::Node(NodeAction::Start), 2, None),
            fault(30, Action::Network(NetworkAction::Down), 1, Some(5)),
            fault(38, Action::Network(NetworkAction::Partition), 3, None),
        ];
        let spans = spans(&faults, &[], Duration::from_secs(60));
        assert_eq!(spans[0].ended, Some(Duration::from_secs(25)));
        assert_eq!(spans[0].window_end, Duration::from_secs(30));
        assert!(!spans[1].disruptive);
        assert_eq!(spans[2].ended, Some(Duration::from_secs(35)));
        assert_eq!(spans[2].window_end, Duration::from_secs(38));
        assert_eq!(spans[3].ended, None, "nothing lifts the partition");
        assert_eq!(spans[3].window_end, Duration::from_secs(60));
    }
}

//! Stopping a run early, as k6 does: the thresholds marked `abort_on_fail` are
//! checked every second against the figures so far, and the first one breached
//! (past its `delay_abort_eval`) stops the workload. The run still drains and
//! reports; the report says which threshold stopped it and when.

use std::time::Duration;

use octopoll_node::{NodeId, NodeStats};
use octopoll_report::report::Aborted;
use octopoll_report::thresholds::{Figures, Thresholds};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::testbed::Testbed;
use crate::workload::Ledger;

/// How often the abort conditions are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Watches `thresholds`' abort conditions from `started` until `done` (the
/// workload ended) or `stop`; cancels `stop` on the first breach and says
/// which. Returns at once when no threshold aborts.
pub async fn watch(
    lab: &impl Testbed,
    thresholds: &Thresholds,
    ledger: &Ledger,
    started: Instant,
    stop: &CancellationToken,
    done: &CancellationToken,
) -> Option<Aborted> {
    thresholds.abort_rules().next()?;
    let mut ticks = tokio::time::interval_at(started + CHECK_EVERY, CHECK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = done.cancelled() => return None,
            () = stop.cancelled() => return None,
        }
        let counts = ledger.counts();
        let nodes: Vec<(NodeId, NodeStats)> = lab
            .snapshot()
            .await
            .nodes
            .into_iter()
            .map(|node| (node.id, node.stats))
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        let figures = Figures {
            counts: &counts,
            nodes: &nodes,
            seconds,
        };
        if let Some(threshold) = thresholds.abort(&figures) {
            warn!(%threshold, "a threshold with abort_on_fail was breached: stopping the run");
            stop.cancel();
            return Some(Aborted {
                at_s: seconds,
                threshold,
            });
        }
    }
}

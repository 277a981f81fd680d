//! What the report is built from, read off the testbed: its coverage and
//! connections sampled while the run goes ([`octopoll_report::timeline`]), and its
//! shape and mesh at the end ([`RunFacts`]).

use std::future::Future;
use std::time::Duration;

use octopoll_report::timeline::{CoverageSample, SAMPLE_EVERY};
use octopoll_report::RunFacts;
use tokio::time::{Instant, MissedTickBehavior};

use crate::testbed::Testbed;

/// Samples `lab` every [`SAMPLE_EVERY`] from `started` until `stop` completes.
pub async fn sample(
    lab: &impl Testbed,
    started: Instant,
    stop: impl Future<Output = ()>,
) -> Vec<CoverageSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at(started, SAMPLE_EVERY);
    // A stalled sampler takes the next sample on time, not a burst of late ones.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let snapshot = lab.snapshot().await;
        samples.push(CoverageSample {
            t: started.elapsed(),
            polling: snapshot.coverage.polling_pairs,
            total: snapshot.coverage.total_pairs,
            connections: snapshot.nodes.iter().map(|n| n.stats.connections).collect(),
            handshakes: snapshot.nodes.iter().map(|n| n.stats.handshakes_ok).sum(),
        });
    }
    samples
}

/// The testbed's shape and its mesh now, for the report; `full_coverage` is when
/// every agent first polled every node, if it did.
pub async fn run_facts(
    lab: &impl Testbed,
    seed: u64,
    duration_s: f64,
    full_coverage: Option<Duration>,
) -> RunFacts {
    let coverage_matrix = lab.coverage_matrix().await;
    RunFacts {
        nodes: lab.node_ids().len() as u16,
        agents: lab.agents(),
        topology: lab.topology(),
        queue: lab.queue_mode(),
        seed,
        duration_s,
        connections: lab.snapshot().await.connections(),
        // The testbed's own count: through the queue, when the nodes share one.
        coverage: lab.snapshot().await.coverage.ratio(),
        full_coverage_ms: full_coverage.map(|d| d.as_millis() as u64),
        coverage_matrix,
    }
}

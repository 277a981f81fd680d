//! The run over time: coverage sampled every 100 ms, turned into each fault's
//! recovery figures and the per-second CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::counts::Counts;
use serde::Serialize;

/// How often coverage is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Coverage and connections at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoverageSample {
    /// Since the workload started.
    pub t: Duration,
    /// Polling (agent, node) pairs.
    pub polling: usize,
    /// All pairs.
    pub total: usize,
    /// Connections held, per node.
    pub connections: Vec<usize>,
    /// TLS handshakes the nodes completed so far, all together (a node process
    /// started again counts from zero; [`handshake_rates`] allows for it).
    pub handshakes: u64,
}

impl CoverageSample {
    fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.polling as f64 / self.total as f64
        }
    }
}

/// How one fault went, measured from the samples.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    /// `kill node-2 at 10s for 15s`.
    pub fault: String,
    /// Seconds from the start of the workload to the fault.
    pub at_s: f64,
    /// Seconds from the start to when the fault ended (the node started again,
    /// the toxic removed); `None` if nothing ended it.
    pub ended_s: Option<f64>,
    /// Whether it takes something away (a `start` does not).
    pub disruptive: bool,
    /// Lowest coverage from the fault to full recovery (or the next fault).
    pub coverage_min: f64,
    /// Seconds from the end of the fault to the first pair polling again.
    pub first_reconnect_s: Option<f64>,
    /// Seconds from the end of the fault to 99 % of pairs polling.
    pub mesh_99_s: Option<f64>,
    /// Seconds from the end of the fault to every pair polling ("time to full mesh").
    pub full_mesh_s: Option<f64>,
    /// Requests that failed from the fault to full recovery, by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Seconds from the fault until every request in flight at it (queued
    /// before it, to the 100 ms) had ended, completed or failed; `None` if none
    /// was in flight.
    pub in_flight_ended_s: Option<f64>,
    /// The most handshakes the nodes completed in any one second from the fault
    /// to the end of its window: how hard the agents came back.
    pub peak_handshakes_per_s: u64,
    /// What went wrong carrying it out, if anything.
    pub error: Option<String>,
}

/// The facts of one fault the analysis needs.
#[derive(Clone, Debug)]
pub struct FaultSpan {
    /// `kill node-2 at 10s for 15s`.
    pub description: String,
    /// When it happened.
    pub at: Duration,
    /// When it ended, if it did.
    pub ended: Option<Duration>,
    /// Whether it takes something away.
    pub disruptive: bool,
    /// Where the next fault starts (or the run ends): the window of this one.
    pub window_end: Duration,
    /// An error carrying it out.
    pub error: Option<String>,
}

/// Measures `span` against the samples and the ledger's failures.
pub fn analyse(span: &FaultSpan, samples: &[CoverageSample], counts: &Counts) -> FaultReport {
    let secs = |d: Duration| d.as_secs_f64();
    let in_window: Vec<&CoverageSample> = samples
        .iter()
        .filter(|s| s.t >= span.at && s.t <= span.window_end)
        .collect();
    let coverage_min = in_window
        .iter()
        .map(|s| s.ratio())
        .fold(f64::INFINITY, f64::min);
    let coverage_min = if coverage_min.is_finite() {
        coverage_min
    } else {
        0.0
    };
    let never_dipped = in_window
        .iter()
        .all(|s| s.polling == s.total && s.total > 0);

    let (mut first, mut p99, mut full) = (None, None, None);
    if let Some(ended) = span.ended {
        if never_dipped {
            (first, p99, full) = (Some(0.0), Some(0.0), Some(0.0));
        } else {
            // The lowest point so far, from the fault on: a pair polling again after
            // it is the first reconnect, however short the fault itself was.
            let mut low = usize::MAX;
            for sample in samples.iter().filter(|s| s.t >= span.at) {
                if sample.t < ended {
                    low = low.min(sample.polling);
                    continue;
                }
                let after = secs(sample.t.saturating_sub(ended));
                if first.is_none() && low != usize::MAX && sample.polling > low {
                    first = Some(after);
                }
                low = low.min(sample.polling);
                if low == sample.polling && sample.polling == sample.total {
                    // Never dipped since the fault ended: keep looking for the dip.
                    continue;
                }
                if p99.is_none() && sample.ratio() >= 0.99 {
                    p99 = Some(after);
                }
                if sample.polling == sample.total && sample.total > 0 {
                    full = Some(after);
                    first.get_or_insert(after);
                    p99.get_or_insert(after);
                    break;
                }
            }
        }
    }
    // Failures from the fault until the mesh healed (or the window closed).
    let healed = match (span.ended, full) {
        (Some(ended), Some(full)) => ended + Duration::from_secs_f64(full),
        _ => span.window_end,
    };
    let mut failed_by_reason = BTreeMap::new();
    for (at, reason) in &counts.failures_at {
        if *at >= span.at && *at <= healed.max(span.at) {
            *failed_by_reason.entry(reason.to_string()).or_insert(0) += 1;
        }
    }
    let in_flight_ended_s = counts
        .in_flight_ended(span.at)
        .map(|last| secs(last - span.at));
    let peak_handshakes_per_s = peak_per_second(
        samples
            .iter()
            .zip(handshake_rates(samples))
            .filter(|(s, _)| s.t > span.at && s.t <= span.window_end)
            .map(|(s, new)| (s.t, new)),
    );
    FaultReport {
        fault: span.description.clone(),
        at_s: secs(span.at),
        ended_s: span.ended.map(secs),
        disruptive: span.disruptive,
        coverage_min,
        first_reconnect_s: first,
        mesh_99_s: p99,
        full_mesh_s: full,
        failed_by_reason,
        in_flight_ended_s,
        peak_handshakes_per_s,
        error: span.error.clone(),
    }
}

/// Handshakes completed since the sample before, per sample (the first: since
/// the start). A total that went down (a node process started again, counting
/// from zero) counts what it shows now as new.
fn handshake_rates(samples: &[CoverageSample]) -> impl Iterator<Item = u64> + '_ {
    let before = std::iter::once(0).chain(samples.iter().map(|s| s.handshakes));
    samples.iter().zip(before).map(|(s, before)| {
        if s.handshakes >= before {
            s.handshakes - before
        } else {
            s.handshakes
        }
    })
}

/// The largest sum of `(t, count)` over any one second (a window ending at a
/// sample), for samples in time order.
fn peak_per_second(points: impl Iterator<Item = (Duration, u64)>) -> u64 {
    let points: Vec<(Duration, u64)> = points.collect();
    let (mut peak, mut sum, mut first) = (0, 0, 0);
    for &(t, count) in &points {
        sum += count;
        while points[first].0 + Duration::from_secs(1) <= t {
            sum -= points[first].1;
            first += 1;
        }
        peak = peak.max(sum);
    }
    peak
}

/// Coverage over the run in at most `points` steps, each the lowest coverage
/// sampled in its stretch of time (a dip shows, however short).
pub fn coverage_series(samples: &[CoverageSample], points: usize) -> Vec<f64> {
    if samples.is_empty() || points == 0 {
        return Vec::new();
    }
    let per_point = samples.len().div_ceil(points);
    samples
        .chunks(per_point)
        .map(|chunk| {
            chunk
                .iter()
                .map(CoverageSample::ratio)
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// `series` (0–1) as a line of block characters, `▁` for 0 to `█` for 1.
pub fn sparkline(series: &[f64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    series
        .iter()
        .map(|v| BLOCKS[(v.clamp(0.0, 1.0) * 7.0).round() as usize])
        .collect()
}

/// The p99 of one second's pickups (microseconds), in milliseconds; 0 for none.
pub fn p99_ms(pickups_us: &[u32]) -> f64 {
    if pickups_us.is_empty() {
        return 0.0;
    }
    let mut sorted = pickups_us.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// The per-second CSV: connections per node, coverage, requests queued, completed
/// and failed in that second, the pickup p99 of the requests that ended in it,
/// and the handshakes the nodes completed in it.
pub fn csv(samples: &[CoverageSample], counts: &Counts, nodes: &[String]) -> String {
    let mut out = String::from("second");
    for node in nodes {
        let _ = write!(out, ",connections_{}", node.replace('-', "_"));
    }
    out.push_str(",coverage,queued,completed,failed,pickup_p99_ms,handshakes\n");
    // Handshakes per second of the run, in one pass over the samples.
    let mut handshakes_in: Vec<u64> = Vec::new();
    for (sample, new) in samples.iter().zip(handshake_rates(samples)) {
        let second = sample.t.as_secs() as usize;
        if handshakes_in.len() <= second {
            handshakes_in.resize(second + 1, 0);
        }
        handshakes_in[second] += new;
    }
    let last_sample = samples.last().map_or(0, |s| s.t.as_secs());
    let seconds = (last_sample as usize + 1).max(counts.seconds.len());
    for second in 0..seconds {
        let at = Duration::from_secs(second as u64 + 1);
        // The last sample within the second.
        let sample = samples.iter().rev().find(|s| s.t < at);
        let _ = write!(out, "{second}");
        for i in 0..nodes.len() {
            let held = sample
                .and_then(|s| s.connections.get(i))
                .copied()
                .unwrap_or(0);
            let _ = write!(out, ",{held}");
        }
        let counted = counts.seconds.get(second).cloned().unwrap_or_default();
        let p99 = p99_ms(&counted.pickups_us);
        let handshakes = handshakes_in.get(second).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            ",{:.4},{},{},{},{p99:.3},{handshakes}",
            sample.map_or(0.0, CoverageSample::ratio),
            counted.queued,
            counted.completed,
            counted.failed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_node::{FailReason, NodeId};

    fn sample(ms: u64, polling: usize) -> CoverageSample {
        CoverageSample {
            t: Duration::from_millis(ms),
            polling,
            total: 30,
            connections: vec![polling / 3; 3],
            handshakes: 0,
        }
    }

    #[test]
    fn coverage_dips_show_in_the_sparkline_however_short() {
        let sample = |polling: usize| CoverageSample {
            t: Duration::ZERO,
            polling,
            total: 10,
            connections: vec![],
            handshakes: 0,
        };
        let mut samples: Vec<CoverageSample> = (0..100).map(|_| sample(10)).collect();
        samples[55] = sample(0);
        samples[56] = sample(5);
        let series = coverage_series(&samples, 10);
        assert_eq!(series.len(), 10);
        assert_eq!(series[5], 0.0, "the dip, one sample long");
        assert_eq!(sparkline(&series), "█████▁████");
        assert_eq!(sparkline(&[0.0, 0.5, 1.0]), "▁▅█");
        assert!(coverage_series(&[], 10).is_empty());
    }

    #[test]
    fn a_fault_is_measured_from_its_end_to_the_first_99_and_full_mesh() {
        let samples = vec![
            sample(0, 30),
            sample(1000, 20), // node killed at 1 s
            sample(2000, 20), // started again at 2 s
            sample(2500, 25),
            sample(3000, 29),
            sample(3500, 30),
            sample(4000, 30),
        ];
        let span = FaultSpan {
            description: "kill node-2 at 1s for 1s".into(),
            at: Duration::from_secs(1),
            ended: Some(Duration::from_secs(2)),
            disruptive: true,
            window_end: Duration::from_secs(5),
            error: None,
        };
        let mut counts = Counts::default();
        let queued = counts.record_queued(NodeId(2), Duration::ZERO);
        let no_pickup = None;
        counts.record_ended(
            queued,
            Err(FailReason::NodeKilled),
            no_pickup,
            Duration::ZERO,
            Duration::ZERO,
        );
        counts.failures_at = vec![
            (Duration::from_millis(1100), FailReason::NodeKilled),
            (Duration::from_millis(4500), FailReason::PickupTimeout),
        ];
        let report = analyse(&span, &samples, &counts);
        assert!((report.coverage_min - 20.0 / 30.0).abs() < 1e-9);
        assert_eq!(report.first_reconnect_s, Some(0.5));
        assert_eq!(report.mesh_99_s, Some(1.5), "29 of 30 is below 99 %");
        assert_eq!(report.full_mesh_s, Some(1.5));
        assert_eq!(
            report.failed_by_reason,
            BTreeMap::from([("node-killed".to_string(), 1)]),
            "only failures until the mesh healed count"
        );
    }

    #[test]
    fn a_fault_measures_when_its_in_flight_requests_ended_and_the_handshake_peak() {
        let mut counts = Counts::default();
        let at = Duration::from_millis;
        // In flight at the fault (1 s): queued at 0.5 s, ended at 3.2 s. Queued
        // and ended before it, and queued long after it: neither counts.
        let early = counts.record_queued(NodeId(1), at(100));
        counts.record_ended(early, Ok(()), None, Duration::ZERO, at(200));
        let in_flight = counts.record_queued(NodeId(2), at(500));
        counts.record_ended(in_flight, Ok(()), None, Duration::ZERO, at(3200));
        let late = counts.record_queued(NodeId(2), at(2000));
        counts.record_ended(late, Ok(()), None, Duration::ZERO, at(9000));
        // Handshakes: 50 at the start, then 30 + 40 within 1 s of each other, a
        // node process started again (its count from 0) adding 25 after.
        let samples: Vec<CoverageSample> = [(0, 50), (1500, 80), (2000, 120), (2600, 25)]
            .into_iter()
            .map(|(ms, handshakes)| CoverageSample {
                handshakes,
                ..sample(ms, 30)
            })
            .collect();
        let span = FaultSpan {
            description: "kill node-2 at 1s".into(),
            at: at(1000),
            ended: None,
            disruptive: true,
            window_end: at(5000),
            error: None,
        };
        let report = analyse(&span, &samples, &counts);
        let in_flight_s = report.in_flight_ended_s.expect("one was in flight");
        assert!((in_flight_s - 2.2).abs() < 1e-9, "{in_flight_s}");
        assert_eq!(
            report.peak_handshakes_per_s, 70,
            "the 50 before the fault do not count"
        );
        let quiet = FaultSpan {
            at: at(5000),
            window_end: at(6000),
            ..span
        };
        let report = analyse(&quiet, &samples, &counts);
        assert_eq!(
            report.in_flight_ended_s,
            Some(4.0),
            "the one queued at 2 s ended at 9 s"
        );
        assert_eq!(report.peak_handshakes_per_s, 0);
        assert_eq!(
            counts.in_flight_ended(at(10_000)),
            None,
            "nothing in flight at the end"
        );
    }

    #[test]
    fn a_restart_that_ends_before_its_dip_is_measured_from_the_dip() {
        // Restarted at 1 s, running again at 1.05 s; agents drop and come back later.
        let samples = vec![
            sample(1000, 30),
            sample(1100, 20),
            sample(1200, 20),
            sample(1300, 25),
            sample(1400, 30),
        ];
        let span = FaultSpan {
            description: "restart node-1 at 1s".into(),
            at: Duration::from_secs(1),
            ended: Some(Duration::from_millis(1050)),
            disruptive: true,
            window_end: Duration::from_secs(5),
            error: None,
        };
        let report = analyse(&span, &samples, &Counts::default());
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
        assert!(close(report.first_reconnect_s, 0.25), "{report:?}");
        assert!(close(report.full_mesh_s, 0.35), "{report:?}");
    }

    #[test]
    fn a_fault_that_never_ends_has_no_recovery_and_one_that_never_dipped_recovers_at_once() {
        let samples = vec![sample(0, 30), sample(1000, 10), sample(2000, 10)];
        let open = FaultSpan {
            description: "down node-1 at 1s".into(),
            at: Duration::from_secs(1),
            ended: None,
            disruptive: true,
            window_end: Duration::from_secs(2),
            error: None,
        };
        let counts = Counts::default();
        let report = analyse(&open, &samples, &counts);
        assert_eq!((report.first_reconnect_s, report.full_mesh_s), (None, None));

        let calm = vec![sample(0, 30), sample(1000, 30), sample(2000, 30)];
        let latency = FaultSpan {
            ended: Some(Duration::from_secs(2)),
            ..open
        };
        assert_eq!(analyse(&latency, &calm, &counts).full_mesh_s, Some(0.0));
    }

    #[test]
    fn the_csv_has_a_row_per_second_with_per_node_connections() {
        let samples = vec![sample(0, 30), sample(900, 30), sample(1500, 21)];
        let mut counts = Counts::default();
        let queued = counts.record_queued(NodeId(1), Duration::ZERO);
        counts.record_ended(
            queued,
            Ok(()),
            Some(Duration::from_millis(2)),
            Duration::ZERO,
            Duration::ZERO,
        );
        let text = csv(
            &samples,
            &counts,
            &["node-1".into(), "node-2".into(), "node-3".into()],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "second,connections_node_1,connections_node_2,connections_node_3,coverage,queued,completed,failed,pickup_p99_ms,handshakes"
        );
        assert_eq!(lines[1], "0,10,10,10,1.0000,1,1,0,2.000,0");
        assert_eq!(lines[2], "1,7,7,7,0.7000,0,0,0,0.000,0");
        // Handshakes land in the second of the sample that saw them.
        let with = |ms, handshakes| CoverageSample {
            handshakes,
            ..sample(ms, 30)
        };
        let samples = vec![with(0, 30), with(900, 40), with(1500, 55)];
        let text = csv(&samples, &counts, &["node-1".into()]);
        let column: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap())
            .collect();
        assert_eq!(column, ["40", "15"]);
    }
}

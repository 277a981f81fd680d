//! What a run's requests did, counted: in all, per node and per second, with
//! their pickup latency (from queuing, and from when each was scheduled).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use octopoll_node::{FailReason, NodeId};

/// How finely [`Counts::last_end_by_queued`] tells queuing moments apart.
pub const QUEUED_BUCKET: Duration = Duration::from_millis(100);

/// A request as the ledger counted it queued: on which node, and when into the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The node it was queued on.
    pub node: NodeId,
    /// Since the ledger started.
    pub at: Duration,
}

/// One second of a run: what was queued and ended in it.
#[derive(Clone, Debug, Default)]
pub struct SecondCounts {
    /// Requests queued.
    pub queued: u64,
    /// Requests completed.
    pub completed: u64,
    /// Requests failed.
    pub failed: u64,
    /// Pickup times of the requests that ended in it, in microseconds.
    pub pickups_us: Vec<u32>,
}

/// A run's requests, counted (what the workload's ledger holds).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Requests queued.
    pub queued: u64,
    /// Requests that got a successful response.
    pub completed: u64,
    /// Failed requests by reason.
    pub failed: BTreeMap<FailReason, u64>,
    /// Requests due while every node was down, so never queued.
    pub skipped: u64,
    /// How long requests took.
    pub latency: Latencies,
    /// For the requests queued in each [`QUEUED_BUCKET`] of the run, when the
    /// last of them ended (zero: none ended yet): how long the requests in
    /// flight at a moment took to end.
    pub last_end_by_queued: Vec<Duration>,
    /// The same, per node the requests were queued on.
    pub per_node: BTreeMap<NodeId, NodeCounts>,
    /// Per second since the ledger started.
    pub seconds: Vec<SecondCounts>,
    /// When each failure happened (since the ledger started), and why.
    pub failures_at: Vec<(Duration, FailReason)>,
}

/// The requests queued on one node, and how they ended.
#[derive(Clone, Debug, Default)]
pub struct NodeCounts {
    /// Requests queued.
    pub queued: u64,
    /// Requests that got a successful response.
    pub completed: u64,
    /// Failed requests by reason.
    pub failed: BTreeMap<FailReason, u64>,
    /// How long its requests took.
    pub latency: Latencies,
}

/// How long requests took, in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Queue → collected.
    pub pickup_us: Histogram<u64>,
    /// Scheduled → collected: the pickup plus however late the workload queued
    /// the request, so a stalled generator cannot hide latency (coordinated
    /// omission).
    pub pickup_from_schedule_us: Histogram<u64>,
    /// Queued → response, completed requests only: the pickup, the agent's
    /// work and the way back.
    pub end_to_end_us: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            pickup_us: pickup_histogram(),
            pickup_from_schedule_us: pickup_histogram(),
            end_to_end_us: pickup_histogram(),
        }
    }
}

impl Latencies {
    /// Records one request: its pickup and lateness if it was collected, its
    /// end to end if it completed.
    fn record(&mut self, pickup_us: Option<u64>, late_us: u64, end_to_end_us: Option<u64>) {
        if let Some(pickup) = pickup_us {
            self.pickup_us.saturating_record(pickup);
            self.pickup_from_schedule_us
                .saturating_record(pickup.saturating_add(late_us));
        }
        if let Some(took) = end_to_end_us {
            self.end_to_end_us.saturating_record(took);
        }
    }
}

impl NodeCounts {
    /// All failures.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// A pickup-latency histogram: 1 µs to 1 hour, 3 significant digits.
fn pickup_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Counts {
    /// All failures.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// `queued − completed − failed`, signed: after a run, a positive value is
    /// requests whose end was never recorded, a negative one requests counted twice.
    pub fn unaccounted(&self) -> i64 {
        self.queued as i64 - self.completed as i64 - self.failed_total() as i64
    }

    /// Counts a request queued on `node`, `at` into the run.
    pub fn record_queued(&mut self, node: NodeId, at: Duration) -> Queued {
        self.queued += 1;
        self.per_node.entry(node).or_default().queued += 1;
        self.second(at).queued += 1;
        Queued { node, at }
    }

    /// Counts how the `queued` request ended, `at` into the run; `late` is how
    /// long after its scheduled time it was queued.
    pub fn record_ended(
        &mut self,
        queued: Queued,
        result: Result<(), FailReason>,
        pickup: Option<Duration>,
        late: Duration,
        at: Duration,
    ) {
        let bucket = (queued.at.as_nanos() / QUEUED_BUCKET.as_nanos()) as usize;
        if self.last_end_by_queued.len() <= bucket {
            self.last_end_by_queued.resize(bucket + 1, Duration::ZERO);
        }
        let last = &mut self.last_end_by_queued[bucket];
        *last = (*last).max(at);
        let on_node = self.per_node.entry(queued.node).or_default();
        let micros = pickup.map(|p| p.as_micros().max(1) as u64);
        let late = late.as_micros() as u64;
        let end_to_end = result
            .is_ok()
            .then(|| at.saturating_sub(queued.at).as_micros().max(1) as u64);
        self.latency.record(micros, late, end_to_end);
        on_node.latency.record(micros, late, end_to_end);
        match result {
            Ok(()) => {
                self.completed += 1;
                on_node.completed += 1;
            }
            Err(reason) => {
                *self.failed.entry(reason).or_default() += 1;
                *on_node.failed.entry(reason).or_default() += 1;
                self.failures_at.push((at, reason));
            }
        }
        let second = self.second(at);
        match result {
            Ok(()) => second.completed += 1,
            Err(_) => second.failed += 1,
        }
        if let Some(micros) = micros {
            second
                .pickups_us
                .push(micros.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// When the last request queued before `moment` ended, if any of them was
    /// still in flight at it; queuing moments count to the [`QUEUED_BUCKET`], so
    /// requests queued up to that much after `moment` count too. Requests that
    /// never ended (lost, or unfinished) are not seen.
    pub fn in_flight_ended(&self, moment: Duration) -> Option<Duration> {
        let buckets = (moment.as_nanos() / QUEUED_BUCKET.as_nanos()) as usize + 1;
        self.last_end_by_queued
            .iter()
            .take(buckets)
            .copied()
            .max()
            .filter(|last| *last > moment)
    }

    fn second(&mut self, at: Duration) -> &mut SecondCounts {
        let index = at.as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, SecondCounts::default);
        }
        &mut self.seconds[index]
    }
}

//! Queues requests to random agents on random nodes, and accounts for every one.
//!
//! Each request is counted `queued` once and then exactly once as completed or
//! failed with a reason, so `lost = queued − completed − failed` is 0 unless an
//! invariant broke. When the run ends, requests still unfinished after the drain
//! fail with `run-ended`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use bson::Bson;
use octopoll_node::{FailReason, Machine, NodeId};

use crate::testbed::Dispatcher;
use octopoll_report::counts::Queued;
use octopoll_report::Counts;
use octopoll_wire::contracts::{capabilities, echo, script};
use octopoll_wire::{DataStream, RequestMessage, ServiceEndPoint, SubscriptionId};
use rand::rngs::StdRng;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A polling agent the workload sends requests to.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// Its subscription.
    pub subscription: SubscriptionId,
    /// Its thumbprint, as the requests' endpoints name it.
    pub thumbprint: String,
}

impl Recipient {
    /// The polling machines among `machines`, in their order. Listening
    /// machines take no workload: the run health-checks them instead.
    pub fn all_in(machines: &[Machine]) -> Vec<Recipient> {
        machines
            .iter()
            .filter_map(|m| {
                Some(Recipient {
                    subscription: m.subscription()?.clone(),
                    thumbprint: m.thumbprint.to_string(),
                })
            })
            .collect()
    }
}

/// Counts of one run's requests as they happen, in all and per second of the run
/// (a [`Counts`] behind a lock, with the run's clock).
#[derive(Debug)]
pub struct Ledger {
    started: Instant,
    inner: Mutex<Counts>,
    /// Where pickup times also go, when the run serves metrics.
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl Default for Ledger {
    /// A ledger whose clock starts now.
    fn default() -> Self {
        Self {
            started: Instant::now(),
            telemetry: None,
            inner: Mutex::new(Counts::default()),
        }
    }
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ledger that also records pickup times in `telemetry`.
    pub fn with_telemetry(telemetry: Arc<crate::telemetry::Telemetry>) -> Self {
        Self {
            telemetry: Some(telemetry),
            ..Self::default()
        }
    }

    /// When the ledger's clock started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Counts a request queued on `node`; what it returns goes to [`Ledger::ended`].
    pub fn queued(&self, node: NodeId) -> Queued {
        let at = self.started.elapsed();
        self.lock().record_queued(node, at)
    }

    /// Counts a request that was due while every node was down.
    pub fn skipped(&self) {
        self.lock().skipped += 1;
    }

    /// Counts how the `queued` request ended; `late` is how long after its
    /// scheduled time it was queued.
    pub fn ended(
        &self,
        queued: Queued,
        result: Result<(), FailReason>,
        pickup: Option<Duration>,
        late: Duration,
    ) {
        let at = self.started.elapsed();
        if let Some(telemetry) = &self.telemetry {
            if let Some(pickup) = pickup {
                telemetry.pickup(pickup);
            }
            if let Err(reason) = result {
                telemetry.failure(reason);
            }
        }
        self.lock().record_ended(queued, result, pickup, late, at);
    }

    /// (queued, completed, failed) now, without copying the histogram: for
    /// progress and drain checks, which run many times a second.
    pub fn tally(&self) -> (u64, u64, u64) {
        let counts = self.lock();
        (counts.queued, counts.completed, counts.failed_total())
    }

    /// Per node: (completed, failed) now, for the live view.
    pub fn per_node_tally(&self) -> BTreeMap<NodeId, (u64, u64)> {
        self.lock()
            .per_node
            .iter()
            .map(|(node, c)| (*node, (c.completed, c.failed_total())))
            .collect()
    }

    /// Pickup p99 so far in milliseconds (0 before any pickup), for the live view.
    pub fn pickup_p99_ms(&self) -> f64 {
        let counts = self.lock();
        if counts.latency.pickup_us.is_empty() {
            0.0
        } else {
            counts.latency.pickup_us.value_at_quantile(0.99) as f64 / 1000.0
        }
    }

    /// A snapshot.
    pub fn counts(&self) -> Counts {
        self.lock().clone()
    }
}

/// The kinds of request the workload sends, with their weights. In a scenario's
/// `mix`, a kind left out weighs 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// `IEchoService.SayHello`.
    #[serde(default)]
    pub echo: u32,
    /// `IScriptServiceV2.StartScript`, waiting for the script.
    #[serde(default)]
    pub script: u32,
    /// `ICapabilitiesServiceV2.GetCapabilities`.
    #[serde(default)]
    pub capabilities: u32,
    /// `IFileTransferService.UploadFile` with a data stream.
    #[serde(default)]
    pub upload: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            echo: 5,
            script: 4,
            capabilities: 1,
            upload: 0,
        }
    }
}

impl Mix {
    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.echo + self.script + self.capabilities + self.upload
    }
}

/// How the workload shapes each request.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Request kinds and weights.
    pub mix: Mix,
    /// Shortest simulated script run time.
    pub min_script_time: Duration,
    /// Longest simulated script run time.
    pub max_script_time: Duration,
    /// Extra text in each echo request.
    pub payload_bytes: usize,
    /// Bytes in each upload's data stream.
    pub stream_bytes: usize,
}

/// Builds one random request for `agent`, with its data streams.
pub fn request_for(
    rng: &mut StdRng,
    shape: &Shape,
    agent: &SubscriptionId,
    thumbprint: &str,
    number: u64,
) -> (RequestMessage, Vec<DataStream>) {
    let endpoint = ServiceEndPoint::new(agent.as_str(), thumbprint);
    let mix = shape.mix;
    let pick = rng.random_range(0..mix.total().max(1));
    if pick < mix.echo {
        let text = format!("request {number}{}", "x".repeat(shape.payload_bytes));
        let request = echo::request(endpoint, &text, number);
        (request, Vec::new())
    } else if pick < mix.echo + mix.script {
        let (low, high) = (
            shape.min_script_time,
            shape.max_script_time.max(shape.min_script_time),
        );
        let seconds = rng.random_range(low.as_secs_f64()..=high.as_secs_f64());
        let command = script::StartScript {
            ticket: format!("octopoll{number:014}"),
            script_body: format!("echo \"request {number}\"; sleep {seconds:.3}; echo done"),
            task_id: format!("ServerTasks-{number}"),
            wait_for_finish: Some(Duration::from_secs(300)),
        };
        let request = RequestMessage::call(
            script::SERVICE,
            script::START_SCRIPT,
            command.params(),
            endpoint,
            number,
        );
        (request, Vec::new())
    } else if pick < mix.echo + mix.script + mix.capabilities {
        let request = capabilities::request(endpoint, number);
        (request, Vec::new())
    } else {
        let bytes: Vec<u8> = (0..shape.stream_bytes).map(|i| (i % 251) as u8).collect();
        let stream = DataStream::new(bytes);
        let request = RequestMessage::call(
            "IFileTransferService",
            "UploadFile",
            vec![
                Bson::String(format!("octopoll/upload-{number}.bin")),
                stream.reference().to_bson(true),
            ],
            endpoint,
            number,
        );
        (request, vec![stream])
    }
}

/// Sends one request and records how it ended; `run_ended` cuts it short as
/// `run-ended`. `scheduled` is when the workload meant to queue it: the time it
/// queues late counts into its pickup from schedule (coordinated omission).
pub fn spawn_request(
    tracker: &TaskTracker,
    ledger: &Arc<Ledger>,
    node: Dispatcher,
    agent: SubscriptionId,
    request: (RequestMessage, Vec<DataStream>),
    run_ended: CancellationToken,
    scheduled: Instant,
) {
    let queued = ledger.queued(node.node());
    let ledger = ledger.clone();
    let late = scheduled.elapsed();
    tracker.spawn(async move {
        let (result, pickup) = tokio::select! {
            ended = node.send(&agent, request) => ended,
            _ = run_ended.cancelled() => (Err(FailReason::RunEnded), None),
        };
        ledger.ended(queued, result, pickup, late);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_each_request_once() {
        let ledger = Ledger::default();
        let one = ledger.queued(NodeId(1));
        let two = ledger.queued(NodeId(2));
        ledger.queued(NodeId(2));
        ledger.ended(
            one,
            Ok(()),
            Some(Duration::from_millis(3)),
            Duration::from_millis(2),
        );
        ledger.ended(two, Err(FailReason::PickupTimeout), None, Duration::ZERO);
        let counts = ledger.counts();
        assert_eq!(
            (counts.queued, counts.completed, counts.failed_total()),
            (3, 1, 1)
        );
        assert_eq!(counts.unaccounted(), 1);
        assert_eq!(ledger.tally(), (3, 1, 1));
        ledger.ended(one, Ok(()), None, Duration::ZERO);
        ledger.ended(one, Ok(()), None, Duration::ZERO);
        assert_eq!(
            ledger.counts().unaccounted(),
            -1,
            "an end counted twice shows"
        );
        let node_2 = &counts.per_node[&NodeId(2)];
        assert_eq!(
            (node_2.queued, node_2.completed, node_2.failed_total()),
            (2, 0, 1)
        );
        assert_eq!(node_2.failed[&FailReason::PickupTimeout], 1);
        assert_eq!(counts.latency.pickup_us.len(), 1);
        assert!(counts.latency.pickup_from_schedule_us.max().abs_diff(5_000) < 10);
        assert_eq!(counts.per_node[&NodeId(1)].latency.pickup_us.len(), 1);
        assert_eq!(counts.seconds[0].queued, 3);
        assert_eq!(counts.seconds[0].pickups_us, vec![3000]);
        assert_eq!(counts.failures_at.len(), 1);
        // Queued → response, for the completed one only.
        assert_eq!(counts.latency.end_to_end_us.len(), 1);
    }
}

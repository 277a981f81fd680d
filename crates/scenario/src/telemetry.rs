//! Prometheus metrics of a run (`--metrics ADDR` serves them on `/metrics`).
//!
//! One recorder per run (metrics-exporter-prometheus, not installed globally, so
//! runs in one process do not mix). Pickup latency and failure reasons are
//! recorded as requests end; everything the nodes and agents count already (connections,
//! handshakes, requests, reconnects) is copied into gauges and counters at scrape
//! time, so the hot paths carry no second set of counters.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use octopoll_agent::AgentHandle;
use octopoll_node::ClusterView;

/// Buckets of the pickup histogram, in seconds: 100 µs to the 2 min pickup timeout.
const PICKUP_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
];

static METADATA: Metadata<'static> = Metadata::new("octopoll", Level::INFO, None);

/// A run's metrics.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pickup: metrics::Histogram,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&PICKUP_BUCKETS)
            .expect("the pickup buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, text: &'static str| {
            recorder.describe_gauge(name.into(), None, text.into());
        };
        describe(
            "octopoll_node_up",
            "1 while the node runs, 0 after a kill or stop",
        );
        describe(
            "octopoll_connections",
            "Identified polling connections a node holds",
        );
        describe(
            "octopoll_agents",
            "Agents per (node, pair state): polling, stale, lost, never",
        );
        describe(
            "octopoll_coverage_ratio",
            "Polling agent-node pairs / all pairs",
        );
        describe("octopoll_queue_depth", "Requests waiting in a node's queue");
        describe(
            "octopoll_registered_machines",
            "Machines in the shared registry",
        );
        let pickup =
            recorder.register_histogram(&Key::from_name("octopoll_pickup_seconds"), &METADATA);
        Arc::new(Self {
            recorder,
            handle,
            pickup,
        })
    }

    /// Counts a failed request by its reason.
    pub fn failure(&self, reason: octopoll_node::FailReason) {
        self.recorder
            .register_counter(
                &Key::from_parts(
                    "octopoll_request_failures_total",
                    vec![Label::new("reason", reason.as_str())],
                ),
                &METADATA,
            )
            .increment(1);
    }

    /// Records one request's queue → collected time.
    pub fn pickup(&self, took: Duration) {
        self.pickup.record(took.as_secs_f64());
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(value);
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>, value: u64) {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
            .absolute(value);
    }

    /// Copies the cluster's and the agents' counts in, then renders everything.
    pub fn render(&self, cluster: &ClusterView, agents: &[AgentHandle]) -> String {
        let matrix = cluster.coverage_matrix();
        for (column, node) in cluster.nodes().iter().enumerate() {
            let name = node.id().to_string();
            let at = |extra: &[(&'static str, &'static str)]| {
                let mut labels = vec![Label::new("node", name.clone())];
                labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
                labels
            };
            let stats = node.stats();
            self.gauge(
                "octopoll_node_up",
                at(&[]),
                f64::from(u8::from(node.is_running())),
            );
            self.gauge("octopoll_connections", at(&[]), stats.connections as f64);
            self.gauge("octopoll_queue_depth", at(&[]), stats.queued as f64);
            for row in &matrix.rows {
                let state = row.state.as_str();
                let agents = row.agents.get(column).copied().unwrap_or(0);
                self.gauge("octopoll_agents", at(&[("state", state)]), agents as f64);
            }
            for (result, value) in [
                ("ok", stats.handshakes_ok),
                ("untrusted", stats.refused_untrusted),
                ("wrong_subscription", stats.refused_subscription),
                ("failed", stats.refused_other),
            ] {
                self.counter(
                    "octopoll_handshakes_total",
                    at(&[("result", result)]),
                    value,
                );
            }
            for (reason, value) in [
                ("protocol", stats.protocol_errors),
                ("dropped", stats.dropped),
                ("stalled", stats.stalled),
                ("probe", stats.probes),
                ("limit", stats.refused_limit),
            ] {
                self.counter(
                    "octopoll_connections_closed_total",
                    at(&[("reason", reason)]),
                    value,
                );
            }
            // The specific reasons, by their codes (`docs/LIMITS.md`).
            for (reason, value) in &stats.close_reasons {
                let mut labels = at(&[]);
                labels.push(Label::new("reason", reason.clone()));
                self.counter("octopoll_connection_endings_total", labels, *value);
            }
            // The shared registry's trouble (always 0 for a registry in this process).
            let registry = node.registry();
            self.counter(
                "octopoll_registry_emptied_total",
                at(&[]),
                registry.store_emptied(),
            );
            self.counter(
                "octopoll_registry_channel_lost_total",
                at(&[]),
                registry.store_channel_losses(),
            );
            for (state, value) in [
                ("created", stats.requests_created),
                ("collected", stats.collected),
                ("completed", stats.requests_completed),
                ("failed", stats.requests_failed),
            ] {
                self.counter("octopoll_requests_total", at(&[("state", state)]), value);
            }
        }
        self.gauge(
            "octopoll_coverage_ratio",
            vec![],
            cluster.coverage().ratio(),
        );
        self.gauge(
            "octopoll_registered_machines",
            vec![],
            matrix.agents() as f64,
        );
        let reconnects = agents.iter().map(AgentHandle::failures).sum();
        self.counter("octopoll_agent_reconnects_total", vec![], reconnects);
        self.handle.render()
    }
}

/// What the `/metrics` handler needs.
#[derive(Clone)]
struct MetricsState {
    telemetry: Arc<Telemetry>,
    cluster: ClusterView,
    agents: Arc<Vec<AgentHandle>>,
}

/// `GET /metrics` in Prometheus's text format.
pub fn router(telemetry: Arc<Telemetry>, cluster: ClusterView, agents: Vec<AgentHandle>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(MetricsState {
            telemetry,
            cluster,
            agents: Arc::new(agents),
        })
}

async fn metrics_text(State(state): State<MetricsState>) -> impl IntoResponse {
    let text = state.telemetry.render(&state.cluster, &state.agents);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_lab::{Lab, LabConfig};

    /// The value of the sample `name{labels}` in Prometheus text.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_connection_gauge_is_the_number_of_connected_pairs() {
        let lab = Lab::start(LabConfig::new(3, 5)).await.unwrap();
        // Both sides: the agents' count of their connections and the nodes'.
        let mesh = crate::testbed::wait_for_mesh(&lab, Duration::from_secs(10)).await;
        assert!(mesh.full_coverage_after.is_some(), "full mesh: {mesh:?}");
        let telemetry = Telemetry::new();
        telemetry.pickup(Duration::from_millis(2));
        telemetry.failure(octopoll_node::FailReason::PickupTimeout);
        let text = telemetry.render(&lab.cluster.view(), lab.swarm.agents());
        let connected: f64 = (1..=3)
            .map(|n| sample(&text, &format!("octopoll_connections{{node=\"node-{n}\"}}")).unwrap())
            .sum();
        assert_eq!(connected as usize, lab.swarm.connections(), "{text}");
        assert_eq!(connected, 15.0, "5 agents × 3 nodes: {text}");
        assert_eq!(
            sample(&text, "octopoll_coverage_ratio"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "octopoll_agents{node=\"node-2\",state=\"polling\"}"),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "octopoll_handshakes_total{node=\"node-1\",result=\"ok\"}"
            ),
            Some(5.0),
            "{text}"
        );
        assert!(text.contains("octopoll_pickup_seconds_bucket"), "{text}");
        assert_eq!(
            sample(
                &text,
                "octopoll_request_failures_total{reason=\"pickup-timeout\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(text.contains("# HELP octopoll_connections "), "{text}");
        assert_eq!(
            sample(&text, "octopoll_registry_emptied_total{node=\"node-3\"}"),
            Some(0.0),
            "a registry in this process is never emptied: {text}"
        );
        lab.stop().await;
    }
}

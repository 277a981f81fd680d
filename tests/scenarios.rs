//! Every shipped scenario, run for real in a quarter of its time (`time_scale`)
//! and with fewer agents, must meet its own thresholds; each also shows the
//! behaviour it exists for (a kill fails work with `node-killed`, the pitfall
//! times work out, the storm heals).

mod common;

use std::path::{Path, PathBuf};

use octopoll_report::Report;
use octopoll_scenario::execute;
use octopoll_scenario::file::Source;
use octopoll_scenario::layers::Layers;
use octopoll_scenario::progress::Progress;

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"))
}

/// Runs `name` at a quarter of its time with `agents` agents on free ports.
async fn run_scenario(name: &str, agents: usize) -> Report {
    run_scenario_with(name, agents, "").await
}

/// [`run_scenario`] with `flags` (TOML) over the scenario, as a command line's.
async fn run_scenario_with(name: &str, agents: usize, flags: &str) -> Report {
    let report = run_unchecked(name, agents, flags).await;
    let breaches: Vec<String> = report.breaches().map(ToString::to_string).collect();
    assert!(
        breaches.is_empty(),
        "{name} breached {breaches:?}\n{report}"
    );
    report
}

/// Runs the scenario and checks only the accounting, not its thresholds.
async fn run_unchecked(name: &str, agents: usize, flags: &str) -> Report {
    common::init_logging();
    let mut layers = Layers::new();
    layers
        .read(&scenario_path(name))
        .expect("the scenario parses");
    let small =
        format!("time_scale = 0.25\n[agents]\ncount = {agents}\n[cluster]\ncomms_port = 0\n");
    layers.file(&Source::new("test size", small)).unwrap();
    layers.file(&Source::new("test flags", flags)).unwrap();
    let config = layers.resolve().expect("the scenario is valid");
    let finished = execute(config, &mut Progress::stderr(true))
        .await
        .expect("the scenario runs");
    let report = finished.report;
    println!("{report}");
    assert_eq!(report.requests.lost, 0, "{report}");
    assert_eq!(report.requests.counted_twice, 0, "{report}");
    assert!(report.faults.iter().all(|f| f.error.is_none()), "{report}");
    report
}

#[test]
fn every_shipped_scenario_parses_and_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        Layers::new()
            .read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .resolve()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "default",
            "listening-cluster",
            "load-balancer-pitfall",
            "multi-node-polling",
            "nat-idle-timeout",
            "network-partition",
            "node-failover",
            "reconnect-storm",
            "rolling-restart",
            "slow-network"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("default.toml")).unwrap(),
        octopoll_scenario::file::DEFAULT_SCENARIO,
        "the built-in default is the shipped file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_runs_clean() {
    let report = run_scenario("default", 30).await;
    assert_eq!(report.requests.failed, 0, "{report}");
    assert_eq!(report.run.coverage, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failover_drops_a_third_of_the_mesh_and_heals() {
    let report = run_scenario("node-failover", 40).await;
    let kill = &report.faults[0];
    assert!(kill.fault.starts_with("kill node-2"), "{report}");
    assert!(
        (kill.coverage_min - 2.0 / 3.0).abs() < 0.05,
        "node 2's third of the pairs went: {report}"
    );
    assert!(kill.full_mesh_s.is_some(), "{report}");
    let failed_other_than_killed = report
        .failures_by_reason
        .iter()
        .filter(|(reason, _)| reason.as_str() != "node-killed")
        .count();
    assert_eq!(failed_other_than_killed, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_restarts_each_node_in_turn() {
    let report = run_scenario("rolling-restart", 40).await;
    assert_eq!(report.faults.len(), 3);
    for fault in &report.faults {
        assert!(fault.full_mesh_s.is_some(), "{report}");
    }
    // 40 agents × 3 nodes at the start, then each restart makes 40 agents
    // reconnect: a dip may be shorter than a sample, the handshakes are not.
    assert!(
        report.churn.handshakes >= 40 * 3 + 40 * 3,
        "every restart made its agents reconnect: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_heals_under_halibut_backoff() {
    let report = run_scenario("reconnect-storm", 150).await;
    let storm = &report.faults[0];
    assert!(storm.coverage_min < 0.1, "every node went: {report}");
    let full = storm.full_mesh_s.expect("the mesh heals");
    assert!(
        full >= 4.0,
        "Halibut waits at least 5 s (less jitter-free slack): {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition_makes_pairs_stale_and_heals() {
    let report = run_scenario("network-partition", 30).await;
    let partition = &report.faults[0];
    assert!(
        partition.coverage_min < 0.9,
        "node 3's pairs went stale: {report}"
    );
    assert!(partition.full_mesh_s.is_some(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_under_the_long_poll_darkens_every_pair_with_its_node() {
    let report = run_scenario("nat-idle-timeout", 20).await;
    let line = |node: &str| {
        report
            .per_node
            .iter()
            .find(|n| n.node == node)
            .unwrap_or_else(|| panic!("{node} in {report}"))
    };
    // Every connection to node 2 went quiet for 2 s in its first long-poll and
    // was forgotten: no agent polls it, and nobody was told (no reconnects
    // within the run: the agents' receive timeout is longer).
    assert_eq!(line("node-2").agents_polling, 0, "{report}");
    assert_eq!(report.churn.agent_failures, 0, "{report}");
    assert!(report.run.coverage < 0.7, "{report}");
    // Work for node 2 waits for a poll that never comes; the others lose nothing.
    for reason in line("node-2").failed_by_reason.keys() {
        assert!(
            reason == "pickup-timeout" || reason == "run-ended",
            "{reason}: {report}"
        );
    }
    assert!(line("node-2").failed > 0, "{report}");
    assert_eq!(line("node-1").failed + line("node-3").failed, 0, "{report}");
    assert!(
        report.faults[0]
            .fault
            .starts_with("idle_timeout node-2 at "),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_network_slows_but_fails_nothing() {
    let report = run_scenario("slow-network", 30).await;
    assert_eq!(report.requests.failed, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_polling_completes_everything_and_rides_out_an_empty_redis() {
    if !common::haproxy_available("multi_node_polling") {
        return;
    }
    if !common::redis_installed("multi_node_polling") {
        return;
    }
    let report = run_scenario("multi-node-polling", 30).await;
    assert_eq!(
        report.run.coverage, 1.0,
        "through the Redis queue\n{report}"
    );
    assert_eq!(report.requests.lost, 0, "{report}");
    for (reason, count) in &report.failures_by_reason {
        assert_eq!(
            reason, "queue-data-lost",
            "{count} failed otherwise\n{report}"
        );
    }
    assert!(
        report.requests.completed * 10 >= report.requests.queued * 8,
        "{report}"
    );
    assert!(
        report.faults[0].fault.starts_with("redis-restart redis"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_pitfall_times_out_work_on_unreached_nodes() {
    if !common::haproxy_available("load_balancer_pitfall") {
        return;
    }
    let report = run_scenario("load-balancer-pitfall", 30).await;
    assert!(report.run.coverage < 0.5, "{report}");
    assert!(
        report
            .failures_by_reason
            .get("pickup-timeout")
            .copied()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_cluster_fails_over_with_at_most_one_failed_health_check() {
    // Half time, so the 2 s checks fit around the failover at 5 s.
    let report = run_scenario_with("listening-cluster", 20, "time_scale = 0.5").await;
    let cluster = report.listening_cluster.as_ref().expect("the run had one");
    assert!(cluster.shared_certificate);
    assert!(cluster.checks >= 4, "{report}");
    assert!(cluster.failed <= 1, "{report}");
    assert_eq!(cluster.failed_after_failover, 0, "{report}");
    assert!(cluster.failover_at_s.is_some(), "{report}");
    // One health check of every machine at the end, reaching both kinds.
    assert_eq!(cluster.every_machine["listening"], [1, 0], "{report}");
    assert_eq!(cluster.every_machine["polling"], [20, 0], "{report}");
    assert_eq!(report.requests.failed, 0, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("listening    cluster at https://127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_cluster_with_two_certificates_is_refused_after_failover() {
    let flags = "time_scale = 0.5\n[listening_cluster]\nshared_certificate = false\n";
    let report = run_unchecked("listening-cluster", 5, flags).await;
    let cluster = report.listening_cluster.as_ref().expect("the run had one");
    assert!(!cluster.shared_certificate);
    assert!(cluster.failed_after_failover >= 1, "{report}");
    assert!(
        cluster
            .errors
            .iter()
            .any(|e| e.contains("presented certificate")
                && e.contains("but this machine's thumbprint is")),
        "{report}"
    );
    assert_eq!(cluster.every_machine["listening"], [0, 1], "{report}");
    let breached: Vec<&str> = report.breaches().map(|v| v.name.as_str()).collect();
    assert_eq!(breached, ["listening_cluster_failed_max"], "{report}");
    // The polling side never noticed.
    assert_eq!(report.requests.failed, 0, "{report}");
}

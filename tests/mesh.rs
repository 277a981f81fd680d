//! The HA polling rule end to end: every agent polls every node, and work queued on
//! any node reaches its agent.

mod common;

use std::sync::Arc;
use std::time::Duration;

use octopoll_lab::LabConfig;
use octopoll_report::Report;
use octopoll_scenario::progress::Progress;
use octopoll_scenario::sampler::run_facts;
use octopoll_scenario::testbed::Dispatcher;
use octopoll_scenario::workload::{spawn_request, Ledger};
use octopoll_scenario::{execute, RunConfig};
use octopoll_wire::contracts::echo;
use octopoll_wire::ServiceEndPoint;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use common::{start_lab, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_poll_three_nodes_and_every_node_reaches_every_agent() {
    let lab = start_lab(3, 20).await;
    let coverage = wait_until(
        Duration::from_secs(10),
        "all 60 agent×node pairs connected",
        || lab.coverage(),
        |c| c.polling_pairs == 60,
    )
    .await;
    assert_eq!(coverage.total_pairs, 60);

    // One request on each node for each agent: 60 requests, each only collectable
    // by that agent's connection to that node.
    let ledger = Arc::new(Ledger::default());
    let tracker = TaskTracker::new();
    let run_ended = CancellationToken::new();
    let machines = lab.cluster.registry().machines();
    let mut number = 0;
    for node in lab.cluster.nodes() {
        for machine in &machines {
            number += 1;
            let endpoint = ServiceEndPoint::new(
                machine.subscription().expect("a polling machine").as_str(),
                machine.thumbprint.to_string(),
            );
            let name = format!("{} via {}", machine.name, node.id());
            let request = echo::request(endpoint, &name, number);
            spawn_request(
                &tracker,
                &ledger,
                Dispatcher::Local(node.sender()),
                machine.subscription().expect("a polling machine").clone(),
                (request, Vec::new()),
                run_ended.clone(),
                tokio::time::Instant::now(),
            );
        }
    }
    tracker.close();
    tokio::time::timeout(Duration::from_secs(20), tracker.wait())
        .await
        .expect("all 60 requests end");
    let counts = ledger.counts();
    let facts = run_facts(&lab, 0, 0.0, None).await;
    let answered: Vec<u64> = lab
        .swarm
        .agents()
        .iter()
        .map(|a| a.requests_answered())
        .collect();
    assert_eq!(
        answered,
        vec![3; 20],
        "each agent answered one request per node"
    );
    let node_stats = lab.stop().await;
    let report = Report::new(facts, &counts, &node_stats);
    assert_eq!(report.requests.queued, 60);
    assert_eq!(
        report.requests.completed, 60,
        "failures: {:?}",
        report.failures_by_reason
    );
    assert_eq!(report.requests.lost, 0);
    assert!(
        report.per_node.iter().all(|n| n.completed == 20),
        "{:?}",
        report.per_node
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_full_coverage_and_nothing_lost() {
    common::init_logging();
    let mut config = RunConfig::new(LabConfig::new(3, 10));
    config.duration = Duration::from_secs(2);
    config.rate = 50.0;
    config.seed = 7;
    let report = execute(config, &mut Progress::stderr(true))
        .await
        .unwrap()
        .report;
    assert_eq!(report.run.coverage, 1.0);
    assert_eq!(report.run.connections, 30);
    assert!(report.requests.completed > 50, "{report}");
    assert_eq!(report.requests.lost, 0);
    assert_eq!(report.requests.failed, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_for_an_agent_that_never_polls_fails_with_pickup_timeout() {
    common::init_logging();
    let mut config = LabConfig::new(1, 1);
    config.cluster.node.pickup_timeout = Duration::from_millis(300);
    let lab = octopoll_lab::Lab::start(config).await.unwrap();
    let node = &lab.cluster.nodes()[0];
    let nobody: octopoll_wire::SubscriptionId = "poll://nobodypollsthis/".parse().unwrap();
    let request = common::echo(&nobody, "x");
    let outcome = node.send(&nobody, request, vec![]).await;
    assert_eq!(
        outcome.result.unwrap_err(),
        octopoll_node::FailReason::PickupTimeout
    );
    assert_eq!(
        node.stats().queued,
        0,
        "the timed-out request left the queue"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_the_null_request_after_each_long_poll() {
    common::init_logging();
    let mut config = LabConfig::new(1, 1);
    config.cluster.node.long_poll = Duration::from_millis(200);
    let lab = octopoll_lab::Lab::start(config).await.unwrap();
    let (identity, subscription) = common::register_raw_agent(&lab, "idler").await;
    let node = &lab.cluster.nodes()[0];
    // Each clock starts before the message that starts the node's long-poll wait.
    let mut started = std::time::Instant::now();
    let mut exchange = common::identify_raw(node, &identity, &subscription).await;
    for _ in 0..3 {
        let message = exchange.read_message().await.unwrap().unwrap();
        assert_eq!(message.envelope, octopoll_wire::Envelope::Null);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "the null comes after the long-poll wait"
        );
        started = std::time::Instant::now();
        exchange
            .write_control(octopoll_wire::ControlMessage::Next)
            .await
            .unwrap();
        assert_eq!(
            exchange.read_control().await.unwrap(),
            Some(octopoll_wire::ControlMessage::Proceed)
        );
    }
    assert_eq!(
        node.connections_of(&subscription),
        1,
        "keep-alives keep the connection"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_notices_an_idle_agent_leave_without_waiting_for_the_long_poll() {
    common::init_logging();
    let mut config = LabConfig::new(1, 1);
    config.cluster.node.long_poll = Duration::from_secs(600);
    let lab = octopoll_lab::Lab::start(config).await.unwrap();
    let (identity, subscription) = common::register_raw_agent(&lab, "leaver").await;
    let node = &lab.cluster.nodes()[0];
    let exchange = common::identify_raw(node, &identity, &subscription).await;
    assert_eq!(node.connections_of(&subscription), 1);
    drop(exchange);
    let stats = common::wait_until(
        Duration::from_secs(5),
        "the node to close the idle connection",
        || node.stats(),
        |s| s.closed == 1,
    )
    .await;
    assert_eq!(node.connections_of(&subscription), 0);
    assert_eq!(
        (stats.protocol_errors, stats.dropped),
        (0, 0),
        "leaving while idle is neither a protocol error nor a drop"
    );
    lab.stop().await;
}

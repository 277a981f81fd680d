//! The HA topologies of the Octopus docs, run for real: an address per node, a port
//! per node behind a real HAProxy (`mode tcp`), and the load-balanced anti-pattern,
//! with its per-node and shared queues. Each asserts on the run's report.
//!
//! The HAProxy tests need `haproxy` installed (`.ci/run` installs it). Without it
//! they are skipped with a message on a developer's machine, and fail under `CI=true`.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use octopoll_agent::swarm::trusted_servers;
use octopoll_agent::{Agent, AgentConfig, BackoffConfig, ServerAddress};
use octopoll_lab::topology::Topology;
use octopoll_lab::{Lab, LabConfig};
use octopoll_node::{PairState, QueueMode};
use octopoll_pki::{Identity, KeyType};
use octopoll_report::Report;
use octopoll_scenario::progress::Progress;
use octopoll_scenario::{execute, RunConfig};

use common::{register_raw_agent, wait_until};

const NODES: u16 = 3;
const AGENTS: usize = 20;

fn lab_config(topology: Topology, queue: QueueMode) -> LabConfig {
    let mut lab = LabConfig::new(NODES, AGENTS);
    lab.topology = topology;
    lab.cluster.queue = queue;
    lab
}

/// 3 nodes × 20 agents, 30 requests/s for 2 s spread over every node.
async fn run(lab: LabConfig, pickup_timeout: Duration) -> Report {
    common::init_logging();
    let mut lab = lab;
    lab.cluster.node.pickup_timeout = pickup_timeout;
    let mut config = RunConfig::new(lab);
    config.duration = Duration::from_secs(2);
    config.rate = 30.0;
    config.mesh_timeout = Duration::from_secs(20);
    config.drain = pickup_timeout + Duration::from_secs(5);
    config.max_script_time = Duration::from_millis(50);
    let report = execute(config, &mut Progress::stderr(true))
        .await
        .expect("the run completes")
        .report;
    println!("{report}");
    assert_eq!(report.requests.lost, 0, "{report}");
    assert_eq!(report.requests.counted_twice, 0, "{report}");
    report
}

/// Full coverage, work queued on every node, all of it completed.
fn assert_every_node_served(report: &Report) {
    assert_eq!(report.run.coverage, 1.0, "{report}");
    assert_eq!(
        report.run.coverage_matrix.agents_reaching[usize::from(NODES)],
        AGENTS,
        "{report}"
    );
    assert_eq!(report.requests.failed, 0, "{report}");
    assert_eq!(report.per_node.len(), usize::from(NODES));
    for node in &report.per_node {
        assert!(node.queued > 0, "{report}");
        assert_eq!(node.completed, node.queued, "{report}");
        assert_eq!(node.agents_polling, AGENTS, "{report}");
    }
    assert!(report.findings.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_address_nodes_share_a_port_and_every_agent_polls_each() {
    let lab = Lab::start(lab_config(Topology::UniqueAddress, QueueMode::PerNode))
        .await
        .expect("lab starts");
    let addrs: Vec<_> = lab.cluster.nodes().iter().map(|n| n.comms_addr()).collect();
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    assert_eq!(
        ips,
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map(|ip| ip.parse::<IpAddr>().unwrap())
    );
    assert!(addrs.iter().all(|a| a.port() == addrs[0].port()));
    lab.stop().await;

    let report = run(
        lab_config(Topology::UniqueAddress, QueueMode::PerNode),
        Duration::from_secs(10),
    )
    .await;
    assert_every_node_served(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_port_through_haproxy_reaches_every_node_with_pinning_intact() {
    if !common::haproxy_available("unique_port_through_haproxy") {
        return;
    }
    let report = run(
        lab_config(Topology::UniquePort, QueueMode::PerNode),
        Duration::from_secs(10),
    )
    .await;
    assert_every_node_served(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_behind_haproxy_poll_its_ports_and_still_refuse_a_wrong_certificate() {
    if !common::haproxy_available("haproxy_pinning") {
        return;
    }
    common::init_logging();
    let mut config = LabConfig::new(NODES, 2);
    config.topology = Topology::UniquePort;
    let lab = Lab::start(config).await.expect("lab starts");
    common::ready(&lab).await;
    let frontends = lab
        .balancer
        .as_ref()
        .expect("a balancer")
        .frontends()
        .to_vec();
    assert_eq!(frontends.len(), usize::from(NODES));
    for (frontend, node) in frontends.iter().zip(lab.cluster.nodes()) {
        assert_ne!(
            frontend.port(),
            node.comms_addr().port(),
            "agents go through HAProxy"
        );
    }

    // TLS passes through HAProxy untouched: an agent pinning another thumbprint
    // refuses every node, naming both thumbprints.
    let (identity, subscription) = register_raw_agent(&lab, "suspicious").await;
    let impostor = Identity::generate("impostor", KeyType::EcdsaP256).unwrap();
    let addresses: Vec<ServerAddress> = frontends.iter().map(|&a| a.into()).collect();
    let mut agent_config = AgentConfig::default();
    agent_config.polling.backoff = BackoffConfig::FAST;
    let agent = Agent {
        name: "suspicious".into(),
        servers: trusted_servers(&addresses, impostor.thumbprint(), &subscription),
        identity,
        subscription,
        config: agent_config,
    }
    .start()
    .unwrap();
    let errors = wait_until(
        Duration::from_secs(10),
        "every link to refuse its node",
        || agent.last_errors(),
        |e| e.len() == usize::from(NODES),
    )
    .await;
    let real = lab.cluster.identity().thumbprint().to_string();
    for error in &errors {
        assert!(
            error.contains(&real) && error.contains(&impostor.thumbprint().to_string()),
            "{error}"
        );
    }
    assert_eq!(agent.connections(), 0);
    common::swarm_still_works(&lab).await;
    agent.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balanced_agents_reach_one_node_and_work_queued_elsewhere_times_out() {
    if !common::haproxy_available("load_balanced") {
        return;
    }
    let report = run(
        lab_config(Topology::LoadBalanced, QueueMode::PerNode),
        Duration::from_secs(1),
    )
    .await;
    let coverage = report.run.coverage;
    assert!(
        (0.2..=0.5).contains(&coverage),
        "coverage {coverage}\n{report}"
    );
    let matrix = &report.run.coverage_matrix;
    assert_eq!(
        matrix.agents_reaching[1], AGENTS,
        "each agent reaches one node\n{report}"
    );
    let never = matrix
        .rows
        .iter()
        .find(|r| r.state == PairState::Never)
        .unwrap();
    assert_eq!(never.agents.iter().sum::<usize>(), AGENTS * 2, "{report}");

    let timed_out = report
        .failures_by_reason
        .get("pickup-timeout")
        .copied()
        .unwrap_or(0);
    assert!(
        timed_out * 10 >= report.requests.queued * 4,
        "a clear share of the work times out: {timed_out} of {}\n{report}",
        report.requests.queued
    );
    assert_eq!(
        report.requests.failed, timed_out,
        "no other failures\n{report}"
    );
    assert!(
        report.requests.completed > 0,
        "work on the reached node completes\n{report}"
    );
    assert!(
        report.findings.iter().any(|f| f.starts_with(
            "agents reach 1 of 3 nodes on average; work queued on unreached nodes timed out"
        )),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("why          agents reach 1 of 3 nodes"),
        "{report}"
    );
}

/// Load-balanced over a queue the nodes share: each agent reaches one node, yet
/// every node's work is collected, so coverage (through the queue) is full.
fn assert_the_shared_queue_served_every_node(report: &Report) {
    assert_eq!(
        report.run.coverage, 1.0,
        "through the shared queue\n{report}"
    );
    let reached = report.run.coverage_matrix.mean_nodes_reached();
    assert!(
        (0.9..=1.1).contains(&reached),
        "each agent polls one node: {reached}\n{report}"
    );
    assert_eq!(report.requests.failed, 0, "{report}");
    assert_eq!(
        report.requests.completed, report.requests.queued,
        "{report}"
    );
    // Work queued on every node, collected by whichever node each agent reached.
    assert!(report.per_node.iter().all(|n| n.queued > 0), "{report}");
    let collected: u64 = report.per_node.iter().map(|n| n.collected).sum();
    assert_eq!(collected, report.requests.queued, "{report}");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.contains("the shared queue let a connection to any node collect the work")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balanced_with_a_shared_queue_completes_everything() {
    if !common::haproxy_available("load_balanced_shared_queue") {
        return;
    }
    // A generous pickup timeout: nothing should time out, even on a loaded machine.
    let report = run(
        lab_config(Topology::LoadBalanced, QueueMode::Shared),
        Duration::from_secs(10),
    )
    .await;
    assert_the_shared_queue_served_every_node(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balanced_over_the_redis_queue_completes_everything() {
    if !common::haproxy_available("load_balanced_redis_queue") {
        return;
    }
    let Some(redis) = common::local_redis("load_balanced_redis_queue").await else {
        return;
    };
    let mut lab = lab_config(Topology::LoadBalanced, QueueMode::Redis);
    lab.cluster.redis_queue = Some(octopoll_node::RedisQueueConfig::new(
        redis.url(),
        "topology",
    ));
    let report = run(lab, Duration::from_secs(10)).await;
    assert_the_shared_queue_served_every_node(&report);
    assert_eq!(report.run.queue, QueueMode::Redis);
    redis.stop().await;
}

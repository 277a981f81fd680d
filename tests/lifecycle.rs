//! Node life cycle: a stopping node ends everything it holds with a reason, even
//! work stuck on a peer that never answers, and agents reconnect with backoff when
//! the node is back on the same address.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use octopoll_agent::swarm::trusted_servers;
use octopoll_agent::{Agent, AgentConfig, BackoffConfig};
use octopoll_node::registry::NewMachine;
use octopoll_node::{FailReason, MachineRegistry, Node, NodeConfig, NodeId};
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::SubscriptionId;

use common::wait_until;

fn start_node(identity: &Identity, registry: &MachineRegistry, comms: SocketAddr) -> Node {
    start_node_with(
        NodeConfig::new(NodeId(1), ApiKey::random()),
        identity,
        registry,
        comms,
    )
}

fn start_node_with(
    config: NodeConfig,
    identity: &Identity,
    registry: &MachineRegistry,
    comms: SocketAddr,
) -> Node {
    let comms = octopoll_node::tcp::bind(comms).unwrap();
    let api = octopoll_node::tcp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    Node::start(config, identity, registry.clone(), comms, api).unwrap()
}

/// A machine written straight into the registry (no API), as the HA database would hold it.
async fn register_directly(registry: &MachineRegistry, name: &str) -> (Identity, SubscriptionId) {
    let identity = Identity::generate(name, KeyType::EcdsaP256).unwrap();
    let subscription = SubscriptionId::random(&mut rand::rng());
    let machine = NewMachine {
        name: name.into(),
        thumbprint: identity.thumbprint(),
        endpoint: subscription.clone().into(),
        roles: vec![],
        environments: vec![],
    };
    registry.register(machine).await.unwrap();
    (identity, subscription)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_after_its_node_restarts() {
    common::init_logging();
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let registry = MachineRegistry::new();
    let node = start_node(&server, &registry, "127.0.0.1:0".parse().unwrap());
    let address = node.comms_addr();

    let (identity, subscription) = register_directly(&registry, "agent").await;
    let mut config = AgentConfig::default();
    config.polling.backoff = BackoffConfig::FAST;
    let agent = Agent {
        name: "survivor".into(),
        servers: trusted_servers(&[address.into()], server.thumbprint(), &subscription),
        identity,
        subscription: subscription.clone(),
        config,
    };
    let handle = agent.start().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the first connection",
        || node.connections_of(&subscription),
        |n| *n == 1,
    )
    .await;

    // Work queued for someone who never polls is failed by a stopping node, not lost.
    let nobody: SubscriptionId = "poll://nobody/".parse().unwrap();
    let request = common::echo(&nobody, "x");
    let sender = node.sender();
    let stranded = tokio::spawn(async move { sender.send(&nobody, request, vec![]).await });
    wait_until(
        Duration::from_secs(5),
        "the request to be queued",
        || node.stats().queued,
        |q| *q == 1,
    )
    .await;
    node.stop().await;
    let outcome = stranded.await.unwrap();
    assert_eq!(outcome.result.unwrap_err(), FailReason::NodeStopped);

    wait_until(
        Duration::from_secs(5),
        "the agent to notice",
        || handle.connections(),
        |n| *n == 0,
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "a failed reconnect",
        || handle.failures(),
        |f| *f >= 1,
    )
    .await;

    let node = start_node(&server, &registry, address);
    wait_until(
        Duration::from_secs(10),
        "the agent to reconnect",
        || node.connections_of(&subscription),
        |n| *n == 1,
    )
    .await;
    let request = common::echo(&subscription, "back");
    let outcome = node.send(&subscription, request, vec![]).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result.err());

    handle.stop().await;
    let stats = node.stop().await;
    assert_eq!(
        stats.requests_created,
        stats.requests_completed + stats.requests_failed,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_a_request_stuck_on_a_silent_peer_once_the_drain_bound_expires() {
    common::init_logging();
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let registry = MachineRegistry::new();
    let mut config = NodeConfig::new(NodeId(1), ApiKey::random());
    config.drain = Duration::from_millis(100);
    let node = start_node_with(config, &server, &registry, "127.0.0.1:0".parse().unwrap());
    let (identity, subscription) = register_directly(&registry, "silent").await;
    let mut peer = common::identify_raw(&node, &identity, &subscription).await;

    let request = common::echo(&subscription, "x");
    let sender = node.sender();
    let target = subscription.clone();
    let call = tokio::spawn(async move { sender.send(&target, request, vec![]).await });
    // The peer takes the request and never answers.
    assert!(peer.read_message().await.unwrap().is_some());

    let stats = tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("stop is bounded");
    let outcome = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the caller is answered")
        .unwrap();
    assert_eq!(
        outcome.result.unwrap_err(),
        FailReason::ConnectionLostInFlight
    );
    assert_eq!(
        (stats.requests_created, stats.requests_failed),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        stats.stalled, 1,
        "the dropped connection is counted: {stats:?}"
    );
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_queued_and_in_flight_work_as_killed_and_starts_again_on_its_port() {
    common::init_logging();
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let registry = MachineRegistry::new();
    let node = start_node(&server, &registry, "127.0.0.1:0".parse().unwrap());
    let address = node.comms_addr();
    let (identity, subscription) = register_directly(&registry, "victim").await;
    let (_, idle_subscription) = register_directly(&registry, "absent").await;
    let mut peer = common::identify_raw(&node, &identity, &subscription).await;

    // One request in flight on the peer (it never answers), one queued for an
    // agent that never polls.
    let send = |target: &SubscriptionId| {
        let (sender, target) = (node.sender(), target.clone());
        let request = common::echo(&target, "x");
        tokio::spawn(async move { sender.send(&target, request, vec![]).await })
    };
    let in_flight = send(&subscription);
    assert!(peer.read_message().await.unwrap().is_some());
    let queued = send(&idle_subscription);
    wait_until(
        Duration::from_secs(5),
        "the second request to queue",
        || node.stats().queued,
        |q| *q == 1,
    )
    .await;

    let stats = tokio::time::timeout(Duration::from_secs(5), node.kill())
        .await
        .expect("a kill does not wait for the drain bound");
    for call in [in_flight, queued] {
        let outcome = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome.result.unwrap_err(), FailReason::NodeKilled);
    }
    assert_eq!(
        (stats.requests_created, stats.requests_failed),
        (2, 2),
        "{stats:?}"
    );
    assert!(!node.is_running());

    // While down: work fails at once, and the port refuses connections.
    let late = node
        .send(&subscription, common::echo(&subscription, "y"), vec![])
        .await;
    assert_eq!(late.result.unwrap_err(), FailReason::NodeKilled);
    let refused = tokio::net::TcpStream::connect(address).await;
    assert!(refused.is_err(), "a killed node's port refuses connections");

    // Started again on the same address: a peer identifies and work completes.
    node.start_again().expect("the node starts on its old port");
    assert_eq!(node.comms_addr(), address);
    let mut peer = common::identify_raw(&node, &identity, &subscription).await;
    let call = send(&subscription);
    let Some(message) = peer.read_message().await.unwrap() else {
        panic!("the request arrives");
    };
    let octopoll_wire::Envelope::Request(request) = message.envelope else {
        panic!("a request");
    };
    let response = octopoll_wire::ResponseMessage {
        id: request.id.clone(),
        result: bson::Bson::String("hi".into()),
        error: None,
    };
    peer.write_message(&octopoll_wire::Envelope::Response(response), &[])
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let stats = node.stop().await;
    assert_eq!(
        stats.requests_created,
        stats.requests_completed + stats.requests_failed
    );
}

/// An agent polling `addr` with Halibut's backoff scaled down to `FAST`.
fn lone_agent(addr: SocketAddr) -> Agent {
    let identity = Identity::generate("retrier", KeyType::EcdsaP256).unwrap();
    let server = Identity::generate("some-node", KeyType::EcdsaP256).unwrap();
    let subscription = SubscriptionId::random(&mut rand::rng());
    let mut config = AgentConfig::default();
    config.polling.backoff = BackoffConfig::FAST;
    Agent {
        name: "retrier".into(),
        servers: trusted_servers(&[addr.into()], server.thumbprint(), &subscription),
        identity,
        subscription,
        config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_retries_a_reset_connect_five_times_as_halibut_does() {
    // A peer that takes each TCP connection and resets it: no TLS ever happens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = accepted.clone();
    let peer = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    let agent = lone_agent(addr).start().unwrap();
    let handle = agent.handle().clone();
    wait_until(
        Duration::from_secs(10),
        "two failed attempts",
        || handle.failures(),
        |&failures| failures >= 2,
    )
    .await;
    agent.stop().await;
    let connects = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (10..=15).contains(&connects),
        "5 connects per attempt (Halibut's SecureClient), 2 or 3 attempts: {connects}"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_ends_the_attempt_at_once() {
    // A port nobody listens on: every connect is refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let agent = lone_agent(addr).start().unwrap();
    let handle = agent.handle().clone();
    let started = std::time::Instant::now();
    wait_until(
        Duration::from_secs(10),
        "three failed attempts",
        || handle.failures(),
        |&failures| failures >= 3,
    )
    .await;
    agent.stop().await;
    // With retries inside each attempt, three attempts would take 3 × 4 × 20 ms
    // of retry sleeps on top of the backoff; without, only the backoff (≥ 2 × 100 ms).
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(200 + 240),
        "no retries within an attempt on a refusal: {took:?}"
    );
}

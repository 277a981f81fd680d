//! Halibut's Redis queue on a real `redis-server`: each node has a link of its
//! own, as separate processes have, so a request queued on one node reaches a
//! Tentacle connected only to another through Redis alone. Each way it ends is
//! checked: answered, never collected, its processor killed, Redis losing its data.
//!
//! Skipped without `redis-server` on a developer's machine; a failure under `CI=true`.

mod common;

use std::time::Duration;

use bson::Bson;
use octopoll_fleet::redis_server::LocalRedis;
use octopoll_lab::{Lab, LabConfig};
use octopoll_node::{FailReason, QueueMode, RedisQueueConfig, RedisQueueTiming};
use octopoll_wire::{ControlMessage, Envelope, Exchange, ResponseMessage};

use common::{echo, local_redis, register_raw_agent};

/// Halibut's timings scaled down so that each way a request ends shows in seconds.
fn quick() -> RedisQueueTiming {
    RedisQueueTiming {
        heartbeat_first: Duration::from_millis(200),
        heartbeat_every: Duration::from_millis(300),
        processor_silence: Duration::from_secs(2),
        sender_silence: Duration::from_secs(3),
        collected_check: Duration::from_millis(300),
        response_poll_step: Duration::from_millis(500),
        response_poll_max: Duration::from_secs(2),
        canary_every: Duration::from_millis(300),
        retry_for: Duration::from_secs(2),
        ..RedisQueueTiming::default()
    }
}

/// Two nodes sharing the Redis queue at `redis`, no agents of the lab's own.
async fn redis_lab(redis: &LocalRedis, prefix: &str, pickup: Duration) -> Lab {
    common::init_logging();
    let mut config = LabConfig::new(2, 0);
    config.cluster.queue = QueueMode::Redis;
    let mut queue = RedisQueueConfig::new(redis.url(), prefix);
    queue.timing = quick();
    config.cluster.redis_queue = Some(queue);
    config.cluster.node.pickup_timeout = pickup;
    Lab::start(config).await.expect("a lab on the Redis queue")
}

type Peer = Exchange<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Reads the next request the node hands `peer`.
async fn next_request(peer: &mut Peer) -> octopoll_wire::RequestMessage {
    let message = tokio::time::timeout(Duration::from_secs(10), peer.read_message())
        .await
        .expect("a request arrives")
        .unwrap()
        .unwrap();
    match message.envelope {
        Envelope::Request(request) => request,
        other => panic!("a request, got {other:?}"),
    }
}

/// Answers request `id` with `result`, then NEXT, and reads PROCEED.
async fn answer(peer: &mut Peer, id: String, result: Bson) {
    let response = Envelope::Response(ResponseMessage {
        id,
        error: None,
        result,
    });
    peer.write_message(&response, &[]).await.unwrap();
    peer.write_control(ControlMessage::Next).await.unwrap();
    assert_eq!(
        peer.read_control().await.unwrap(),
        Some(ControlMessage::Proceed)
    );
}

/// A raw Tentacle `name` connected to node 2 only, and the call of an echo
/// (`text`) node 1 queued for it: what reaches the Tentacle only through Redis.
async fn queued_across(
    lab: &Lab,
    name: &str,
    text: &str,
) -> (
    Peer,
    octopoll_wire::SubscriptionId,
    tokio::task::JoinHandle<octopoll_node::Outcome>,
) {
    let (identity, subscription) = register_raw_agent(lab, name).await;
    let peer = common::identify_raw(&lab.cluster.nodes()[1], &identity, &subscription).await;
    let sender = lab.cluster.nodes()[0].sender();
    let sub = subscription.clone();
    let request = echo(&subscription, text);
    let call = tokio::spawn(async move { sender.send(&sub, request, vec![]).await });
    (peer, subscription, call)
}

async fn redis_command<T: redis::FromRedisValue>(redis: &LocalRedis, args: &[&str]) -> T {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(&mut connection).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_on_one_node_reaches_a_tentacle_on_another_through_redis() {
    let Some(redis) = local_redis("the Redis queue").await else {
        return;
    };
    let lab = redis_lab(&redis, "reach", Duration::from_secs(30)).await;
    let [one, two] = [&lab.cluster.nodes()[0], &lab.cluster.nodes()[1]];
    let (mut peer, _, call) = queued_across(&lab, "web-01", "across").await;
    // Node 2 hands over what node 1 queued.
    let request = next_request(&mut peer).await;
    assert_eq!(request.service, "IEchoService");
    answer(&mut peer, request.id, Bson::String("across".into())).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("node 1's caller hears back")
        .unwrap();
    let reply = outcome.result.expect("answered");
    assert_eq!(reply.response.result, Bson::String("across".into()));
    assert!(outcome.pickup.is_some(), "the pickup time crossed over");
    assert_eq!(one.stats().requests_completed, 1);
    assert_eq!(two.stats().collected, 1, "node 2 collected it");
    assert_eq!(one.stats().queued, 0);

    // Halibut's key layout: one canary per node; the request and response hashes gone.
    let canaries: Vec<String> = redis_command(
        &redis,
        &["KEYS", "reach:HalibutRedis:string:WatchForDataLoss::*"],
    )
    .await;
    assert_eq!(canaries.len(), 2, "{canaries:?}");
    let left: Vec<String> = redis_command(&redis, &["KEYS", "reach:HalibutRedis:hash:*"]).await;
    assert!(left.is_empty(), "{left:?}");

    // Octopus's health endpoint, on each node's API.
    let status = common::api_get(&lab, two, "/api/serverstatus/redis").await;
    assert_eq!(
        status,
        serde_json::json!({"IsEnabled": true, "IsConfigured": true, "IsReachable": true})
    );
    lab.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_collects_is_taken_back_at_the_pickup_timeout() {
    let Some(redis) = local_redis("the Redis queue's pickup timeout").await else {
        return;
    };
    let lab = redis_lab(&redis, "pickup", Duration::from_secs(1)).await;
    let one = &lab.cluster.nodes()[0];
    let (_, subscription) = register_raw_agent(&lab, "web-02").await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        one.sender()
            .send(&subscription, echo(&subscription, "x"), vec![]),
    )
    .await
    .expect("it ends");
    assert_eq!(outcome.result.unwrap_err(), FailReason::PickupTimeout);
    let left: Vec<String> = redis_command(&redis, &["KEYS", "pickup:HalibutRedis:hash:*"]).await;
    assert!(
        left.is_empty(),
        "the sender took its request back: {left:?}"
    );
    assert_eq!(one.stats().queued, 0);
    lab.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_processor_is_killed_fails_when_its_heartbeats_stop() {
    let Some(redis) = local_redis("the Redis queue's heartbeats").await else {
        return;
    };
    let lab = redis_lab(&redis, "heartbeat", Duration::from_secs(30)).await;
    let [one, two] = [
        lab.cluster.nodes()[0].clone(),
        lab.cluster.nodes()[1].clone(),
    ];
    let (mut peer, _, call) = queued_across(&lab, "web-03", "never answered").await;
    // Collected by node 2, which then dies without a word.
    next_request(&mut peer).await;
    // Long enough for node 1 to see it collected and hear node 2's heartbeats.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = std::time::Instant::now();
    two.kill().await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("it ends")
        .unwrap();
    assert_eq!(outcome.result.unwrap_err(), FailReason::NodeLost);
    let took = killed.elapsed();
    println!("node-lost {took:?} after the kill");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "failed {took:?} after the kill: when 2 s of heartbeats were missed"
    );
    let (created, completed, failed) = (
        one.stats().requests_created,
        one.stats().requests_completed,
        one.stats().requests_failed,
    );
    assert_eq!((created, completed, failed), (1, 0, 1), "lost = 0");
    lab.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_fails_what_waits_on_it_and_work_goes_on() {
    let Some(redis) = local_redis("the Redis queue's canary").await else {
        return;
    };
    let lab = redis_lab(&redis, "canary", Duration::from_secs(30)).await;
    let one = &lab.cluster.nodes()[0];
    let (mut peer, subscription, call) = queued_across(&lab, "web-04", "held").await;
    let held = next_request(&mut peer).await;
    redis_command::<()>(&redis, &["FLUSHALL"]).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("it ends")
        .unwrap();
    assert_eq!(outcome.result.unwrap_err(), FailReason::QueueDataLost);
    // The Tentacle answers the old request late; the next one goes through.
    answer(&mut peer, held.id, Bson::Null).await;
    let sender = one.sender();
    let sub = subscription.clone();
    let call = tokio::spawn(async move { sender.send(&sub, echo(&sub, "after"), vec![]).await });
    let next = next_request(&mut peer).await;
    answer(&mut peer, next.id, Bson::Null).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    lab.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_polling_two_nodes_at_once_gets_each_request_exactly_once() {
    // A Tentacle mid-migration: one subscription polling node 1 and node 2 (the
    // per-node entry and the balancer's). Work queued on either reaches it once.
    let Some(redis) = local_redis("the Redis queue's exactly-once claim").await else {
        return;
    };
    let lab = redis_lab(&redis, "once", Duration::from_secs(30)).await;
    let nodes = lab.cluster.nodes();
    let (identity, subscription) = register_raw_agent(&lab, "web-05").await;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut peers = tokio::task::JoinSet::new();
    for node in &nodes[..2] {
        let mut peer = common::identify_raw(node, &identity, &subscription).await;
        let received = received.clone();
        peers.spawn(async move {
            loop {
                let request = next_request(&mut peer).await;
                received.lock().unwrap().push(request.id.clone());
                answer(&mut peer, request.id, Bson::Null).await;
            }
        });
    }
    const REQUESTS: usize = 20;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..REQUESTS {
        let sender = nodes[n % 2].sender();
        let sub = subscription.clone();
        calls.spawn(async move {
            sender
                .send(&sub, echo(&sub, &format!("#{n}")), vec![])
                .await
        });
    }
    while let Some(call) = calls.join_next().await {
        let outcome = tokio::time::timeout(Duration::from_secs(10), async { call.unwrap() })
            .await
            .unwrap();
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    }
    let mut ids = received.lock().unwrap().clone();
    assert_eq!(
        ids.len(),
        REQUESTS,
        "each request handed over once: {ids:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), REQUESTS, "no request twice");
    let collected: u64 = nodes.iter().map(|n| n.stats().collected).sum();
    assert_eq!(collected, REQUESTS as u64);
    peers.abort_all();
    lab.stop().await;
    redis.stop().await;
}

/// A run over the Redis queue (octopoll's own redis-server) with `fault`, at
/// quick timings but Halibut's 30 s of retries, and `long_poll` as each
/// collector's wait: its report.
async fn run_on_the_redis_queue(
    fault: octopoll_scenario::fault::Fault,
    long_poll: Duration,
) -> octopoll_report::Report {
    use octopoll_scenario::progress::Progress;
    use octopoll_scenario::{execute, RunConfig};
    common::init_logging();
    let mut lab = LabConfig::new(3, 10);
    lab.cluster.queue = QueueMode::Redis;
    lab.cluster.node.long_poll = long_poll;
    lab.chaos = fault.action.is_network();
    let mut queue = RedisQueueConfig::new("", "");
    queue.timing = RedisQueueTiming {
        retry_for: Duration::from_secs(30),
        ..quick()
    };
    lab.cluster.redis_queue = Some(queue);
    let mut config = RunConfig::new(lab);
    config.duration = Duration::from_secs(8);
    config.rate = 20.0;
    config.mesh_timeout = Duration::from_secs(20);
    config.drain = Duration::from_secs(10);
    config.max_script_time = Duration::from_millis(50);
    config.faults = vec![fault];
    let report = execute(config, &mut Progress::stderr(true))
        .await
        .expect("the run completes")
        .report;
    println!("{report}");
    report
}

/// [`run_on_the_redis_queue`] with a Redis fault at 3 s.
async fn run_with_redis_fault(
    action: octopoll_scenario::fault::RedisAction,
) -> octopoll_report::Report {
    use octopoll_scenario::fault::{Action, Fault};
    let fault = Fault {
        at: Duration::from_secs(3),
        action: Action::Redis(action),
        nodes: Vec::new(),
        duration: (action == octopoll_scenario::fault::RedisAction::Down)
            .then_some(Duration::from_secs(1)),
        link: Default::default(),
    };
    run_on_the_redis_queue(fault, Duration::from_secs(30)).await
}

/// What a Redis that lost its data may cost: requests it held fail with
/// `queue-data-lost` (the canary), none is lost, and work goes on after.
fn assert_only_data_lost_and_work_goes_on(report: &octopoll_report::Report) {
    assert_eq!(report.requests.lost, 0, "{report}");
    assert_eq!(report.requests.counted_twice, 0, "{report}");
    for (reason, count) in &report.failures_by_reason {
        assert_eq!(
            reason,
            FailReason::QueueDataLost.as_str(),
            "{count} failed otherwise\n{report}"
        );
    }
    assert!(
        report.requests.completed * 10 >= report.requests.queued * 7,
        "most of the work completes, before and after\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_redis_restarts_empty_loses_nothing_and_goes_on() {
    if !common::redis_installed("a run on the Redis queue") {
        return;
    }
    let report = run_with_redis_fault(octopoll_scenario::fault::RedisAction::Restart).await;
    assert_only_data_lost_and_work_goes_on(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_redis_is_down_a_second_rides_it_out_on_retries() {
    if !common::redis_installed("a run on the Redis queue") {
        return;
    }
    let report = run_with_redis_fault(octopoll_scenario::fault::RedisAction::Down).await;
    assert_only_data_lost_and_work_goes_on(&report);
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.fault.contains("redis-down redis")),
        "the fault shows in the report\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_link_to_redis_down_delays_its_work_and_loses_nothing() {
    use octopoll_lab::actions::NetworkAction;
    use octopoll_lab::fronts::Link;
    use octopoll_node::NodeId;
    use octopoll_scenario::fault::{Action, Fault};
    if !common::redis_installed("a run on the Redis queue") {
        return;
    }
    // Node 2's own way to Redis cut from 3 s to 5 s of 8; the others' intact.
    let fault = Fault {
        at: Duration::from_secs(3),
        action: Action::Network(NetworkAction::Down),
        nodes: vec![NodeId(2)],
        duration: Some(Duration::from_secs(2)),
        link: Link::Redis,
    };
    let report = run_on_the_redis_queue(fault, Duration::from_secs(30)).await;
    assert_eq!(report.requests.lost, 0, "{report}");
    assert_eq!(report.requests.counted_twice, 0, "{report}");
    assert!(report.faults[0].error.is_none(), "{report}");
    assert!(
        report.faults[0].fault.contains("down node-2-redis"),
        "the report names the link\n{report}"
    );
    // Work queued on node 2 meanwhile waits on its retries until the link is
    // back, then goes through.
    assert!(
        report.end_to_end_ms.max >= 1_000.0,
        "node 2's work waited for its link\n{report}"
    );
    // At most a request node 2 was processing at the cut fails, when its
    // sender stops hearing node 2's heartbeats.
    for (reason, count) in &report.failures_by_reason {
        assert_eq!(
            reason,
            FailReason::NodeLost.as_str(),
            "{count} failed otherwise\n{report}"
        );
    }
    assert!(
        report.requests.completed * 10 >= report.requests.queued * 9,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_lose_every_pulse_still_collect_on_their_long_poll_timeout() {
    use octopoll_lab::actions::NodeAction;
    use octopoll_node::NodeId;
    use octopoll_scenario::fault::{Action, Fault};
    if !common::redis_installed("a run on the Redis queue") {
        return;
    }
    // Every node deaf to pulses from 3 s to 5 s of 8; collectors wait 1.5 s at most.
    let fault = Fault {
        at: Duration::from_secs(3),
        action: Action::Node(NodeAction::LosePulses),
        nodes: vec![NodeId(1), NodeId(2), NodeId(3)],
        duration: Some(Duration::from_secs(2)),
        link: Default::default(),
    };
    let report = run_on_the_redis_queue(fault, Duration::from_millis(1500)).await;
    assert_eq!(report.requests.lost, 0, "{report}");
    assert_eq!(
        report.requests.failed, 0,
        "nothing fails, it is only late\n{report}"
    );
    assert_eq!(
        report.requests.completed, report.requests.queued,
        "{report}"
    );
    assert!(report.faults[0].error.is_none(), "{report}");
    // Without a pulse a request waits for a collector's timeout: up to 1.5 s
    // late, where a pulse hands it over in milliseconds.
    assert!(
        report.pickup_ms.max >= 300.0,
        "pulses were lost: some request waited for a timeout\n{report}"
    );
    assert!(report.pickup_ms.max <= 2_500.0, "{report}");
    assert!(
        report.pickup_ms.p50 < 300.0,
        "before and after, pulses work\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_sender_died_is_abandoned_not_stored() {
    let Some(redis) = local_redis("the Redis queue's sender heartbeats").await else {
        return;
    };
    let lab = redis_lab(&redis, "abandon", Duration::from_secs(30)).await;
    let one = lab.cluster.nodes()[0].clone();
    let (mut peer, _, _call) = queued_across(&lab, "web-06", "orphan").await;
    let request = next_request(&mut peer).await;
    // The sending node dies; the processor stops hearing it and, past 3 s of
    // silence, abandons the request.
    one.kill().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    answer(&mut peer, request.id, Bson::Null).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let responses: Vec<String> =
        redis_command(&redis, &["KEYS", "abandon:HalibutRedis:hash:*Response*"]).await;
    assert!(
        responses.is_empty(),
        "no response kept for a dead sender: {responses:?}"
    );
    lab.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collectors_link_to_redis_that_blips_still_collects_when_it_heals() {
    use octopoll_node::registry::NewMachine;
    use octopoll_node::{MachineRegistry, Node, NodeConfig, NodeId, QueueSource};
    use octopoll_pki::{ApiKey, Identity, KeyType};

    common::init_logging();
    let Some(redis) = common::local_redis_on_tcp("the Redis queue's link blip").await else {
        return;
    };
    // Node 2 reaches Redis through a chaos proxy; node 1 directly.
    let chaos = octopoll_chaos::Chaos::new();
    let proxy = chaos
        .create(octopoll_chaos::ProxyConfig::new(
            "node-2-redis",
            "127.0.0.1:0".parse().unwrap(),
            redis.url().trim_start_matches("redis://").to_owned(),
        ))
        .await
        .unwrap();
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let registry = MachineRegistry::new();
    let key = ApiKey::random();
    let mut nodes = Vec::new();
    for (n, url) in [(1, redis.url()), (2, format!("redis://{}", proxy.listen))] {
        let config = NodeConfig::new(NodeId(n), key.clone());
        let mut queue = RedisQueueConfig::new(url, "blip");
        queue.timing = quick();
        let link = octopoll_node::queue::RedisQueueLink::connect(&queue, &config)
            .await
            .unwrap();
        let bind = || octopoll_node::tcp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        nodes.push(
            Node::start_with_queue(
                config,
                &server,
                registry.clone(),
                QueueSource::Redis(link),
                bind(),
                bind(),
            )
            .unwrap(),
        );
    }
    let agent = Identity::generate("web-07", KeyType::EcdsaP256).unwrap();
    let subscription = octopoll_wire::SubscriptionId::random(&mut rand::rng());
    registry
        .register(NewMachine {
            name: "web-07".into(),
            thumbprint: agent.thumbprint(),
            endpoint: subscription.clone().into(),
            roles: vec![],
            environments: vec![],
        })
        .await
        .unwrap();
    let mut peer = common::identify_raw(&nodes[1], &agent, &subscription).await;

    // Node 2's link holds every byte for 2 s while node 1 queues work.
    let hold = chaos
        .add_toxic(
            "node-2-redis",
            octopoll_chaos::Toxic::new(
                octopoll_chaos::ToxicKind::Timeout(octopoll_chaos::toxic::Timeout { timeout: 0 }),
                octopoll_chaos::Stream::Downstream,
            ),
        )
        .await
        .unwrap();
    let sender = nodes[0].sender();
    let sub = subscription.clone();
    let call = tokio::spawn(async move {
        sender
            .send(&sub, echo(&sub, "through a blip"), vec![])
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    chaos
        .remove_toxic("node-2-redis", &hold.name)
        .await
        .unwrap();
    let request = next_request(&mut peer).await;
    answer(&mut peer, request.id, Bson::Null).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("it ends")
        .unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let pickup = outcome.pickup.expect("collected");
    assert!(
        pickup >= Duration::from_millis(1900),
        "collected once the link healed: {pickup:?}"
    );
    for node in nodes {
        node.stop().await;
    }
    chaos.shutdown().await;
    redis.stop().await;
}

//! Bad input from a peer ends that one connection with a clear, counted reason; the
//! node keeps serving everyone else and the request in flight is failed, not lost.

mod common;

use std::time::Duration;

use bson::Bson;
use octopoll_lab::{Lab, LabConfig};
use octopoll_node::FailReason;
use octopoll_wire::{Envelope, Limits, ResponseMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{connect_raw, register_raw_agent, start_lab, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_an_identity_line_closes_only_that_connection() {
    let lab = start_lab(2, 2).await;
    common::ready(&lab).await;
    let (identity, _) = register_raw_agent(&lab, "garbler").await;
    let node = &lab.cluster.nodes()[0];
    let mut exchange = connect_raw(node, &identity).await;
    exchange.write_preamble().await.unwrap();
    exchange
        .get_mut()
        .write_all(b"\x00\x01GARBAGE \xff\r\n\r\n")
        .await
        .unwrap();
    exchange.get_mut().flush().await.unwrap();
    assert!(
        exchange.read_identity().await.is_err(),
        "the node closes without MX-SERVER"
    );
    let stats = wait_until(
        Duration::from_secs(5),
        "the protocol error to be counted",
        || node.stats(),
        |s| s.protocol_errors == 1,
    )
    .await;
    assert_eq!(
        stats.connections, 2,
        "the swarm's connections are untouched"
    );
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_halibut_probe_gets_the_html_page() {
    let lab = start_lab(1, 1).await;
    common::ready(&lab).await;
    let (identity, _) = register_raw_agent(&lab, "browser").await;
    let node = &lab.cluster.nodes()[0];
    let mut exchange = connect_raw(node, &identity).await;
    exchange
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    exchange.get_mut().flush().await.unwrap();
    let mut page = Vec::new();
    let _ = exchange.get_mut().read_to_end(&mut page).await;
    assert!(
        page.starts_with(b"HTTP/1.0 200 OK"),
        "{}",
        String::from_utf8_lossy(&page)
    );
    wait_until(
        Duration::from_secs(5),
        "the probe to be counted",
        || node.stats(),
        |s| s.probes == 1,
    )
    .await;
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

/// A peer that identifies, takes a request and answers it with `answer`.
async fn answer_with(lab: &Lab, name: &str, answer: impl FnOnce(String) -> Envelope) -> FailReason {
    let (mut exchange, id, call) = common::collect_a_request(lab, name).await;
    let _ = exchange.write_message(&answer(id), &[]).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    outcome.result.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_fails_its_request_and_that_connection_only() {
    common::init_logging();
    let mut config = LabConfig::new(1, 2);
    config.cluster.node.limits = Limits {
        max_message_bytes: 64 * 1024,
        ..Limits::default()
    };
    let lab = Lab::start(config).await.unwrap();
    common::ready(&lab).await;
    let reason = answer_with(&lab, "bloater", |id| {
        Envelope::Response(ResponseMessage {
            id,
            error: None,
            result: Bson::String("a".repeat(1024 * 1024)),
        })
    })
    .await;
    assert_eq!(reason, FailReason::ProtocolError);
    let node = &lab.cluster.nodes()[0];
    let stats = wait_until(
        Duration::from_secs(5),
        "the oversized message to be counted",
        || node.stats(),
        |s| s.protocol_errors == 1,
    )
    .await;
    assert_eq!(stats.connections, 2);
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_for_another_request_is_an_anomaly_not_a_completion() {
    let lab = start_lab(1, 1).await;
    common::ready(&lab).await;
    let reason = answer_with(&lab, "confused", |_| {
        Envelope::Response(ResponseMessage {
            id: "IEchoService::SayHelloAsync[99] / not-the-one".into(),
            error: None,
            result: Bson::Null,
        })
    })
    .await;
    assert_eq!(reason, FailReason::ProtocolError);
    let node = &lab.cluster.nodes()[0];
    wait_until(
        Duration::from_secs(5),
        "the anomaly to be counted",
        || node.stats(),
        |s| s.anomalies == 1,
    )
    .await;
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_holding_the_only_handshake_turn_holds_up_newcomers_not_the_swarm() {
    common::init_logging();
    let mut config = LabConfig::new(1, 2);
    config.cluster.node.max_concurrent_handshakes = 1;
    config.cluster.node.handshake_queue_timeout = Duration::from_millis(300);
    let lab = Lab::start(config).await.unwrap();
    common::ready(&lab).await;
    let (identity, subscription) = register_raw_agent(&lab, "newcomer").await;
    let node = &lab.cluster.nodes()[0];
    // Connected, and silent: it holds the node's one turn at the handshake.
    let silent = tokio::net::TcpStream::connect(node.comms_addr())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the silent peer to take the turn",
        || node.stats().handshaking,
        |&n| n == 1,
    )
    .await;
    let tls = octopoll_pki::tls::polling_client_config(&identity, node.thumbprint()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(node.comms_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("the node answers within its queue bound");
    assert!(
        refused.is_err(),
        "no turn at the handshake within 300 ms: the newcomer is closed"
    );
    wait_until(
        Duration::from_secs(5),
        "the newcomer's wait to be counted as a failed handshake",
        || node.stats().refused_other,
        |&n| n >= 1,
    )
    .await;
    // Connections that had identified were never in the queue.
    common::swarm_still_works(&lab).await;
    // The turn comes free when the silent peer goes.
    drop(silent);
    let exchange = tokio::time::timeout(
        Duration::from_secs(5),
        common::identify_raw(node, &identity, &subscription),
    )
    .await
    .expect("a free turn: the newcomer identifies");
    drop(exchange);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sent_nested_code_with_scope_drops_that_connection_and_polls_again() {
    use octopoll_agent::{Agent, AgentConfig, BackoffConfig, ServerAddress, TrustedServer};
    use octopoll_pki::{Identity, KeyType};
    common::init_logging();
    let agent_identity = Identity::generate("agent", KeyType::EcdsaP256).unwrap();
    let node_identity = Identity::generate("node", KeyType::EcdsaP256).unwrap();
    // A node that sends every poller 10,000 nested code-with-scope values.
    let (address, connections, serving) = common::hostile_peer(
        &node_identity,
        agent_identity.thumbprint(),
        common::nested_code_with_scope(10_000),
        false,
    )
    .await;
    let subscription = octopoll_wire::SubscriptionId::random(&mut rand::rng());
    let mut config = AgentConfig::default();
    config.polling.backoff = BackoffConfig::FAST;
    let agent = Agent {
        name: "target".into(),
        identity: agent_identity,
        subscription: subscription.clone(),
        servers: vec![TrustedServer {
            thumbprint: node_identity.thumbprint(),
            address: ServerAddress {
                host: address.ip().to_string(),
                port: address.port(),
            },
            subscription,
        }],
        config,
    }
    .start()
    .unwrap();
    // The agent lives through it: it drops that connection and polls again.
    wait_until(
        Duration::from_secs(10),
        "the agent polls again after each bad message",
        || connections.load(std::sync::atomic::Ordering::SeqCst),
        |&n| n >= 3,
    )
    .await;
    assert!(agent.failures() >= 2, "{}", agent.failures());
    let errors = agent.last_errors().join("; ");
    assert!(errors.contains("Halibut never writes"), "{errors}");
    agent.stop().await;
    serving.abort();
}

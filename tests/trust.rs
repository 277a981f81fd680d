//! Pinning both ways: nodes accept only registered certificates with their own
//! subscription; agents accept only the pinned node certificate. A refused peer
//! never disturbs the others.

mod common;

use std::time::Duration;

use octopoll_agent::swarm::trusted_servers;
use octopoll_agent::{Agent, AgentConfig, BackoffConfig, ServerAddress};
use octopoll_lab::Lab;
use octopoll_pki::{Identity, KeyType};
use octopoll_wire::{RemoteIdentity, SubscriptionId};

use common::{connect_raw, register_raw_agent, start_lab, wait_until};

fn fast_config() -> AgentConfig {
    let mut config = AgentConfig::default();
    config.polling.backoff = BackoffConfig::FAST;
    config
}

fn node_addresses(lab: &Lab) -> Vec<ServerAddress> {
    lab.cluster
        .nodes()
        .iter()
        .map(|n| n.comms_addr().into())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_agent_is_refused_and_counted_by_every_node() {
    let lab = start_lab(3, 3).await;
    common::ready(&lab).await;

    let stranger = Identity::generate("stranger", KeyType::EcdsaP256).unwrap();
    let subscription = SubscriptionId::random(&mut rand::rng());
    let agent = Agent {
        name: "stranger".into(),
        servers: trusted_servers(
            &node_addresses(&lab),
            lab.cluster.identity().thumbprint(),
            &subscription,
        ),
        identity: stranger.clone(),
        subscription,
        config: fast_config(),
    };
    let handle = agent.start().unwrap();

    let stats = wait_until(
        Duration::from_secs(10),
        "every node to refuse the stranger",
        || {
            lab.cluster
                .nodes()
                .iter()
                .map(|n| n.stats())
                .collect::<Vec<_>>()
        },
        |stats| stats.iter().all(|s| s.refused_untrusted >= 1),
    )
    .await;
    assert!(
        stats.iter().all(|s| s.connections == 3),
        "only the swarm is connected: {stats:?}"
    );
    assert_eq!(handle.connections(), 0);
    let errors = wait_until(
        Duration::from_secs(5),
        "the stranger to see its refusals",
        || handle.last_errors(),
        |e| e.len() == 3,
    )
    .await;
    let own = stranger.thumbprint().to_string();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("refused this agent's certificate") && e.contains(&own)),
        "{errors:?}"
    );

    common::swarm_still_works(&lab).await;
    handle.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pinning_the_wrong_thumbprint_refuses_the_node_naming_both() {
    let lab = start_lab(2, 2).await;
    common::ready(&lab).await;

    let (identity, subscription) = register_raw_agent(&lab, "suspicious").await;
    let impostor = Identity::generate("impostor", KeyType::EcdsaP256).unwrap();
    let agent = Agent {
        name: "suspicious".into(),
        servers: trusted_servers(&node_addresses(&lab), impostor.thumbprint(), &subscription),
        identity,
        subscription,
        config: fast_config(),
    };
    let handle = agent.start().unwrap();
    let errors = wait_until(
        Duration::from_secs(10),
        "both links to refuse their node",
        || handle.last_errors(),
        |e| e.len() == 2,
    )
    .await;
    let real = lab.cluster.identity().thumbprint().to_string();
    for error in &errors {
        assert!(
            error.contains(&real) && error.contains(&impostor.thumbprint().to_string()),
            "{error}"
        );
        assert!(error.contains("presented certificate"), "{error}");
    }
    assert_eq!(handle.connections(), 0);
    assert!(lab
        .cluster
        .nodes()
        .iter()
        .all(|n| n.stats().connections == 2));

    common::swarm_still_works(&lab).await;
    handle.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_certificate_claiming_another_subscription_is_refused() {
    let lab = start_lab(1, 1).await;
    common::ready(&lab).await;
    let (identity, _own) = register_raw_agent(&lab, "borrower").await;
    let victim = lab.swarm.agents()[0].subscription().clone();

    let node = &lab.cluster.nodes()[0];
    let mut exchange = connect_raw(node, &identity).await;
    exchange.write_preamble().await.unwrap();
    exchange
        .write_identity(&RemoteIdentity::Subscriber(victim))
        .await
        .unwrap();
    let answer = exchange.read_identity().await;
    assert!(
        answer.is_err(),
        "the node closed instead of answering MX-SERVER: {answer:?}"
    );
    wait_until(
        Duration::from_secs(5),
        "the refusal to be counted",
        || node.stats(),
        |s| s.refused_subscription == 1,
    )
    .await;

    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_machine_is_refused_on_its_next_connection() {
    let lab = start_lab(1, 1).await;
    let (identity, subscription) = register_raw_agent(&lab, "leaver").await;
    let node = &lab.cluster.nodes()[0];
    drop(common::identify_raw(node, &identity, &subscription).await);
    lab.cluster
        .registry()
        .deregister(&identity.thumbprint())
        .await
        .unwrap();
    let mut exchange = connect_raw(node, &identity).await;
    exchange.write_preamble().await.unwrap();
    let _ = exchange
        .write_identity(&RemoteIdentity::Subscriber(subscription))
        .await;
    assert!(
        exchange.read_identity().await.is_err(),
        "a refused peer is never answered MX-SERVER"
    );
    wait_until(
        Duration::from_secs(5),
        "the refusal to be counted",
        || node.stats(),
        |s| s.refused_untrusted == 1,
    )
    .await;
    lab.stop().await;
}

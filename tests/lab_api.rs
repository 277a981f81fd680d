//! The lab as a Rust test author uses it (`octopoll_lab::Lab`): ready or a clear
//! error saying how far the mesh got, requests to an agent through any node, node
//! actions, clear errors for a node or agent that does not exist, and a drop that
//! ends everything it started.

mod common;

use std::time::Duration;

use octopoll_lab::{Lab, LabConfig, LabError, NodeAction};
use octopoll_node::{FailReason, NodeId};
use octopoll_wire::contracts::echo;
use octopoll_wire::ServiceEndPoint;

use common::wait_until;

const READY: Duration = Duration::from_secs(30);

fn hello(lab: &Lab, agent: usize, text: &str) -> octopoll_wire::RequestMessage {
    let endpoint = ServiceEndPoint::new(lab.agent(agent).unwrap().subscription().as_str(), "");
    echo::request(endpoint, text, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_says_how_far_the_mesh_got_and_what_does_not_exist_and_keeps_working() {
    common::init_logging();
    let lab = Lab::start_ready(LabConfig::new(2, 3), READY).await.unwrap();
    assert_eq!(lab.machines().len(), 3);

    lab.act(2, NodeAction::Kill).await.unwrap();
    let error = lab
        .wait_for_full_coverage(Duration::from_millis(300))
        .await
        .unwrap_err();
    let LabError::NotCovered { waited, coverage } = &error else {
        panic!("{error}");
    };
    assert!(*waited >= Duration::from_millis(300));
    assert_eq!((coverage.polling_pairs, coverage.total_pairs), (3, 6));
    assert!(
        error
            .to_string()
            .contains("3 of 6 agent × node pairs were polling"),
        "{error}"
    );

    // A request on the killed node fails at once; node 1 still answers.
    let outcome = lab.send(2, 0, hello(&lab, 0, "lost")).await.unwrap();
    assert_eq!(outcome.result.err(), Some(FailReason::NodeKilled));
    let reply = lab.send(1, 2, hello(&lab, 2, "here")).await.unwrap();
    assert_eq!(reply.result.unwrap().response.result, echo::answer("here"));

    let missing_node = lab.act(9, NodeAction::Kill).await.unwrap_err();
    assert!(matches!(missing_node, LabError::NoSuchNode(NodeId(9))));
    assert_eq!(missing_node.to_string(), "there is no node-9 in this lab");
    let missing_agent = lab.agent(3).unwrap_err();
    assert_eq!(
        missing_agent.to_string(),
        "there is no agent 3: the lab has 3 (0 to 2)"
    );

    lab.act(2, NodeAction::Start).await.unwrap();
    lab.wait_for_full_coverage(READY).await.unwrap();
    let reply = lab.send(2, 1, hello(&lab, 1, "back")).await.unwrap();
    assert_eq!(reply.result.unwrap().response.result, echo::answer("back"));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_lab_ends_its_nodes_and_frees_their_ports() {
    common::init_logging();
    let mut config = LabConfig::new(2, 2);
    config.chaos = true;
    let lab = Lab::start_ready(config, READY).await.unwrap();
    let nodes: Vec<_> = lab.cluster.nodes().to_vec();
    let mut addresses: Vec<_> = nodes.iter().map(|n| n.comms_addr()).collect();
    addresses.extend(lab.fronts().unwrap().addresses());
    drop(lab);
    assert!(nodes.iter().all(|n| !n.is_running()));
    for address in addresses {
        wait_until(
            Duration::from_secs(5),
            &format!("{address} to stop listening"),
            || std::net::TcpStream::connect(address).is_ok(),
            |connected| !connected,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_swarm_closes_every_polling_connection() {
    common::init_logging();
    let lab = Lab::start_ready(LabConfig::new(2, 4), READY).await.unwrap();
    let Lab { cluster, swarm, .. } = lab;
    assert_eq!(cluster.connections(), 8);
    drop(swarm);
    wait_until(
        Duration::from_secs(10),
        "the agents' connections to close",
        || cluster.connections(),
        |held| *held == 0,
    )
    .await;
    cluster.stop().await;
}

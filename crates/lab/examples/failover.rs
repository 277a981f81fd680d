//! A failover test, written as a program: three nodes, twenty polling agents.
//! Node 2 is killed; a request queued on it fails at once with `node-killed`,
//! while every agent still answers through nodes 1 and 3. Node 2 starts again
//! and every agent polls it again.
//!
//! ```sh
//! cargo run -p octopoll-lab --example failover
//! ```

use std::time::Duration;

use octopoll_lab::{Lab, LabConfig, NodeAction};
use octopoll_node::FailReason;
use octopoll_wire::contracts::echo;
use octopoll_wire::ServiceEndPoint;

const AGENTS: usize = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::start_ready(LabConfig::new(3, AGENTS), Duration::from_secs(30)).await?;
    println!("{} agents poll all 3 nodes", lab.machines().len());

    lab.act(2, NodeAction::Kill).await?;
    let outcome = lab
        .send(2, 0, say_hello(&lab, 0, "to a dead node")?)
        .await?;
    assert_eq!(outcome.result.err(), Some(FailReason::NodeKilled));
    for node in [1, 3] {
        for agent in 0..AGENTS {
            let reply = lab
                .send(node, agent, say_hello(&lab, agent, "after the kill")?)
                .await?;
            assert_eq!(
                reply.result?.response.result,
                echo::answer("after the kill")
            );
        }
    }
    println!(
        "node 2 killed: its request failed node-killed; nodes 1 and 3 answered for every agent"
    );

    lab.act(2, NodeAction::Start).await?;
    let healed = lab.wait_for_full_coverage(Duration::from_secs(30)).await?;
    let reply = lab.send(2, 0, say_hello(&lab, 0, "back")?).await?;
    assert_eq!(reply.result?.response.result, echo::answer("back"));
    println!("node 2 started again: every agent polls it again after {healed:.1?}");

    lab.stop().await;
    Ok(())
}

/// `IEchoService.SayHello(text)` for agent `agent`.
fn say_hello(
    lab: &Lab,
    agent: usize,
    text: &str,
) -> Result<octopoll_wire::RequestMessage, octopoll_lab::LabError> {
    let endpoint = ServiceEndPoint::new(lab.agent(agent)?.subscription().as_str(), "");
    Ok(echo::request(endpoint, text, 1))
}

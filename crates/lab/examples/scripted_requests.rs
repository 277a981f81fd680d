//! Scripted requests to one polling agent, with assertions on its responses, as a
//! Tentacle test would make them: the health check's `GetCapabilities`, an echo,
//! and a script whose output and exit code come back in `ScriptStatusResponseV2`.
//!
//! ```sh
//! cargo run -p octopoll-lab --example scripted_requests
//! ```

use std::time::Duration;

use octopoll_lab::{Lab, LabConfig};
use octopoll_wire::contracts::script::{self, ProcessState, ScriptStatus, StartScript};
use octopoll_wire::contracts::{capabilities, echo};
use octopoll_wire::{RequestMessage, ServiceEndPoint};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::start_ready(LabConfig::new(2, 1), Duration::from_secs(30)).await?;
    let agent = ServiceEndPoint::new(lab.agent(0)?.subscription().as_str(), "");

    // What Octopus's health check asks.
    let reply = lab
        .send(1, 0, capabilities::request(agent.clone(), 1))
        .await?
        .result?;
    let supported =
        capabilities::parse_response(&reply.response.result).ok_or("no capabilities")?;
    assert!(
        supported.iter().any(|c| c == script::SERVICE),
        "{supported:?}"
    );
    println!("capabilities: {}", supported.join(", "));

    // The same agent, through the other node.
    let reply = lab
        .send(2, 0, echo::request(agent.clone(), "through node 2", 2))
        .await?
        .result?;
    assert_eq!(reply.response.result, echo::answer("through node 2"));

    // A script: its log lines are its `echo`s, its exit code its `exit`.
    let start = StartScript {
        ticket: "ticket-1".into(),
        script_body: "echo deploying\nsleep 0.1\necho done\nexit 3".into(),
        task_id: "ServerTasks-1".into(),
        wait_for_finish: Some(Duration::from_secs(5)),
    };
    let request = RequestMessage::call(
        script::SERVICE,
        script::START_SCRIPT,
        start.params(),
        agent,
        3,
    );
    let reply = lab.send(1, 0, request).await?.result?;
    let status = ScriptStatus::from_bson(&reply.response.result).ok_or("not a script status")?;
    let lines: Vec<&str> = status.logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(status.state, ProcessState::Complete, "{status:?}");
    assert_eq!(status.exit_code, 3);
    assert_eq!(lines, ["deploying", "done"]);
    println!("script: {lines:?}, exit code {}", status.exit_code);

    lab.stop().await;
    Ok(())
}

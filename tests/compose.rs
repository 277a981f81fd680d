//! The multi-container cluster of `docker-compose.yml`, for real, in the layout
//! Octopus recommends: HAProxy in front of three node containers, the nodes
//! sharing Halibut's Redis queue, a Redis registry, the one-shot certificate
//! maker and a swarm of 200 agents that each poll the balancer once. The node
//! whose caller holds work is killed and started again, the queue's Redis is
//! stopped (the nodes' `/api/serverstatus/redis`, through the balancer, says
//! so) and started empty, and nothing is lost; everything is torn down, also
//! on failure.
//!
//! Where no Docker daemon answers, the test is skipped with a message, except
//! under `CI=true`, where that is a failure. On a machine with no image
//! registry, build the local base image first and point the image variables at
//! it (`.ci/run` does): `export OCTOPOLL_BASE_IMAGE=$(.ci/docker-base)
//! HAPROXY_IMAGE=$OCTOPOLL_BASE_IMAGE REDIS_IMAGE=$OCTOPOLL_BASE_IMAGE`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use octopoll_fleet::remote::RemoteNode;
use octopoll_node::{FailReason, NodeId, RedisStatus};
use octopoll_pki::{ApiKey, Thumbprint};
use octopoll_wire::contracts::{echo, script};
use octopoll_wire::{RequestMessage, ServiceEndPoint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const AGENTS: usize = 200;
/// A ceiling on every wait.
const WITHIN: Duration = Duration::from_secs(150);

/// How this machine runs compose: `docker-compose` (1.29) or `docker compose` (v2).
fn compose_program() -> Option<Vec<String>> {
    let works = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker-compose"]) {
        Some(vec!["docker-compose".into()])
    } else if works(&["docker", "compose"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        None
    }
}

/// Whether the images the compose file names can be had: the variables point
/// somewhere (a local base image), or the public images are here or can be pulled.
fn images_available() -> Result<(), String> {
    if std::env::var_os("OCTOPOLL_BASE_IMAGE").is_some() {
        return Ok(());
    }
    for image in ["debian:bookworm-slim", "haproxy:2.6", "redis:7"] {
        let here = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        let pulled = here
            || Command::new("docker")
                .args(["pull", "-q", image])
                .output()
                .is_ok_and(|o| o.status.success());
        if !pulled {
            return Err(format!(
                "{image} cannot be pulled (no image registry?): build the local base image with \
                 `export OCTOPOLL_BASE_IMAGE=$(.ci/docker-base) HAPROXY_IMAGE=$OCTOPOLL_BASE_IMAGE \
                 REDIS_IMAGE=$OCTOPOLL_BASE_IMAGE`"
            ));
        }
    }
    Ok(())
}

/// Whether Docker and compose are here; under `CI=true` their absence fails.
fn docker_available() -> Option<Vec<String>> {
    let daemon = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let compose = compose_program();
    let images = if daemon { images_available() } else { Ok(()) };
    match (daemon, compose, images) {
        (true, Some(compose), Ok(())) => Some(compose),
        (daemon, compose, images) => {
            let why = if !daemon {
                "no Docker daemon answers `docker info`".to_string()
            } else if compose.is_none() {
                "neither docker-compose nor `docker compose` is installed".to_string()
            } else {
                images.err().unwrap_or_default()
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("the compose test needs Docker in CI: {why} (compose: {compose:?})");
            }
            eprintln!("skipping the compose test: {why}");
            None
        }
    }
}

/// `n` distinct free ports of 127.0.0.1: all bound at once, then released, so no
/// two are the same.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One compose project: its command, name, environment and ports. Dropping it
/// takes everything down (`down -v`: containers, network, volume).
struct Project {
    compose: Vec<String>,
    name: String,
    root: PathBuf,
    env: Vec<(String, String)>,
    controls: [u16; 3],
    /// The balancer's 443 (every node's API), on the host.
    api: u16,
    key: String,
}

impl Project {
    fn new(compose: Vec<String>) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        // The debug binary cargo built for the tests, beside this test's own.
        let exe = std::env::current_exe().unwrap();
        let binary = exe.parent().unwrap().parent().unwrap().join("octopoll");
        assert!(
            binary.is_file(),
            "{} is missing: build it with `cargo build -p octopoll-cli`",
            binary.display()
        );
        let relative = binary
            .strip_prefix(&root)
            .expect("the binary is inside the repository's target directory")
            .to_owned();
        let ports = free_ports(8);
        let controls = [ports[0], ports[1], ports[2]];
        let key = format!("API-COMPOSE{}", std::process::id());
        let mut env = vec![
            ("OCTOPOLL_BUILD_TARGET".into(), "prebuilt".into()),
            ("OCTOPOLL_BINARY".into(), relative.display().to_string()),
            ("OCTOPOLL_API_KEY".into(), key.clone()),
            ("SWARM_AGENTS".into(), AGENTS.to_string()),
            ("NODE1_CONTROL_PORT".into(), controls[0].to_string()),
            ("NODE2_CONTROL_PORT".into(), controls[1].to_string()),
            ("NODE3_CONTROL_PORT".into(), controls[2].to_string()),
        ];
        for (var, port) in [
            "LB_COMMS_PORT",
            "LB_NODE1_PORT",
            "LB_NODE2_PORT",
            "LB_NODE3_PORT",
            "LB_API_PORT",
        ]
        .into_iter()
        .zip(&ports[3..])
        {
            env.push((var.into(), port.to_string()));
        }
        Self {
            compose,
            name: format!("octopoll-test-{}", std::process::id()),
            root,
            env,
            controls,
            api: ports[7],
            key,
        }
    }

    /// Runs `compose -p NAME ARGS…` and returns its output; panics on failure.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "`{} {}` failed:\n{text}\n(no image registry here? build the local base image: see this file's header)",
            self.compose.join(" "),
            args.join(" ")
        );
        text
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .args(["-p", &self.name])
            .args(args)
            .current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// The thumbprint of the certificate the `certs` service made, which every
    /// node serves, to pin it.
    fn thumbprint(&self) -> Thumbprint {
        let pem = self.run(&["exec", "-T", "node1", "cat", "/certs/node.crt.pem"]);
        let cert = CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap_or_else(|error| panic!("no certificate in node1's /certs: {error}\n{pem}"));
        Thumbprint::of(&cert)
    }

    /// `GET /api/serverstatus/redis` through the balancer's 443, as Octopus's
    /// own status check asks it: each call on a new connection, so the
    /// balancer's round robin spreads `calls` over the nodes.
    async fn redis_status(&self, thumbprint: Thumbprint, calls: usize) -> Vec<RedisStatus> {
        let url = format!("https://127.0.0.1:{}/api/serverstatus/redis", self.api);
        let key = ApiKey::new(self.key.clone());
        let mut answers = Vec::with_capacity(calls);
        for _ in 0..calls {
            let answer = common::https_get(&url, thumbprint, &key).await;
            answers.push(
                serde_json::from_value(answer.clone())
                    .unwrap_or_else(|error| panic!("{url} answered {answer}: {error}")),
            );
        }
        answers
    }

    fn node(&self, n: u16) -> RemoteNode {
        let control = SocketAddr::from(([127, 0, 0, 1], self.controls[usize::from(n) - 1]));
        RemoteNode::new(NodeId(n), control, ApiKey::new(self.key.clone()))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let down = self
            .command(&["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
        if !matches!(&down, Ok(o) if o.status.success()) {
            eprintln!("tearing the compose project down failed: {down:?}");
        }
    }
}

/// Waits until every node knows `agents` machines and, over all nodes, each of
/// them polls once (through the balancer, one connection each).
async fn wait_polling(nodes: &[RemoteNode], agents: usize) -> Duration {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for node in nodes {
            statuses.push(node.status().await);
        }
        let known = statuses
            .iter()
            .all(|s| matches!(s, Ok(s) if s.machines == agents));
        let polling: usize = statuses.iter().flatten().map(|s| s.polling).sum();
        if known && polling == agents {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WITHIN,
            "never had {agents} agents polling through the balancer: {polling}, {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends an echo from `node` to each of `machines`, expecting every one answered.
async fn echoes(node: &RemoteNode, machines: &[&octopoll_node::Machine], tag: u64, when: &str) {
    for (i, machine) in machines.iter().enumerate() {
        let (result, pickup) = node
            .send(
                machine.subscription().expect("a polling machine"),
                echo_to(machine, tag + i as u64),
                &[],
            )
            .await;
        assert_eq!(result, Ok(()), "{} to {} {when}", node.id(), machine.name);
        assert!(pickup.is_some());
    }
}

/// [`echoes`] after the queue's Redis lost its data: a request the canary fails
/// (`queue-data-lost`) is sent again, once; every one is then answered.
async fn echoes_retrying_data_lost(
    node: &RemoteNode,
    machines: &[&octopoll_node::Machine],
    tag: u64,
) {
    for (i, machine) in machines.iter().enumerate() {
        let subscription = machine.subscription().expect("a polling machine");
        let mut result = Err(FailReason::QueueDataLost);
        for _ in 0..2 {
            (result, _) = node
                .send(subscription, echo_to(machine, tag + i as u64), &[])
                .await;
            if result != Err(FailReason::QueueDataLost) {
                break;
            }
        }
        assert_eq!(
            result,
            Ok(()),
            "{} to {} after the queue's Redis restarted empty",
            node.id(),
            machine.name
        );
    }
}

fn echo_to(machine: &octopoll_node::Machine, n: u64) -> RequestMessage {
    echo::request(
        ServiceEndPoint::new(
            machine.subscription().expect("a polling machine").as_str(),
            machine.thumbprint.to_string(),
        ),
        "in a container",
        n,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_in_containers_fails_over_and_heals() {
    let Some(compose) = docker_available() else {
        return;
    };
    let project = Project::new(compose);
    let mut timings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |what: &str, timings: &mut Vec<String>| {
        timings.push(format!("{what} {:.1} s", clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    project.run(&["config", "-q"]);
    // The per-node layout's override is a valid compose file too.
    project.run(&[
        "-f",
        "docker-compose.yml",
        "-f",
        "docker-compose.per-node.yml",
        "config",
        "-q",
    ]);
    project.run(&["build"]);
    lap("image build", &mut timings);
    // `up` returns once every service it waits on is healthy (or fails).
    project.run(&["up", "-d"]);
    lap("stack up", &mut timings);
    // Redis holds who is trusted: a client without the password is refused (the
    // nodes, which have it, became healthy above).
    let anonymous = project
        .command(&[
            "exec",
            "-T",
            "redis",
            "env",
            "-u",
            "REDISCLI_AUTH",
            "redis-cli",
            "ping",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&anonymous.stdout).into_owned()
        + &String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        said.contains("NOAUTH"),
        "Redis without a password said: {said}"
    );
    let nodes = [project.node(1), project.node(2), project.node(3)];
    wait_polling(&nodes, AGENTS).await;
    lap(
        "every agent polling through the balancer (200 agents, 3 nodes)",
        &mut timings,
    );

    // Every node says its queue goes through Redis, which answers, to a
    // client pinning the cluster's certificate through the balancer.
    let thumbprint = project.thumbprint();
    let up = RedisStatus {
        is_enabled: true,
        is_configured: true,
        is_reachable: true,
    };
    for status in project.redis_status(thumbprint, 3).await {
        assert_eq!(status, up, "through the balancer's 443");
    }

    // Work queued on node 1 reaches agents whichever node they landed on: through Redis.
    let machines = nodes[0].machines().await.unwrap();
    assert_eq!(machines.len(), AGENTS);
    let sample: Vec<_> = machines.iter().step_by(20).collect();
    // To every agent, so every node (each holds some of them: the balancer's
    // round robin) collects some; a sample could miss one.
    let every: Vec<_> = machines.iter().collect();
    echoes(&nodes[0], &every, 0, "through the Redis queue").await;
    for node in &nodes {
        assert!(
            node.status().await.unwrap().stats.collected > 0,
            "{} collected some of node 1's work",
            node.id()
        );
    }
    // A health check of every machine from one node reaches every agent.
    let health = nodes[2].health().await.unwrap();
    assert_eq!(
        (health.healthy, health.unhealthy),
        (AGENTS, 0),
        "{health:?}"
    );
    lap("work and health checks through Redis", &mut timings);

    // Long scripts queued on node 2, collected wherever their agents poll; then
    // node 2, whose callers wait on them, dies.
    let collected = async || {
        let mut total = 0;
        for node in &nodes {
            total += node.status().await.map_or(0, |s| s.stats.collected);
        }
        total
    };
    let before = collected().await;
    let mut doomed = tokio::task::JoinSet::new();
    for (i, machine) in machines.iter().take(5).enumerate() {
        let command = script::StartScript {
            ticket: format!("compose{i:014}"),
            script_body: "echo start; sleep 60; echo never".into(),
            task_id: format!("ServerTasks-{i}"),
            wait_for_finish: Some(Duration::from_secs(300)),
        };
        let request = RequestMessage::call(
            script::SERVICE,
            script::START_SCRIPT,
            command.params(),
            ServiceEndPoint::new(
                machine.subscription().expect("a polling machine").as_str(),
                "",
            ),
            i as u64,
        );
        let (node, subscription) = (
            nodes[1].clone(),
            machine.subscription().expect("a polling machine").clone(),
        );
        doomed.spawn(async move { node.send(&subscription, request, &[]).await });
    }
    let deadline = Instant::now() + WITHIN;
    while collected().await < before + 5 {
        assert!(
            Instant::now() < deadline,
            "the scripts were never collected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    project.run(&["kill", "node2"]);
    while let Some(ended) = doomed.join_next().await {
        let (result, _) = ended.unwrap();
        assert_eq!(
            result,
            Err(FailReason::NodeLost),
            "a request whose caller's node died"
        );
    }
    // Nodes 1 and 3 keep completing work for every agent: those that were on node 2
    // come back through the balancer once their receive timeout runs out.
    echoes(&nodes[0], &sample, 1_000, "while node 2 is gone").await;
    echoes(&nodes[2], &sample[..3], 2_000, "while node 2 is gone").await;
    lap("failover checks", &mut timings);

    // The queue's Redis goes down (the nodes say so) and comes back without its
    // data: work in flight fails with a reason at most, and new work goes on.
    project.run(&["stop", "--timeout", "1", "queue"]);
    let deadline = Instant::now() + WITHIN;
    loop {
        let answers = project.redis_status(thumbprint, 1).await;
        if !answers[0].is_reachable {
            assert!(answers[0].is_enabled && answers[0].is_configured);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a node still says Redis is reachable"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    project.run(&["start", "queue"]);
    // Until a node's canary has seen the loss, what it waits on may still fail
    // with queue-data-lost, a reason the caller may retry (as Octopus does).
    echoes_retrying_data_lost(&nodes[0], &sample, 3_000).await;
    for status in project.redis_status(thumbprint, 2).await {
        assert_eq!(status, up, "once the queue's Redis is back");
    }
    lap("queue Redis restarted empty, work goes on", &mut timings);

    project.run(&["start", "node2"]);
    let deadline = Instant::now() + WITHIN;
    while !matches!(nodes[1].status().await, Ok(s) if s.running && s.machines == AGENTS) {
        assert!(Instant::now() < deadline, "node 2 never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    echoes(&nodes[1], &sample[..3], 4_000, "after node 2 came back").await;
    lap("node 2 back, work through it", &mut timings);
    drop(project);
    lap("teardown", &mut timings);
    eprintln!("compose timings: {}", timings.join(", "));
}

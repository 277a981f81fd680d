//! The multi-container cluster of `docker-compose.yml`, for real: Redis, three
//! node containers each on its own address, HAProxy, the one-shot certificate
//! maker and a swarm of 200 agents, brought up with docker-compose; one node
//! container killed and started again; everything torn down, also on failure.
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
use octopoll_node::{FailReason, NodeId};
use octopoll_pki::ApiKey;
use octopoll_wire::contracts::{echo, script};
use octopoll_wire::{RequestMessage, ServiceEndPoint};

const AGENTS: usize = 200;
/// A ceiling on every wait.
const WITHIN: Duration = Duration::from_secs(150);
/// How long an agent waits on a silent connection before it gives up on it
/// (Tentacle's 60 s; the compose file's default): a killed container sends no
/// FIN, so this is how long its agents' connections take to notice.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The compose file's longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One compose project: its command, name, environment and ports. Dropping it
/// takes everything down (`down -v`: containers, network, volume).
struct Project {
    compose: Vec<String>,
    name: String,
    root: PathBuf,
    env: Vec<(String, String)>,
    controls: [u16; 3],
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
        let controls = [free_port(), free_port(), free_port()];
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
        for var in [
            "LB_COMMS_PORT_1",
            "LB_COMMS_PORT_2",
            "LB_COMMS_PORT_3",
            "LB_API_PORT",
        ] {
            env.push((var.into(), free_port().to_string()));
        }
        Self {
            compose,
            name: format!("octopoll-test-{}", std::process::id()),
            root,
            env,
            controls,
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

/// Waits until `node` reports `agents` machines and all of them polling.
async fn wait_polling(node: &RemoteNode, agents: usize) -> Duration {
    let started = Instant::now();
    loop {
        let status = node.status().await;
        if matches!(&status, Ok(s) if s.machines == agents && s.polling == agents) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WITHIN,
            "{} never had {agents} agents polling: {status:?}",
            node.id()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    for node in &nodes {
        wait_polling(node, AGENTS).await;
    }
    lap("full coverage (200 agents x 3 nodes)", &mut timings);

    // Work on node 2 that is in flight when its container dies: long scripts.
    let machines = nodes[0].machines().await.unwrap();
    assert_eq!(machines.len(), AGENTS);
    // A health check of every machine from one node container (node 3: node 2's
    // counters are watched below) reaches every agent.
    let health = nodes[2].health().await.unwrap();
    assert_eq!(
        (health.healthy, health.unhealthy),
        (AGENTS, 0),
        "{health:?}"
    );
    lap("health check of every machine", &mut timings);
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
    while nodes[1].status().await.unwrap().stats.collected < 5 {
        assert!(
            Instant::now() < deadline,
            "node 2 never picked the scripts up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    project.run(&["kill", "node2"]);
    // Its requests end, with a reason.
    while let Some(ended) = doomed.join_next().await {
        let (result, _) = ended.unwrap();
        assert_eq!(
            result,
            Err(FailReason::NodeLost),
            "a request on the killed node"
        );
    }
    // Nodes 1 and 3 keep every agent polling and keep completing work.
    for node in [&nodes[0], &nodes[2]] {
        assert_eq!(node.status().await.unwrap().polling, AGENTS);
        for (i, machine) in machines.iter().enumerate().step_by(40) {
            let (result, pickup) = node
                .send(
                    machine.subscription().expect("a polling machine"),
                    echo_to(machine, i as u64),
                    &[],
                )
                .await;
            assert_eq!(result, Ok(()), "{} while node 2 is gone", node.id());
            assert!(pickup.is_some());
        }
    }
    // Work sent to the dead node fails at once, with a reason.
    let (result, _) = nodes[1]
        .send(
            machines[0].subscription().expect("a polling machine"),
            echo_to(&machines[0], 99),
            &[],
        )
        .await;
    assert_eq!(result, Err(FailReason::NodeLost));
    lap("failover checks", &mut timings);

    project.run(&["start", "node2"]);
    let healed = wait_polling(&nodes[1], AGENTS).await;
    // Within the reconnect bounds: the dead connections noticed, then a retry.
    let bound = RECEIVE_TIMEOUT + BACKOFF_MAX + Duration::from_secs(20);
    assert!(
        healed <= bound,
        "full coverage came back after {healed:?}, past {bound:?}"
    );
    lap("node 2 back, full coverage again", &mut timings);
    let (result, _) = nodes[1]
        .send(
            machines[1].subscription().expect("a polling machine"),
            echo_to(&machines[1], 100),
            &[],
        )
        .await;
    assert_eq!(result, Ok(()));
    drop(project);
    lap("teardown", &mut timings);
    eprintln!("compose timings: {}", timings.join(", "));
}

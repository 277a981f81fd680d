//! `octopoll tentacle …` as the Octopus docs use Tentacle.exe: the command
//! sequences run against an in-process three-node cluster, then the configured
//! instance polls every node for real.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use octopoll_agent::swarm::machine_resource;
use octopoll_agent::tentacle::{CommunicationStyle, TentacleConfig};
use octopoll_agent::{RegistrationClient, RegistrationTrust};
use octopoll_lab::lab::{Lab, LabConfig};
use octopoll_wire::contracts::echo;
use octopoll_wire::{ServiceEndPoint, SubscriptionId};

/// A place of the test's own: the instance index and the config files.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_octopoll"));
        command
            .arg("tentacle")
            .args(args)
            .env("OCTOPOLL_TENTACLE_INSTANCES", self.path("instances"))
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        command
    }

    /// `create-instance --instance Tentacle --config …/Tentacle.config`, as the
    /// docs start; returns the config's path.
    async fn create_instance(&self) -> PathBuf {
        let config = self.path("Tentacle.config");
        self.run(&[
            "create-instance",
            "--instance",
            "Tentacle",
            "--config",
            config.to_str().unwrap(),
        ])
        .await;
        config
    }

    /// Runs a command; returns its output whatever the exit.
    async fn try_run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn run(&self, args: &[&str]) -> String {
        let output = self.try_run(args).await;
        assert!(
            output.status.success(),
            "tentacle {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn lab() -> Lab {
    Lab::start(LabConfig::new(3, 1)).await.unwrap()
}

fn key(lab: &Lab) -> String {
    lab.cluster.nodes()[0].config().api_key.expose().to_owned()
}

/// Waits until every node holds the swarm's connection and one more, then sends
/// an echo to `subscription` through each node.
async fn polled_by_every_node(lab: &Lab, subscription: &SubscriptionId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held: Vec<usize> = lab
            .cluster
            .nodes()
            .iter()
            .map(|n| n.stats().connections)
            .collect();
        if held.iter().all(|&n| n == 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Tentacle never polled every node: connections {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in lab.cluster.nodes() {
        let request = echo::request(
            ServiceEndPoint::new(subscription.as_str(), ""),
            "from the docs",
            1,
        );
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            node.send(subscription, request, vec![]),
        )
        .await
        .expect("answered in time");
        let reply = outcome.result.expect("completed");
        assert_eq!(reply.response.result, bson::Bson::from("from the docs..."));
    }
}

fn config_at(path: &Path) -> TentacleConfig {
    TentacleConfig::load(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_ha_sequence_polls_all_three_nodes() {
    let lab = lab().await;
    let machine = Machine::new();
    let config = machine.path("Tentacle.config");
    let config_arg = config.to_str().unwrap();
    let key = key(&lab);
    let nodes = lab.cluster.nodes();

    machine
        .run(&[
            "create-instance",
            "--instance",
            "Tentacle",
            "--config",
            config_arg,
        ])
        .await;
    let printed = machine
        .run(&["new-certificate", "--instance=Tentacle"])
        .await;
    assert!(
        printed.contains("A new certificate has been generated and installed"),
        "{printed}"
    );
    machine
        .run(&["configure", "--instance", "Tentacle", "--noListen", "True"])
        .await;
    // Register with node 1 as a polling Tentacle, then poll-server once per further node.
    let first = &nodes[0];
    machine
        .run(&[
            "register-with",
            "--instance=Tentacle",
            &format!("--server={}", first.api_url()),
            &format!("--apiKey={key}"),
            "--comms-style",
            "TentacleActive",
            "--server-comms-port",
            &first.comms_addr().port().to_string(),
            "--name=docs-tentacle",
            "--environment=Production",
            "--role=web-server",
        ])
        .await;
    for node in &nodes[1..] {
        let printed = machine
            .run(&[
                "poll-server",
                "--instance",
                "Tentacle",
                &format!("--server={}", node.api_url()),
                &format!("--apikey={key}"),
                "--server-comms-port",
                &node.comms_addr().port().to_string(),
            ])
            .await;
        assert!(printed.contains("Polling endpoint configured"), "{printed}");
    }

    // The config: one polling entry per node, one thumbprint, one subscription.
    let settings = config_at(&config);
    let servers = settings.trusted_servers().unwrap();
    assert_eq!(servers.len(), 3, "{servers:?}");
    let thumbprint = lab.cluster.identity().thumbprint().to_string();
    for (entry, node) in servers.iter().zip(nodes) {
        assert_eq!(entry.thumbprint, thumbprint);
        assert_eq!(
            entry.communication_style,
            CommunicationStyle::TentacleActive
        );
        assert_eq!(
            entry.address.as_deref(),
            Some(format!("https://{}", node.comms_addr()).as_str())
        );
        assert_eq!(entry.subscription_id, servers[0].subscription_id);
    }
    assert!(settings.no_listen().unwrap());
    let subscription: SubscriptionId = servers[0]
        .subscription_id
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let machines = first.registry().machines();
    let registered = machines
        .iter()
        .find(|m| m.name == "docs-tentacle")
        .expect("registered");
    assert_eq!(registered.subscription(), Some(&subscription));
    assert_eq!(registered.roles, ["web-server"]);
    let shown = machine
        .run(&["show-thumbprint", "--instance", "Tentacle"])
        .await;
    assert_eq!(shown.trim(), registered.thumbprint.to_string());
    let listed = machine.run(&["list-instances"]).await;
    assert!(
        listed.contains(&format!(
            "Instance 'Tentacle' uses configuration '{config_arg}'."
        )),
        "{listed}"
    );

    // The instance runs and is polled through every node.
    let mut agent = machine
        .command(&["agent", "--instance", "Tentacle"])
        .spawn()
        .unwrap();
    polled_by_every_node(&lab, &subscription).await;
    agent.kill().await.unwrap();

    // deregister-from deletes the machine; the trust stays.
    let printed = machine
        .run(&[
            "deregister-from",
            "--instance",
            "Tentacle",
            &format!("--server={}", first.api_url()),
            &format!("--apikey={key}"),
        ])
        .await;
    assert!(
        printed.contains("Machine deregistered successfully"),
        "{printed}"
    );
    assert!(first
        .registry()
        .machines()
        .iter()
        .all(|m| m.name != "docs-tentacle"));
    assert_eq!(config_at(&config).trusted_servers().unwrap().len(), 3);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line_and_writes_nothing() {
    let lab = lab().await;
    let machine = Machine::new();
    let config = machine.path("Tentacle.config");
    let config_arg = config.to_str().unwrap();
    machine
        .run(&["create-instance", "--config", config_arg])
        .await;
    machine.run(&["new-certificate"]).await;
    let before = std::fs::read(&config).unwrap();
    let node = &lab.cluster.nodes()[0];
    let register = |server: String, key: String| {
        vec![
            "register-with".to_owned(),
            format!("--server={server}"),
            format!("--apikey={key}"),
            "--comms-style=TentacleActive".to_owned(),
        ]
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            register(node.api_url(), "API-WRONG".into()),
            "refused the API key",
        ),
        (
            register("https://127.0.0.1:1".into(), key(&lab)),
            "127.0.0.1:1",
        ),
        (
            vec!["configure".into(), "--noListen".into(), "maybe".into()],
            "True or False",
        ),
        (
            vec!["show-thumbprint".into(), "--colour=red".into()],
            "--colour",
        ),
        (
            vec![
                "import-certificate".into(),
                "--from-file=missing.pfx".into(),
            ],
            "Certificate 'missing.pfx' was not found",
        ),
        (
            vec![
                "register-with".into(),
                format!("--server={}", node.api_url()),
                format!("--apikey={}", key(&lab)),
                "--comms-style=TentaclePassive".into(),
                "--publicHostName=bad host/".into(),
            ],
            "--publicHostName \"bad host/\"",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = machine.try_run(&args).await;
        assert!(!output.status.success(), "{args:?} succeeded");
        let message = stderr(&output);
        assert!(message.contains(expected), "{args:?}: {message}");
        assert_eq!(
            std::fs::read(&config).unwrap(),
            before,
            "{args:?} changed the config"
        );
    }
    // A PFX opened with the wrong password.
    let pfx = machine.path("cluster.pfx");
    machine
        .run(&[
            "new-certificate",
            &format!("--export-pfx={}", pfx.display()),
            "--pfx-password=right",
        ])
        .await;
    let output = machine
        .try_run(&[
            "import-certificate",
            &format!("--from-file={}", pfx.display()),
            "--pfx-password=wrong",
        ])
        .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("check --pfx-password"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_trusted_servers_example_polls_three_loopback_nodes() {
    let lab = lab().await;
    let machine = Machine::new();
    let nodes = lab.cluster.nodes();
    // The clustered-listening docs' certificate dance: export once, import into
    // two instances; both then have one thumbprint.
    let pfx = machine.path("TentacleClusterPrivateKey.pfx");
    let printed = machine
        .run(&[
            "new-certificate",
            &format!("--export-pfx={}", pfx.display()),
            "--pfx-password=Yourpfxpassword",
        ])
        .await;
    let exported = printed.lines().last().unwrap().trim().to_owned();
    for name in ["one", "two"] {
        let config = machine.path(&format!("{name}/Tentacle.config"));
        machine
            .run(&[
                "create-instance",
                "--instance",
                name,
                "--config",
                config.to_str().unwrap(),
            ])
            .await;
        machine
            .run(&[
                "import-certificate",
                &format!("--instance={name}"),
                &format!("--from-file={}", pfx.display()),
                "--pfx-password=Yourpfxpassword",
            ])
            .await;
        let shown = machine.run(&["show-thumbprint", "--instance", name]).await;
        assert_eq!(shown.trim(), exported, "instance {name}");
    }

    // The docs' TrustedOctopusServers, with the nodes' loopback addresses and
    // this cluster's thumbprint in place of theirs; by hand, as the docs show.
    // The entry as the page prints it (fixtures/trusted-octopus-servers.xml, from
    // https://octopus.com/docs/administration/high-availability/maintain/polling-tentacles-with-ha).
    let docs = include_str!("fixtures/trusted-octopus-servers.xml");
    let mut entry = docs.trim_end().replace(
        "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6",
        &lab.cluster.identity().thumbprint().to_string(),
    );
    for (n, node) in nodes.iter().enumerate() {
        entry = entry.replace(
            &format!("https://10.0.255.16{n}:10943"),
            &format!("https://{}", node.comms_addr()),
        );
    }
    let config = machine.path("one/Tentacle.config");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "</octopus-settings>",
        &format!("{entry}\n</octopus-settings>"),
    );
    std::fs::write(&config, text).unwrap();
    let settings = config_at(&config);
    let servers = settings.trusted_servers().unwrap();
    assert_eq!(servers.len(), 3);
    let subscription: SubscriptionId = "poll://g3662re9njtelsyfhm7t/".parse().unwrap();

    // Registered under the docs' subscription, then run from the file alone.
    let client = RegistrationClient::new(&RegistrationTrust::Pinned(
        lab.cluster.identity().thumbprint(),
    ))
    .unwrap();
    client
        .register(
            &nodes[0].api_url(),
            &nodes[0].config().api_key,
            &machine_resource("docs-example", exported.parse().unwrap(), &subscription),
        )
        .await
        .unwrap();
    let mut agent = machine
        .command(&["run", "--instance", "one"])
        .spawn()
        .unwrap();
    polled_by_every_node(&lab, &subscription).await;
    agent.kill().await.unwrap();
    lab.stop().await;
}

/// A free loopback port, for a Tentacle to listen on.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// One member of the docs' active/passive pair: its own machine (instance
/// index and Tentacle.config), configured to listen on `port` and trust `server`.
async fn cluster_member(port: u16, server: &str) -> Machine {
    let machine = Machine::new();
    let (app, home) = (machine.path("Applications"), machine.path("Home"));
    // clustered-listening-tentacles.md, "Installation", in order (on loopback).
    machine.create_instance().await;
    machine
        .run(&[
            "configure",
            "--instance",
            "Tentacle",
            "--app",
            app.to_str().unwrap(),
            "--home",
            home.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--noListen",
            "False",
            "--listenIpAddress",
            "127.0.0.1",
        ])
        .await;
    machine
        .run(&["configure", "--instance", "Tentacle", "--trust", server])
        .await;
    machine
}

/// Health-checks `machine` from `node` until it answers, for at most 30 s.
async fn healthy_within(node: &octopoll_node::Node, machine: &octopoll_node::Machine) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match node.health_check(machine).await {
            Ok(capabilities) => {
                assert!(!capabilities.is_empty());
                return;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the listening Tentacle never answered: {error}"),
        }
    }
}

async fn listens(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_listening_cluster_dance_gives_one_target_that_survives_failover() {
    let lab = lab().await;
    let node = &lab.cluster.nodes()[0];
    let server = node.thumbprint().to_string();
    let (port_one, port_two) = (free_port(), free_port());
    let one = cluster_member(port_one, &server).await;
    let two = cluster_member(port_two, &server).await;

    // "Generate an Octopus Tentacle PFX File" on the second member, onto the
    // shared storage; import it there, then on the first member.
    let shared = tempfile::tempdir().unwrap();
    let pfx = shared.path().join("TentacleClusterPrivateKey.pfx");
    let printed = two
        .run(&[
            "new-certificate",
            &format!("--export-pfx={}", pfx.display()),
            "--pfx-password=Yourpfxpassword",
        ])
        .await;
    let thumbprint = printed.lines().last().unwrap().trim().to_owned();
    for member in [&two, &one] {
        member
            .run(&[
                "import-certificate",
                "--instance=Tentacle",
                &format!("--from-file={}", pfx.display()),
                "--pfx-password=Yourpfxpassword",
            ])
            .await;
        let shown = member
            .run(&["show-thumbprint", "--instance", "Tentacle"])
            .await;
        assert_eq!(
            shown.trim(),
            thumbprint,
            "both members hold one certificate"
        );
        let settings = config_at(&member.path("Tentacle.config"));
        assert!(!settings.no_listen().unwrap());
        let trusted = settings.trusted_servers().unwrap();
        assert_eq!(trusted.len(), 1);
        assert_eq!(
            trusted[0].communication_style,
            CommunicationStyle::TentaclePassive
        );
        assert_eq!(trusted[0].thumbprint, server);
    }

    // The cluster's client access point: a forwarder to the active member.
    let chaos = octopoll_chaos::Chaos::new();
    let access_point = chaos
        .create(octopoll_chaos::ProxyConfig::new(
            "tentacle-cluster",
            "127.0.0.1:0".parse().unwrap(),
            format!("127.0.0.1:{port_one}"),
        ))
        .await
        .unwrap()
        .listen;
    // Added to the server as one listening target at that address.
    let printed = one
        .run(&[
            "register-with",
            "--instance",
            "Tentacle",
            &format!("--server={}", node.api_url()),
            &format!("--apikey={}", key(&lab)),
            "--comms-style",
            "TentaclePassive",
            "--publicHostName",
            "127.0.0.1",
            "--tentacle-comms-port",
            &access_point.port().to_string(),
            "--name",
            "TentacleCluster",
            "--role",
            "clustered-web",
        ])
        .await;
    assert!(
        printed.contains("Machine registered successfully"),
        "{printed}"
    );
    let target = lab
        .cluster
        .registry()
        .machines()
        .into_iter()
        .find(|m| m.name == "TentacleCluster")
        .expect("registered");
    assert_eq!(
        target.endpoint.to_string(),
        format!("https://127.0.0.1:{}/", access_point.port())
    );
    assert_eq!(target.thumbprint.to_string(), thumbprint);

    let mut active = one
        .command(&["agent", "--instance", "Tentacle"])
        .spawn()
        .unwrap();
    healthy_within(node, &target).await;
    // One health check of everything the node knows: the swarm's poller and the
    // cluster, each reached its own way.
    let summary = node.health_check_all().await;
    assert_eq!(
        summary.by_kind().into_iter().collect::<Vec<_>>(),
        [("listening", (1, 0)), ("polling", (1, 0))],
        "{:?}",
        summary.checks
    );

    // Failover: the active member dies, the passive one starts, the access
    // point moves to it. The node sees one target, unhealthy at most once.
    active.kill().await.unwrap();
    let mut failures = usize::from(node.health_check(&target).await.is_err());
    let mut passive = two
        .command(&["agent", "--instance", "Tentacle"])
        .spawn()
        .unwrap();
    listens(port_two).await;
    chaos
        .update(
            "tentacle-cluster",
            octopoll_chaos::ProxyUpdate {
                upstream: Some(format!("127.0.0.1:{port_two}")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..3 {
        if let Err(error) = node.health_check(&target).await {
            eprintln!("failed health check after failover: {error}");
            failures += 1;
        }
    }
    assert!(failures <= 1, "{failures} failed health checks");
    assert_eq!(
        lab.cluster.registry().len(),
        2,
        "the node never learns there are two"
    );
    passive.kill().await.unwrap();
    lab.stop().await;
}

/// Connections each node holds now.
fn held(lab: &Lab) -> Vec<usize> {
    lab.cluster
        .nodes()
        .iter()
        .map(|n| n.stats().connections)
        .collect()
}

async fn wait_for_held(lab: &Lab, want: &[usize]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while held(lab) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections {:?}, want {want:?}",
            held(lab)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `poll-server` for node `index` (from 0) of `lab`, by its own comms port; what it printed.
async fn poll_server(machine: &Machine, lab: &Lab, index: usize) -> String {
    let node = &lab.cluster.nodes()[index];
    machine
        .run(&[
            "poll-server",
            &format!("--server={}", node.api_url()),
            &format!("--apikey={}", key(lab)),
            &format!("--server-comms-port={}", node.comms_addr().port()),
        ])
        .await
}

/// A Tentacle instance with its own config and certificate, registered with node
/// 1 as a polling Tentacle; its config's path.
async fn registered_with_node_1(lab: &Lab) -> (Machine, PathBuf) {
    let machine = Machine::new();
    let config = machine.path("Tentacle.config");
    let node = &lab.cluster.nodes()[0];
    machine
        .run(&["create-instance", "--config", config.to_str().unwrap()])
        .await;
    machine.run(&["new-certificate"]).await;
    machine
        .run(&[
            "register-with",
            &format!("--server={}", node.api_url()),
            &format!("--apikey={}", key(lab)),
            "--comms-style=TentacleActive",
            &format!("--server-comms-port={}", node.comms_addr().port()),
        ])
        .await;
    (machine, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_server_reaches_a_running_agent_at_once_and_a_hand_edit_waits_for_a_restart() {
    let lab = lab().await;
    let (machine, config) = registered_with_node_1(&lab).await;
    let nodes = lab.cluster.nodes();
    let mut agent = machine.command(&["agent"]).spawn().unwrap();
    // The swarm's one agent everywhere, and this Tentacle on node 1.
    wait_for_held(&lab, &[2, 1, 1]).await;
    let pid_file = machine.path("Tentacle.config.agent.pid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no pid file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // By hand, as the docs show: nothing happens until a restart.
    let mut settings = config_at(&config);
    let subscription = settings.trusted_servers().unwrap()[0]
        .subscription_id
        .clone()
        .unwrap();
    settings
        .add_or_update_trusted_server(octopoll_agent::tentacle::TrustedOctopusServer::polling(
            &lab.cluster.identity().thumbprint().to_string(),
            &format!("https://{}", nodes[2].comms_addr()),
            &subscription,
        ))
        .unwrap();
    settings.save(&config).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        held(&lab),
        [2, 1, 1],
        "a hand edit took effect without a restart"
    );

    // poll-server tells the running agent: node 2 is polled at once.
    let printed = poll_server(&machine, &lab, 1).await;
    assert!(printed.contains("The running agent (pid"), "{printed}");
    // It applies the config as it is then, so the hand-added node 3 comes too.
    wait_for_held(&lab, &[2, 2, 2]).await;
    agent.kill().await.unwrap();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_a_new_certificate_needs_force_and_force_replaces_the_machine() {
    let lab = lab().await;
    let node = &lab.cluster.nodes()[0];
    let machine = Machine::new();
    let config = machine.create_instance().await;
    machine
        .run(&["new-certificate", "--instance", "Tentacle"])
        .await;
    let server = format!("--server={}", node.api_url());
    let api_key = format!("--apikey={}", key(&lab));
    let register = [
        "register-with",
        "--instance",
        "Tentacle",
        &server,
        &api_key,
        "--comms-style",
        "TentacleActive",
        &format!("--server-comms-port={}", node.comms_addr().port()),
        "--name",
        "web-01",
    ];
    machine.run(&register).await;
    let first = config_at(&config).thumbprint().unwrap().unwrap();

    // A rebuilt Tentacle: same name, new certificate.
    machine
        .run(&["new-certificate", "--instance", "Tentacle"])
        .await;
    let second = config_at(&config).thumbprint().unwrap().unwrap();
    assert_ne!(first, second);
    let before = std::fs::read(&config).unwrap();
    let refused = machine.try_run(&register).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("pass --force to replace it"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&config).unwrap(), before, "nothing written");

    let mut forced = register.to_vec();
    forced.push("--force");
    let printed = machine.run(&forced).await;
    assert!(
        printed.contains("Replacing the existing machine 'web-01'"),
        "{printed}"
    );
    let registry = lab.cluster.registry();
    let named: Vec<_> = registry
        .machines()
        .into_iter()
        .filter(|m| m.name == "web-01")
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].thumbprint, second);
    assert!(registry.by_thumbprint(&first).is_none());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_one_address_with_poll_server_then_clear_trusted_servers_keep() {
    // The migration the multi-node polling docs describe: the Tentacle polls every
    // node, then also the balancer's address with the same subscription, then
    // drops every entry but the balancer's. Node 3's address stands in for it.
    let lab = lab().await;
    let (machine, config) = registered_with_node_1(&lab).await;
    let key = key(&lab);
    let nodes = lab.cluster.nodes();
    poll_server(&machine, &lab, 1).await;
    let mut agent = machine.command(&["agent"]).spawn().unwrap();
    wait_for_held(&lab, &[2, 2, 1]).await;
    let balancer = format!("https://{}", nodes[2].comms_addr());
    machine
        .run(&[
            "poll-server",
            &format!("--server={}", nodes[2].api_url()),
            &format!("--apikey={key}"),
            &format!("--server-comms-address={balancer}"),
        ])
        .await;
    wait_for_held(&lab, &[2, 2, 2]).await;
    let subscriptions: Vec<_> = config_at(&config)
        .trusted_servers()
        .unwrap()
        .into_iter()
        .map(|s| s.subscription_id)
        .collect();
    assert_eq!(subscriptions.len(), 3);
    assert!(
        subscriptions.windows(2).all(|w| w[0] == w[1]),
        "one subscription: {subscriptions:?}"
    );

    // A --keep that is not an address changes nothing.
    let before = std::fs::read(&config).unwrap();
    let refused = machine
        .try_run(&["clear-trusted-servers", "--keep=lb:10943"])
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is not an address"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&config).unwrap(), before, "nothing written");

    // The same address written with another case and an explicit path still matches.
    let keep = balancer.replace("https://127.0.0.1", "HTTPS://127.0.0.1") + "/";
    let printed = machine
        .run(&["clear-trusted-servers", &format!("--keep={keep}")])
        .await;
    assert!(printed.contains("Kept 1 trusted server(s)"), "{printed}");
    assert!(printed.contains("The running agent (pid"), "{printed}");
    let left = config_at(&config).trusted_servers().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].address.as_deref(), Some(balancer.as_str()));
    // The running agent drops the other nodes and keeps polling the kept one.
    wait_for_held(&lab, &[1, 1, 2]).await;
    agent.kill().await.unwrap();
    lab.stop().await;
}

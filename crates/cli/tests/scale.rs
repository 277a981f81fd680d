//! Runs larger than one process, as a user starts them: `octopoll run` splitting
//! itself into node and agent processes, and `octopoll node` / `octopoll swarm`
//! started by hand. Each test checks what the run reports and that no process it
//! started is left behind: its descendants are collected from `/proc` while it
//! runs, and must all be gone once it has exited.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn octopoll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_octopoll"))
}

/// (pid, parent pid) of every process that runs now (zombies aside: they are
/// gone, only not reaped yet).
fn processes() -> Vec<(u32, u32)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
            all.push((pid, ppid));
        }
    }
    all
}

/// Every descendant of `root` that runs now.
fn descendants(root: u32) -> BTreeSet<u32> {
    let all = processes();
    let mut found = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for (pid, ppid) in &all {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.remove(&root);
    found
}

/// The command line of `pid`, if it still runs.
fn alive(pid: u32) -> Option<String> {
    processes().iter().find(|(p, _)| *p == pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&cmdline).replace('\0', " "))
}

/// Waits up to `within` for every process in `started` to be gone.
fn assert_none_left(started: &BTreeSet<u32>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<(u32, String)> = started
            .iter()
            .filter_map(|&pid| alive(pid).map(|c| (pid, c)))
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("processes left behind after {within:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` to its end, collecting its descendants while it runs.
fn run_watching(command: &mut Command) -> (Output, BTreeSet<u32>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipes = read_pipes(&mut child);
    let mut seen = BTreeSet::new();
    let status = loop {
        seen.extend(descendants(child.id()));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = pipes.join().unwrap();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        seen,
    )
}

/// Reads a child's stdout and stderr to their ends in the background.
fn read_pipes(child: &mut Child) -> std::thread::JoinHandle<(Vec<u8>, Vec<u8>)> {
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    std::thread::spawn(move || {
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let mut stdout = Vec::new();
        let _ = out.read_to_end(&mut stdout);
        (stdout, reader.join().unwrap())
    })
}

/// The stdout of a run that must have succeeded (else both outputs, in the panic).
fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `octopoll run` of the scenario `text`, which must succeed: its stdout, its
/// JSON report and the processes it started.
fn run_scenario(text: &str) -> (String, serde_json::Value, BTreeSet<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, text).unwrap();
    let json = dir.path().join("r.json");
    let (output, started) = run_watching(
        octopoll()
            .arg("run")
            .arg(&scenario)
            .args(["--quiet", "--json"])
            .arg(&json),
    );
    let stdout = succeeded(&output);
    (stdout, report(&json), started)
}

#[test]
fn fifteen_hundred_agents_across_processes_reach_full_coverage_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (output, started) = run_watching(
        octopoll()
            .args([
                "run",
                "--nodes",
                "3",
                "--agents",
                "1500",
                "--processes",
                "2",
            ])
            .args(["--duration", "4s", "--rate", "100", "--comms-port", "0"])
            .args(["--mesh-timeout", "120s", "--quiet", "--json"])
            .arg(&json),
    );
    // Redis, three nodes and two agent processes.
    assert!(started.len() >= 6, "{started:?}");
    let stdout = succeeded(&output);
    let report = report(&json);
    assert_eq!(report["coverage"], 1.0, "{stdout}");
    assert_eq!(report["connections"], 4500);
    assert_eq!(report["coverage_matrix"]["agents_reaching"][3], 1500);
    let requests = &report["requests"];
    assert_eq!(requests["lost"], 0);
    assert_eq!(requests["counted_twice"], 0);
    assert_eq!(requests["failed"], 0, "{stdout}");
    assert_eq!(requests["completed"], requests["queued"]);
    assert!(requests["queued"].as_u64().unwrap() >= 350);
    // Three node processes, two agent processes, and the parent, each measured.
    let roles: Vec<&str> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "node-1",
            "node-2",
            "node-3",
            "agents 1/2",
            "agents 2/2",
            "octopoll"
        ]
    );
    for process in report["processes"].as_array().unwrap() {
        assert!(
            process["rss_at_mesh_kib"].as_u64().unwrap() > 0,
            "{process}"
        );
    }
    assert!(stdout.contains("KiB per held connection"), "{stdout}");
    // Every node counted the requests it ended: none unfinished.
    for node in report["per_node"].as_array().unwrap() {
        assert_eq!(node["agents_polling"], 1500, "{node}");
        assert_eq!(node["completed"], node["queued"], "{node}");
    }
    assert_none_left(&started, Duration::from_secs(5));
}

#[test]
fn a_node_killed_across_processes_fails_only_its_own_work_and_the_mesh_heals() {
    let (_, report, started) = run_scenario(
        r#"
name = "failover-across-processes"
duration = "8s"
processes = 2
[cluster]
comms_port = 0
[agents]
count = 150
[workload]
rate = 60.0
mix = { echo = 1 }
[[faults]]
at = "2s"
action = "kill"
target = "node-2"
duration = "2s"
[thresholds]
lost_max = 0
full_mesh_after_fault_s = 10
"#,
    );
    let fault = &report["faults"][0];
    assert_eq!(fault["error"], serde_json::Value::Null, "{fault}");
    assert!(fault["coverage_min"].as_f64().unwrap() < 0.7, "{fault}");
    assert!(fault["full_mesh_s"].is_number(), "the mesh healed: {fault}");
    // Only node 2's work failed, and only because it was killed.
    let reasons = report["failures_by_reason"].as_object().unwrap();
    assert!(reasons.keys().all(|r| r == "node-killed"), "{reasons:?}");
    let queued = |name: &str| {
        report["per_node"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == name)
            .unwrap()["queued"]
            .as_u64()
            .unwrap()
    };
    for node in report["per_node"].as_array().unwrap() {
        if node["node"] != "node-2" {
            assert_eq!(node["failed"], 0, "{node}");
        }
    }
    // No work started on node 2 while it was down (2 s of 8): it got less.
    assert!(
        queued("node-2") < queued("node-1").min(queued("node-3")),
        "{}",
        report["per_node"]
    );
    assert_eq!(report["requests"]["lost"], 0);
    assert_none_left(&started, Duration::from_secs(5));
}

#[test]
fn a_redis_outage_across_processes_loses_nothing_and_leaves_the_registry_alone() {
    // The node processes share a queue on a redis-server of its own; the fault
    // kills it for a second, which also empties it.
    let (stdout, report, started) = run_scenario(
        r#"
name = "redis-down-across-processes"
duration = "8s"
processes = 2
[cluster]
comms_port = 0
queue = "redis"
redis_drop_delay = "1s"
[agents]
count = 150
[workload]
rate = 40.0
mix = { echo = 1 }
[[faults]]
at = "2s"
action = "redis-down"
duration = "1s"
"#,
    );
    let fault = &report["faults"][0];
    assert_eq!(fault["fault"], "redis-down redis at 2s for 1s", "{fault}");
    assert_eq!(fault["error"], serde_json::Value::Null, "{fault}");
    let requests = &report["requests"];
    assert_eq!(requests["lost"], 0, "{stdout}");
    assert_eq!(requests["counted_twice"], 0, "{stdout}");
    // What Redis held is gone: only the canary's failures, and work goes on.
    let reasons = report["failures_by_reason"].as_object().unwrap();
    assert!(
        reasons.keys().all(|r| r == "queue-data-lost"),
        "{reasons:?}\n{stdout}"
    );
    let (completed, queued) = (
        requests["completed"].as_u64().unwrap(),
        requests["queued"].as_u64().unwrap(),
    );
    assert!(completed * 10 >= queued * 7, "{stdout}");
    // The registry is on a Redis of its own: no agent was ever refused.
    assert_eq!(report["churn"]["refused"], 0, "{stdout}");
    assert_eq!(report["coverage"], 1.0, "{stdout}");
    assert_none_left(&started, Duration::from_secs(5));
}

#[test]
fn interrupting_a_run_across_processes_leaves_no_child_behind() {
    // Ctrl-C and SIGTERM stop every child; SIGKILL leaves octopoll no chance to,
    // and its children (Redis under its guard) notice their stdin closing.
    for signal in ["-INT", "-TERM", "-KILL"] {
        let mut run = octopoll()
            .args(["run", "--nodes", "2", "--agents", "40", "--processes", "1"])
            .args(["--duration", "5m", "--comms-port", "0", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Redis under its guard, the cluster directory's guard, two nodes and
        // the agents: wait until they all run.
        let deadline = Instant::now() + Duration::from_secs(60);
        let started = loop {
            let now = descendants(run.id());
            if now.len() >= 6 {
                break now;
            }
            assert!(Instant::now() < deadline, "children never started: {now:?}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let removed = guarded_dirs(&started);
        assert_eq!(
            removed.len(),
            2,
            "the Redis and cluster directories: {removed:?}"
        );
        assert!(removed.iter().all(|d| d.exists()));
        let killed = Command::new("kill")
            .args([signal, &run.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = run.wait().unwrap();
        let mut stderr = String::new();
        run.stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!status.success(), "an interrupted run is not a success");
        if signal != "-KILL" {
            assert!(stderr.contains("interrupted by"), "{signal}: {stderr}");
        }
        assert_none_left(&started, Duration::from_secs(10));
        // The guards delete the temporary directories (the cluster's key among
        // them) even when the run had no chance to.
        for dir in &removed {
            assert!(!dir.exists(), "{signal}: {} was left behind", dir.display());
        }
    }
}

/// The directories the guards among `pids` will delete (`--remove DIR`).
fn guarded_dirs(pids: &BTreeSet<u32>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for pid in pids {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        for pair in args.windows(2) {
            if pair[0] == "--remove" {
                dirs.push(PathBuf::from(&pair[1]));
            }
        }
    }
    dirs
}

#[test]
fn runs_no_split_can_hold_are_refused_before_anything_starts() {
    for (args, expected) in [
        (
            &["run", "--agents", "30000"][..],
            "more than one node process can hold",
        ),
        (
            &[
                "run",
                "--agents",
                "50",
                "--processes",
                "2",
                "--topology",
                "unique-port",
            ],
            "through one HAProxy process",
        ),
        (
            &[
                "run",
                "--agents",
                "50",
                "--processes",
                "2",
                "--queue",
                "shared",
            ],
            "shared queue",
        ),
        (
            &["run", "--agents", "10", "--processes", "11"],
            "more agent processes than",
        ),
    ] {
        let output = octopoll().args(args).arg("--quiet").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_cluster_file_is_refused_with_its_path_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let cases = [
        ("nodes = 3\n", "cluster.toml"),
        (
            "certificate = \"c.pem\"\nprivate_key = \"k.pem\"\napi_key = \"k\"\n[[nodes]]\ncomms = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n",
            "--node 2 does not exist",
        ),
        (
            "certificate = \"c.pem\"\nprivate_key = \"k.pem\"\n[[nodes]]\ncomms = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n[[nodes]]\ncomms = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n",
            "OCTOPOLL_API_KEY",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let output = octopoll()
            .env_remove("OCTOPOLL_API_KEY")
            .args(["node", "--node", "2", "--cluster-file"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
    // A missing certificate names the file.
    std::fs::write(&file, cases[1].0).unwrap();
    let output = octopoll()
        .args(["node", "--node", "1", "--cluster-file"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("c.pem"), "{stderr}");
}

/// A free loopback port, a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

mod by_hand {
    //! `octopoll node` and `octopoll swarm` started by hand, as containers or
    //! separate hosts run them: two nodes sharing a registry through Redis, a swarm
    //! polling both; one node's process killed outright and started again.

    use std::net::SocketAddr;
    use std::time::Duration;

    use octopoll_fleet::child::{ChildProcess, Listening};
    use octopoll_fleet::cluster_file::{ClusterFile, NodeEntry, API_KEY_ENV};
    use octopoll_fleet::redis_server::LocalRedis;
    use octopoll_fleet::remote::RemoteError;
    use octopoll_fleet::remote::{RemoteNode, RemoteSwarm};
    use octopoll_lab::actions::NodeAction;
    use octopoll_node::{FailReason, NodeId};
    use octopoll_pki::{ApiKey, Identity, KeyType};
    use octopoll_wire::contracts::echo;
    use octopoll_wire::ServiceEndPoint;

    const KEY: &str = "API-BYHAND0123456789";
    const WITHIN: Duration = Duration::from_secs(30);

    /// `octopoll ARGS` as a child with the cluster's key, once it is ready.
    async fn start_child(name: &str, args: &[String]) -> (ChildProcess, Listening) {
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_octopoll"));
        ChildProcess::start::<Listening>(name, program, args, &[(API_KEY_ENV, KEY)], WITHIN)
            .await
            .unwrap()
    }

    async fn start_node(n: u16, file: &std::path::Path) -> (ChildProcess, RemoteNode, SocketAddr) {
        let args = vec![
            "node".to_string(),
            format!("--cluster-file={}", file.display()),
            format!("--node={n}"),
        ];
        let (child, ready) = start_child(&format!("node-{n}"), &args).await;
        let remote = RemoteNode::new(NodeId(n), ready.control, ApiKey::new(KEY));
        (child, remote, ready.control)
    }

    async fn wait_polling(node: &RemoteNode, expected: usize) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let status = node.status().await;
            if matches!(&status, Ok(s) if s.polling == expected) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never had {expected} agents polling: {status:?}",
                node.id()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_node_processes_share_a_swarm_and_one_comes_back_after_a_kill() {
        let redis = LocalRedis::start(None)
            .await
            .expect("redis-server for this test");
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate("octopoll-server", KeyType::EcdsaP256).unwrap();
        octopoll_pki::pem::save(&identity, dir.path(), "node").unwrap();
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let nodes: Vec<NodeEntry> = (0..2)
            .map(|_| NodeEntry {
                comms: addr(super::free_port()),
                api: addr(super::free_port()),
                control: addr(0),
            })
            .collect();
        let comms: Vec<String> = nodes.iter().map(|n| n.comms.to_string()).collect();
        let file = dir.path().join("cluster.toml");
        let cluster = ClusterFile {
            name: "by-hand".into(),
            registry: Some(redis.url()),
            multi_node_polling_redis: None,
            redis_drop_delay: None,
            api_key: None,
            certificate: "node.crt.pem".into(),
            private_key: "node.key.pem".into(),
            long_poll: Duration::from_secs(30),
            pickup_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            max_concurrent_handshakes: 64,
            limits: Default::default(),
            nodes,
        };
        std::fs::write(&file, cluster.render().unwrap()).unwrap();
        let (one, node_one, _) = start_node(1, &file).await;
        let (mut two, node_two, two_control) = start_node(2, &file).await;
        let api = format!("https://{}", node_one.status().await.unwrap().api);

        let mut args = vec![
            "swarm".to_string(),
            "--agents=30".into(),
            format!("--register={api}"),
            format!("--server-thumbprint={}", identity.thumbprint()),
            "--backoff-min=100ms".into(),
            "--backoff-max=500ms".into(),
        ];
        args.extend(comms.iter().map(|c| format!("--poll={c}")));
        let (swarm, ready) = start_child("swarm", &args).await;
        let swarm_api = RemoteSwarm::new(ready.control, ApiKey::new(KEY));
        // Registered through node 1 only, polling node 2 as well: the registry is shared.
        wait_polling(&node_one, 30).await;
        wait_polling(&node_two, 30).await;
        assert_eq!(node_two.status().await.unwrap().machines, 30);

        let machines = node_one.machines().await.unwrap();
        let echo_to = |i: usize| {
            let m = &machines[i % machines.len()];
            let request = echo::request(
                ServiceEndPoint::new(
                    m.subscription().expect("a polling machine").as_str(),
                    m.thumbprint.to_string(),
                ),
                "across processes",
                i as u64,
            );
            (
                m.subscription().expect("a polling machine").clone(),
                request,
            )
        };
        for i in 0..10 {
            let (subscription, request) = echo_to(i);
            let node = if i % 2 == 0 { &node_one } else { &node_two };
            let (result, pickup) = node.send(&subscription, request, &[]).await;
            assert_eq!(result, Ok(()), "request {i}");
            assert!(pickup.is_some());
        }

        // A health check of every machine from one node process reaches all 30.
        let health = node_two.health().await.unwrap();
        assert_eq!((health.healthy, health.unhealthy), (30, 0), "{health:?}");
        assert!(health
            .machines
            .iter()
            .all(|m| m.endpoint.starts_with("poll://")
                && m.capabilities.as_ref().is_some_and(|c| !c.is_empty())));

        // Without the cluster's key, the control API takes no orders.
        let stranger = RemoteNode::new(NodeId(2), two_control, ApiKey::new("API-WRONG"));
        let refused = stranger.health().await.unwrap_err();
        assert!(
            matches!(refused, RemoteError::Refused { status: 401, .. }),
            "a health check sends work to the agents: it needs the key: {refused}"
        );
        let refused = stranger.act(NodeAction::Kill, false).await.unwrap_err();
        assert!(
            matches!(refused, RemoteError::Refused { status: 401, .. }),
            "{refused}"
        );
        assert!(node_two.status().await.unwrap().running);

        // node 2's process dies outright: work sent there fails with a reason, node 1
        // goes on serving every agent.
        two.kill().await;
        let (subscription, request) = echo_to(0);
        let (lost, _) = node_two.send(&subscription, request, &[]).await;
        assert_eq!(lost, Err(FailReason::NodeLost));
        for i in 0..10 {
            let (subscription, request) = echo_to(i);
            let (result, _) = node_one.send(&subscription, request, &[]).await;
            assert_eq!(result, Ok(()), "request {i} on node 1 while node 2 is gone");
        }
        assert_eq!(node_one.status().await.unwrap().polling, 30);

        // Started again on its addresses, it is polled by every agent again.
        let (two, node_two, _) = start_node(2, &file).await;
        wait_polling(&node_two, 30).await;
        let status = swarm_api.status().await.unwrap();
        assert_eq!((status.links, status.connections), (60, 60));
        assert!(status.failures > 0, "the agents saw node 2 go");

        let swarm_final: Option<serde_json::Value> = swarm.stop().await;
        assert!(swarm_final.is_some(), "the swarm reported its end");
        for node in [one, two] {
            let stats: Option<octopoll_node::NodeStats> = node.stop().await;
            assert!(stats.is_some(), "each node reported its end");
        }
        redis.stop().await;
    }
}

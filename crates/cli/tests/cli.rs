//! The `octopoll` binary as a user runs it: flags, exit codes, the JSON report.

use std::process::Command;

fn octopoll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_octopoll"))
}

/// What a finished `octopoll` said: its exit code, stdout and stderr.
struct Said {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `octopoll run ARGS` on free ports, without progress.
fn run_quietly(args: &[&std::ffi::OsStr]) -> Said {
    let output = octopoll()
        .arg("run")
        .args(args)
        .args(["--comms-port", "0", "--quiet"])
        .output()
        .unwrap();
    Said {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn run_writes_a_json_report_with_full_coverage_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let output = octopoll()
        .args([
            "run",
            "--nodes",
            "3",
            "--agents",
            "12",
            "--duration",
            "2s",
            "--rate",
            "30",
            "--comms-port",
            "0",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("lost 0"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["nodes"], 3);
    assert_eq!(report["agents"], 12);
    assert_eq!(report["coverage"], 1.0);
    assert_eq!(report["connections"], 36);
    assert_eq!(report["requests"]["lost"], 0);
    assert!(report["requests"]["completed"].as_u64().unwrap() > 0);
    for key in ["p50", "p99", "max"] {
        assert!(report["pickup_ms"][key].is_number(), "{key}");
    }
    assert!(report["failures_by_reason"].is_object());
}

#[test]
fn bad_flags_get_a_clear_error_and_a_non_zero_exit() {
    for (args, expected) in [
        (&["run", "--duration", "soon"][..], "examples: 30s"),
        (&["run", "--nodes", "0"], "--nodes"),
        (
            &["run", "--long-poll", "0s"],
            "--long-poll: cluster.long_poll: must be above 0",
        ),
        (&["run", "--rate", "-1"], "positive number"),
        (&["run", "--bogus"], "--bogus"),
    ] {
        let output = octopoll().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn an_interrupted_run_still_prints_and_writes_every_report_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let (json, csv, html) = (
        dir.path().join("r.json"),
        dir.path().join("r.csv"),
        dir.path().join("r.html"),
    );
    for signal in ["-INT", "-TERM"] {
        let run = octopoll()
            .args(["run", "--nodes", "2", "--agents", "10", "--duration", "5m"])
            .args(["--rate", "50", "--comms-port", "0", "--quiet", "--json"])
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .arg("--html")
            .arg(&html)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The mesh of 20 connections forms in well under a second; then work.
        std::thread::sleep(std::time::Duration::from_secs(5));
        let killed = Command::new("kill")
            .args([signal, &run.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = run.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(130),
            "{signal}: {stdout}\n{stderr}"
        );
        assert!(stdout.contains("INTERRUPTED"), "{signal}: {stdout}");
        assert!(stderr.contains("writing its reports"), "{signal}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["interrupted"], true);
        let requests = &report["requests"];
        assert!(
            requests["queued"].as_u64().unwrap() > 0,
            "what ran is counted: {report}"
        );
        assert_eq!(requests["lost"], 0, "{report}");
        assert!(std::fs::read_to_string(&csv)
            .unwrap()
            .starts_with("second,"));
        assert!(std::fs::read_to_string(&html)
            .unwrap()
            .contains("INTERRUPTED"));
        for path in [&json, &csv, &html] {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[test]
fn an_output_path_that_cannot_be_written_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = octopoll()
        .args(["run", "--agents", "2", "--comms-port", "0", "--quiet"])
        .arg("--json")
        .arg(dir.path().join("r.json"))
        .arg("--html")
        .arg(dir.path().join("no-such-dir/r.html"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the HTML report cannot go to") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
    // Refused up front: not after the default 30 s of work.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        !dir.path().join("r.json").exists(),
        "nothing was run or written"
    );
}

#[test]
fn a_taken_control_port_gets_a_clear_error_and_a_non_zero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = octopoll()
        .args(["run", "--agents", "2", "--comms-port", "0", "--quiet"])
        .args(["--control", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("binding control {addr}")) && stderr.contains("--control"),
        "{stderr}"
    );
}

#[test]
fn a_busy_comms_port_is_reported_with_the_node_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = octopoll()
        .args([
            "run",
            "--nodes",
            "1",
            "--agents",
            "1",
            "--duration",
            "1s",
            "--quiet",
            "--comms-port",
            &port,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "polling listener for node-1 could not bind 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("pass --comms-port 0"), "{stderr}");
}

#[test]
fn a_balanced_topology_without_haproxy_says_how_to_install_it_and_starts_nothing() {
    for topology in ["unique-port", "load-balanced"] {
        let output = octopoll()
            .args([
                "-v",
                "run",
                "--topology",
                topology,
                "--comms-port",
                "0",
                "--quiet",
            ])
            .args(["--haproxy", "/nonexistent/haproxy"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{topology}");
        assert!(
            stderr.contains("sudo apt-get install haproxy"),
            "{topology}: {stderr}"
        );
        // With -v every node start is logged: none happened.
        assert!(!stderr.contains("node started"), "{topology}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_topology_that_does_not_exist_lists_the_ones_that_do() {
    let output = octopoll()
        .args(["run", "--topology", "mesh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for name in [
        "unique-address",
        "unique-port",
        "unique-port-direct",
        "load-balanced",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn certs_writes_node_and_agent_pem_files_and_will_not_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let output = octopoll()
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "node.crt.pem",
        "node.key.pem",
        "agent.crt.pem",
        "agent.key.pem",
    ] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let node = octopoll_pki::pem::load(dir.path(), "node").unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&node.thumbprint().to_string()));
    let again = octopoll()
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn a_breached_threshold_exits_99_and_says_which_and_by_how_much() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("impossible.toml");
    std::fs::write(
        &scenario,
        "duration = \"2s\"\n[agents]\ncount = 6\n[thresholds]\npickup_p99_ms = 0.0\nlost_max = 0\n",
    )
    .unwrap();
    let Said {
        code,
        stdout,
        stderr,
    } = run_quietly(&[scenario.as_os_str()]);
    assert_eq!(code, Some(99), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("pickup_p99_ms 0: "), "{stdout}");
    assert!(stdout.contains("(BREACHED by "), "{stdout}");
    assert!(stdout.contains("lost_max 0: 0 (passed)"), "{stdout}");
    let verdict = "FAILED: 1 of 2 thresholds breached (pickup_p99_ms 0)";
    assert!(
        stdout.contains(&format!("verdict      {verdict}")),
        "{stdout}"
    );
    assert!(stderr.contains(verdict), "{stderr}");
}

#[test]
fn a_metric_threshold_with_abort_on_fail_stops_the_run_early_and_every_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("abort.toml");
    // Nothing may be queued on node 1 after 2 s: breached as soon as it is
    // looked at, so a 60 s run stops at about 2 s.
    std::fs::write(
        &scenario,
        "name = \"abort\"\nduration = \"60s\"\n[agents]\ncount = 6\n[workload]\nrate = 40\n[thresholds]\nlost_max = 0\npickup_ms = [\"p(95) < 60000\", \"p(99.9) < 60000\"]\n\"failed{reason:pickup-timeout}\" = \"count == 0\"\n\"queued{node:node-1}\" = { threshold = \"count < 1\", abort_on_fail = true, delay_abort_eval = \"2s\" }\n",
    )
    .unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("j.xml"));
    let Said {
        code,
        stdout,
        stderr,
    } = run_quietly(&[
        scenario.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
        "--junit".as_ref(),
        junit.as_os_str(),
    ]);
    assert_eq!(code, Some(99), "{stdout}\n{stderr}");
    // At the first look after the 2 s delay (later on a busy machine).
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("  verdict"))
        .unwrap_or_default();
    let at: f64 = verdict
        .strip_prefix("  verdict      FAILED: aborted at ")
        .and_then(|rest| rest.strip_suffix(" s by queued{node:node-1} count < 1"))
        .and_then(|at| at.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((2.0..10.0).contains(&at), "{stdout}");
    assert!(stdout.contains("pickup_ms p(99.9) < 60000: "), "{stdout}");
    assert!(stderr.contains("(abort_on_fail)"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        report["aborted"]["threshold"]["name"],
        "queued{node:node-1}"
    );
    assert_eq!(report["aborted"]["threshold"]["condition"], "count < 1");
    let ran = report["duration_s"].as_f64().unwrap();
    assert!(ran < 10.0, "stopped early, not after 60 s: {ran} s");
    assert_eq!(
        report["requests"]["lost"], 0,
        "an abort drains like an interrupt"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"abort\" tests=\"9\" failures=\"2\""),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<testcase classname=\"octopoll\" name=\"threshold pickup_ms p(95) &lt; 60000\"/>"
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"aborted at 2.0 s by queued{node:node-1} count &lt; 1"),
        "{xml}"
    );
}

#[test]
fn a_report_embeds_what_ran_and_from_report_runs_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let scenario = dir.path().join("again.toml");
    std::fs::write(
        &scenario,
        "duration = \"2s\"\n[cluster]\nnodes = 2\n[agents]\ncount = 6\n",
    )
    .unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let said = run_quietly(args);
        (said.code, said.stdout, said.stderr)
    };
    let (code, stdout, stderr) = run(&[
        scenario.as_os_str(),
        "--seed".as_ref(),
        "5".as_ref(),
        "--json".as_ref(),
        first.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("octopoll 0.1.0 report: again: 2 nodes, 6 agents"),
        "{stdout}"
    );
    assert!(stdout.contains("seed 5, ecdsa-p256 keys"), "{stdout}");
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let a = read(&first);
    assert_eq!(a["version"], "0.1.0");
    assert!(a["host"]["cores"].as_u64().unwrap() >= 1);
    assert!(a["host"]["open_files"].as_u64().unwrap() >= 1024);
    assert!(a["requests"]["per_s"].as_f64().unwrap() > 0.0);
    for key in ["p90", "p95"] {
        assert!(a["end_to_end_ms"][key].is_number(), "{key}");
    }
    let embedded = a["scenario"].as_str().unwrap();
    assert!(
        embedded.contains("seed = 5"),
        "the flag is in it:\n{embedded}"
    );
    assert!(!embedded.contains("a.json"), "outputs are not:\n{embedded}");

    let (code, stdout, stderr) = run(&[
        "--from-report".as_ref(),
        first.as_os_str(),
        "--json".as_ref(),
        second.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let b = read(&second);
    for key in ["name", "seed", "nodes", "agents", "scenario"] {
        assert_eq!(a[key], b[key], "{key}");
    }

    for bad in [dir.path().join("missing.json"), scenario.clone()] {
        let (code, _, stderr) = run(&["--from-report".as_ref(), bad.as_os_str()]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{}: report: ", bad.display())),
            "{stderr}"
        );
    }

    // The same run twice compares as the same where nothing depends on timing.
    let compare = |args: &[&std::ffi::OsStr]| {
        let output = octopoll().arg("compare").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let (code, text) = compare(&[
        first.as_os_str(),
        second.as_os_str(),
        "--max-worse".as_ref(),
        "requests.lost=0%".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("verdict  PASSED: 1 of 1 limits held"),
        "{text}"
    );
    assert!(!text.contains("scenarios differ"), "{text}");
    // A run whose p99 pickup is ten times the baseline's breaches a 10 % limit.
    let mut slower = b.clone();
    let p99 = slower["pickup_ms"]["p99"].as_f64().unwrap();
    slower["pickup_ms"]["p99"] = serde_json::json!(p99 * 10.0 + 1.0);
    let slower_path = dir.path().join("slower.json");
    std::fs::write(&slower_path, slower.to_string()).unwrap();
    let (code, text) = compare(&[
        first.as_os_str(),
        slower_path.as_os_str(),
        "--max-worse".as_ref(),
        "pickup_ms.p99=10%".as_ref(),
    ]);
    assert_eq!(code, Some(99), "{text}");
    assert!(
        text.contains("limit    pickup_ms.p99 at most 10 % worse: "),
        "{text}"
    );
    assert!(text.contains("(BREACHED)"), "{text}");
    let (code, text) = compare(&[first.as_os_str(), scenario.as_os_str()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not a JSON report"), "{text}");
    let (code, text) = compare(&[
        first.as_os_str(),
        second.as_os_str(),
        "--max-worse".as_ref(),
        "p99".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("expected FIGURE=PERCENT"), "{text}");
}

#[test]
fn check_validates_a_scenario_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"checked\"\nduration = \"10m\"\n[cluster]\nnodes = 3\n[[faults]]\nat = \"1m\"\naction = \"kill\"\ntarget = \"node-2\"\n[thresholds]\nlost_max = 0\nend_to_end_ms = \"p(99) < 100\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = octopoll()
        .arg("run")
        .arg(&scenario)
        .args(["--check", "--quiet"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("scenario OK (checked): 3 nodes, 100 agents"),
        "{stdout}"
    );
    assert!(stdout.contains("fault      kill node-2 at 1m"), "{stdout}");
    assert!(
        stdout.contains("thresholds 2 (1 fixed, 1 on metrics, 0 abort the run)"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "nothing ran"
    );
    std::fs::write(&scenario, "[thresholds]\nhandshakes = \"p(99) < 3\"\n").unwrap();
    let bad = octopoll()
        .arg("run")
        .arg(&scenario)
        .arg("--check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("thresholds.handshakes: handshakes is a count: count or rate"),
        "{stderr}"
    );
}

#[test]
fn a_bad_scenario_file_names_file_line_and_key_and_exits_2_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, key) in [
        ("[cluster]\nnodes = 3\nspeed = 9\n", 3, "cluster.speed"),
        ("[cluster]\nnodes = 0\n", 2, "cluster.nodes"),
        ("seed = 1\ncluster.nodes = 0\n", 2, "cluster.nodes"),
        (
            "faults = [\n  { at = \"1s\", action = \"kill\", target = \"all\" },\n  { at = \"2s\", action = \"kill\" },\n]\n",
            3,
            "faults[1].target",
        ),
        ("[cluster]\nnodez = 3\n", 2, "cluster.nodez: unknown field `nodez`"),
        ("duration = 5\n", 1, "duration: invalid type"),
        (
            "duration = \"10s\"\n\n[[faults]]\nat = \"5s\"\naction = \"kill\"\ntarget = \"node-7\"\n",
            6,
            "faults[0].target",
        ),
        ("[agents]\ncount = \"many\"\n", 2, "agents.count"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let output = octopoll()
            .args(["-v", "run"])
            .arg(&path)
            .arg("--quiet")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        let expected = format!("{}:{line}: {key}", path.display());
        assert!(stderr.contains(&expected), "{text}: expected {expected:?} in {stderr}");
        assert!(!stderr.contains("node started"), "nothing started: {stderr}");
    }
    let missing = octopoll()
        .args(["run", "/nonexistent/scenario.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("reading scenario /nonexistent/scenario.toml"));
}

#[test]
fn flags_override_the_scenario_file() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("small.toml");
    let json = dir.path().join("r.json");
    let csv = dir.path().join("r.csv");
    // Outputs are keys too: the CSV path and quiet come from the file.
    std::fs::write(
        &scenario,
        format!(
            "duration = \"1s\"\n[cluster]\nnodes = 2\n[agents]\ncount = 4\n[output]\ncsv = {:?}\nquiet = true\n",
            csv.display().to_string()
        ),
    )
    .unwrap();
    let html = dir.path().join("r.html");
    let output = octopoll()
        .arg("run")
        .arg(&scenario)
        .args(["--nodes", "1", "--comms-port", "0", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["nodes"], 1, "the flag wins");
    assert_eq!(report["agents"], 4, "the file's value stays");
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv.starts_with("second,connections_node_1,coverage,"),
        "{csv}"
    );
    assert!(csv.lines().count() >= 2, "{csv}");
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("Connections per node"), "{html}");
}

#[test]
fn proxy_runs_standalone_with_a_toxiproxy_shaped_api_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};

    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    /// Kills the proxy if the test fails before stopping it.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(
        octopoll()
            .args(["proxy", "--api", "127.0.0.1:0", "--proxy"])
            .arg(format!("node-1=127.0.0.1:0={upstream_addr}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let created = lines.next().unwrap().unwrap();
    assert!(
        created.starts_with("proxy node-1 listening on 127.0.0.1:"),
        "{created}"
    );
    let api_line = lines.next().unwrap().unwrap();
    let api = api_line
        .strip_prefix("chaos proxy API on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{api_line}"))
        .to_string();

    let http = |request: String| {
        let mut stream = std::net::TcpStream::connect(&api).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let body = r#"{"type":"latency","attributes":{"latency":50,"jitter":0}}"#;
    let added = http(format!(
        "POST /proxies/node-1/toxics HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(added.starts_with("HTTP/1.1 200"), "{added}");
    let listed = http(format!(
        "GET /proxies HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    ));
    assert!(listed.contains(r#""name":"node-1""#), "{listed}");
    assert!(listed.contains(r#""latency_downstream""#), "{listed}");
    let missing = http(format!(
        "GET /proxies/nope HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    ));
    // A name in Host (DNS rebinding) is refused.
    let rebound =
        http("GET /proxies HTTP/1.1\r\nHost: rebind.test:8474\r\nConnection: close\r\n\r\n".into());
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "SIGTERM stops it cleanly: {status}");
}

#[test]
fn metrics_are_scraped_during_a_run_and_the_connection_gauge_counts_connected_pairs() {
    use std::io::{Read, Write};

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let child = octopoll()
        .args([
            "run",
            "--nodes",
            "3",
            "--agents",
            "6",
            "--duration",
            "6s",
            "--comms-port",
            "0",
            "--quiet",
            "--metrics",
        ])
        .arg(addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    /// Kills the run if the test fails first.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let scrape = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let connected = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("octopoll_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Scrape until every agent holds its three connections and has polled on
    // each (a node counts a pair as polling a moment after the connection is
    // identified); a ceiling, not a delay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        if let Some(text) = scrape() {
            if connected(&text) == 18.0 && text.contains("octopoll_coverage_ratio 1\n") {
                break text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw 6 agents × 3 nodes connected and polling"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("octopoll_agents{node=\"node-1\",state=\"polling\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE octopoll_handshakes_total counter"),
        "{text}"
    );
    assert!(child.0.wait().unwrap().success());
}

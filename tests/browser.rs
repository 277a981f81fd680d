//! octopoll's pages in a real browser (Debian's chromium, headless):
//! - the live dashboard of a running run, after a node was killed through the API
//!   the page's button calls: the rendered DOM shows the node down and its agents'
//!   cells lost;
//! - the HTML report of `node-failover`: its plots render, with the faults marked;
//! - another web page, and a page whose name resolves to 127.0.0.1 (DNS
//!   rebinding), trying to drive the local APIs: refused, and nothing changes.
//!
//! Screenshots are saved under the tests' output directory. Without chromium the
//! tests are skipped with a message on a developer's machine, and fail under
//! `CI=true` (`.ci/run` installs it).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use octopoll_lab::LabConfig;
use octopoll_scenario::file::Source;
use octopoll_scenario::layers::Layers;
use octopoll_scenario::progress::Progress;
use octopoll_scenario::{execute, RunConfig};
use tokio::process::Command;

const AGENTS: usize = 6;

fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    match found {
        Some(path) => Some(path),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the browser tests need chromium in CI (apt-get install chromium)")
        }
        None => {
            eprintln!(
                "skipping the dashboard test: chromium is not installed (apt-get install chromium)"
            );
            None
        }
    }
}

/// Runs headless chromium on `url` with `mode` (`--dump-dom` or `--screenshot=…`).
async fn browse(chromium: &Path, url: &str, mode: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
        ])
        .args([
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--no-first-run",
        ])
        .arg("--window-size=1200,900")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(mode)
        .arg(url)
        // cargo test points LD_LIBRARY_PATH at build outputs; chromium must load
        // the system's libraries.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("chromium finishes within a minute")
        .expect("chromium runs");
    drop(profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Saves a screenshot of `url` as `name` under the tests' output directory.
async fn screenshot(chromium: &Path, url: &str, name: &str, size: &str) {
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&shot);
    let window = format!("--window-size={size}");
    let target = format!("--screenshot={}", shot.display());
    browse(chromium, url, &[&window, &target]).await;
    let bytes = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        bytes > 10_000,
        "a screenshot was saved at {}",
        shot.display()
    );
    println!("screenshot: {}", shot.display());
}

async fn cluster(client: &reqwest::Client, base: &str) -> serde_json::Value {
    answer(client.get(format!("{base}/api/cluster"))).await
}

/// The JSON a request is answered with.
async fn answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A run of `config` with its dashboard on a free port, once the dashboard shows
/// full coverage: the run's task, the dashboard's base URL and a client for it.
async fn run_with_dashboard(
    mut config: RunConfig,
) -> (
    tokio::task::JoinHandle<Result<octopoll_scenario::Finished, String>>,
    String,
    reqwest::Client,
) {
    let addr: SocketAddr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    config.control = Some(addr);
    let run = tokio::spawn(async move {
        execute(config, &mut Progress::stderr(true))
            .await
            .map_err(|e| format!("{e:#}"))
    });
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    common::wait_until_async(
        Duration::from_secs(30),
        "full coverage on the dashboard",
        || async {
            let response = client
                .get(format!("{base}/api/cluster"))
                .send()
                .await
                .ok()?;
            response.json::<serde_json::Value>().await.ok()
        },
        |state| state.as_ref().is_some_and(|s| s["coverage"] == 1.0),
    )
    .await;
    (run, base, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_from_the_dashboard_shows_it_down_and_its_agents_lost() {
    let Some(chromium) = chromium() else { return };
    common::init_logging();
    let mut config = RunConfig::new(LabConfig::new(3, AGENTS));
    // Long enough for two chromium runs and the final start on a loaded machine.
    config.duration = Duration::from_secs(25);
    config.rate = 10.0;
    let (run, base, client) = run_with_dashboard(config).await;

    // What the page's "kill" button on node-2's card does.
    let killed = answer(client.post(format!("{base}/api/nodes/node-2/kill"))).await;
    assert_eq!(killed["running"], false, "{killed}");
    let state = cluster(&client, &base).await;
    assert!(
        (state["coverage"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{state}"
    );

    // `?static`: the page renders the state it was served with and opens no event
    // stream, so headless chromium finishes as soon as it has loaded.
    let page = format!("{base}/?static");
    let dom = browse(&chromium, &page, &["--dump-dom"]).await;
    assert!(
        dom.contains(r#"data-rendered="yes""#),
        "the page rendered:\n{dom}"
    );
    assert!(
        dom.contains(r#"id="card-node-2" data-state="down""#),
        "node-2's card shows it down:\n{dom}"
    );
    assert!(dom.contains(r#"id="card-node-1" data-state="up""#), "{dom}");
    let lost = dom
        .matches(r#"data-node="node-2" data-state="lost""#)
        .count();
    assert_eq!(
        lost, AGENTS,
        "every agent's node-2 cell turned lost:\n{dom}"
    );
    let polling = dom
        .matches(r#"data-node="node-1" data-state="polling""#)
        .count();
    assert_eq!(polling, AGENTS, "node-1's cells still poll:\n{dom}");
    assert!(dom.contains("kill node-2"), "the fault is on the timeline");

    screenshot(&chromium, &page, "dashboard-node-2-killed.png", "1200,900").await;

    // The button to start it again, and the run ends clean.
    let started = client
        .post(format!("{base}/api/nodes/node-2/start"))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success());
    let report = run.await.unwrap().expect("the run completes").report;
    assert_eq!(report.requests.lost, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_failover_html_report_renders_its_plots_with_the_faults_marked() {
    let Some(chromium) = chromium() else { return };
    common::init_logging();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/node-failover.toml");
    let mut layers = Layers::new();
    layers.read(&path).unwrap();
    let flags = "time_scale = 0.25\n[agents]\ncount = 20\n[cluster]\ncomms_port = 0\n";
    layers.file(&Source::new("test flags", flags)).unwrap();
    let config = layers.resolve().unwrap();
    let finished = execute(config, &mut Progress::stderr(true)).await.unwrap();
    assert!(
        finished.report.breaches().next().is_none(),
        "{}",
        finished.report
    );

    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let html = out.join("node-failover-report.html");
    std::fs::write(&html, &finished.html).unwrap();
    let url = format!("file://{}", html.display());
    let dom = browse(&chromium, &url, &["--dump-dom"]).await;
    // One line per node in the connections plot, one for pickup p99; the kill and
    // the start marked on both time axes.
    assert_eq!(dom.matches(r#"class="series""#).count(), 3 + 1, "{dom}");
    assert_eq!(dom.matches(r#"class="fault""#).count(), 2 * 2, "{dom}");
    assert!(dom.contains("kill node-2"), "{dom}");
    assert!(
        dom.contains(r#"class="passed""#) && !dom.contains(r#"class="breached""#),
        "{dom}"
    );

    screenshot(&chromium, &url, "node-failover-report.png", "1000,1400").await;
}

/// Serves `html` on a free port of 127.0.0.2: another site, as the browser sees it.
async fn attacker_page(html: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_web_page_cannot_drive_the_local_apis() {
    let Some(chromium) = chromium() else { return };
    common::init_logging();
    // A run with its dashboard and the chaos proxies' API.
    let mut config = RunConfig::new(LabConfig::new(2, 2));
    config.lab.chaos = true;
    config.duration = Duration::from_secs(20);
    config.rate = 5.0;
    let (run, base, client) = run_with_dashboard(config).await;
    let control: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    // A node process's control API, served as `octopoll node` serves it.
    let lab = octopoll_lab::Lab::start_ready(LabConfig::new(1, 1), Duration::from_secs(30))
        .await
        .unwrap();
    let node_api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_base = format!("http://{}", node_api.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(octopoll_http::serve(
        node_api,
        octopoll_fleet::node_api::router(lab.node(1).unwrap().clone()),
        octopoll_http::ServeLimits::default(),
        stop.clone(),
    ));

    // The machine list names every trusted certificate: it needs the key too.
    let listed = client
        .get(format!("{node_base}/api/machines"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401);
    let key = lab.node(1).unwrap().config().api_key.expose().to_owned();
    let listed = client
        .get(format!("{node_base}/api/machines"))
        .header("X-Octopus-ApiKey", key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // What any page a user opens can send without asking: no-cors requests, a
    // text/plain body. Each would kill a node, queue a burst, or open a proxy
    // on every interface relaying anywhere.
    let html = format!(
        r#"<html><body><p id="status">running</p><script>
const control = "{base}";
const attempts = [
  fetch(control + "/api/nodes/node-1/kill", {{method: "POST", mode: "no-cors"}}),
  fetch(control + "/api/burst", {{method: "POST", mode: "no-cors", body: '{{"requests": 1000}}'}}),
  fetch(control + "/proxies", {{method: "POST", mode: "no-cors",
    body: JSON.stringify({{name: "evil", listen: "0.0.0.0:0", upstream: "127.0.0.1:9"}})}}),
  fetch("{node_base}/api/node/kill", {{method: "POST", mode: "no-cors"}}),
];
Promise.allSettled(attempts).then(results => {{
  document.getElementById("status").textContent =
    "done: " + results.map(r => r.status).join(",");
}});
</script></body></html>"#
    );
    let page = attacker_page(html).await;
    let dom = browse(
        &chromium,
        &format!("http://{page}/"),
        &["--dump-dom", "--virtual-time-budget=10000"],
    )
    .await;
    assert!(
        dom.contains("done: fulfilled,fulfilled,fulfilled,fulfilled"),
        "the page's requests were sent:\n{dom}"
    );
    let state = cluster(&client, &base).await;
    assert_eq!(
        state["nodes"][0]["running"], true,
        "node-1 still runs: {state}"
    );
    let proxies = answer(client.get(format!("{base}/proxies"))).await;
    assert!(
        proxies.get("evil").is_none(),
        "no proxy was opened: {proxies}"
    );
    assert!(
        lab.node(1).unwrap().is_running(),
        "the node process's node still runs"
    );

    // DNS rebinding: a name the attacker controls, resolved to 127.0.0.1, makes
    // its page same-origin with the API; the Host names it, and is refused.
    let rebind = |port: u16| format!("http://rebind.test:{port}/");
    let rules = "--host-resolver-rules=MAP rebind.test 127.0.0.1";
    let dom = browse(&chromium, &rebind(control.port()), &["--dump-dom", rules]).await;
    assert!(dom.contains("is not this API's address"), "{dom}");
    assert!(
        !dom.contains("data-rendered"),
        "the dashboard was not served:\n{dom}"
    );
    let node_port = node_base.rsplit(':').next().unwrap().parse().unwrap();
    let machines = format!("{}api/machines", rebind(node_port));
    let dom = browse(&chromium, &machines, &["--dump-dom", rules]).await;
    assert!(dom.contains("is not this API's address"), "{dom}");

    // The dashboard itself, at its own address, still works.
    let dom = browse(&chromium, &format!("{base}/?static"), &["--dump-dom"]).await;
    assert!(dom.contains(r#"data-rendered="yes""#), "{dom}");
    stop.cancel();
    lab.stop().await;
    let finished = run.await.unwrap().unwrap();
    assert_eq!(finished.report.requests.lost, 0);
}

//! `octopoll run`: scenario and flags → [`RunConfig`], run, print and save the
//! report, and turn it into an exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use octopoll_fleet::plan::Plan;
use octopoll_lab::haproxy::BalancerError;
use octopoll_scenario::file::{OutputKeys, ScenarioError, Source};
use octopoll_scenario::layers::Layers;
use octopoll_scenario::progress::Progress;
use octopoll_scenario::{execute_until, RunConfig};
use tokio_util::sync::CancellationToken;

use crate::args::RunArgs;
use crate::commands::THRESHOLD_BREACHED;

/// Where the dashboard goes on a terminal when no `--dashboard` is given.
const DEFAULT_DASHBOARD_PORT: u16 = 8080;

/// The exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT), after
/// its reports were written.
pub const INTERRUPTED: u8 = 130;

/// Runs and reports; fails if any request was lost, exits 99 if a threshold
/// broke. Cancelling `interrupt` stops the run early: what ran is still
/// reported and written, marked interrupted, and the exit code is 130.
pub async fn run(args: RunArgs, interrupt: CancellationToken) -> anyhow::Result<ExitCode> {
    let (mut config, output) = config_of(&args)?;
    let outputs: Vec<(Output, PathBuf)> = [
        (Output::Json, output.json),
        (Output::Csv, output.csv),
        (Output::Html, output.html),
        (Output::Junit, output.junit),
    ]
    .into_iter()
    .filter_map(|(kind, path)| Some((kind, path?)))
    .collect();
    // A path that cannot be written is found now, not after the run.
    for (kind, path) in &outputs {
        writable(path)
            .with_context(|| format!("the {} cannot go to {}", kind.what(), path.display()))?;
    }
    if args.check {
        println!("{}", check_summary(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let quiet = output.quiet.unwrap_or(false);
    // On a terminal the dashboard is on unless asked otherwise, where it is free
    // (and where the run stays in this process: the page reads the nodes directly).
    let in_process = matches!(config.plan(), Ok(Plan::InProcess));
    if config.control.is_none() && !quiet && std::io::stderr().is_terminal() && in_process {
        let default: std::net::SocketAddr = ([127, 0, 0, 1], DEFAULT_DASHBOARD_PORT).into();
        if std::net::TcpListener::bind(default).is_ok() {
            config.control = Some(default);
        }
    }
    let mut progress = Progress::stderr(quiet);
    let finished = execute_until(config, &mut progress, interrupt)
        .await
        .map_err(with_hint)?;
    let report = &finished.report;
    print!("{report}");
    // Each output is written even if another could not be.
    let json = serde_json::to_string_pretty(report)? + "\n";
    let unwritten: Vec<String> = outputs
        .iter()
        .filter_map(|(kind, path)| {
            let text = match kind {
                Output::Json => &json,
                Output::Csv => &finished.csv,
                Output::Html => &finished.html,
                Output::Junit => &finished.junit,
            };
            std::fs::write(path, text)
                .err()
                .map(|error| format!("the {} to {}: {error}", kind.what(), path.display()))
        })
        .collect();
    if !unwritten.is_empty() {
        bail!("could not write {}", unwritten.join("; "));
    }
    if report.interrupted {
        eprintln!("octopoll: the run was interrupted; its reports cover what ran");
        return Ok(ExitCode::from(INTERRUPTED));
    }
    if let Some(aborted) = &report.aborted {
        eprintln!(
            "octopoll: stopped at {:.1} s by {} (abort_on_fail); its reports cover what ran",
            aborted.at_s, aborted.threshold
        );
        return Ok(ExitCode::from(THRESHOLD_BREACHED));
    }
    let failed_faults: Vec<String> = report
        .faults
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.fault)))
        .collect();
    if !failed_faults.is_empty() {
        bail!(
            "faults could not be carried out: {}",
            failed_faults.join("; ")
        );
    }
    // Thresholds first: a scenario's `lost_max` decides a lost request's exit code.
    if report.breaches().next().is_some() {
        if let Some(verdict) = report.verdict() {
            eprintln!("octopoll: {verdict}");
        }
        return Ok(ExitCode::from(THRESHOLD_BREACHED));
    }
    let requests = &report.requests;
    if requests.lost > 0 {
        bail!(
            "{} requests were lost (queued but never completed or failed)",
            requests.lost
        );
    }
    if requests.counted_twice > 0 {
        bail!(
            "{} request ends were counted twice (an invariant broke)",
            requests.counted_twice
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A file a run writes.
#[derive(Clone, Copy)]
enum Output {
    Json,
    Csv,
    Html,
    Junit,
}

impl Output {
    fn what(self) -> &'static str {
        match self {
            Output::Json => "JSON report",
            Output::Csv => "CSV time series",
            Output::Html => "HTML report",
            Output::Junit => "JUnit XML",
        }
    }
}

/// Whether a file can be written at `path`: it is not a directory, and it can be
/// opened for writing, or its directory exists and takes a new file (tried with
/// a file created and removed at once).
fn writable(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    std::fs::remove_file(path)
}

/// The built-in default, then the scenario file, then the flags; checked.
fn config_of(args: &RunArgs) -> anyhow::Result<(RunConfig, OutputKeys)> {
    let mut layers = Layers::new();
    if let Some(path) = &args.scenario {
        layers.read(path)?;
    }
    if let Some(path) = &args.from_report {
        layers.file(&embedded_scenario(path)?)?;
    }
    args.apply_to(&mut layers)?;
    let config = layers.resolve()?;
    Ok((config, layers.scenario()?.output))
}

/// The scenario a JSON report embeds, as a source named after the report; a
/// report that cannot be read or embeds none is a bad scenario (exit 2).
fn embedded_scenario(path: &Path) -> Result<Source, ScenarioError> {
    let report = crate::commands::compare::read_report(path)?;
    let Some(scenario) = report.get("scenario").and_then(|s| s.as_str()) else {
        return Err(ScenarioError {
            location: path.display().to_string(),
            key: "scenario".into(),
            message: "the report embeds no scenario (not a report of `octopoll run --json`, or one from before 0.1.0)".into(),
        });
    };
    Ok(Source::new(
        format!("{} (its scenario)", path.display()),
        scenario,
    ))
}

/// What `--check` says of a scenario that would run: its shape, where it
/// would run, its faults and thresholds.
fn check_summary(config: &RunConfig) -> anyhow::Result<String> {
    let plan = match config.plan()? {
        Plan::InProcess => "in this process".to_owned(),
        Plan::Processes { swarms } => {
            format!("split: a process per node, {swarms} agent processes")
        }
    };
    let lab = &config.lab;
    let rules: usize = config.thresholds.metrics.values().map(|r| r.0.len()).sum();
    let fixed = config.thresholds.fixed_set();
    let mut text =
        format!(
        "scenario OK{}: {} nodes, {} agents, {} topology, {} queue, {} at {} requests/s, {plan}",
        config.name.as_deref().map_or(String::new(), |n| format!(" ({n})")),
        lab.cluster.nodes,
        lab.swarm.agents,
        lab.topology,
        lab.cluster.queue,
        humantime::format_duration(config.duration),
        config.rate,
    );
    for fault in &config.faults {
        text.push_str(&format!("\n  fault      {}", fault.describe()));
    }
    text.push_str(&format!(
        "\n  thresholds {} ({fixed} fixed, {rules} on metrics, {} abort the run)",
        fixed + rules,
        config.thresholds.abort_rules().count()
    ));
    Ok(text)
}

/// Adds what to do next to errors a user can fix with a flag.
fn with_hint(error: anyhow::Error) -> anyhow::Error {
    let busy_port = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<octopoll_node::Error>(),
            Some(octopoll_node::Error::Bind { .. })
        ) || matches!(
            cause.downcast_ref::<BalancerError>(),
            Some(BalancerError::Exited { stderr, .. }) if stderr.contains("cannot bind")
        )
    });
    if busy_port {
        error.context("a port is taken (another octopoll run?); pass --comms-port 0 / --api-port 0 to use free ports")
    } else {
        error
    }
}

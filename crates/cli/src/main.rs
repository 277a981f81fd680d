//! The `octopoll` binary: parses flags, sets up logging, runs a subcommand, and
//! turns its error into a message and an exit code.

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("octopoll: {error:#}");
            // A bad scenario or cluster file, or a run no split of processes can
            // hold, is a usage error, like a bad flag (clap exits 2).
            let usage = error.chain().any(|cause| {
                cause.is::<octopoll_scenario::file::ScenarioError>()
                    || cause.is::<octopoll_scenario::file::LoadError>()
                    || cause.is::<octopoll_fleet::plan::PlanError>()
                    || cause.is::<octopoll_fleet::cluster_file::ClusterFileError>()
            });
            if usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Certs(args) => commands::certs::certs(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => commands::compare::compare(args),
        Command::Proxy(args) => block_on(commands::proxy::proxy(args, async {
            interrupted().await;
        }))
        .map(|()| ExitCode::SUCCESS),
        Command::Node(args) => {
            block_on(commands::node::node(args, interrupted())).map(|()| ExitCode::SUCCESS)
        }
        Command::Swarm(args) => {
            block_on(commands::swarm::swarm(*args, interrupted())).map(|()| ExitCode::SUCCESS)
        }
        Command::Guard(args) => {
            let status = block_on(octopoll_fleet::guard::run(
                &args.command,
                &args.remove,
                interrupted(),
            ))?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        Command::Tentacle(args) => {
            let cli = match octopoll_tentacle::parse(args.args) {
                Ok(cli) => cli,
                Err(error) => error.exit(),
            };
            let mut out = std::io::stdout();
            block_on(octopoll_tentacle::run(cli.command, &mut out, async {
                interrupted().await;
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => {
            block_on(commands::health::health(args)).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            octopoll_fleet::plan::open_file_limit();
            block_on(commands::bench::bench(args)).map(|()| ExitCode::SUCCESS)
        }
        Command::Run(args) => block_on(async {
            // The first Ctrl-C or SIGTERM ends the run early, with its reports; a
            // second one drops it at once (its HAProxy, nodes and agents with it).
            let interrupt = tokio_util::sync::CancellationToken::new();
            let run = commands::run::run(*args, interrupt.clone());
            tokio::pin!(run);
            tokio::select! {
                result = &mut run => return result,
                signal = interrupted() => {
                    eprintln!("octopoll: interrupted by {signal}: stopping the run and writing its reports (again to abort)");
                    interrupt.cancel();
                }
            }
            tokio::select! {
                result = run => result,
                signal = interrupted() => anyhow::bail!("interrupted by {signal} again: aborted without reports"),
            }
        }),
    }
}

/// Runs `work` on a multi-threaded runtime. The runtime is not waited on once
/// `work` is done: a task blocked reading stdin (a child watching its parent)
/// must not keep the process alive.
fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// Waits for Ctrl-C or SIGTERM (a CI job cancelled, `timeout`, `kill`).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines go above the live display on a terminal, not through it, and
        // carry colours only there.
        .with_writer(octopoll_scenario::progress::LogWriter::new)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // So do the log lines of the node and swarm processes a run starts.
    octopoll_fleet::child::print_child_lines_with(|line| {
        use std::io::Write as _;
        let _ = octopoll_scenario::progress::LogWriter::new().write_all(line.as_bytes());
    });
}

//! `octopoll guard [--remove DIR]… [-- PROGRAM ARGS…]`: runs a program that
//! cannot watch its parent (redis-server) so that it still never outlives
//! octopoll. The guard holds the program as a child and stops it (SIGTERM, then
//! SIGKILL) as soon as its stdin closes — which happens when octopoll exits, even
//! when it is killed outright and runs no cleanup — or a signal comes. Then it
//! deletes the `--remove` directories: a killed run's temporary files (the
//! cluster's certificate and key among them) go with it. With no program the
//! guard only waits, then deletes.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How long the program may take to stop before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Runs `command` (a program and its arguments; none: only waits) until it
/// exits, stdin closes or `interrupted` resolves, then deletes `remove`; returns
/// how the program exited (stopped by the guard: after SIGTERM).
pub async fn run(
    command: &[String],
    remove: &[PathBuf],
    interrupted: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<ExitStatus> {
    let status = match command.split_first() {
        Some((program, args)) => supervise(program, args, interrupted).await,
        None => {
            tokio::select! {
                () = stdin_closed() => tracing::info!("the parent went away; cleaning up"),
                signal = interrupted => tracing::info!(signal, "cleaning up"),
            }
            Ok(ExitStatus::from_raw(0))
        }
    };
    for path in remove {
        match std::fs::remove_dir_all(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed"),
            // The parent removed it first, as it does when it ends normally.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(path = %path.display(), %error, "could not remove"),
        }
    }
    status
}

/// Resolves when stdin reaches its end (or fails): the parent has gone.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn supervise(
    program: &str,
    args: &[String],
    interrupted: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<ExitStatus> {
    let mut child = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    tokio::select! {
        status = child.wait() => return Ok(status?),
        () = stdin_closed() => tracing::info!(program, "the parent went away; stopping"),
        signal = interrupted => tracing::info!(program, signal, "stopping"),
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_BOUND, child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.kill().await?;
            Ok(child.wait().await?)
        }
    }
}

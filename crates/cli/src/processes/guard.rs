//! `octopoll guard -- PROGRAM ARGS…`: runs a program that cannot watch its parent
//! (redis-server) so that it still never outlives octopoll. The guard holds the
//! program as a child in its own process group and stops it (SIGTERM, then
//! SIGKILL) as soon as its stdin closes — which happens when octopoll exits, even
//! when it is killed outright and runs no cleanup — or a signal comes.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How long the program may take to stop before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Runs `program` with `args` until it exits, stdin closes or `interrupted`
/// resolves; returns how it exited (stopped by the guard: after SIGTERM).
pub async fn run(
    program: &str,
    args: &[String],
    interrupted: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<ExitStatus> {
    let mut child = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        status = child.wait() => return Ok(status?),
        _ = stdin_closed => tracing::info!(program, "the parent went away; stopping"),
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

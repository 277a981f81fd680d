//! `octopoll swarm`: polling agents (or a share of them) as their own process.

use std::future::Future;

use octopoll_cli::processes::{child, swarm_process};
use tokio_util::sync::CancellationToken;

use crate::args::SwarmArgs;

/// Registers and runs the agents until `interrupted` (or, with `--parent-watch`,
/// until stdin closes).
pub async fn swarm(
    args: SwarmArgs,
    interrupted: impl Future<Output = &'static str> + Send + 'static,
) -> anyhow::Result<()> {
    octopoll_cli::processes::plan::open_file_limit();
    let settings = args.settings()?;
    let stop = CancellationToken::new();
    if args.parent_watch {
        child::watch_parent(stop.clone());
    }
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let signal = interrupted.await;
        tracing::info!(signal, "stopping");
        on_signal.cancel();
    });
    swarm_process::run(settings, stop).await.map(drop)
}

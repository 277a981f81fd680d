//! `octopoll swarm`: polling agents (or a share of them) as their own process.

use std::future::Future;

use octopoll_fleet::{child, swarm_process};

use crate::args::SwarmArgs;

/// Registers and runs the agents until `interrupted` (or, with `--parent-watch`,
/// until stdin closes).
pub async fn swarm(
    args: SwarmArgs,
    interrupted: impl Future<Output = &'static str> + Send + 'static,
) -> anyhow::Result<()> {
    octopoll_fleet::plan::open_file_limit();
    let settings = args.settings()?;
    let stop = child::stop_token(args.parent_watch, interrupted);
    swarm_process::run(settings, stop).await.map(drop)
}

//! `octopoll node`: one node of a cluster as its own process.

use std::future::Future;

use octopoll_fleet::{child, node_process};

use crate::args::NodeArgs;

/// Runs node `--node` of `--cluster-file` until `interrupted` (or, with
/// `--parent-watch`, until stdin closes).
pub async fn node(
    args: NodeArgs,
    interrupted: impl Future<Output = &'static str> + Send + 'static,
) -> anyhow::Result<()> {
    octopoll_fleet::plan::open_file_limit();
    let settings = node_process::settings(&args.cluster_file, args.node)?;
    let stop = child::stop_token(args.parent_watch, interrupted);
    node_process::run(settings, stop).await.map(drop)
}

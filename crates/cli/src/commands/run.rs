//! `octopoll run`: flags → [`RunConfig`], run, print and save the report.

use anyhow::{bail, Context};
use octopoll_cli::haproxy::BalancerError;
use octopoll_cli::lab::LabConfig;
use octopoll_cli::progress::Progress;
use octopoll_cli::run::{execute, RunConfig};

use crate::args::RunArgs;

/// Runs and reports; fails if any request was lost.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (json, quiet) = (args.json.clone(), args.quiet);
    let mut progress = Progress::stderr(quiet);
    let report = execute(config_of(args), &mut progress)
        .await
        .map_err(with_hint)?;
    print!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
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
    Ok(())
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

fn config_of(args: RunArgs) -> RunConfig {
    let mut lab = LabConfig::new(args.nodes, args.agents as usize);
    lab.topology = args.topology;
    lab.haproxy = args.haproxy;
    lab.cluster.queue = args.queue.into();
    lab.cluster.bind = args.bind;
    lab.cluster.comms_port = args.comms_port;
    lab.cluster.api_port = args.api_port;
    lab.cluster.node.long_poll = args.long_poll;
    lab.cluster.node.pickup_timeout = args.pickup_timeout;
    lab.swarm.key_type = args.key_type.into();
    lab.server_key_type = args.key_type.into();
    lab.swarm.agent.polling.connections_per_node = args.connections_per_node as usize;
    let mut config = RunConfig::new(lab);
    config.duration = args.duration;
    config.rate = args.rate;
    config.seed = args.seed;
    config.drain = args.drain;
    config.mesh_timeout = args.mesh_timeout;
    config.max_script_time = args.max_script_time;
    config
}

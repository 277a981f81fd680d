//! `octopoll node`: one node of a cluster as a process of its own, sharing the
//! machine registry with the cluster's other node processes through Redis. It
//! serves polling Tentacles on its comms port, the registration API over HTTPS,
//! and its control API ([`super::node_api`]) until SIGTERM, Ctrl-C or (with
//! `--parent-watch`) its parent going away; then it stops gracefully and prints
//! its final counters.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use octopoll_node::QueueSource;
use octopoll_node::{MachineRegistry, Node, NodeStats};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::child::{announce, Announcement, Listening};
use crate::cluster_file::{ClusterFile, NodeSettings};

/// Node `n` of the cluster in `file`, with the environment's overrides.
pub fn settings(file: &Path, n: u16) -> anyhow::Result<NodeSettings> {
    let cluster = ClusterFile::read(file)?;
    Ok(cluster.node(file, n, |name| std::env::var(name).ok())?)
}

/// Runs the node until `stop`; returns its final counters.
pub async fn run(settings: NodeSettings, stop: CancellationToken) -> anyhow::Result<NodeStats> {
    let id = settings.config.id;
    let identity = octopoll_pki::pem::load_files(&settings.certificate, &settings.private_key)
        .with_context(|| {
            format!(
                "loading the cluster certificate {} and key {}",
                settings.certificate.display(),
                settings.private_key.display()
            )
        })?;
    let registry = match &settings.registry {
        Some(url) => MachineRegistry::connect(url, &settings.cluster)
            .await
            .with_context(|| format!("connecting {id} to the machine registry"))?,
        None => MachineRegistry::new(),
    };
    let listen = &settings.listen;
    let bind = |addr, what: &str| {
        octopoll_node::tcp::bind(addr)
            .with_context(|| format!("{what} for {id} could not bind {addr}"))
    };
    let comms = bind(listen.comms, "polling listener")?;
    let api = bind(listen.api, "registration API")?;
    let control = bind(listen.control, "control API")?;
    let control_addr = control.local_addr()?;
    let queue = match &settings.queue_redis {
        Some(queue) => {
            let link = octopoll_node::queue::RedisQueueLink::connect(queue, &settings.config)
                .await
                .with_context(|| format!("connecting {id} to the Redis queue"))?;
            QueueSource::Redis(link)
        }
        None => QueueSource::PerNode,
    };
    let node = Arc::new(Node::start_with_queue(
        settings.config.clone(),
        &identity,
        registry,
        queue,
        comms,
        api,
    )?);
    let serving = CancellationToken::new();
    let server = tokio::spawn(octopoll_http::serve(
        control,
        crate::node_api::router(node.clone()),
        octopoll_http::ServeLimits::default(),
        serving.clone(),
    ));
    info!(node = %id, comms = %node.comms_addr(), api = %node.api_addr(), control = %control_addr, registry = node.registry().store_url().unwrap_or("in this process"), "node process ready");
    announce::<_, ()>(&Announcement::Ready(Listening {
        control: control_addr,
        comms: Some(node.comms_addr()),
        api: Some(node.api_addr()),
    }))?;
    stop.cancelled().await;
    let stats = node.stop().await;
    serving.cancel();
    let _ = server.await;
    announce::<(), _>(&Announcement::Stopped(stats.clone()))?;
    info!(node = %id, "node process stopped");
    Ok(stats)
}

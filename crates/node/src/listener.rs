//! The accept loop of a node's comms port. Each connection is served in its own
//! task, TLS handshake included, so a slow peer never stalls `accept`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::connection;
use crate::shared::NodeShared;

/// Accepts polling connections until `shutdown`.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<NodeShared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    info!(node = %shared.config.id, addr = ?listener.local_addr().ok(), "polling listener started");
    let what = format!("polling listener of {}", shared.config.id);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = crate::tcp::accept(&listener, &what) => accepted,
        };
        crate::tcp::tune(&tcp);
        tracker.spawn(connection::serve(
            shared.clone(),
            tcp,
            peer,
            shutdown.child_token(),
        ));
    }
    info!(node = %shared.config.id, "polling listener stopped");
}

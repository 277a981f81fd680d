//! The accept loop of a node's comms port. Each connection is served in its own
//! task, TLS handshake included, so a slow peer never stalls `accept`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::connection;
use crate::node::NodeShared;

/// Accepts polling connections until `shutdown`.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<NodeShared>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    info!(node = %shared.config.id, addr = ?listener.local_addr().ok(), "polling listener started");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                crate::tcp::tune(&tcp);
                tracker.spawn(connection::serve(
                    shared.clone(),
                    tcp,
                    peer,
                    shutdown.child_token(),
                ));
            }
            Err(error) => {
                // Out of descriptors, usually: back off instead of spinning.
                warn!(node = %shared.config.id, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    info!(node = %shared.config.id, "polling listener stopped");
}

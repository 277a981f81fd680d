//! Serving a control API to octopoll's own processes: HTTP/1.1 or HTTP/2 without
//! TLS (h2c, prior knowledge) on one port. The parent of a multi-process run keeps
//! one HTTP/2 connection per node process and sends every request of its workload
//! as a stream on it, however many wait at once; curl and browsers use HTTP/1.1.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Streams one HTTP/2 connection may carry at once: every request the workload
/// has waiting on a node, which a long pickup timeout can make thousands.
const MAX_STREAMS: u32 = 100_000;
/// How long open connections may take to finish after shutdown.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Serves `router` on `listener`, behind the guard that keeps other web pages
/// out ([`octopoll_http::local_only`]), until `shutdown`; then lets open
/// connections finish within a bound.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let router = match listener.local_addr() {
        Ok(bound) => octopoll_http::local_only(router, bound),
        Err(error) => {
            tracing::warn!(%error, "the control API's listener has no address; not serving");
            return;
        }
    };
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = octopoll_node::tcp::accept(&listener, "control API") => accepted,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(MAX_STREAMS);
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, %error, "control API connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_BOUND, connection).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(CLOSE_BOUND, tracker.wait()).await;
}

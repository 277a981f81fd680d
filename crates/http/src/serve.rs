//! Serving a local API: HTTP/1.1 or HTTP/2 without TLS (h2c, prior knowledge) on
//! one port, behind the [guard](crate::guard), with the same bounds as the comms
//! port has: a cap on connections, and deadlines on a client that says nothing.
//! The parent of a multi-process run keeps one HTTP/2 connection per node
//! process and sends every request of its workload as a stream on it; curl and
//! browsers use HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Bounds of one local API listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once; one past it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// An HTTP/1.1 client that takes longer to send a request's headers
    /// (slowloris), or to start the next request on a kept-alive connection, is
    /// disconnected.
    pub header_timeout: Duration,
    /// An HTTP/2 connection is pinged this often, and closed if a ping goes
    /// unanswered as long.
    pub keep_alive: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            first_byte_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(20),
        }
    }
}

/// Streams one HTTP/2 connection may carry at once: every request the workload
/// has waiting on a node, which a long pickup timeout can make thousands.
const MAX_STREAMS: u32 = 100_000;
/// How long open connections may take to finish after shutdown.
const CLOSE_BOUND: Duration = Duration::from_secs(5);
/// How long accepting pauses after an error (out of descriptors, usually).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` behind the guard, within `limits`, until
/// `shutdown`; then lets open connections finish within a bound.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let router = crate::local_only(router, bound);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%bound, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            debug!(%bound, %peer, limit = limits.max_connections, "local API connection past the cap closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, shutdown) = (router.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            if !speaks_within(&tcp, limits.first_byte_timeout).await {
                return debug!(%bound, %peer, "local API client sent nothing; closed");
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS)
                .keep_alive_interval(limits.keep_alive)
                .keep_alive_timeout(limits.keep_alive);
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%bound, %peer, %error, "local API connection ended");
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
    Ok(())
}

/// Whether the client sends its first byte within `deadline`.
async fn speaks_within(tcp: &TcpStream, deadline: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, tcp.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

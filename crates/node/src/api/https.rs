//! Serving the API over HTTPS: hyper on tokio-rustls, one task per connection with
//! the handshake inside it, graceful shutdown on cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::metrics::NodeMetrics;

/// Bound on a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds and counters of an API listener.
#[derive(Clone, Debug)]
pub struct ApiGuards {
    /// A client that takes longer to send a request's headers is disconnected.
    pub header_timeout: Duration,
    /// Connections open at once; one past it is closed as soon as it is
    /// accepted, so silent clients cannot take the descriptors the comms port needs.
    pub max_connections: usize,
    /// Where failed API connections are counted, by reason.
    pub metrics: Arc<NodeMetrics>,
}

/// Serves `router` on `listener` with `tls` until `shutdown`; open connections
/// then finish their request within a bound, or end at once on `abort`. A client
/// that takes longer than the guards' `header_timeout` to send a request's headers (slowloris)
/// is disconnected.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    guards: ApiGuards,
    tls: Arc<rustls::ServerConfig>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let open = Arc::new(tokio::sync::Semaphore::new(guards.max_connections));
    info!(addr = ?listener.local_addr().ok(), "registration API listening (https)");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = crate::tcp::accept(&listener, "registration API") => accepted,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            guards.metrics.api_ended("api-connection-limit");
            debug!(%peer, limit = guards.max_connections, "API connection past the cap closed");
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let (shutdown, abort) = (shutdown.clone(), abort.clone());
        let (metrics, header_timeout) = (guards.metrics.clone(), guards.header_timeout);
        tracker.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    metrics.api_ended("api-tls-handshake-failed");
                    return debug!(%peer, %error, "API TLS handshake failed");
                }
                Err(_) => {
                    metrics.api_ended("api-handshake-timeout");
                    return debug!(%peer, "API TLS handshake timed out");
                }
            };
            let service = TowerToHyperService::new(router);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => if let Err(error) = result {
                    metrics.api_ended(if error.is_timeout() { "api-header-timeout" } else { "api-connection-error" });
                    debug!(%peer, %error, "API connection error");
                },
                _ = abort.cancelled() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = tokio::time::timeout(Duration::from_secs(5), connection) => {}
                        _ = abort.cancelled() => {}
                    }
                }
            }
        });
    }
}

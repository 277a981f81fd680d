//! A proxy's accept loop and each proxied connection: connect upstream, pump both
//! directions through their toxics, then close (or reset) both sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::gate::{Activity, ToxicEntry};
use crate::pipe::{direction, End};
use crate::toxic::Stream;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where a proxy's connections go, and the toxics they pass through.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// The proxy's name, for the logs.
    pub(crate) proxy: String,
    /// `host:port` to connect to.
    pub(crate) upstream: String,
    /// The proxy's toxics.
    pub(crate) toxics: watch::Receiver<Vec<ToxicEntry>>,
}

/// Accepts connections until `cancel`, each proxied in a task of `connections`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    route: Route,
    cancel: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                let span = tracing::info_span!("chaos", proxy = %route.proxy, %peer);
                let connection = proxy(client, peer, route.clone(), cancel.clone());
                connections.spawn(connection.instrument(span));
            }
            Err(error) => {
                tracing::warn!(proxy = %route.proxy, %error, "accept failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Proxies one client connection until both directions end, a toxic ends it, or
/// `cancel` cuts it.
async fn proxy(client: TcpStream, peer: SocketAddr, route: Route, cancel: CancellationToken) {
    let connected = tokio::select! {
        () = cancel.cancelled() => return,
        connected = TcpStream::connect(route.upstream.as_str()) => connected,
    };
    let server = match connected {
        Ok(server) => server,
        Err(error) => {
            // Dropping the client closes it, as a refused upstream would look to it.
            tracing::info!(
                upstream = %route.upstream,
                %error,
                "upstream connect failed; closing client"
            );
            return;
        }
    };
    tracing::debug!(%peer, upstream = %route.upstream, "connected");
    // Small pieces (slicer, bandwidth) must leave as written, not be coalesced.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let activity = Activity::new(tokio::time::Instant::now());
    let end = {
        let up = direction(
            &mut client_read,
            &mut server_write,
            route.toxics.clone(),
            Stream::Upstream,
            activity.clone(),
        );
        let down = direction(
            &mut server_read,
            &mut client_write,
            route.toxics,
            Stream::Downstream,
            activity,
        );
        tokio::select! {
            () = cancel.cancelled() => End::Cut,
            end = both(up, down) => end,
        }
    };
    match &end {
        End::WriteFailed(error) => tracing::debug!(%error, "connection ended: write failed"),
        other => tracing::debug!(end = ?other, "connection ended"),
    }
    close(client_read, client_write, end.is_reset());
    close(server_read, server_write, end.is_reset());
}

/// Runs both directions; ends when both reach end of stream (or vanished), or at
/// once when either ends otherwise.
async fn both(up: impl Future<Output = End>, down: impl Future<Output = End>) -> End {
    let mut up = std::pin::pin!(up);
    let mut down = std::pin::pin!(down);
    let mut up_open = true;
    let mut down_open = true;
    while up_open || down_open {
        let end = tokio::select! {
            end = &mut up, if up_open => {
                up_open = false;
                end
            }
            end = &mut down, if down_open => {
                down_open = false;
                end
            }
        };
        // A forgotten direction whose source ended waits for the other, as
        // a peer that gave up leaves the other side waiting on its own timeout.
        if !matches!(end, End::Eof | End::Vanished) {
            return end;
        }
    }
    End::Eof
}

impl End {
    fn is_reset(&self) -> bool {
        matches!(self, End::Reset)
    }
}

/// Closes a socket: with an RST if `reset` (linger 0), else with a FIN.
fn close(read: OwnedReadHalf, write: OwnedWriteHalf, reset: bool) {
    // Reuniting avoids the FIN a dropped write half would send before the RST.
    let Ok(stream) = read.reunite(write) else {
        return;
    };
    if reset {
        if let Err(error) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(%error, "could not set linger 0 for a reset");
        }
    }
}

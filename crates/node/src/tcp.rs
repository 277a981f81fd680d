//! TCP listener set-up shared by the comms port and the API.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Listen backlog, set explicitly so a reconnect storm is queued by the kernel, not refused.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with address reuse and an explicit backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    reserve(addr)?.listen(LISTEN_BACKLOG)
}

/// Binds `addr` without listening: the port stays this node's while it is down
/// (connections to it are refused), so no outgoing connection takes it as its
/// source port before the node starts again. [`TcpSocket::listen`] opens it.
pub fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// How long accepting pauses after an error (out of descriptors, usually).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The next connection on `listener`. An accept error (out of descriptors,
/// usually) is logged with `what` and followed by a short pause instead of a spin.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, what, "accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// Applies Halibut's socket options: no Nagle, keepalive 15 s idle / 5 s interval / 10 probes.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(10);
    // Keepalive is best effort: a socket that refuses it still works.
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

//! A local API listener under silent and slow clients, on real sockets: each is
//! closed by its bound, and the port still serves.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use octopoll_http::serve::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LIMITS: ServeLimits = ServeLimits {
    max_connections: 20,
    first_byte_timeout: Duration::from_millis(500),
    header_timeout: Duration::from_millis(500),
    keep_alive: Duration::from_secs(20),
};

/// How long `stream` stays open before the server closes it (at most 5 s).
async fn closed_after(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
        .await
        .expect("the server closes the connection")
        .ok();
    started.elapsed()
}

async fn get_ping(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_silent_clients_are_closed_and_the_port_still_serves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/ping", get(|| async { "pong" }));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(serve(listener, router, LIMITS, shutdown.clone()));

    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let closes: Vec<Duration> = futures_join(silent.into_iter().map(closed_after)).await;
    // 20 held until the first-byte deadline; the 30 past the cap closed at once.
    let at_once = closes
        .iter()
        .filter(|d| **d < Duration::from_millis(400))
        .count();
    assert!(at_once >= 30, "{at_once} of 50 closed at once: {closes:?}");
    assert!(
        closes.iter().all(|d| *d < Duration::from_secs(2)),
        "{closes:?}"
    );

    // A slowloris: a request's headers started and never finished.
    slow.write_all(b"GET /ping HTTP/1.1\r\nHo").await.unwrap();
    assert!(closed_after(slow).await < Duration::from_secs(2));

    // Every slot is free again, and a real request is served.
    let answer = get_ping(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("pong"), "{answer}");
    shutdown.cancel();
    serving.await.unwrap().unwrap();
}

/// Runs every future to its end, side by side.
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

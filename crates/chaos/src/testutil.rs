//! Test helpers: an echo upstream, the API served on a free port, clients, and a
//! ceiling on every wait.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Chaos;

/// The longest any awaited step may take before the test fails.
pub(crate) const CEILING: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`CEILING`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(CEILING, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} took longer than {CEILING:?}"),
    }
}

/// An upstream that echoes every connection, then closes its side after the client's.
pub(crate) struct Echo {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an [`Echo`] on 127.0.0.1.
pub(crate) async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    Echo { addr, task }
}

/// Connects to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    within("connect", TcpStream::connect(addr)).await.unwrap()
}

/// Sends `data` and expects it back.
pub(crate) async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    within("write", stream.write_all(data)).await.unwrap();
    let mut back = vec![0; data.len()];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, data);
}

/// Reads until the connection ends: what arrived, and the error it ended with, if any.
pub(crate) async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Option<io::ErrorKind>) {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match within("read to close", stream.read(&mut buf)).await {
            Ok(0) => return (received, None),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(error) => return (received, Some(error.kind())),
        }
    }
}

/// Waits until `proxy` carries `n` connections (polling, under the ceiling).
pub(crate) async fn await_connections(chaos: &Chaos, proxy: &str, n: usize) {
    within("connection count", async {
        while chaos.connections(proxy).await.unwrap() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A chaos registry with its API served on a free port, and an echo upstream.
pub(crate) struct Lab {
    /// The registry.
    pub(crate) chaos: Chaos,
    /// The echo upstream proxies point at.
    pub(crate) echo: Echo,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: JoinHandle<io::Result<()>>,
}

/// An API answer: status and JSON body (`Null` when empty, a string when not JSON).
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Value,
}

impl Lab {
    /// Serves the API and starts the echo upstream.
    pub(crate) async fn start() -> Self {
        let chaos = Chaos::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(crate::api::serve(
            listener,
            chaos.clone(),
            crate::api::ListenPolicy::Loopback,
            shutdown.clone(),
        ));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Lab {
            chaos,
            echo: echo_server().await,
            base,
            http,
            shutdown,
            server,
        }
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = within("API request", request.send()).await.unwrap();
        let status = response.status().as_u16();
        let text = within("API body", response.text()).await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, body }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Answer {
        Self::answer(self.http.get(format!("{}{path}", self.base))).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Answer {
        Self::answer(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    /// `PATCH path` with a JSON body (how toxiproxy 2.6's clients update).
    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Answer {
        Self::answer(self.http.patch(format!("{}{path}", self.base)).json(body)).await
    }

    /// `POST path` with a raw body, said to be JSON.
    pub(crate) async fn post_raw(&self, path: &str, body: &'static str) -> Answer {
        self.post_typed(path, "application/json", body).await
    }

    /// `POST path` with a raw body of `content_type`.
    pub(crate) async fn post_typed(
        &self,
        path: &str,
        content_type: &'static str,
        body: &'static str,
    ) -> Answer {
        let request = self.http.post(format!("{}{path}", self.base));
        Self::answer(request.header("content-type", content_type).body(body)).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Answer {
        Self::answer(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// Creates proxy `name` to the echo upstream through the API; returns where it listens.
    pub(crate) async fn proxy(&self, name: &str) -> SocketAddr {
        let body = json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": self.echo.addr.to_string(),
        });
        let answer = self.post("/proxies", &body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let listen = answer.body["listen"].as_str().unwrap().parse().unwrap();
        assert_ne!(listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        listen
    }

    /// Adds a toxic to `proxy` through the API, expecting 200.
    pub(crate) async fn toxic(&self, proxy: &str, toxic: Value) -> Value {
        let answer = self.post(&format!("/proxies/{proxy}/toxics"), &toxic).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// Stops the API and every proxy.
    pub(crate) async fn stop(self) {
        let Lab {
            chaos,
            echo,
            http,
            shutdown,
            server,
            ..
        } = self;
        // Idle keep-alive connections would hold up the graceful shutdown.
        drop(http);
        shutdown.cancel();
        within("API shutdown", server).await.unwrap().unwrap();
        chaos.shutdown().await;
        drop(echo);
    }
}

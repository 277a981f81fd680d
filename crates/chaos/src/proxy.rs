//! One proxy: its configuration, its listener while enabled, its live connections, and
//! the toxics it publishes to them through a watch channel.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{accept_loop, Route};
use crate::gate::ToxicEntry;
use crate::toxic::Toxic;
use crate::{Error, Result};

/// Listen backlog, so a reconnect storm is queued rather than refused.
const LISTEN_BACKLOG: u32 = 1024;

/// A proxy to create: `POST /proxies`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Unique name.
    pub name: String,
    /// Address to listen on; port 0 picks a free one (reported back in [`ProxyInfo`]).
    pub listen: SocketAddr,
    /// `host:port` connections are forwarded to.
    pub upstream: String,
    /// Whether it listens from the start (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

impl ProxyConfig {
    /// An enabled proxy from `listen` to `upstream`.
    pub fn new(name: impl Into<String>, listen: SocketAddr, upstream: impl Into<String>) -> Self {
        ProxyConfig {
            name: name.into(),
            listen,
            upstream: upstream.into(),
            enabled: true,
        }
    }
}

fn enabled_by_default() -> bool {
    true
}

/// Changes to a proxy: `POST /proxies/{name}`'s body; what is absent is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyUpdate {
    /// `false` takes the proxy down (stops listening, cuts connections); `true` brings it up.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new listen address (connections are cut and it re-binds).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// A new upstream (connections are cut).
    #[serde(default)]
    pub upstream: Option<String>,
}

/// A proxy as reported, in toxiproxy's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Unique name.
    pub name: String,
    /// The address bound (the real port when 0 was asked for).
    pub listen: SocketAddr,
    /// Where connections go.
    pub upstream: String,
    /// Whether it is listening.
    pub enabled: bool,
    /// Its toxics, in the order they were added.
    pub toxics: Vec<Toxic>,
}

/// A listener and its connections, while the proxy is enabled.
#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

impl Running {
    /// Stops listening and cuts every connection; returns once all are closed.
    async fn stop(mut self) {
        self.cancel.cancel();
        if let Err(error) = (&mut self.accept).await {
            tracing::warn!(%error, "accept loop did not end cleanly");
        }
        self.connections.close();
        self.connections.wait().await;
    }
}

/// A proxy dropped while up (its `Chaos` dropped without a shutdown) stops
/// listening and cuts its connections on its own.
impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One registered proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    name: String,
    listen: SocketAddr,
    upstream: String,
    toxics: watch::Sender<Vec<ToxicEntry>>,
    running: Option<Running>,
}

impl Proxy {
    /// A proxy for `config`, listening if it is enabled.
    pub(crate) fn create(config: ProxyConfig) -> Result<Self> {
        if config.name.is_empty() {
            return Err(Error::InvalidProxy("proxy name must not be empty".into()));
        }
        if config.upstream.is_empty() {
            return Err(Error::InvalidProxy(format!(
                "proxy `{}` needs an upstream host:port",
                config.name
            )));
        }
        let (toxics, _) = watch::channel(Vec::new());
        let mut proxy = Proxy {
            name: config.name,
            listen: config.listen,
            upstream: config.upstream,
            toxics,
            running: None,
        };
        if config.enabled {
            proxy.start()?;
        }
        Ok(proxy)
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How it is configured, and its toxics.
    pub(crate) fn info(&self) -> ProxyInfo {
        ProxyInfo {
            name: self.name.clone(),
            listen: self.listen,
            upstream: self.upstream.clone(),
            enabled: self.running.is_some(),
            toxics: self.toxics(),
        }
    }

    /// Whether it is listening.
    pub(crate) fn is_enabled(&self) -> bool {
        self.running.is_some()
    }

    /// Live connections (0 while disabled).
    pub(crate) fn connections(&self) -> usize {
        self.running.as_ref().map_or(0, |r| r.connections.len())
    }

    /// Binds the listen address (with address reuse) and starts accepting.
    pub(crate) fn start(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let bind_error = |source| Error::Bind {
            name: self.name.clone(),
            addr: self.listen,
            source,
        };
        let listener = bind(self.listen).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let route = Route {
            proxy: self.name.clone(),
            upstream: self.upstream.clone(),
            toxics: self.toxics.subscribe(),
        };
        let cancel = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            route,
            cancel.clone(),
            connections.clone(),
        ));
        tracing::info!(
            proxy = %self.name,
            listen = %local,
            upstream = %self.upstream,
            "proxy up"
        );
        self.listen = local;
        self.running = Some(Running {
            cancel,
            accept,
            connections,
        });
        Ok(())
    }

    /// Stops listening and cuts its connections; returns once they are closed.
    pub(crate) async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
            tracing::info!(proxy = %self.name, "proxy down");
        }
    }

    /// Applies `update`: a changed address or upstream restarts it; on a failed
    /// re-bind the old settings are kept (and restarted if it was up).
    pub(crate) async fn update(&mut self, update: ProxyUpdate) -> Result<()> {
        let was_enabled = self.is_enabled();
        let enable = update.enabled.unwrap_or(was_enabled);
        let listen = update.listen.unwrap_or(self.listen);
        let upstream = update.upstream.unwrap_or_else(|| self.upstream.clone());
        if upstream.is_empty() {
            return Err(Error::InvalidProxy(format!(
                "proxy `{}` needs an upstream host:port",
                self.name
            )));
        }
        let changed = listen != self.listen || upstream != self.upstream;
        if changed || !enable {
            self.stop().await;
        }
        let old = (
            std::mem::replace(&mut self.listen, listen),
            std::mem::replace(&mut self.upstream, upstream),
        );
        if !enable {
            return Ok(());
        }
        if let Err(error) = self.start() {
            (self.listen, self.upstream) = old;
            if was_enabled {
                if let Err(again) = self.start() {
                    tracing::warn!(
                        proxy = %self.name,
                        error = %again,
                        "could not restart with the old settings"
                    );
                }
            }
            return Err(error);
        }
        Ok(())
    }

    /// Its toxics, in order.
    pub(crate) fn toxics(&self) -> Vec<Toxic> {
        self.toxics
            .borrow()
            .iter()
            .map(|e| e.toxic.clone())
            .collect()
    }

    /// The toxic called `name`.
    pub(crate) fn toxic(&self, name: &str) -> Result<Toxic> {
        self.toxics
            .borrow()
            .iter()
            .find(|e| e.toxic.name == name)
            .map(|e| e.toxic.clone())
            .ok_or_else(|| self.no_such_toxic(name))
    }

    /// Adds `toxic` under `revision`; live connections see it at once.
    pub(crate) fn add_toxic(&self, toxic: Toxic, revision: u64) -> Result<Toxic> {
        toxic.validate()?;
        if self
            .toxics
            .borrow()
            .iter()
            .any(|e| e.toxic.name == toxic.name)
        {
            return Err(Error::ToxicExists {
                proxy: self.name.clone(),
                toxic: toxic.name,
            });
        }
        let added = toxic.clone();
        self.toxics
            .send_modify(|list| list.push(ToxicEntry { toxic, revision }));
        Ok(added)
    }

    /// Replaces the toxic of the same name with `toxic` under `revision`.
    pub(crate) fn replace_toxic(&self, toxic: Toxic, revision: u64) -> Result<Toxic> {
        toxic.validate()?;
        let mut found = false;
        let replaced = toxic.clone();
        self.toxics.send_if_modified(|list| {
            if let Some(entry) = list.iter_mut().find(|e| e.toxic.name == toxic.name) {
                *entry = ToxicEntry {
                    toxic: toxic.clone(),
                    revision,
                };
                found = true;
            }
            found
        });
        if found {
            Ok(replaced)
        } else {
            Err(self.no_such_toxic(&replaced.name))
        }
    }

    /// Removes the toxic called `name`; live connections see it gone at once.
    pub(crate) fn remove_toxic(&self, name: &str) -> Result<()> {
        let removed = self.toxics.send_if_modified(|list| {
            let before = list.len();
            list.retain(|e| e.toxic.name != name);
            list.len() != before
        });
        if removed {
            Ok(())
        } else {
            Err(self.no_such_toxic(name))
        }
    }

    /// Removes every toxic.
    pub(crate) fn clear_toxics(&self) {
        self.toxics.send_if_modified(|list| {
            let had = !list.is_empty();
            list.clear();
            had
        });
    }

    fn no_such_toxic(&self, name: &str) -> Error {
        Error::NoSuchToxic {
            proxy: self.name.clone(),
            toxic: name.to_owned(),
        }
    }
}

/// Binds `addr` with SO_REUSEADDR, so a proxy taken down can re-bind its port at once.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::testutil::{
        await_connections, connect, echo_server, read_to_close, round_trip, within,
    };
    use crate::toxic::{LimitData, Stream, Timeout, ToxicKind};
    use crate::Chaos;

    fn config(name: &str, upstream: SocketAddr) -> ProxyConfig {
        ProxyConfig::new(
            name,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream.to_string(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxies_both_ways_and_reports_the_bound_port() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("echo", echo.addr)).await.unwrap();
        assert_ne!(info.listen.port(), 0);
        assert!(info.enabled);
        assert_eq!(chaos.get("echo").await.unwrap(), info);

        let mut client = connect(info.listen).await;
        round_trip(&mut client, b"hello through the proxy").await;

        // More than a chunk and more than the channel holds, written while read.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = client.split();
        let send = async {
            write.write_all(&big).await.unwrap();
        };
        let receive = async {
            let mut back = vec![0; big.len()];
            read.read_exact(&mut back).await.unwrap();
            back
        };
        let ((), back) = within("3 MB round trip", async { tokio::join!(send, receive) }).await;
        assert!(back == big, "the echo differs from what was sent");
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chaos_dropped_without_a_shutdown_stops_listening_and_cuts_its_connections() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("dropped", echo.addr)).await.unwrap();
        let mut client = connect(info.listen).await;
        round_trip(&mut client, b"before the drop").await;
        drop(chaos);
        let (_, error) = read_to_close(&mut client).await;
        assert!(
            error.is_none() || error == Some(std::io::ErrorKind::ConnectionReset),
            "{error:?}"
        );
        within("the listener to close", async {
            while TcpStream::connect(info.listen).await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_passes_through_and_the_connection_is_then_gone() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("half", echo.addr)).await.unwrap();
        let mut client = connect(info.listen).await;
        within("write", client.write_all(b"last words"))
            .await
            .unwrap();
        await_connections(&chaos, "half", 1).await;
        within("shutdown", client.shutdown()).await.unwrap();
        let (received, error) = read_to_close(&mut client).await;
        assert_eq!(received, b"last words");
        assert_eq!(error, None);
        await_connections(&chaos, "half", 0).await;
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_upstream_closes_the_client() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nowhere = unused.local_addr().unwrap();
        drop(unused);
        let chaos = Chaos::new();
        let info = chaos.create(config("nowhere", nowhere)).await.unwrap();
        let mut client = connect(info.listen).await;
        let (received, _) = read_to_close(&mut client).await;
        assert!(received.is_empty());
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_cuts_connections_and_stops_listening() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("doomed", echo.addr)).await.unwrap();
        let mut client = connect(info.listen).await;
        round_trip(&mut client, b"ping").await;
        chaos.delete("doomed").await.unwrap();
        read_to_close(&mut client).await;
        assert!(within("refused connect", TcpStream::connect(info.listen))
            .await
            .is_err());
        assert!(matches!(
            chaos.get("doomed").await,
            Err(Error::NoSuchProxy(_))
        ));
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_listen_address_rebinds() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let before = chaos.create(config("moving", echo.addr)).await.unwrap();
        let update = ProxyUpdate {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ProxyUpdate::default()
        };
        let after = chaos.update("moving", update).await.unwrap();
        assert_ne!(after.listen, before.listen);
        assert!(after.enabled);
        assert!(within("refused connect", TcpStream::connect(before.listen))
            .await
            .is_err());
        round_trip(&mut connect(after.listen).await, b"moved").await;
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_refuses_duplicates_and_unknowns() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("one", echo.addr)).await.unwrap();
        assert!(matches!(
            chaos.create(config("one", echo.addr)).await,
            Err(Error::ProxyExists(_))
        ));
        let same_port = ProxyConfig::new("two", info.listen, echo.addr.to_string());
        assert!(matches!(
            chaos.create(same_port).await,
            Err(Error::Bind { .. })
        ));
        let empty = ProxyConfig::new("", info.listen, echo.addr.to_string());
        assert!(matches!(
            chaos.create(empty).await,
            Err(Error::InvalidProxy(_))
        ));

        let toxic = Toxic::new(
            ToxicKind::LimitData(LimitData { bytes: 1 }),
            Stream::Upstream,
        );
        chaos.add_toxic("one", toxic.clone()).await.unwrap();
        assert!(matches!(
            chaos.add_toxic("one", toxic.clone()).await,
            Err(Error::ToxicExists { .. })
        ));
        assert!(matches!(
            chaos.add_toxic("none", toxic).await,
            Err(Error::NoSuchProxy(_))
        ));
        assert!(matches!(
            chaos.remove_toxic("one", "nope").await,
            Err(Error::NoSuchToxic { .. })
        ));
        assert_eq!(chaos.list().await.len(), 1);
        chaos.shutdown().await;
        assert!(chaos.list().await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_toxics_act_on_client_data() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("up", echo.addr)).await.unwrap();
        let toxic = Toxic::new(
            ToxicKind::LimitData(LimitData { bytes: 5 }),
            Stream::Upstream,
        );
        chaos.add_toxic("up", toxic).await.unwrap();
        let mut client = connect(info.listen).await;
        within("write", client.write_all(b"0123456789"))
            .await
            .unwrap();
        // Only five bytes reach the echo before the proxy closes the connection.
        let (received, _) = read_to_close(&mut client).await;
        assert!(b"01234".starts_with(&received), "{received:?}");
        chaos.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_toxicity_spares_every_connection() {
        let echo = echo_server().await;
        let chaos = Chaos::new();
        let info = chaos.create(config("spared", echo.addr)).await.unwrap();
        // A timeout of 0 would hold the echo forever, past the round trip's ceiling.
        let hold = ToxicKind::Timeout(Timeout { timeout: 0 });
        let toxic = Toxic::new(hold, Stream::Downstream).with_toxicity(0.0);
        chaos.add_toxic("spared", toxic).await.unwrap();
        for _ in 0..5 {
            round_trip(&mut connect(info.listen).await, b"untouched").await;
        }
        chaos.shutdown().await;
    }
}

//! The handshake-rate benchmark: new pinned mutual-TLS polling connections a
//! second reaching the identified state (`MX-SERVER` received) against a real
//! node, beside the bare rustls 0.23 limit measured the same way in the same
//! run — the same certificates, provider, protocol versions and key exchange,
//! no resumption on either side, one round trip after the handshake, the same
//! number of concurrent clients, on loopback in this process.
//!
//! The bare loop is tokio-rustls alone with the very rustls configurations the
//! node and the agents use (the same pinning verifiers: any mutual TLS needs one,
//! and theirs is a set lookup beside the signature checks), and a one-byte echo
//! to finish the handshake on both sides. The difference is what octopoll adds:
//! the accept loop, the connection task, the registry check, preamble and identity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use octopoll_node::{MachineRegistry, NewMachine, Node, NodeConfig, NodeId};
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::{Exchange, Limits, RemoteIdentity, SubscriptionId};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How a handshake benchmark runs.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeBench {
    /// Certificates' key type (server and clients).
    pub key_type: KeyType,
    /// Clients connecting at once.
    pub concurrency: usize,
    /// How long each measured round lasts.
    pub round: Duration,
    /// Rounds of each loop, interleaved (bare, octopoll, bare, …); the median counts.
    pub rounds: usize,
}

/// What it measured.
#[derive(Clone, Debug, Serialize)]
pub struct HandshakeFigures {
    /// `ecdsa-p256` or `rsa-2048`.
    pub key_type: String,
    /// The key exchange group both loops negotiated (`X25519`, …).
    pub key_exchange: String,
    /// The protocol version (`TLSv1_3`).
    pub protocol: String,
    /// Clients at once.
    pub concurrency: usize,
    /// Median identified polling connections a second.
    pub octopoll_per_s: f64,
    /// Median bare rustls handshakes a second.
    pub bare_per_s: f64,
    /// `octopoll_per_s / bare_per_s`.
    pub ratio: f64,
    /// Every round's rate, bare and octopoll.
    pub rounds: Vec<(f64, f64)>,
}

/// The longest one benchmark connection may take before it counts as failed.
const CONNECTION_BOUND: Duration = Duration::from_secs(10);

/// Identities registered with the node, each used by many connections.
const CLIENT_IDENTITIES: usize = 64;

/// Runs both loops and returns the figures.
pub async fn run(bench: HandshakeBench) -> anyhow::Result<HandshakeFigures> {
    let key_type = bench.key_type;
    let (server, clients) = tokio::task::spawn_blocking(move || {
        let server = Identity::generate("octopoll-server", key_type)?;
        let clients = (0..CLIENT_IDENTITIES)
            .map(|_| Identity::generate("octopoll-agent", key_type))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, octopoll_pki::Error>((server, clients))
    })
    .await?
    .context("generating the benchmark's certificates")?;
    let registry = MachineRegistry::new();
    let mut peers = Vec::new();
    for (i, identity) in clients.into_iter().enumerate() {
        let subscription = SubscriptionId::random(&mut rand::rng());
        registry
            .register(NewMachine {
                name: format!("bench-{i}"),
                thumbprint: identity.thumbprint(),
                endpoint: subscription.clone().into(),
                roles: vec![],
                environments: vec![],
            })
            .await?;
        peers.push(Peer {
            connector: TlsConnector::from(Arc::new(octopoll_pki::tls::polling_client_config(
                &identity,
                server.thumbprint(),
            )?)),

            subscription,
        });
    }
    let peers = Arc::new(peers);
    let bind = || octopoll_node::tcp::bind("127.0.0.1:0".parse().expect("a loopback address"));
    let mut config = NodeConfig::new(NodeId(1), ApiKey::random());
    config.max_concurrent_handshakes = config.max_concurrent_handshakes.max(bench.concurrency);
    let node = Node::start(config, &server, registry, bind()?, bind()?)?;
    let bare = BareServer::start(&server).await?;

    let mut rounds = Vec::new();
    let mut negotiated = None;
    for _ in 0..bench.rounds.max(1) {
        let (bare_rate, seen) = measure(&peers, bench, Target::Bare(bare.addr)).await?;
        let (octopoll_rate, _) =
            measure(&peers, bench, Target::Octopoll(node.comms_addr())).await?;
        negotiated = negotiated.or(seen);
        rounds.push((bare_rate, octopoll_rate));
    }
    node.stop().await;
    bare.stop();
    let median = |pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (bare_per_s, octopoll_per_s) = (median(|r| r.0), median(|r| r.1));
    let (key_exchange, protocol) = negotiated.unwrap_or_default();
    Ok(HandshakeFigures {
        key_type: key_type_label(key_type).into(),
        key_exchange,
        protocol,
        concurrency: bench.concurrency,
        octopoll_per_s,
        bare_per_s,
        ratio: octopoll_per_s / bare_per_s.max(f64::MIN_POSITIVE),
        rounds,
    })
}

/// The name a report gives a key type.
pub fn key_type_label(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Rsa2048 => "rsa-2048",
        _ => "ecdsa-p256",
    }
}

/// One client identity, ready for either loop.
struct Peer {
    connector: TlsConnector,
    subscription: SubscriptionId,
}

#[derive(Clone, Copy)]
enum Target {
    Bare(std::net::SocketAddr),
    Octopoll(std::net::SocketAddr),
}

/// Connections completed a second over one round, with the group and version
/// the first one negotiated.
async fn measure(
    peers: &Arc<Vec<Peer>>,
    bench: HandshakeBench,
    target: Target,
) -> anyhow::Result<(f64, Option<(String, String)>)> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + bench.round;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..bench.concurrency {
        let (peers, done, failed) = (peers.clone(), done.clone(), failed.clone());
        tasks.spawn(async move {
            let mut seen = None;
            let mut i = client;
            while Instant::now() < deadline {
                let peer = &peers[i % peers.len()];
                i += bench.concurrency;
                match tokio::time::timeout(CONNECTION_BOUND, once(peer, target)).await {
                    Ok(Ok(negotiated)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        seen = seen.or(Some(negotiated));
                    }
                    Ok(Err(_)) | Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        });
    }
    let mut seen = None;
    while let Some(result) = tasks.join_next().await {
        seen = seen.or(result?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let failures = failed.load(Ordering::Relaxed);
    if failures > 0 {
        anyhow::bail!("{failures} benchmark connections failed");
    }
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed, seen))
}

/// One connection to the identified state (octopoll) or through a one-byte
/// echo (bare); returns the negotiated group and protocol.
async fn once(peer: &Peer, target: Target) -> anyhow::Result<(String, String)> {
    let name = ServerName::try_from("localhost").expect("a valid name");
    match target {
        Target::Octopoll(addr) => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = peer.connector.connect(name, tcp).await?;
            let negotiated = negotiated(tls.get_ref().1);
            let mut exchange = Exchange::new(tls, Limits::default());
            exchange
                .write_hello(&RemoteIdentity::Subscriber(peer.subscription.clone()))
                .await?;
            match exchange.read_identity().await? {
                RemoteIdentity::Server => Ok(negotiated),
                other => anyhow::bail!("expected MX-SERVER, got {other}"),
            }
        }
        Target::Bare(addr) => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = peer.connector.connect(name, tcp).await?;
            let negotiated = negotiated(tls.get_ref().1);
            tls.write_all(b"x").await?;
            tls.flush().await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            Ok(negotiated)
        }
    }
}

fn negotiated(connection: &rustls::ClientConnection) -> (String, String) {
    (
        connection
            .negotiated_key_exchange_group()
            .map_or("?".into(), |g| format!("{:?}", g.name())),
        connection
            .protocol_version()
            .map_or("?".into(), |v| format!("{v:?}")),
    )
}

/// A bare rustls server: handshake, echo one byte, close.
struct BareServer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BareServer {
    async fn start(identity: &Identity) -> anyhow::Result<Self> {
        // The node's own config; its set defers every thumbprint (none is refused).
        let config = octopoll_pki::tls::polling_server_config(
            identity,
            octopoll_pki::TrustedThumbprints::deferring(),
        )?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(&byte).await;
                        let _ = tls.flush().await;
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    fn stop(self) {
        self.task.abort();
    }
}

//! Shared harness of the end-to-end suites: a lab on loopback, waiting on
//! conditions with a ceiling, and raw protocol peers for bad-input tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use octopoll_agent::swarm::machine_resource;
use octopoll_agent::{RegistrationClient, RegistrationTrust};
use octopoll_lab::{Lab, LabConfig};
use octopoll_node::Node;
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::contracts::echo;
use octopoll_wire::{
    Exchange, Limits, RemoteIdentity, RequestMessage, ServiceEndPoint, SubscriptionId,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Logs to the test's output (shown for failing tests); `RUST_LOG` sets the level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A lab of `nodes` × `agents` on free loopback ports, fast reconnects.
pub async fn start_lab(nodes: u16, agents: usize) -> Lab {
    init_logging();
    Lab::start(LabConfig::new(nodes, agents))
        .await
        .expect("lab starts")
}

/// Waits until `condition` holds, checking every 20 ms, for at most `within`.
/// Panics naming `what` and the last state `state` gave.
pub async fn wait_until<S: std::fmt::Debug>(
    within: Duration,
    what: &str,
    state: impl FnMut() -> S,
    condition: impl FnMut(&S) -> bool,
) -> S {
    octopoll_lab::wait::until(within, state, condition)
        .await
        .unwrap_or_else(|timeout| panic!("waiting for {what}: {timeout}"))
}

/// [`wait_until`] for a state that takes an `await` to read (an HTTP call).
pub async fn wait_until_async<S: std::fmt::Debug, F: std::future::Future<Output = S>>(
    within: Duration,
    what: &str,
    state: impl FnMut() -> F,
    condition: impl FnMut(&S) -> bool,
) -> S {
    octopoll_lab::wait::until_async(within, state, condition)
        .await
        .unwrap_or_else(|timeout| panic!("waiting for {what}: {timeout}"))
}

/// The API key the lab's nodes require.
pub fn api_key(lab: &Lab) -> ApiKey {
    lab.cluster.nodes()[0].config().api_key.clone()
}

/// A registration client pinning the lab's certificate.
pub fn registration_client(lab: &Lab) -> RegistrationClient {
    RegistrationClient::new(&RegistrationTrust::Pinned(
        lab.cluster.identity().thumbprint(),
    ))
    .unwrap()
}

/// A fresh identity and subscription, registered with node 1 over HTTPS.
pub async fn register_raw_agent(lab: &Lab, name: &str) -> (Identity, SubscriptionId) {
    let identity = Identity::generate(name, KeyType::EcdsaP256).unwrap();
    let subscription = SubscriptionId::random(&mut rand::rng());
    let client = registration_client(lab);
    client
        .register(
            &lab.cluster.nodes()[0].api_url(),
            &api_key(lab),
            &machine_resource(name, identity.thumbprint(), &subscription),
        )
        .await
        .expect("registered");
    (identity, subscription)
}

/// A hand-driven polling peer: TLS to `node` with `identity`, pinning the node.
pub async fn connect_raw(node: &Node, identity: &Identity) -> Exchange<TlsStream<TcpStream>> {
    connect_raw_with_sni(node, identity, "localhost")
        .await
        .unwrap()
}

/// [`connect_raw`] sending `sni` as the server name; the node may refuse it.
pub async fn connect_raw_with_sni(
    node: &Node,
    identity: &Identity,
    sni: &str,
) -> std::io::Result<Exchange<TlsStream<TcpStream>>> {
    let tls = octopoll_pki::tls::polling_client_config(identity, node.thumbprint()).unwrap();
    let tcp = TcpStream::connect(node.comms_addr()).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let stream = TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?;
    Ok(Exchange::new(stream, Limits::default()))
}

/// A raw peer, registered and identified, that has collected one echo request
/// queued on node 1: the exchange, the request's id, and the call awaiting it.
pub async fn collect_a_request(
    lab: &Lab,
    name: &str,
) -> (
    Exchange<TlsStream<TcpStream>>,
    String,
    tokio::task::JoinHandle<octopoll_node::Outcome>,
) {
    let (identity, subscription) = register_raw_agent(lab, name).await;
    let node = &lab.cluster.nodes()[0];
    let mut exchange = identify_raw(node, &identity, &subscription).await;
    let request = echo(&subscription, "x");
    let sender = node.sender();
    let call = tokio::spawn(async move { sender.send(&subscription, request, vec![]).await });
    let message = tokio::time::timeout(Duration::from_secs(10), exchange.read_message())
        .await
        .expect("the queued request arrives")
        .unwrap()
        .unwrap();
    let octopoll_wire::Envelope::Request(request) = message.envelope else {
        panic!("a request")
    };
    (exchange, request.id, call)
}

/// A hand-driven peer that has identified as `subscription` and been answered `MX-SERVER`.
pub async fn identify_raw(
    node: &Node,
    identity: &Identity,
    subscription: &SubscriptionId,
) -> Exchange<TlsStream<TcpStream>> {
    identify(connect_raw(node, identity).await, subscription).await
}

/// Identifies `exchange` as `subscription` and checks the node answers `MX-SERVER`.
pub async fn identify(
    exchange: Exchange<TlsStream<TcpStream>>,
    subscription: &SubscriptionId,
) -> Exchange<TlsStream<TcpStream>> {
    identify_as(exchange, RemoteIdentity::Subscriber(subscription.clone())).await
}

/// Sends the preamble and `identity`, and checks the peer answers `MX-SERVER`.
pub async fn identify_as(
    mut exchange: Exchange<TlsStream<TcpStream>>,
    identity: RemoteIdentity,
) -> Exchange<TlsStream<TcpStream>> {
    exchange.write_preamble().await.unwrap();
    exchange.write_identity(&identity).await.unwrap();
    assert_eq!(
        exchange.read_identity().await.unwrap(),
        RemoteIdentity::Server
    );
    exchange
}

/// Waits until every agent polls every node.
pub async fn ready(lab: &Lab) {
    if let Err(error) = lab.wait_for_full_coverage(Duration::from_secs(10)).await {
        panic!("{error}");
    }
}

/// An `IEchoService.SayHello(text)` request for `subscription`.
pub fn echo(subscription: &SubscriptionId, text: &str) -> RequestMessage {
    echo::request(ServiceEndPoint::new(subscription.as_str(), ""), text, 1)
}

/// Asserts that every swarm agent still answers an echo on every node.
pub async fn swarm_still_works(lab: &Lab) {
    for node in lab.cluster.nodes() {
        for agent in lab.swarm.agents() {
            let endpoint = ServiceEndPoint::new(agent.subscription().as_str(), "");
            let request = echo::request(endpoint, "still here", 1);
            let outcome = tokio::time::timeout(
                Duration::from_secs(10),
                node.send(agent.subscription(), request, vec![]),
            )
            .await
            .expect("answered in time");
            let reply = outcome.result.expect("completed");
            assert_eq!(reply.response.result, bson::Bson::from("still here..."));
        }
    }
}

/// Whether HAProxy is here; under `CI=true` its absence fails the test instead of
/// skipping it.
pub fn haproxy_available(test: &str) -> bool {
    match octopoll_lab::haproxy::find_binary(None) {
        Ok(_) => true,
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs HAProxy in CI: {error}")
        }
        Err(error) => {
            eprintln!("skipping {test}: {error}");
            false
        }
    }
}

/// Whether redis-server is installed (for a run that starts its own); under
/// `CI=true` its absence fails the test instead of skipping it.
pub fn redis_installed(test: &str) -> bool {
    let found =
        octopoll_lab::supervised::find_program("redis-server", None, &["/usr/bin", "/usr/sbin"]);
    match found {
        Some(_) => true,
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs redis-server in CI")
        }
        None => {
            eprintln!("skipping {test}: redis-server is not installed");
            false
        }
    }
}

/// A redis-server of the test's own, if Redis is installed; under `CI=true` its
/// absence fails the test instead of skipping it.
pub async fn local_redis(test: &str) -> Option<octopoll_fleet::redis_server::LocalRedis> {
    started_or_skipped(
        test,
        octopoll_fleet::redis_server::LocalRedis::start(None).await,
    )
}

/// [`local_redis`] on TCP, at a free port of 127.0.0.1 (so a chaos proxy can
/// stand in front of it).
pub async fn local_redis_on_tcp(test: &str) -> Option<octopoll_fleet::redis_server::LocalRedis> {
    let started = octopoll_fleet::redis_server::LocalRedis::start_on_tcp(
        None,
        std::net::Ipv4Addr::LOCALHOST.into(),
    )
    .await;
    started_or_skipped(test, started)
}

/// The Redis `test` started, or `None` (a skip) where redis-server is not
/// installed outside CI.
fn started_or_skipped(
    test: &str,
    started: Result<
        octopoll_fleet::redis_server::LocalRedis,
        octopoll_fleet::redis_server::RedisError,
    >,
) -> Option<octopoll_fleet::redis_server::LocalRedis> {
    match started {
        Ok(redis) => Some(redis),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs redis-server in CI: {error}")
        }
        Err(error) => {
            eprintln!("skipping {test}: {error}");
            None
        }
    }
}

/// A BSON document of JavaScript code-with-scope values nested `depth` deep,
/// each the scope of the next, deflated as a peer sends it (about 12 KB for
/// 10,000): a recursive decoder overflows its stack on it.
pub fn nested_code_with_scope(depth: usize) -> Vec<u8> {
    let mut scope = vec![5u8, 0, 0, 0, 0];
    for _ in 0..depth {
        let total = (4 + 4 + 2 + scope.len()) as i32;
        let mut doc = ((4 + 3 + total as usize + 1) as i32).to_le_bytes().to_vec();
        doc.extend_from_slice(&[0x0F, b'a', 0]);
        doc.extend_from_slice(&total.to_le_bytes());
        doc.extend_from_slice(&2i32.to_le_bytes());
        doc.extend_from_slice(b"x\0");
        doc.extend_from_slice(&scope);
        doc.push(0);
        scope = doc;
    }
    let mut wire = Vec::new();
    octopoll_wire::deflate::compress(&scope, &mut wire);
    wire
}

/// A hostile peer serving TLS as `identity` to clients presenting `trusted`: it
/// reads the preamble and identity line, answers `MX-SERVER`, reads one message
/// first when `after_a_request` (a listening Tentacle answering), then writes
/// `bytes` and holds the connection until the client closes it. Returns its
/// address and how many connections it has accepted.
pub async fn hostile_peer(
    identity: &Identity,
    trusted: octopoll_pki::Thumbprint,
    bytes: Vec<u8>,
    after_a_request: bool,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let allowed = octopoll_pki::TrustedThumbprints::new();
    allowed.insert(trusted);
    let config = octopoll_pki::tls::polling_server_config(identity, allowed).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let serving = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, bytes) = (acceptor.clone(), bytes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut exchange = Exchange::new(tls, Limits::default());
                if exchange.read_preamble().await.is_err()
                    || exchange.read_identity().await.is_err()
                {
                    return;
                }
                let _ = exchange.write_identity(&RemoteIdentity::Server).await;
                if after_a_request && !matches!(exchange.read_message().await, Ok(Some(_))) {
                    return;
                }
                let _ = exchange.write_raw(&bytes, "hostile bytes").await;
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio::io::AsyncReadExt::read_to_end(exchange.get_mut(), &mut rest),
                )
                .await;
            });
        }
    });
    (address, accepted, serving)
}

/// `GET path` on `node`'s registration API with the lab's key, as JSON.
pub async fn api_get(lab: &Lab, node: &Node, path: &str) -> serde_json::Value {
    let url = format!("{}{path}", node.api_url());
    https_get(&url, node.thumbprint(), &api_key(lab)).await
}

/// GETs `url` from a server pinned to `thumbprint`, with `key`: the JSON
/// answer; panics on any failure or a status other than success.
pub async fn https_get(
    url: &str,
    thumbprint: octopoll_pki::Thumbprint,
    key: &octopoll_pki::ApiKey,
) -> serde_json::Value {
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(octopoll_pki::tls::https_client_config(thumbprint).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    http.get(url)
        .header("X-Octopus-ApiKey", key.expose())
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .error_for_status()
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

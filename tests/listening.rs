//! Listening Tentacles: the node connects to the Tentacle (`MX-CLIENT`), and the
//! clustered active/passive pair of the Octopus docs — two members sharing one
//! certificate behind one address, a TCP forwarder pointing at the active one.

mod common;

use std::time::Duration;

use octopoll_agent::{ListeningConfig, ListeningTentacle};
use octopoll_chaos::{Chaos, ProxyConfig, ProxyUpdate};
use octopoll_node::listening::ListeningError;
use octopoll_node::{Endpoint, ListeningAddress};
use octopoll_pki::{Identity, KeyType, Thumbprint};
use octopoll_wire::api::{EndpointResource, MachineResource};
use octopoll_wire::contracts::echo;
use octopoll_wire::{RemoteIdentity, RequestMessage, ServiceEndPoint, SubscriptionId};
use tokio::net::TcpListener;

use common::{api_key, registration_client, start_lab};

/// A listening Tentacle as `identity` on a free loopback port, trusting `server`.
async fn listening(identity: &Identity, name: &str, server: Thumbprint) -> ListeningTentacle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ListeningTentacle::start(
        identity,
        ListeningConfig::trusting(name, vec![server]),
        listener,
    )
    .unwrap()
}

fn echo_to(address: &str, text: &str) -> RequestMessage {
    echo::request(
        ServiceEndPoint::new(format!("https://{address}/"), ""),
        text,
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_calls_a_listening_tentacle_and_health_checks_it() {
    let lab = start_lab(1, 1).await;
    let node = &lab.cluster.nodes()[0];
    let identity = Identity::generate("listener", KeyType::EcdsaP256).unwrap();
    let tentacle = listening(&identity, "listener", node.thumbprint()).await;
    let address = tentacle.local_addr().to_string();

    let capabilities = node
        .health_check_listening(&address, identity.thumbprint())
        .await
        .expect("healthy");
    assert!(
        capabilities.iter().any(|c| c == "IScriptServiceV2"),
        "{capabilities:?}"
    );
    let reply = node
        .call_listening(
            &address,
            identity.thumbprint(),
            echo_to(&address, "hi"),
            vec![],
        )
        .await
        .expect("answered");
    assert_eq!(reply.response.result, bson::Bson::from("hi..."));

    // A Tentacle that trusts another server refuses this node; the node says so.
    let picky = listening(
        &identity,
        "picky",
        Identity::generate("other-server", KeyType::EcdsaP256)
            .unwrap()
            .thumbprint(),
    )
    .await;
    let error = node
        .health_check_listening(&picky.local_addr().to_string(), identity.thumbprint())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ListeningError::Tls { .. } | ListeningError::Protocol { .. }
        ),
        "{error}"
    );
    // Nothing listening: a connect error naming the address.
    let gone = tentacle.local_addr().to_string();
    tentacle.stop().await;
    let error = node
        .health_check_listening(&gone, identity.thumbprint())
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&gone), "{error}");
    // The polling side never noticed.
    common::swarm_still_works(&lab).await;
    picky.stop().await;
    lab.stop().await;
}

/// Two members behind a forwarder at one address; `passive` is given its own
/// identity (a PFX export and import of the active one's, or another).
struct ClusterPair {
    chaos: Chaos,
    address: String,
    active: Option<ListeningTentacle>,
    passive: ListeningTentacle,
}

async fn cluster_pair(active: &Identity, passive: &Identity, server: Thumbprint) -> ClusterPair {
    let one = listening(active, "member-1", server).await;
    let two = listening(passive, "member-2", server).await;
    let chaos = Chaos::new();
    let info = chaos
        .create(ProxyConfig::new(
            "tentacle-cluster",
            "127.0.0.1:0".parse().unwrap(),
            one.local_addr().to_string(),
        ))
        .await
        .unwrap();
    ClusterPair {
        chaos,
        address: info.listen.to_string(),
        active: Some(one),
        passive: two,
    }
}

impl ClusterPair {
    /// Kills the active member and points the cluster address at the passive one.
    async fn fail_over(&mut self) {
        if let Some(active) = self.active.take() {
            active.stop().await;
        }
    }

    async fn activate_passive(&self) {
        self.chaos
            .update(
                "tentacle-cluster",
                ProxyUpdate {
                    upstream: Some(self.passive.local_addr().to_string()),
                    ..ProxyUpdate::default()
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_over_a_cluster_sharing_one_certificate_costs_at_most_one_health_check() {
    let lab = start_lab(1, 1).await;
    let node = &lab.cluster.nodes()[0];
    // The docs' dance: new-certificate --export-pfx on one, import-certificate on the other.
    let active = Identity::generate("Octopus Tentacle", KeyType::Rsa2048).unwrap();
    let pfx = octopoll_pki::pfx::export(&active, "Yourpfxpassword").unwrap();
    let passive = octopoll_pki::pfx::import(&pfx, "Yourpfxpassword").unwrap();
    assert_eq!(passive.thumbprint(), active.thumbprint());
    let mut pair = cluster_pair(&active, &passive, node.thumbprint()).await;
    let registered = active.thumbprint();

    node.health_check_listening(&pair.address, registered)
        .await
        .expect("the active member answers");
    pair.fail_over().await;
    // The check that runs while the cluster moves over may fail; that is the one.
    let during = node.health_check_listening(&pair.address, registered).await;
    pair.activate_passive().await;
    let mut failures = usize::from(during.is_err());
    for _ in 0..3 {
        if node
            .health_check_listening(&pair.address, registered)
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    assert!(
        failures <= 1,
        "{failures} failed health checks after failover: {during:?}"
    );
    let reply = node
        .call_listening(
            &pair.address,
            registered,
            echo_to(&pair.address, "after"),
            vec![],
        )
        .await
        .expect("the passive member answers as the target");
    assert_eq!(reply.response.result, bson::Bson::from("after..."));
    pair.passive.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_different_certificates_are_refused_after_failover_naming_both() {
    let lab = start_lab(1, 1).await;
    let node = &lab.cluster.nodes()[0];
    let active = Identity::generate("member-1", KeyType::EcdsaP256).unwrap();
    let other = Identity::generate("member-2", KeyType::EcdsaP256).unwrap();
    let mut pair = cluster_pair(&active, &other, node.thumbprint()).await;
    node.health_check_listening(&pair.address, active.thumbprint())
        .await
        .expect("the active member answers");
    pair.fail_over().await;
    pair.activate_passive().await;
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        node.health_check_listening(&pair.address, active.thumbprint()),
    )
    .await
    .unwrap()
    .unwrap_err();
    let ListeningError::WrongCertificate {
        expected, actual, ..
    } = &error
    else {
        panic!("expected a certificate refusal, got {error}");
    };
    assert_eq!(
        (*expected, *actual),
        (active.thumbprint(), other.thumbprint())
    );
    let text = error.to_string();
    assert!(
        text.contains(&active.thumbprint().to_string())
            && text.contains(&other.thumbprint().to_string()),
        "{text}"
    );
    pair.passive.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_machines_register_over_the_api_and_health_checks_reach_both_kinds() {
    let lab = start_lab(2, 1).await;
    let node = &lab.cluster.nodes()[1];
    let identity = Identity::generate("listener", KeyType::EcdsaP256).unwrap();
    let tentacle = listening(&identity, "listener", node.thumbprint()).await;
    let address = ListeningAddress::new("127.0.0.1", tentacle.local_addr().port()).unwrap();
    let client = registration_client(&lab);
    let server = lab.cluster.nodes()[0].api_url();
    let resource = MachineResource {
        id: None,
        name: "web-listening".into(),
        endpoint: EndpointResource::listening(&address, identity.thumbprint()),
        roles: vec!["web".into()],
        environment_ids: vec![],
    };
    let created = client
        .register(&server, &api_key(&lab), &resource)
        .await
        .expect("a listening machine registers");
    assert_eq!(created.endpoint, resource.endpoint);
    // Listed as Octopus lists it, and held in the registry with its address.
    let listed = client.machines(&server, &api_key(&lab)).await.unwrap();
    assert!(
        listed.iter().any(|m| m.endpoint == resource.endpoint),
        "{listed:?}"
    );
    let machine = lab
        .cluster
        .registry()
        .by_thumbprint(&identity.thumbprint())
        .expect("registered");
    assert_eq!(machine.endpoint, Endpoint::Listening(address.clone()));
    // A listening machine never connects to a node: its certificate opens no
    // polling connection, and it counts in no coverage.
    assert!(!lab
        .cluster
        .registry()
        .trusted()
        .contains(&identity.thumbprint()));
    let mut exchange = common::connect_raw(node, &identity).await;
    exchange.write_preamble().await.unwrap();
    let _ = exchange
        .write_identity(&RemoteIdentity::Subscriber(SubscriptionId::random(
            &mut rand::rng(),
        )))
        .await;
    assert!(
        exchange.read_identity().await.is_err(),
        "a listening machine's certificate is never answered MX-SERVER"
    );
    common::wait_until(
        Duration::from_secs(5),
        "the refusal to be counted",
        || node.stats(),
        |s| s.refused_untrusted == 1,
    )
    .await;
    assert!(lab.coverage().is_full());

    // One health check from any node reaches both kinds.
    let summary = node.health_check_all().await;
    assert_eq!(
        summary.by_kind().into_iter().collect::<Vec<_>>(),
        [("listening", (1, 0)), ("polling", (1, 0))],
        "{:?}",
        summary.checks
    );
    tentacle.stop().await;
    let summary = node.health_check_all().await;
    assert_eq!(summary.by_kind()["listening"], (0, 1));
    assert_eq!(summary.by_kind()["polling"], (1, 0));
    let unhealthy: Vec<String> = summary
        .unhealthy()
        .map(|c| c.result.as_ref().unwrap_err().to_string())
        .collect();
    assert!(
        unhealthy.len() == 1 && unhealthy[0].contains(&address.authority()),
        "{unhealthy:?}"
    );
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listening_tentacle_times_out_naming_the_step_and_nothing_else_waits() {
    common::init_logging();
    let mut config = octopoll_lab::LabConfig::new(1, 1);
    config.cluster.node.handshake_queue_timeout = Duration::from_millis(300);
    let lab = octopoll_lab::Lab::start(config).await.unwrap();
    let node = &lab.cluster.nodes()[0];
    // Accepts TCP and never says a word: no TLS, no identity.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let started = tokio::time::Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        node.health_check_listening(
            &address,
            Identity::generate("x", KeyType::EcdsaP256)
                .unwrap()
                .thumbprint(),
        ),
    )
    .await
    .expect("bounded by the node's handshake timeout")
    .unwrap_err();
    assert!(
        matches!(
            error,
            ListeningError::Timeout {
                during: "the TLS handshake",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains(&address), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The polling side never waited on it.
    common::swarm_still_works(&lab).await;
    held.abort();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_tentacle_answering_nested_code_with_scope_fails_that_check_only() {
    common::init_logging();
    let lab = octopoll_lab::Lab::start(octopoll_lab::LabConfig::new(1, 1))
        .await
        .unwrap();
    common::ready(&lab).await;
    let node = &lab.cluster.nodes()[0];
    let tentacle = Identity::generate("hostile", KeyType::EcdsaP256).unwrap();
    let (address, _, serving) = common::hostile_peer(
        &tentacle,
        node.thumbprint(),
        common::nested_code_with_scope(10_000),
        true,
    )
    .await;
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        node.health_check_listening(&address.to_string(), tentacle.thumbprint()),
    )
    .await
    .expect("answered in time")
    .unwrap_err();
    let chain: Vec<String> =
        std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
    let chain = chain.join(": ");
    assert!(chain.contains(&address.to_string()), "{chain}");
    assert!(chain.contains("Halibut never writes"), "{chain}");
    // The node and its polling side carry on.
    common::swarm_still_works(&lab).await;
    serving.abort();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_tentacle_drops_a_caller_that_stops_reading_its_response() {
    use rand::distr::{Alphanumeric, SampleString};
    common::init_logging();
    let server = Identity::generate("server", KeyType::EcdsaP256).unwrap();
    let tentacle = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
    let mut config = ListeningConfig::trusting("stuck", vec![server.thumbprint()]);
    config.write_timeout = Duration::from_millis(500);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = ListeningTentacle::start(&tentacle, config, listener).unwrap();
    // An echo of 12 MiB that does not compress: far more than the sockets hold.
    let text = Alphanumeric.sample_string(&mut rand::rng(), 12 << 20);
    let request = echo::request(ServiceEndPoint::new("https://stuck/", ""), &text, 1);
    let tls = octopoll_pki::tls::polling_client_config(&server, tentacle.thumbprint()).unwrap();
    let tcp = tokio::net::TcpStream::connect(running.local_addr())
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(
            rustls_pki_types::ServerName::try_from("stuck").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let exchange = octopoll_wire::Exchange::new(stream, octopoll_wire::Limits::default());
    let mut exchange = common::identify_as(exchange, RemoteIdentity::Client).await;
    exchange
        .write_message(&octopoll_wire::Envelope::Request(request), &[])
        .await
        .unwrap();
    // Read nothing past the write timeout: the Tentacle gives up on this caller.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = tokio::time::timeout(Duration::from_secs(10), exchange.read_message()).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the response was cut off, not delivered whole: {:?}",
        read.map(|r| r.map(|m| m.is_some()))
    );
    // The next caller, who reads, is served.
    let hello = echo::request(ServiceEndPoint::new("https://stuck/", ""), "hi", 2);
    let reply = octopoll_node::listening::call(
        &server,
        &running.local_addr().to_string(),
        tentacle.thumbprint(),
        hello,
        vec![],
        octopoll_node::listening::CallLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(reply.response.result, bson::Bson::from("hi..."));
    running.stop().await;
}

//! Security properties a node keeps whatever a peer tries: pinning that no SNI
//! name or HTTP header gets round, an API key that never reaches the log, and
//! TLS 1.2 and 1.3 only. (Unregistered, deregistered and subscription-stealing
//! certificates are refused in `trust.rs`.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_pki::{Identity, KeyType};
use octopoll_wire::RemoteIdentity;

use common::{register_raw_agent, start_lab, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sni_name_gets_an_unregistered_certificate_in_or_a_registered_one_refused() {
    let lab = start_lab(1, 1).await;
    common::ready(&lab).await;
    let node = &lab.cluster.nodes()[0];
    let victim = lab.swarm.agents()[0].subscription().clone();
    let names = [
        "localhost".to_owned(),
        lab.swarm.agents()[0].name().to_owned(),
        "node-1".to_owned(),
        "octopus.example.com".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let stranger = Identity::generate("stranger", KeyType::EcdsaP256).unwrap();
    for name in &names {
        // Refused during TLS or right after it, never answered MX-SERVER.
        if let Ok(mut exchange) = common::connect_raw_with_sni(node, &stranger, name).await {
            let _ = exchange.write_preamble().await;
            let _ = exchange
                .write_identity(&RemoteIdentity::Subscriber(victim.clone()))
                .await;
            assert!(
                exchange.read_identity().await.is_err(),
                "SNI {name:?} let a stranger in"
            );
        }
    }
    wait_until(
        Duration::from_secs(5),
        "every stranger counted as untrusted",
        || node.stats(),
        |s| s.close_reasons.get("untrusted-certificate") == Some(&(names.len() as u64)),
    )
    .await;
    // A registered certificate is served whatever name it sends: the node does
    // not route or trust by SNI.
    let (identity, subscription) = register_raw_agent(&lab, "named-oddly").await;
    for name in &names {
        let exchange = common::connect_raw_with_sni(node, &identity, name)
            .await
            .unwrap_or_else(|e| panic!("SNI {name:?}: {e}"));
        common::identify(exchange, &subscription).await;
    }
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_http_header_stands_in_for_the_api_key() {
    let lab = start_lab(1, 1).await;
    let node = &lab.cluster.nodes()[0];
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(
            octopoll_pki::tls::https_client_config(node.thumbprint()).unwrap(),
        )
        .build()
        .unwrap();
    let thumbprint = node.registry().machines()[0].thumbprint.to_string();
    let key = common::api_key(&lab);
    let forged: [(&str, String); 8] = [
        ("X-Forwarded-For", "127.0.0.1".into()),
        ("X-Real-IP", "127.0.0.1".into()),
        ("X-Forwarded-Client-Cert", format!("Hash={thumbprint}")),
        ("X-Octopus-Thumbprint", thumbprint.clone()),
        ("Authorization", format!("Bearer {}", key.expose())),
        (
            "X-Octopus-ApiKey",
            key.expose()[..key.expose().len() - 1].to_owned(),
        ),
        ("X-Octopus-ApiKey", key.expose().to_lowercase()),
        (
            "Cookie",
            format!("OctopusIdentificationToken={}", key.expose()),
        ),
    ];
    for (header, value) in &forged {
        for (method, path) in [
            (reqwest::Method::GET, "/api/machines"),
            (reqwest::Method::POST, "/api/machines"),
            (
                reqwest::Method::GET,
                "/api/configuration/certificates/certificate-global",
            ),
        ] {
            let answer = http
                .request(method.clone(), format!("{}{path}", node.api_url()))
                .header(*header, value)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                answer.status(),
                401,
                "{method} {path} with {header}: {value}"
            );
        }
    }
    let machines = node.registry().machines().len();
    assert_eq!(machines, 1, "nothing was registered by a forged request");
    lab.stop().await;
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's log at `level` and up until the guard is dropped.
    fn start(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || sink.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A current-thread runtime: every task of the lab runs on this thread, under
/// the capturing subscriber.
#[tokio::test]
async fn the_api_key_never_reaches_the_log_at_any_level() {
    let (captured, _guard) = Captured::start(tracing::Level::TRACE);
    let lab = octopoll_lab::Lab::start(octopoll_lab::LabConfig::new(1, 2))
        .await
        .unwrap();
    common::ready(&lab).await;
    let key = common::api_key(&lab);
    // A right key and a wrong one, both through the API.
    register_raw_agent(&lab, "logged").await;
    let wrong = octopoll_agent::RegistrationClient::new(
        &octopoll_agent::RegistrationTrust::Pinned(lab.cluster.identity().thumbprint()),
    )
    .unwrap();
    let wrong_key = octopoll_pki::ApiKey::new(format!("{}X", key.expose()));
    let error = wrong
        .server_thumbprint(&lab.cluster.nodes()[0].api_url(), &wrong_key)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
    lab.stop().await;
    let log = captured.text();
    assert!(
        log.contains("API request refused"),
        "the capture works: the refusal is logged"
    );
    assert!(
        !log.contains(key.expose()),
        "the API key appears in the log"
    );
    assert!(
        !log.contains(&wrong_key.expose()[4..]),
        "the presented wrong key appears in the log"
    );
}

/// What `openssl s_client` makes of the API port with one protocol version.
fn openssl_handshake(addr: std::net::SocketAddr, version: &str) -> Option<bool> {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version, "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    Some(text.contains("CONNECTION ESTABLISHED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let lab = start_lab(1, 1).await;
    let node = &lab.cluster.nodes()[0];
    let addr = node.api_addr();
    let Some(tls13) = tokio::task::spawn_blocking(move || openssl_handshake(addr, "-tls1_3"))
        .await
        .unwrap()
    else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "this test needs the openssl command in CI"
        );
        eprintln!("skipping: no openssl command");
        return;
    };
    assert!(tls13, "TLS 1.3 handshakes");
    for (version, expected) in [("-tls1_2", true), ("-tls1_1", false), ("-tls1", false)] {
        let done = tokio::task::spawn_blocking(move || openssl_handshake(addr, version))
            .await
            .unwrap();
        assert_eq!(done, Some(expected), "openssl s_client {version}");
    }
    // The comms port speaks the same versions (rustls implements no renegotiation
    // at all, and answers a TLS 1.2 renegotiation request with no_renegotiation).
    let comms = node.comms_addr();
    let old = tokio::task::spawn_blocking(move || openssl_handshake(comms, "-tls1_1"))
        .await
        .unwrap();
    assert_eq!(old, Some(false), "TLS 1.1 on the comms port");
    common::swarm_still_works(&lab).await;
    lab.stop().await;
}

/// A current-thread runtime, as above: every warning of the lab is captured.
#[tokio::test]
async fn fifty_untrusted_peers_are_one_warning_and_fifty_counted_refusals() {
    let (captured, _guard) = Captured::start(tracing::Level::WARN);
    let lab = octopoll_lab::Lab::start(octopoll_lab::LabConfig::new(1, 1))
        .await
        .unwrap();
    common::ready(&lab).await;
    let node = &lab.cluster.nodes()[0];
    for i in 0..50 {
        let stranger = Identity::generate(&format!("stranger-{i}"), KeyType::EcdsaP256).unwrap();
        // TLS 1.3 finishes the client's side before the node checks its
        // certificate; the refusal arrives on the first read.
        let mut exchange = common::connect_raw(node, &stranger).await;
        let _ = exchange.write_preamble().await;
        let _ = exchange.read_identity().await;
    }
    wait_until(
        Duration::from_secs(10),
        "50 untrusted certificates counted",
        || {
            node.stats()
                .close_reasons
                .get("untrusted-certificate")
                .copied()
        },
        |n| *n == Some(50),
    )
    .await;
    lab.stop().await;
    let log = captured.text();
    let lines = log.matches("refused before it identified").count();
    assert_eq!(
        lines, 1,
        "one warning for the flood, not one per peer:\n{log}"
    );
}

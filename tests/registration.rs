//! The registration API over real HTTPS: API key, validation, idempotence.

mod common;

use octopoll_agent::swarm::machine_resource;
use octopoll_agent::{Error, RegistrationClient, RegistrationTrust};
use octopoll_pki::{ApiKey, Identity, KeyType};
use octopoll_wire::api::{API_KEY_HEADER, MACHINES_PATH};
use octopoll_wire::SubscriptionId;

use common::{api_key, registration_client, start_lab};

fn new_agent(name: &str) -> (Identity, SubscriptionId) {
    (
        Identity::generate(name, KeyType::EcdsaP256).unwrap(),
        SubscriptionId::random(&mut rand::rng()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_gets_401_and_registers_nothing() {
    let lab = start_lab(2, 1).await;
    let before = lab.cluster.registry().len();
    let (identity, subscription) = new_agent("intruder");
    let client = registration_client(&lab);
    let url = lab.cluster.nodes()[1].api_url();
    let error = client
        .register(
            &url,
            &ApiKey::new("API-WRONG"),
            &machine_resource("intruder", identity.thumbprint(), &subscription),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unauthorized { message, .. } if message == "invalid API key"),
        "{error}"
    );
    assert!(error.to_string().contains("check --apikey"), "{error}");
    assert_eq!(lab.cluster.registry().len(), before);
    assert!(!lab
        .cluster
        .registry()
        .trusted()
        .contains(&identity.thumbprint()));
    // The thumbprint endpoint is protected too.
    let error = client
        .server_thumbprint(&url, &ApiKey::new("API-WRONG"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_registers_into_the_shared_registry_and_repeats_are_idempotent() {
    let lab = start_lab(3, 1).await;
    let (identity, subscription) = new_agent("newcomer");
    let client = registration_client(&lab);
    let body = machine_resource("newcomer", identity.thumbprint(), &subscription);
    let key = api_key(&lab);
    let created = client
        .register(&lab.cluster.nodes()[2].api_url(), &key, &body)
        .await
        .unwrap();
    assert!(created
        .id
        .as_deref()
        .is_some_and(|id| id.starts_with("Machines-")));
    // Registered through node 3, visible to all: the registry is the shared "database".
    assert!(lab
        .cluster
        .registry()
        .by_thumbprint(&identity.thumbprint())
        .is_some());
    let again = client
        .register(&lab.cluster.nodes()[0].api_url(), &key, &body)
        .await
        .unwrap();
    assert_eq!(again.id, created.id);

    let (other, _) = new_agent("other");
    let clash = machine_resource(
        "newcomer",
        other.thumbprint(),
        &SubscriptionId::random(&mut rand::rng()),
    );
    let error = client
        .register(&lab.cluster.nodes()[0].api_url(), &key, &clash)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Rejected { status: 409, .. }),
        "{error}"
    );
    // A second certificate with the first machine's subscription: 409, naming it.
    let (impostor, _) = new_agent("impostor");
    let claim = machine_resource("impostor", impostor.thumbprint(), &subscription);
    let error = client
        .register(&lab.cluster.nodes()[1].api_url(), &key, &claim)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Rejected { status: 409, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(r#"already belongs to machine "newcomer""#),
        "{error}"
    );
    assert!(!lab
        .cluster
        .registry()
        .trusted()
        .contains(&impostor.thumbprint()));
    let thumbprint = client
        .server_thumbprint(&lab.cluster.nodes()[1].api_url(), &key)
        .await
        .unwrap();
    assert_eq!(thumbprint, lab.cluster.identity().thumbprint());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_naming_the_field() {
    let lab = start_lab(1, 1).await;
    let before = lab.cluster.registry().len();
    let url = format!("{}{MACHINES_PATH}", lab.cluster.nodes()[0].api_url());
    let tls = octopoll_pki::tls::https_client_config(lab.cluster.identity().thumbprint()).unwrap();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    let key = api_key(&lab);
    let cases = [
        (serde_json::json!({"Name": "x"}), "Endpoint"),
        (
            serde_json::json!({"Name": "x", "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": "poll://abc/", "Thumbprint": "nope"}}),
            "Endpoint.Thumbprint",
        ),
        (
            serde_json::json!({"Name": "x", "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": "https://x/", "Thumbprint": "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"}}),
            "Endpoint.Uri",
        ),
        (
            serde_json::json!({"Name": "", "Endpoint": {"CommunicationStyle": "TentacleActive", "Uri": "poll://abc/", "Thumbprint": "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"}}),
            "Name",
        ),
        (
            serde_json::json!({"Name": "x", "Endpoint": {"CommunicationStyle": "Ssh", "Uri": "poll://abc/", "Thumbprint": "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"}}),
            "Endpoint.CommunicationStyle",
        ),
        // A listening machine needs its address, not a subscription, and a bare one.
        (
            serde_json::json!({"Name": "x", "Endpoint": {"CommunicationStyle": "TentaclePassive", "Uri": "poll://abc/", "Thumbprint": "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"}}),
            "TentaclePassive needs the Tentacle's address",
        ),
        (
            serde_json::json!({"Name": "x", "Endpoint": {"CommunicationStyle": "TentaclePassive", "Uri": "https://host:10933/api", "Thumbprint": "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"}}),
            "Endpoint.Uri",
        ),
    ];
    for (body, field) in cases {
        let response = http
            .post(&url)
            .header(API_KEY_HEADER, key.expose())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(field), "{body} → {text}");
    }
    let response = http
        .post(&url)
        .header(API_KEY_HEADER, key.expose())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the key is checked before the body");
    assert_eq!(lab.cluster.registry().len(), before);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_a_server_with_another_certificate() {
    let lab = start_lab(1, 1).await;
    let other = Identity::generate("elsewhere", KeyType::EcdsaP256).unwrap();
    let client = RegistrationClient::new(&RegistrationTrust::Pinned(other.thumbprint())).unwrap();
    let error = client
        .server_thumbprint(&lab.cluster.nodes()[0].api_url(), &api_key(&lab))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::ServerMismatch { expected, actual, .. }
            if expected == other.thumbprint() && actual == lab.cluster.identity().thumbprint()),
        "{error}"
    );
    lab.stop().await;
}

//! rustls configurations for octopoll's two kinds of connection.
//!
//! * Polling (comms port): mutual TLS. The node demands a client certificate and
//!   accepts only trusted thumbprints; the agent pins the node's thumbprint.
//! * Registration API (HTTPS): server authentication only; the client pins the
//!   node's thumbprint, or, explicitly and dangerously, accepts any server.
//!
//! TLS 1.2 and 1.3 only, aws-lc-rs only.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};

use crate::verify::{PinnedServerVerifier, ThumbprintClientVerifier};
use crate::{Identity, Result, Thumbprint, TrustedThumbprints};

/// The one crypto provider octopoll uses: aws-lc-rs. Made once and shared (it
/// never changes), so ten thousand agents' configs do not each hold a copy.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The node's comms-port config: mutual TLS accepting only `trusted` client thumbprints.
pub fn polling_server_config(
    identity: &Identity,
    trusted: TrustedThumbprints,
) -> Result<ServerConfig> {
    let provider = provider();
    let verifier =
        ThumbprintClientVerifier::new(trusted, provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.cert().clone()], identity.private_key())?;
    // No session resumption: every reconnect is a full mutual-TLS handshake, the
    // worst case a reconnect storm can cost a node, and what a restarted node (with
    // no sessions to resume) sees anyway. Agents then hold no tickets either.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The agent's polling config: presents `identity` and accepts only `server`.
pub fn polling_client_config(identity: &Identity, server: Thumbprint) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = PinnedServerVerifier::new(server, provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous() // a custom verifier; it pins rather than skips
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.cert().clone()], identity.private_key())?;
    // Every polling connection is a full handshake (see `polling_server_config`).
    // rustls's default store would also allocate room for 256 servers up front,
    // some 30 KiB per agent.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The node's HTTPS config for the registration API: no client certificate.
pub fn https_server_config(identity: &Identity) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(vec![identity.cert().clone()], identity.private_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTPS client config that accepts only a server presenting `server`.
pub fn https_client_config(server: Thumbprint) -> Result<ClientConfig> {
    let provider = provider();
    let verifier = PinnedServerVerifier::new(server, provider.signature_verification_algorithms);
    https_client_with(provider, Arc::new(verifier))
}

/// An HTTPS client config that accepts **any** server certificate.
///
/// For `--insecure` registration against a node whose certificate the user does not
/// have yet; signatures are still checked, but anyone can present any certificate.
pub fn dangerous_https_client_config_accepting_any_server() -> Result<ClientConfig> {
    let provider = provider();
    let verifier =
        PinnedServerVerifier::dangerous_accept_any(provider.signature_verification_algorithms);
    https_client_with(provider, Arc::new(verifier))
}

fn https_client_with(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyType, PeerRejected};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    async fn handshake(
        server: ServerConfig,
        client: ClientConfig,
    ) -> (std::io::Result<()>, std::io::Result<()>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("node.octopoll").unwrap();
        let server = async {
            let mut tls = acceptor.accept(a).await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            tls.write_all(&byte).await?;
            tls.flush().await
        };
        let client = async {
            let mut tls = connector.connect(name, b).await?;
            tls.write_all(b"x").await?;
            tls.flush().await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map(drop)
        };
        tokio::join!(server, client)
    }

    fn ids() -> (Identity, Identity) {
        (
            Identity::generate("node", KeyType::EcdsaP256).unwrap(),
            Identity::generate("agent", KeyType::EcdsaP256).unwrap(),
        )
    }

    #[tokio::test]
    async fn trusted_agent_and_pinned_node_connect() {
        let (node, agent) = ids();
        let trusted = TrustedThumbprints::new();
        let server = polling_server_config(&node, trusted.clone()).unwrap();
        let client = polling_client_config(&agent, node.thumbprint()).unwrap();
        // Trusted after the config was built: the set is read per handshake.
        trusted.insert(agent.thumbprint());
        let (s, c) = handshake(server, client).await;
        s.unwrap();
        c.unwrap();
    }

    #[tokio::test]
    async fn untrusted_agent_is_refused_with_its_thumbprint() {
        let (node, agent) = ids();
        let server = polling_server_config(&node, TrustedThumbprints::new()).unwrap();
        let client = polling_client_config(&agent, node.thumbprint()).unwrap();
        let (s, c) = handshake(server, client).await;
        let err = s.unwrap_err();
        assert_eq!(
            PeerRejected::find_in(&err),
            Some(PeerRejected::Untrusted {
                thumbprint: agent.thumbprint()
            })
        );
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn a_deferring_set_leaves_unknown_agents_to_its_owner() {
        let (node, agent) = ids();
        let trusted = TrustedThumbprints::deferring();
        let server = polling_server_config(&node, trusted.clone()).unwrap();
        let client = polling_client_config(&agent, node.thumbprint()).unwrap();
        let (s, c) = handshake(server, client).await;
        s.unwrap();
        c.unwrap();
        assert!(!trusted.contains(&agent.thumbprint()));
    }

    #[tokio::test]
    async fn wrong_pin_names_both_thumbprints() {
        let (node, agent) = ids();
        let other = Identity::generate("other", KeyType::EcdsaP256).unwrap();
        let trusted = TrustedThumbprints::new();
        trusted.insert(agent.thumbprint());
        let server = polling_server_config(&node, trusted).unwrap();
        let client = polling_client_config(&agent, other.thumbprint()).unwrap();
        let (_, c) = handshake(server, client).await;
        let err = c.unwrap_err();
        let rejected = PeerRejected::find_in(&err).unwrap();
        let text = rejected.to_string();
        assert!(text.contains(&node.thumbprint().to_string()), "{text}");
        assert!(text.contains(&other.thumbprint().to_string()), "{text}");
    }

    #[tokio::test]
    async fn https_pins_the_server_unless_dangerously_told_not_to() {
        let (node, _) = ids();
        let stranger = Identity::generate("stranger", KeyType::EcdsaP256).unwrap();
        let server = || https_server_config(&node).unwrap();
        let (s, c) = handshake(server(), https_client_config(node.thumbprint()).unwrap()).await;
        s.unwrap();
        c.unwrap();
        let (_, c) = handshake(
            server(),
            https_client_config(stranger.thumbprint()).unwrap(),
        )
        .await;
        assert!(matches!(
            PeerRejected::find_in(&c.unwrap_err()),
            Some(PeerRejected::Mismatch { .. })
        ));
        let any = dangerous_https_client_config_accepting_any_server().unwrap();
        let (s, c) = handshake(server(), any).await;
        s.unwrap();
        c.unwrap();
    }

    #[tokio::test]
    async fn rsa_identities_handshake_too() {
        let node = Identity::generate("node", KeyType::Rsa2048).unwrap();
        let agent = Identity::generate("agent", KeyType::Rsa2048).unwrap();
        let trusted = TrustedThumbprints::new();
        trusted.insert(agent.thumbprint());
        let server = polling_server_config(&node, trusted).unwrap();
        let client = polling_client_config(&agent, node.thumbprint()).unwrap();
        let (s, c) = handshake(server, client).await;
        s.unwrap();
        c.unwrap();
    }
}

//! The registration client: what `register-with` and `poll-server` do over HTTPS
//! before a Tentacle polls.

use std::time::Duration;

use octopoll_pki::{ApiKey, PeerRejected, Thumbprint};
use octopoll_wire::api::{
    CertificateResource, ErrorResource, MachineResource, API_KEY_HEADER, CERTIFICATE_PATH,
    MACHINES_PATH,
};
use reqwest::StatusCode;

use crate::{Error, Result};

/// How the registration client checks the server's HTTPS certificate.
#[derive(Clone, Debug)]
pub enum RegistrationTrust {
    /// Accept only a server presenting this thumbprint.
    Pinned(Thumbprint),
    /// Accept any server certificate (`--insecure`): for a development node whose
    /// certificate the agent does not have yet. The comms connection is still pinned
    /// to the thumbprint the API reports.
    DangerousAcceptAny,
}

/// Talks to a node's registration API.
#[derive(Clone, Debug)]
pub struct RegistrationClient {
    http: reqwest::Client,
}

/// Bound on each registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistrationClient {
    /// A client that checks servers as `trust` says.
    pub fn new(trust: &RegistrationTrust) -> Result<Self> {
        let tls = match trust {
            RegistrationTrust::Pinned(thumbprint) => {
                octopoll_pki::tls::https_client_config(*thumbprint)?
            }
            RegistrationTrust::DangerousAcceptAny => {
                octopoll_pki::tls::dangerous_https_client_config_accepting_any_server()?
            }
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(CALL_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|source| Error::Unreachable {
                url: "(client set-up)".into(),
                source,
            })?;
        Ok(Self { http })
    }

    /// The server's comms certificate thumbprint (`certificate-global`).
    pub async fn server_thumbprint(
        &self,
        server_url: &str,
        api_key: &ApiKey,
    ) -> Result<Thumbprint> {
        let url = join(server_url, CERTIFICATE_PATH);
        let certificate: CertificateResource =
            self.call(self.http.get(&url), &url, api_key).await?;
        certificate
            .thumbprint
            .parse()
            .map_err(|_| Error::BadAnswer {
                url,
                reason: format!("{:?} is not a thumbprint", certificate.thumbprint),
            })
    }

    /// Registers `machine`; a repeat of the same registration succeeds.
    pub async fn register(
        &self,
        server_url: &str,
        api_key: &ApiKey,
        machine: &MachineResource,
    ) -> Result<MachineResource> {
        let url = join(server_url, MACHINES_PATH);
        self.call(self.http.post(&url).json(machine), &url, api_key)
            .await
    }

    /// Sends `request` with the API key and reads its JSON answer or error.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        api_key: &ApiKey,
    ) -> Result<T> {
        let unreachable = |source: reqwest::Error| match pinning_refusal(&source) {
            Some(PeerRejected::Mismatch { expected, actual }) => Error::ServerMismatch {
                address: url.to_owned(),
                expected,
                actual,
            },
            _ => Error::Unreachable {
                url: url.to_owned(),
                source,
            },
        };
        let response = request
            .header(API_KEY_HEADER, api_key.expose())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| Error::BadAnswer {
                url: url.to_owned(),
                reason: e.to_string(),
            });
        }
        let message = serde_json::from_slice::<ErrorResource>(&body)
            .map(|e| e.error_message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(if status == StatusCode::UNAUTHORIZED {
            Error::Unauthorized {
                url: url.to_owned(),
                message,
            }
        } else {
            Error::Rejected {
                url: url.to_owned(),
                status: status.as_u16(),
                message,
            }
        })
    }
}

/// The pinning refusal somewhere in a failed request's cause chain, if any.
fn pinning_refusal(error: &reqwest::Error) -> Option<PeerRejected> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(rejected) = PeerRejected::find_in(io) {
                return Some(rejected);
            }
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            if let Some(rejected) = PeerRejected::find_in_rustls(tls) {
                return Some(rejected);
            }
        }
        cause = current.source();
    }
    None
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

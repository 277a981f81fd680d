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
/// How many times a call the server rate-limited (429) is tried again.
const RATE_LIMIT_RETRIES: u32 = 20;
/// How many times a registration whose connection failed is tried again.
const RECONNECTS: u32 = 2;
/// The longest `Retry-After` honoured; a longer one is waited this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

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
        let (mut retries, mut reconnects) = (0, 0);
        loop {
            match self
                .call(self.http.post(&url).json(machine), &url, api_key)
                .await
            {
                // A pooled connection the server closed as it was reused (its idle
                // bound is the header timeout): registration is idempotent (a repeat
                // answers 200 with the same machine), so try again on a new one.
                Err(Error::Unreachable { .. }) if reconnects < RECONNECTS => {
                    reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Error::RateLimited { retry_after, .. }) if retries < RATE_LIMIT_RETRIES => {
                    retries += 1;
                    tracing::debug!(%url, ?retry_after, retries, "registration rate-limited; waiting");
                    tokio::time::sleep(retry_after.min(MAX_RETRY_AFTER)).await;
                }
                other => return other,
            }
        }
    }

    /// Every machine the server has (`GET /api/machines`).
    pub async fn machines(
        &self,
        server_url: &str,
        api_key: &ApiKey,
    ) -> Result<Vec<MachineResource>> {
        let url = join(server_url, MACHINES_PATH);
        self.call(self.http.get(&url), &url, api_key).await
    }

    /// Deletes the machine `id` (`DELETE /api/machines/{id}`).
    pub async fn delete_machine(&self, server_url: &str, api_key: &ApiKey, id: &str) -> Result<()> {
        let url = join(server_url, &format!("{MACHINES_PATH}/{id}"));
        self.call::<serde::de::IgnoredAny>(self.http.delete(&url), &url, api_key)
            .await
            .map(|_| ())
            .or_else(|error| match error {
                // An empty 200 body is not JSON; the status said it all.
                Error::BadAnswer { .. } => Ok(()),
                other => Err(other),
            })
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
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
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
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Error::RateLimited {
                url: url.to_owned(),
                retry_after,
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

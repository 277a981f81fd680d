//! Calls to *listening* Tentacles: the node is the TCP and TLS client. It
//! connects to the Tentacle's address (10933 by default), presents its own
//! certificate, accepts the Tentacle only if it presents the pinned thumbprint,
//! identifies as `MX-CLIENT`, sends one request, reads the response and ends
//! with `END`.
//!
//! Halibut pools such connections and sends `NEXT` before a later request on
//! one; octopoll opens a connection per call instead (a decision: calls to
//! listening machines are health checks and single requests here, and a fresh
//! connection is what a failover behind one cluster address must survive
//! anyway). The Tentacle side answers either way.

use std::sync::Arc;
use std::time::Duration;

use octopoll_pki::{Identity, PeerRejected, Thumbprint};
use octopoll_wire::contracts::capabilities;
use octopoll_wire::{
    ControlMessage, DataStream, Envelope, Exchange, Limits, RemoteIdentity, RequestMessage,
    ServiceEndPoint,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::Reply;

/// Why a call to a listening Tentacle failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListeningError {
    /// The address is not `host:port`.
    #[error("invalid listening Tentacle address {0:?}: expected host:port")]
    Address(String),
    /// No TCP connection within the connect timeout, or refused.
    #[error("could not connect to the listening Tentacle at {address}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Tentacle presented another certificate than the pinned one.
    #[error("the listening Tentacle at {address} presented certificate {actual}, but this machine's thumbprint is {expected}: refused")]
    WrongCertificate {
        /// Where.
        address: String,
        /// The registered (pinned) thumbprint.
        expected: Thumbprint,
        /// What it presented.
        actual: Thumbprint,
    },
    /// TLS failed otherwise (the Tentacle does not trust this node, say).
    #[error("TLS with the listening Tentacle at {address} failed")]
    Tls {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Tentacle broke the protocol or closed early.
    #[error("the listening Tentacle at {address} broke the protocol")]
    Protocol {
        /// Where.
        address: String,
        /// What.
        #[source]
        source: octopoll_wire::Error,
    },
    /// A step did not finish in time.
    #[error("the listening Tentacle at {address} did not answer in time ({during})")]
    Timeout {
        /// Where.
        address: String,
        /// Which step.
        during: &'static str,
    },
    /// The service answered with an error.
    #[error("the listening Tentacle at {address} answered with an error: {message}")]
    Service {
        /// Where.
        address: String,
        /// The service's message.
        message: String,
    },
}

/// Bounds on one call.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    /// TCP connect and TLS handshake, each (Tentacle's `TcpClientConnectTimeout`: 60 s).
    pub connect_timeout: Duration,
    /// The whole exchange after the handshake.
    pub exchange_timeout: Duration,
    /// Decoder limits.
    pub limits: Limits,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            exchange_timeout: Duration::from_secs(300),
            limits: Limits::default(),
        }
    }
}

/// Calls the listening Tentacle at `address` (`host:port`), which must present
/// `thumbprint`, as `identity` (the node's certificate).
pub async fn call(
    identity: &Identity,
    address: &str,
    thumbprint: Thumbprint,
    request: RequestMessage,
    streams: Vec<DataStream>,
    bounds: CallLimits,
) -> Result<Reply, ListeningError> {
    let host = host_of(address).ok_or_else(|| ListeningError::Address(address.to_owned()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ListeningError::Address(address.to_owned()))?;
    let timed_out = |during| ListeningError::Timeout {
        address: address.to_owned(),
        during,
    };
    let tcp = timeout(bounds.connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| timed_out("connecting"))?
        .map_err(|source| ListeningError::Connect {
            address: address.to_owned(),
            source,
        })?;
    crate::tcp::tune(&tcp);
    let tls = octopoll_pki::tls::polling_client_config(identity, thumbprint).map_err(|e| {
        ListeningError::Tls {
            address: address.to_owned(),
            source: std::io::Error::other(e),
        }
    })?;
    let stream = timeout(
        bounds.connect_timeout,
        TlsConnector::from(Arc::new(tls)).connect(name, tcp),
    )
    .await
    .map_err(|_| timed_out("the TLS handshake"))?
    .map_err(|source| match PeerRejected::find_in(&source) {
        Some(PeerRejected::Mismatch { expected, actual }) => ListeningError::WrongCertificate {
            address: address.to_owned(),
            expected,
            actual,
        },
        _ => ListeningError::Tls {
            address: address.to_owned(),
            source,
        },
    })?;
    let mut exchange = Exchange::new(stream, bounds.limits);
    let protocol = |source| ListeningError::Protocol {
        address: address.to_owned(),
        source,
    };
    let reply = timeout(bounds.exchange_timeout, async {
        exchange.write_preamble().await?;
        exchange.write_identity(&RemoteIdentity::Client).await?;
        match exchange.read_identity().await? {
            RemoteIdentity::Server => {}
            other => {
                return Err(octopoll_wire::Error::UnexpectedIdentity {
                    expected: "MX-SERVER",
                    got: other.to_string(),
                })
            }
        }
        exchange
            .write_message(&Envelope::Request(request.clone()), &streams)
            .await?;
        let message = exchange
            .read_message()
            .await?
            .ok_or(octopoll_wire::Error::Truncated {
                during: "a response",
            })?;
        let Envelope::Response(response) = message.envelope else {
            return Err(octopoll_wire::Error::Envelope {
                reason: "expected a response".into(),
            });
        };
        if response.id != request.id {
            return Err(octopoll_wire::Error::Envelope {
                reason: format!(
                    "response id {:?} is not the request's {:?}",
                    response.id, request.id
                ),
            });
        }
        exchange.write_control(ControlMessage::End).await?;
        let _ = exchange.shutdown().await;
        Ok(Reply {
            response,
            streams: message.streams,
        })
    })
    .await
    .map_err(|_| timed_out("the exchange"))?
    .map_err(protocol)?;
    match &reply.response.error {
        Some(error) => Err(ListeningError::Service {
            address: address.to_owned(),
            message: error.message.clone(),
        }),
        None => Ok(reply),
    }
}

/// A health check, as Octopus runs one: `ICapabilitiesServiceV2.GetCapabilities`;
/// the Tentacle's capabilities on success.
pub async fn health_check(
    identity: &Identity,
    address: &str,
    thumbprint: Thumbprint,
    bounds: CallLimits,
) -> Result<Vec<String>, ListeningError> {
    let request = capabilities::request(
        ServiceEndPoint::new(format!("https://{address}/"), thumbprint.to_string()),
        1,
    );
    let reply = call(identity, address, thumbprint, request, vec![], bounds).await?;
    capabilities::parse_response(&reply.response.result).ok_or_else(|| ListeningError::Protocol {
        address: address.to_owned(),
        source: octopoll_wire::Error::Envelope {
            reason: "GetCapabilities answered without a capabilities list".into(),
        },
    })
}

/// The host of `host:port` or `[v6]:port`, without brackets.
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("127.0.0.1:10933"), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:10933"), Some("::1"));
        assert_eq!(host_of("tentacle.example:10933"), Some("tentacle.example"));
        assert_eq!(host_of("tentacle"), None);
        assert_eq!(host_of(":10933"), None);
        assert_eq!(host_of("host:port"), None);
    }
}

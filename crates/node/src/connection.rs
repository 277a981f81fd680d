//! One polling connection, from TLS accept to close: identify the Tentacle, then
//! hand it queued requests (or the null keep-alive after the long-poll wait) and
//! collect its responses, for as long as it keeps sending `NEXT`.

use std::net::SocketAddr;
use std::sync::Arc;

use octopoll_pki::{PeerRejected, Thumbprint};
use octopoll_wire::{ControlMessage, Envelope, Exchange, RemoteIdentity, SubscriptionId};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info_span, warn, Instrument};

use crate::metrics::Refusal;
use crate::node::NodeShared;
use crate::queue::{FailReason, PendingRequest, Reply};

/// Why a polling connection ended other than by the agent's `END` or a clean close.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The client certificate is not a registered machine's.
    #[error("refused agent certificate {thumbprint}: no registered machine has it")]
    Untrusted {
        /// The refused thumbprint.
        thumbprint: Thumbprint,
    },
    /// The certificate is registered with another subscription.
    #[error("certificate {thumbprint} identified as {got} but is registered as {registered}")]
    WrongSubscription {
        /// The certificate.
        thumbprint: Thumbprint,
        /// What the identity line said.
        got: String,
        /// What the registration says.
        registered: SubscriptionId,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    /// Something did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The peer broke the protocol or the transport failed.
    #[error(transparent)]
    Protocol(#[from] octopoll_wire::Error),
    /// A response for a request that is not in flight on this connection.
    #[error("response id {got:?} does not match the request in flight {expected:?}")]
    Anomaly {
        /// The id received.
        got: String,
        /// The id in flight.
        expected: String,
    },
    /// The peer was not a Halibut client.
    #[error("peer is not a Halibut client; answered with the probe page")]
    Probe,
}

impl ConnectionError {
    fn refusal(&self) -> Refusal {
        match self {
            ConnectionError::Untrusted { .. } => Refusal::Untrusted,
            ConnectionError::WrongSubscription { .. } => Refusal::Subscription,
            ConnectionError::Handshake(_) | ConnectionError::Timeout(_) => Refusal::Handshake,
            ConnectionError::Protocol(_) | ConnectionError::Anomaly { .. } => Refusal::Protocol,
            ConnectionError::Probe => Refusal::Probe,
        }
    }
}

type Result<T, E = ConnectionError> = std::result::Result<T, E>;

/// Serves one accepted TCP connection until it ends; never panics on peer input.
pub(crate) async fn serve(
    shared: Arc<NodeShared>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let span = info_span!(
        "poll",
        node = %shared.config.id,
        peer = %peer,
        thumbprint = field::Empty,
        subscription = field::Empty,
    );
    async move {
        match handle(&shared, tcp, shutdown).await {
            Ok(()) => debug!("polling connection closed"),
            Err(error) => {
                shared.metrics.refused(error.refusal());
                warn!(error = %error, cause = ?std::error::Error::source(&error).map(ToString::to_string), "polling connection ended");
            }
        }
    }
    .instrument(span)
    .await
}

async fn handle(shared: &NodeShared, tcp: TcpStream, shutdown: CancellationToken) -> Result<()> {
    let config = &shared.config;
    let tls = timeout(config.handshake_timeout, shared.acceptor.accept(tcp))
        .await
        .map_err(|_| ConnectionError::Timeout("the TLS handshake"))?
        .map_err(|e| match PeerRejected::find_in(&e) {
            Some(PeerRejected::Untrusted { thumbprint }) => {
                ConnectionError::Untrusted { thumbprint }
            }
            _ => ConnectionError::Handshake(e),
        })?;
    let thumbprint =
        peer_thumbprint(&tls).ok_or(ConnectionError::Timeout("a client certificate"))?;
    tracing::Span::current().record("thumbprint", field::display(thumbprint));

    let mut exchange = Exchange::new(tls, config.limits);
    let subscription = timeout(config.handshake_timeout, identify(&mut exchange))
        .await
        .map_err(|_| ConnectionError::Timeout("the preamble and identity"))??;
    tracing::Span::current().record("subscription", field::display(&subscription));
    // Checked after the preamble, as Halibut does; re-read so a deregistration counts.
    let machine = shared
        .registry
        .by_thumbprint(&thumbprint)
        .ok_or(ConnectionError::Untrusted { thumbprint })?;
    if machine.subscription != subscription {
        return Err(ConnectionError::WrongSubscription {
            thumbprint,
            got: subscription.to_string(),
            registered: machine.subscription,
        });
    }
    exchange.write_identity(&RemoteIdentity::Server).await?;
    let _counted = shared.metrics.open(&subscription);
    debug!(machine = %machine.name, "polling connection identified");

    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            next = shared.queue.collect_next(&subscription, config.long_poll) => next,
            closed = exchange.wait_for_peer() => match closed {
                // An idle Tentacle sends nothing: it closed, went away, or is ending with END.
                Ok(true) => return Ok(()),
                Ok(false) => return end_while_idle(&mut exchange, config.heartbeat_timeout).await,
                Err(error) => {
                    debug!(%error, "idle polling connection dropped");
                    return Ok(());
                }
            },
        };
        match next {
            None => exchange.write_message(&Envelope::Null, &[]).await?,
            Some(pending) => exchange_request(shared, &mut exchange, &pending).await?,
        }
        match timeout(config.heartbeat_timeout, exchange.read_control()).await {
            Err(_) => return Err(ConnectionError::Timeout("NEXT")),
            Ok(Ok(Some(ControlMessage::Next))) => {
                exchange.write_control(ControlMessage::Proceed).await?
            }
            Ok(Ok(Some(ControlMessage::End)) | Ok(None)) => return Ok(()),
            Ok(Ok(Some(other))) => {
                return Err(octopoll_wire::Error::UnexpectedControl {
                    line: other.to_string(),
                    expected: "NEXT or END",
                }
                .into())
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// The peer sent something while idle: only `END` (or a close) is acceptable.
async fn end_while_idle(
    exchange: &mut Exchange<TlsStream<TcpStream>>,
    within: std::time::Duration,
) -> Result<()> {
    match timeout(within, exchange.read_control()).await {
        Err(_) => Err(ConnectionError::Timeout("a whole control line")),
        Ok(Ok(Some(ControlMessage::End)) | Ok(None)) => Ok(()),
        Ok(Ok(Some(other))) => Err(octopoll_wire::Error::UnexpectedControl {
            line: other.to_string(),
            expected: "nothing while idle, or END",
        }
        .into()),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Reads the preamble and the subscriber's identity; answers a probe with Halibut's page.
async fn identify(exchange: &mut Exchange<TlsStream<TcpStream>>) -> Result<SubscriptionId> {
    match exchange.read_preamble().await {
        Ok(()) => {}
        Err(octopoll_wire::Error::NotMx { .. }) => {
            let _ = exchange.write_probe_response().await;
            return Err(ConnectionError::Probe);
        }
        Err(e) => return Err(e.into()),
    }
    match exchange.read_identity().await? {
        RemoteIdentity::Subscriber(subscription) => Ok(subscription),
        other => Err(octopoll_wire::Error::UnexpectedIdentity {
            expected: "MX-SUBSCRIBER",
            got: other.to_string(),
        }
        .into()),
    }
}

/// Sends one collected request and ends it with the response or the reason it failed.
async fn exchange_request(
    shared: &NodeShared,
    exchange: &mut Exchange<TlsStream<TcpStream>>,
    pending: &Arc<PendingRequest>,
) -> Result<()> {
    let request_id = &pending.request.id;
    debug!(request_id, "sending request");
    let envelope = Envelope::Request(pending.request.clone());
    if let Err(e) = exchange.write_message(&envelope, &pending.streams).await {
        pending.finish(Err(FailReason::ConnectionLost));
        return Err(e.into());
    }
    let read = timeout(shared.config.response_timeout, exchange.read_message()).await;
    let message = match read {
        Err(_) => {
            pending.finish(Err(FailReason::ResponseTimeout));
            return Err(ConnectionError::Timeout("the response"));
        }
        Ok(Ok(Some(message))) => message,
        Ok(Ok(None)) => {
            pending.finish(Err(FailReason::ConnectionLost));
            return Err(octopoll_wire::Error::Truncated {
                during: "awaiting a response",
            }
            .into());
        }
        Ok(Err(e)) => {
            let reason = match e {
                octopoll_wire::Error::Io { .. } | octopoll_wire::Error::Truncated { .. } => {
                    FailReason::ConnectionLost
                }
                _ => FailReason::ProtocolError,
            };
            pending.finish(Err(reason));
            return Err(e.into());
        }
    };
    match message.envelope {
        Envelope::Response(response) if &response.id == request_id => {
            if let Some(error) = &response.error {
                debug!(request_id, error = %error.message, "service answered with an error");
                pending.finish(Err(FailReason::ServiceError));
            } else {
                pending.finish(Ok(Reply {
                    response,
                    streams: message.streams,
                }));
            }
            Ok(())
        }
        Envelope::Response(response) => {
            shared.metrics.anomaly();
            pending.finish(Err(FailReason::ProtocolError));
            Err(ConnectionError::Anomaly {
                got: response.id,
                expected: request_id.clone(),
            })
        }
        other => {
            pending.finish(Err(FailReason::ProtocolError));
            Err(octopoll_wire::Error::Envelope {
                reason: format!("expected a response, got {other:?}"),
            }
            .into())
        }
    }
}

fn peer_thumbprint(tls: &TlsStream<TcpStream>) -> Option<Thumbprint> {
    let (_, connection) = tls.get_ref();
    connection.peer_certificates()?.first().map(Thumbprint::of)
}

//! One polling connection, from TLS accept to close: identify the Tentacle, then
//! hand it queued requests (or the null keep-alive after the long-poll wait) and
//! collect its responses, for as long as it keeps sending `NEXT`.
//!
//! Every read and write is bounded: the handshake and identity by the handshake
//! timeout, the first byte of a response by the response timeout, `NEXT` by the
//! heartbeat timeout, and everything else by the I/O timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use octopoll_pki::{PeerRejected, Thumbprint};
use octopoll_wire::{ControlMessage, Envelope, Exchange, Next, RemoteIdentity, SubscriptionId};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info_span, warn, Instrument};

use crate::metrics::{ConnectionGuard, Ending};
use crate::queue::{FailReason, PendingRequest, Reply};
use crate::registry::Endpoint;
use crate::shared::NodeShared;

/// Why a polling connection ended other than by the agent's `END`, a clean close
/// or the node stopping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The client certificate is not a registered machine's.
    #[error("refused agent certificate {thumbprint}: no registered machine has it")]
    Untrusted {
        /// The refused thumbprint.
        thumbprint: Thumbprint,
    },
    /// The certificate is registered with another subscription, or as a
    /// listening machine (which never polls).
    #[error("certificate {thumbprint} identified as {got} but is registered as {registered}")]
    WrongSubscription {
        /// The certificate.
        thumbprint: Thumbprint,
        /// What the identity line said.
        got: String,
        /// What the registration says: another `poll://…/`, or `https://…/`.
        registered: Endpoint,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    /// The client presented no certificate.
    #[error("the client presented no certificate")]
    NoClientCertificate,
    /// The handshake, preamble or identity did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(Deadline),
    /// The node holds its most unauthenticated connections already.
    #[error("refused: {0} connections are waiting to identify already (max_unauthenticated_connections)")]
    TooManyUnauthenticated(usize),
    /// The subscription holds its most connections to this node already.
    #[error("refused: {subscription} holds {max} connections already (max_connections_per_subscription)")]
    TooManyForSubscription {
        /// The subscription.
        subscription: SubscriptionId,
        /// The cap.
        max: usize,
    },
    /// A message (not a control line) came where `NEXT` or `END` was due: a
    /// response sent twice, or one nobody asked for.
    #[error("the peer sent a message where {0} was due")]
    MessageInsteadOfControl(Awaiting),
    /// A control line came where the response to a request was due.
    #[error("the peer sent the control line {0:?} where a response was due")]
    ControlInsteadOfResponse(String),
    /// An identified peer stopped responding.
    #[error("peer stopped responding: no {0} in time")]
    Stalled(&'static str),
    /// The node stopped and its drain bound expired while this connection was busy.
    #[error("dropped by the stopping node: the drain bound expired mid-exchange")]
    Aborted,
    /// The first byte of a response did not come within the response timeout.
    #[error("no response within the response timeout")]
    NoResponse,
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(octopoll_wire::Error),
    /// The transport failed or closed in the middle of something.
    #[error("connection dropped")]
    Dropped(#[source] octopoll_wire::Error),
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
    /// The shared machine registry could not be asked about the certificate.
    #[error("could not look the certificate up in the machine registry")]
    Registry(#[source] crate::StoreError),
    /// The request queue could not be read (Redis down past its retries).
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueFailed),
}

impl From<octopoll_wire::Error> for ConnectionError {
    fn from(error: octopoll_wire::Error) -> Self {
        match error {
            octopoll_wire::Error::Io { .. } | octopoll_wire::Error::Truncated { .. } => {
                ConnectionError::Dropped(error)
            }
            other => ConnectionError::Protocol(other),
        }
    }
}

/// Which deadline of a new connection passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Waiting for a turn to handshake (`handshake_queue_timeout`).
    HandshakeTurn,
    /// The TLS handshake (`handshake_timeout`).
    Tls,
    /// The preamble and identity line after it (`identification_timeout`).
    Identification,
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deadline::HandshakeTurn => "a turn to handshake",
            Deadline::Tls => "the TLS handshake",
            Deadline::Identification => "the MX preamble and identity line",
        })
    }
}

/// What [`ConnectionError::Stalled`] names when `NEXT` did not come within the
/// heartbeat timeout.
const HEARTBEAT: &str = "NEXT";

/// Which control line a connection was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaiting {
    /// `NEXT` (or `END`) after an exchange.
    Next,
    /// Nothing, or `END`, while idle between polls.
    IdleEnd,
}

impl std::fmt::Display for Awaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Awaiting::Next => "NEXT",
            Awaiting::IdleEnd => "nothing or END",
        })
    }
}

impl ConnectionError {
    /// A short, stable, kebab-case name for why the connection ended: the key of
    /// [`crate::NodeStats::close_reasons`].
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectionError::Untrusted { .. } => "untrusted-certificate",
            ConnectionError::WrongSubscription { .. } => "wrong-subscription",
            ConnectionError::Handshake(error) if no_certificate(error) => "no-client-certificate",
            ConnectionError::Handshake(_) => "tls-handshake-failed",
            ConnectionError::NoClientCertificate => "no-client-certificate",
            ConnectionError::Timeout(Deadline::HandshakeTurn) => "handshake-queue-timeout",
            ConnectionError::Timeout(Deadline::Tls) => "handshake-timeout",
            ConnectionError::Timeout(Deadline::Identification) => "identification-timeout",
            ConnectionError::TooManyUnauthenticated(_) => "unauthenticated-limit",
            ConnectionError::TooManyForSubscription { .. } => "subscription-connection-limit",
            ConnectionError::MessageInsteadOfControl(Awaiting::Next) => "message-instead-of-next",
            ConnectionError::MessageInsteadOfControl(Awaiting::IdleEnd) => "unsolicited-message",
            ConnectionError::ControlInsteadOfResponse(_) => "control-line-instead-of-response",
            ConnectionError::Stalled(HEARTBEAT) => "heartbeat-timeout",
            ConnectionError::Stalled(_) => "io-timeout",
            ConnectionError::Aborted => "node-stopping",
            ConnectionError::NoResponse => "response-timeout",
            ConnectionError::Protocol(error) => error.code(),
            ConnectionError::Dropped(_) => "dropped",
            ConnectionError::Anomaly { .. } => "response-id-mismatch",
            ConnectionError::Probe => "probe",
            ConnectionError::Registry(_) => "registry-unavailable",
            ConnectionError::Queue(_) => "queue-unavailable",
        }
    }

    fn ending(&self) -> Ending {
        match self {
            ConnectionError::Untrusted { .. } => Ending::Untrusted,
            ConnectionError::WrongSubscription { .. } => Ending::Subscription,
            ConnectionError::Handshake(_)
            | ConnectionError::Registry(_)
            | ConnectionError::NoClientCertificate
            | ConnectionError::Timeout(_) => Ending::Handshake,
            ConnectionError::TooManyUnauthenticated(_)
            | ConnectionError::TooManyForSubscription { .. } => Ending::Limit,
            ConnectionError::MessageInsteadOfControl(_)
            | ConnectionError::ControlInsteadOfResponse(_) => Ending::Protocol,
            ConnectionError::Stalled(_)
            | ConnectionError::NoResponse
            | ConnectionError::Aborted => Ending::Stalled,
            ConnectionError::Protocol(_) | ConnectionError::Anomaly { .. } => Ending::Protocol,
            ConnectionError::Dropped(_) | ConnectionError::Queue(_) => Ending::Dropped,
            ConnectionError::Probe => Ending::Probe,
        }
    }

    /// The reason a request in flight fails when its connection ends with this error.
    fn fail_reason(&self) -> FailReason {
        match self {
            ConnectionError::Dropped(_)
            | ConnectionError::Stalled(_)
            | ConnectionError::Aborted => FailReason::ConnectionLostInFlight,
            ConnectionError::NoResponse => FailReason::ResponseTimeout,
            _ => FailReason::ProtocolError,
        }
    }
}

type Result<T, E = ConnectionError> = std::result::Result<T, E>;
type TlsExchange = Exchange<TlsStream<TcpStream>>;

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
        let result = tokio::select! {
            result = handle(&shared, tcp, shutdown) => result,
            // The drain bound expired: dropping `handle` ends the request it holds
            // (its `InFlight` guard) with `connection-lost-in-flight`.
            _ = shared.abort.cancelled() => Err(ConnectionError::Aborted),
        };
        match result {
            Ok(()) => {
                debug!("polling connection closed");
                shared.metrics.ended(Ending::Clean, "clean");
            }
            Err(error) => {
                let cause = std::error::Error::source(&error).map(ToString::to_string);
                // Dropped by this node's own stop or kill, or by a peer going away:
                // expected in a fault scenario. The rest is a misbehaving peer.
                // A flood over the unauthenticated cap is counted, not logged per connection.
                // A peer that never identified is logged once per reason per
                // interval, with how many were held back (all are counted).
                let reason = error.reason();
                let stranger = matches!(
                    error.ending(),
                    Ending::Untrusted | Ending::Subscription | Ending::Handshake | Ending::Probe
                );
                if matches!(
                    error,
                    ConnectionError::Aborted
                        | ConnectionError::Dropped(_)
                        | ConnectionError::TooManyUnauthenticated(_)
                ) {
                    debug!(%error, ?cause, "polling connection ended");
                } else if !stranger {
                    warn!(%error, ?cause, reason, "polling connection ended");
                } else if let Some(held_back) =
                    shared.strangers.admit(reason, tokio::time::Instant::now())
                {
                    warn!(%error, ?cause, reason, held_back, "polling connection refused before it identified (logged once per reason every 10 s)");
                } else {
                    debug!(%error, ?cause, reason, "polling connection refused before it identified");
                }
                shared.metrics.ended(error.ending(), error.reason());
            }
        }
    }
    .instrument(span)
    .await
}

async fn handle(shared: &NodeShared, tcp: TcpStream, shutdown: CancellationToken) -> Result<()> {
    let config = &shared.config;
    // Counted from accept until identified; over the cap, closed at once.
    let unauthenticated = shared
        .metrics
        .try_unauthenticated(config.max_unauthenticated_connections)
        .ok_or(ConnectionError::TooManyUnauthenticated(
            config.max_unauthenticated_connections,
        ))?;
    // A storm is served a few hundred handshakes at a time; the deadline of each
    // runs from its turn to handshake.
    let handshake_turn = timeout(config.handshake_queue_timeout, shared.handshakes.acquire())
        .await
        .map_err(|_| ConnectionError::Timeout(Deadline::HandshakeTurn))?
        .map_err(|_| ConnectionError::Aborted)?;
    // Boxed, here and for each exchange below: a connection task lives for hours
    // but handshakes once and carries a request now and then, so the memory those
    // steps need is taken while they run, not held by every idle connection.
    let (mut exchange, subscription) = Box::pin(accept(shared, tcp)).await?;
    drop(handshake_turn);
    drop(unauthenticated);
    // Counted before MX-SERVER goes out, so a peer that read it finds itself counted.
    // Over the per-subscription cap, closed before MX-SERVER, as Halibut does.
    let max = config.max_connections_per_subscription;
    let counted = shared.metrics.try_open(&subscription, max).ok_or_else(|| {
        ConnectionError::TooManyForSubscription {
            subscription: subscription.clone(),
            max,
        }
    })?;
    within(
        config.io_timeout,
        "MX-SERVER write",
        exchange.write_identity(&RemoteIdentity::Server),
    )
    .await?;
    debug!("polling connection identified");

    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            // Before the queue: a request must not be collected by a peer already gone.
            closed = exchange.wait_for_peer() => match closed {
                // An idle Tentacle sends nothing: it closed, went away, or is ending with END.
                Ok(true) => return Ok(()),
                Ok(false) => return Box::pin(end_while_idle(&mut exchange, config.heartbeat_timeout)).await,
                Err(error) => {
                    debug!(%error, "idle polling connection dropped");
                    return Ok(());
                }
            },
            next = async {
                let _waiting = counted.waiting();
                shared.queue.collect_next(&subscription, config.long_poll).await
            } => next?,
        };
        // A poll ends here with work or the null request; the pair counts as polling.
        counted.polled();
        // Boxed: an idle connection holds only what waiting needs.
        if Box::pin(turn(shared, &mut exchange, &counted, next)).await? == Turn::Ended {
            return Ok(());
        }
    }
}

/// Whether a connection goes on after a turn.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// `NEXT` came and `PROCEED` went: wait for the next poll.
    Again,
    /// The agent said `END` or closed.
    Ended,
}

/// One turn after a poll ended: hand over the request (or the null keep-alive),
/// then wait for `NEXT` and answer `PROCEED`.
async fn turn(
    shared: &NodeShared,
    exchange: &mut TlsExchange,
    counted: &ConnectionGuard,
    next: Option<Arc<PendingRequest>>,
) -> Result<Turn> {
    let config = &shared.config;
    match next {
        None => {
            within(
                config.io_timeout,
                "keep-alive write",
                exchange.write_message(&Envelope::Null, &[]),
            )
            .await?
        }
        Some(pending) => {
            shared.metrics.collected();
            let in_flight = InFlight { pending, shared };
            let result = exchange_request(shared, exchange, &in_flight.pending).await;
            if let Err(error) = &result {
                in_flight.pending.finish(Err(error.fail_reason()));
            }
            result?;
        }
    }
    let control = timeout(
        config.heartbeat_timeout,
        read_control(exchange, Awaiting::Next),
    )
    .await
    .map_err(|_| ConnectionError::Stalled(HEARTBEAT))??;
    match control {
        Some(ControlMessage::Next) => {
            within(
                config.io_timeout,
                "PROCEED write",
                exchange.write_control(ControlMessage::Proceed),
            )
            .await?;
            // The next poll starts.
            counted.polled();
            Ok(Turn::Again)
        }
        Some(ControlMessage::End) | None => Ok(Turn::Ended),
        Some(other) => Err(octopoll_wire::Error::UnexpectedControl {
            line: other.to_string(),
            expected: "NEXT or END",
        }
        .into()),
    }
}

/// TLS, the registry check, then preamble and identity. Untrusted certificates are
/// refused in the TLS handshake already (the verifier reads the same registry), or
/// right after it when the registry is shared with other processes and this
/// node's copy has not heard of the certificate yet; the registry is read again
/// here so a machine deregistered meanwhile is refused too.
async fn accept(shared: &NodeShared, tcp: TcpStream) -> Result<(TlsExchange, SubscriptionId)> {
    let config = &shared.config;
    let tls = timeout(config.handshake_timeout, shared.acceptor.accept(tcp))
        .await
        .map_err(|_| ConnectionError::Timeout(Deadline::Tls))?
        .map_err(|e| match PeerRejected::find_in(&e) {
            Some(PeerRejected::Untrusted { thumbprint }) => {
                ConnectionError::Untrusted { thumbprint }
            }
            _ => ConnectionError::Handshake(e),
        })?;
    let thumbprint = peer_thumbprint(&tls).ok_or(ConnectionError::NoClientCertificate)?;
    tracing::Span::current().record("thumbprint", field::display(thumbprint));
    let machine = shared
        .registry
        .resolve(&thumbprint)
        .await
        .map_err(ConnectionError::Registry)?
        .ok_or(ConnectionError::Untrusted { thumbprint })?;

    let mut exchange = Exchange::new(tls, config.limits);
    let subscription = timeout(config.identification_timeout, identify(&mut exchange))
        .await
        .map_err(|_| ConnectionError::Timeout(Deadline::Identification))??;
    tracing::Span::current().record("subscription", field::display(&subscription));
    if machine.subscription() != Some(&subscription) {
        return Err(ConnectionError::WrongSubscription {
            thumbprint,
            got: subscription.to_string(),
            registered: machine.endpoint,
        });
    }
    Ok((exchange, subscription))
}

/// The peer sent something while idle: only `END` (or a close) is acceptable.
async fn end_while_idle(exchange: &mut TlsExchange, limit: Duration) -> Result<()> {
    match timeout(limit, read_control(exchange, Awaiting::IdleEnd)).await {
        Err(_) => Err(ConnectionError::Stalled("whole control line")),
        Ok(Ok(Some(ControlMessage::End)) | Ok(None)) => Ok(()),
        Ok(Ok(Some(other))) => Err(octopoll_wire::Error::UnexpectedControl {
            line: other.to_string(),
            expected: "nothing while idle, or END",
        }
        .into()),
        Ok(Err(e)) => Err(e),
    }
}

/// Reads the preamble and the subscriber's identity; answers a probe with Halibut's page.
async fn identify(exchange: &mut TlsExchange) -> Result<SubscriptionId> {
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

/// Sends one collected request and ends it with the response. On error the caller
/// fails it with the reason the error implies.
async fn exchange_request(
    shared: &NodeShared,
    exchange: &mut TlsExchange,
    pending: &Arc<PendingRequest>,
) -> Result<()> {
    let config = &shared.config;
    let request_id = &pending.request.id;
    debug!(request_id, "sending request");
    let envelope = Envelope::Request(pending.request.clone());
    within(
        config.io_timeout,
        "request write",
        exchange.write_message(&envelope, &pending.streams),
    )
    .await?;
    // Tentacle's rule: the response timeout bounds the first byte (and the few
    // that tell a control line from a message); the I/O timeout the rest.
    let next = timeout(config.response_timeout, exchange.next_item())
        .await
        .map_err(|_| ConnectionError::NoResponse)??;
    match next {
        None => {
            return Err(octopoll_wire::Error::Truncated {
                during: "awaiting a response",
            }
            .into())
        }
        Some(Next::ControlLine) => {
            let line =
                match within(config.io_timeout, "control line", exchange.read_control()).await {
                    Ok(Some(control)) => control.to_string(),
                    Ok(None) | Err(_) => String::new(),
                };
            return Err(ConnectionError::ControlInsteadOfResponse(line));
        }
        Some(Next::Message) => {}
    }
    let message = within(
        config.io_timeout,
        "rest of the response",
        exchange.read_message(),
    )
    .await?
    .ok_or(octopoll_wire::Error::Truncated {
        during: "a response",
    })?;
    match message.envelope {
        Envelope::Response(response) if &response.id == request_id => {
            if let Some(error) = response.error {
                debug!(request_id, error = %error.message, "service answered with an error");
                pending.fail_with(error);
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
            Err(ConnectionError::Anomaly {
                got: response.id,
                expected: request_id.clone(),
            })
        }
        other => Err(octopoll_wire::Error::Envelope {
            reason: format!("expected a response, got {other:?}"),
        }
        .into()),
    }
}

/// Runs `io` within `limit`; running out is [`ConnectionError::Stalled`] on `what`.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    io: impl Future<Output = octopoll_wire::Result<T>>,
) -> Result<T> {
    timeout(limit, io)
        .await
        .map_err(|_| ConnectionError::Stalled(what))?
        .map_err(Into::into)
}

/// A collected request: if the connection task is dropped while holding it (the
/// drain bound of a stop expired, or the node was killed), it still ends, as
/// `connection-lost-in-flight` or `node-killed`. `finish` is first-call-wins, so an
/// exchange that ended it already is not overridden.
struct InFlight<'a> {
    pending: Arc<PendingRequest>,
    shared: &'a NodeShared,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.pending.finish(Err(self.shared.dropped_reason()));
    }
}

/// Reads a control line where `expected` is due; a message there (raw DEFLATE,
/// told apart by up to a line's length of bytes) is
/// [`ConnectionError::MessageInsteadOfControl`].
async fn read_control(
    exchange: &mut TlsExchange,
    expected: Awaiting,
) -> Result<Option<ControlMessage>> {
    match exchange.next_item().await? {
        None => Ok(None),
        Some(Next::Message) => Err(ConnectionError::MessageInsteadOfControl(expected)),
        Some(Next::ControlLine) => Ok(exchange.read_control().await?),
    }
}

/// Whether a failed handshake failed for want of a client certificate.
fn no_certificate(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::NoCertificatesPresented))
}

fn peer_thumbprint(tls: &TlsStream<TcpStream>) -> Option<Thumbprint> {
    let (_, connection) = tls.get_ref();
    connection.peer_certificates()?.first().map(Thumbprint::of)
}

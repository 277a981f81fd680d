//! One polling connection of one agent to one node, kept up until shutdown.
//!
//! Connect, TLS (pinning the node's thumbprint), `MX` preamble, `MX-SUBSCRIBER`
//! identity, then: receive a request or the null keep-alive, answer requests, send
//! `NEXT`, await `PROCEED`, repeat. On shutdown the loop finishes the exchange in
//! hand and sends `END` in place of `NEXT`. After any failure it sleeps Halibut's
//! [`Backoff`] and reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_pki::PeerRejected;
use octopoll_wire::{
    ControlMessage, DataStream, Envelope, Exchange, RemoteIdentity, RequestMessage,
    ResponseMessage, ServerError,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::ATTEMPT_CONNECTS;
use crate::services::Services;
use crate::{Backoff, Error, PollingConfig, TrustedServer};

/// What one polling link reports about itself.
#[derive(Debug, Default)]
pub struct LinkState {
    identified: AtomicBool,
    connects: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LinkState {
    /// Whether the link holds an identified connection now.
    pub fn is_identified(&self) -> bool {
        self.identified.load(Ordering::Relaxed)
    }

    /// Connections identified so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed connections so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the last connection failed, with its causes, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn failed(&self, error: &PollError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// TCP connect failed or timed out.
    #[error("could not connect to {address}")]
    Connect {
        /// The node.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node is not the pinned one.
    #[error(transparent)]
    Mismatch(Error),
    /// TLS failed (the node may have refused this agent's certificate).
    #[error("TLS with {address} failed")]
    Tls {
        /// The node.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node refused this agent's certificate (it sent a TLS alert).
    #[error("node at {address} refused this agent's certificate {thumbprint} ({alert}); is the agent registered (register-with / poll-server)?")]
    Refused {
        /// The node.
        address: String,
        /// This agent's thumbprint.
        thumbprint: octopoll_pki::Thumbprint,
        /// The alert received.
        alert: String,
    },
    /// The node broke the protocol or the connection dropped.
    #[error(transparent)]
    Protocol(#[from] octopoll_wire::Error),
    /// Something did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl PollError {
    /// Whether Halibut's `SecureClient` tries the connect again within the same
    /// attempt: a connect or set-up that was reset or timed out, yes; a refused
    /// connection, a TLS authentication failure (a pinning mismatch, a refused
    /// certificate, a bad certificate) or anything after identification, no.
    pub fn retried_within_an_attempt(&self) -> bool {
        use std::io::ErrorKind::{
            BrokenPipe, ConnectionAborted, ConnectionReset, TimedOut, UnexpectedEof,
        };
        match self {
            PollError::Connect { source, .. } => {
                source.kind() != std::io::ErrorKind::ConnectionRefused
            }
            PollError::Tls { source, .. } => matches!(
                source.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut
            ),
            PollError::Timeout(_) => true,
            PollError::Mismatch(_) | PollError::Refused { .. } | PollError::Protocol(_) => false,
        }
    }
}

/// Whether a polling loop goes on after a turn.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// `PROCEED` came: wait for the next message.
    Again,
    /// Stopping: `END` was sent.
    Ended,
}

/// One polling loop.
pub(crate) struct Poller {
    pub(crate) server: TrustedServer,
    pub(crate) config: PollingConfig,
    pub(crate) connector: TlsConnector,
    pub(crate) services: Arc<Services>,
    pub(crate) state: Arc<LinkState>,
    pub(crate) jitter: f64,
    pub(crate) thumbprint: octopoll_pki::Thumbprint,
}

impl Poller {
    /// Polls until `shutdown`, reconnecting with backoff.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        if let Some(ramp) = &self.config.ramp {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ramp.wait() => {}
            }
        }
        let mut backoff = Backoff::new(self.config.backoff, self.jitter);
        while !shutdown.is_cancelled() {
            let result = self.connect_and_poll(&mut backoff, &shutdown).await;
            self.state.identified.store(false, Ordering::Relaxed);
            let Err(error) = result else { break };
            self.state.failed(&error);
            let delay = backoff.failed();
            let refused = matches!(error, PollError::Mismatch(_) | PollError::Refused { .. });
            let error = self.state.last_error().unwrap_or_default();
            // A trust problem is a misconfiguration: warn. A node going away is an
            // outage: once per outage, so a node down for minutes under thousands of
            // agents does not flood the log.
            if refused {
                warn!(%error, ?delay, "polling connection refused; retrying");
            } else if backoff.failures() == 1 {
                info!(%error, ?delay, "polling connection failed; retrying");
            } else {
                debug!(%error, ?delay, failures = backoff.failures(), "polling connection failed again");
            }
            if delay.is_zero() {
                // The `none` strategy: retry at once, but let other tasks run.
                tokio::task::yield_now().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        debug!("polling loop stopped");
    }

    async fn connect_and_poll(
        &self,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<(), PollError> {
        backoff.attempting();
        // Nothing is in hand while connecting, so a stop need not wait for it.
        let mut exchange = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            // Boxed: a connection is made once and then held for hours; its
            // memory is not held by every idle link (nor is an answer's, below).
            established = Box::pin(self.establish_with_retries()) => established?,
        };
        backoff.identified();
        self.state.identified.store(true, Ordering::Relaxed);
        self.state.connects.fetch_add(1, Ordering::Relaxed);
        debug!("identified");
        self.poll(&mut exchange, shutdown).await
    }

    /// [`Poller::establish`], tried again within the attempt as Halibut's
    /// `SecureClient` does: up to [`ATTEMPT_CONNECTS`] connects,
    /// [`crate::BackoffConfig::connect_retry_interval`] apart, while each fails in a way
    /// worth retrying at once ([`PollError::retried_within_an_attempt`]).
    async fn establish_with_retries(&self) -> Result<Exchange<TlsStream<TcpStream>>, PollError> {
        let interval = self.config.backoff.connect_retry_interval();
        let mut connects = 1;
        loop {
            match self.establish().await {
                Err(error) if error.retried_within_an_attempt() && connects < ATTEMPT_CONNECTS => {
                    debug!(%error, connects, "connect failed; retrying within the attempt");
                    connects += 1;
                    tokio::time::sleep(interval).await;
                }
                established => return established,
            }
        }
    }

    /// Connects, handshakes and identifies; returns the exchange once `MX-SERVER` came.
    async fn establish(&self) -> Result<Exchange<TlsStream<TcpStream>>, PollError> {
        let mut exchange = self.connect().await?;
        let io = self.config.io_timeout;
        let subscriber = RemoteIdentity::Subscriber(self.server.subscription.clone());
        let written = timeout(io, exchange.write_hello(&subscriber))
            .await
            .map_err(|_| PollError::Timeout("the identity to be written"))?;
        if let Err(error) = written {
            return Err(self.explain_refusal(&mut exchange, error).await);
        }
        let answer = match timeout(io, exchange.read_identity()).await {
            Err(_) => return Err(PollError::Timeout("MX-SERVER")),
            Ok(Err(error)) => return Err(self.explain_refusal(&mut exchange, error).await),
            Ok(Ok(answer)) => answer,
        };
        match answer {
            RemoteIdentity::Server => Ok(exchange),
            other => Err(octopoll_wire::Error::UnexpectedIdentity {
                expected: "MX-SERVER",
                got: other.to_string(),
            }
            .into()),
        }
    }

    /// With TLS 1.3 a node refuses a client certificate after the client's side of
    /// the handshake completed: the refusal is an alert on the next read, or, if our
    /// first write raced it, a broken pipe. Either way, say what most likely happened.
    async fn explain_refusal(
        &self,
        exchange: &mut Exchange<TlsStream<TcpStream>>,
        error: octopoll_wire::Error,
    ) -> PollError {
        let mut alert = alert_in(&error);
        let closed_early = matches!(&error, octopoll_wire::Error::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset));
        if alert.is_none() && closed_early {
            // The alert may still be readable behind the failed write.
            if let Ok(Err(read_error)) =
                timeout(Duration::from_secs(1), exchange.read_identity()).await
            {
                alert = alert_in(&read_error);
            }
        }
        match (alert, closed_early) {
            (Some(alert), _) => PollError::Refused {
                address: self.server.address.to_string(),
                thumbprint: self.thumbprint,
                alert,
            },
            (None, true) => PollError::Refused {
                address: self.server.address.to_string(),
                thumbprint: self.thumbprint,
                alert: "closed right after the TLS handshake".into(),
            },
            (None, false) => error.into(),
        }
    }

    async fn connect(&self) -> Result<Exchange<TlsStream<TcpStream>>, PollError> {
        let address = self.server.address.authority();
        let connect_error = |source| PollError::Connect {
            address: address.clone(),
            source,
        };
        let tcp = timeout(self.config.connect_timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        let _ = tcp.set_nodelay(true);
        let name =
            ServerName::try_from(self.server.address.host.clone()).map_err(|_| PollError::Tls {
                address: address.clone(),
                source: std::io::Error::other("the host is not a valid TLS server name"),
            })?;
        let tls = timeout(self.config.io_timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| PollError::Timeout("the TLS handshake"))?
            .map_err(|source| match PeerRejected::find_in(&source) {
                Some(PeerRejected::Mismatch { expected, actual }) => {
                    PollError::Mismatch(Error::ServerMismatch {
                        address: self.server.address.to_string(),
                        expected,
                        actual,
                    })
                }
                _ => PollError::Tls {
                    address: address.clone(),
                    source,
                },
            })?;
        Ok(Exchange::new(tls, self.config.limits))
    }

    async fn poll(
        &self,
        exchange: &mut Exchange<TlsStream<TcpStream>>,
        shutdown: &CancellationToken,
    ) -> Result<(), PollError> {
        loop {
            // Wait for the first byte of the next message in a cancel-safe way, so a
            // stop never drops a request half read.
            let waited = tokio::select! {
                biased;
                waited = timeout(self.config.receive_request_timeout, exchange.wait_for_peer()) => waited,
                // Idle: nothing in hand, so just close (END only ever replaces NEXT).
                _ = shutdown.cancelled() => {
                    let _ = timeout(self.config.io_timeout, exchange.shutdown()).await;
                    return Ok(());
                }
            };
            if waited.map_err(|_| PollError::Timeout("the next request"))?? {
                return Err(octopoll_wire::Error::Truncated {
                    during: "waiting for the next request",
                }
                .into());
            }
            // Boxed: an idle link holds only what waiting needs.
            if Box::pin(self.turn(exchange, shutdown)).await? == Turn::Ended {
                return Ok(());
            }
        }
    }

    /// One turn after the node sent something: read the message, answer it if it
    /// is a request, then `NEXT` and `PROCEED` (or `END` when stopping).
    async fn turn(
        &self,
        exchange: &mut Exchange<TlsStream<TcpStream>>,
        shutdown: &CancellationToken,
    ) -> Result<Turn, PollError> {
        let message = timeout(self.config.io_timeout, exchange.read_message())
            .await
            .map_err(|_| PollError::Timeout("the rest of a message"))??
            .ok_or(octopoll_wire::Error::Truncated {
                during: "a message",
            })?;
        match message.envelope {
            Envelope::Null => {}
            Envelope::Request(request) => {
                debug!(request_id = %request.id, service = %request.service, method = %request.method, "request");
                let (response, streams) = self.answer(request, message.streams).await;
                // Counted before the write: once the node has the answer, so does the count.
                self.state.requests.fetch_add(1, Ordering::Relaxed);
                self.write(exchange.write_message(&Envelope::Response(response), &streams))
                    .await?;
            }
            Envelope::Response(_) => {
                return Err(octopoll_wire::Error::Envelope {
                    reason: "a node sent a response on a polling connection".into(),
                }
                .into())
            }
        }
        if shutdown.is_cancelled() {
            let _ = self
                .write(exchange.write_control(ControlMessage::End))
                .await;
            let _ = timeout(self.config.io_timeout, exchange.shutdown()).await;
            return Ok(Turn::Ended);
        }
        self.write(exchange.write_control(ControlMessage::Next))
            .await?;
        let proceed = timeout(self.config.io_timeout, exchange.read_control())
            .await
            .map_err(|_| PollError::Timeout("PROCEED"))??;
        match proceed {
            Some(ControlMessage::Proceed) => Ok(Turn::Again),
            None => Err(octopoll_wire::Error::Truncated {
                during: "waiting for PROCEED",
            }
            .into()),
            Some(other) => Err(octopoll_wire::Error::UnexpectedControl {
                line: other.to_string(),
                expected: "PROCEED",
            }
            .into()),
        }
    }

    /// Runs the request in its own task, so a panicking service answers with an
    /// error instead of ending this polling loop.
    async fn answer(
        &self,
        request: RequestMessage,
        streams: Vec<DataStream>,
    ) -> (ResponseMessage, Vec<DataStream>) {
        let services = self.services.clone();
        let id = request.id.clone();
        let call = tokio::spawn(async move { services.dispatch(&request, streams).await });
        match call.await {
            Ok(answer) => answer,
            Err(error) => {
                warn!(%error, request_id = %id, "simulated service failed");
                let response = ResponseMessage {
                    id,
                    error: Some(ServerError::thrown(format!(
                        "the simulated service failed: {error}"
                    ))),
                    result: bson::Bson::Null,
                };
                (response, Vec::new())
            }
        }
    }

    async fn write(
        &self,
        write: impl std::future::Future<Output = octopoll_wire::Result<()>>,
    ) -> Result<(), PollError> {
        timeout(self.config.io_timeout, write)
            .await
            .map_err(|_| PollError::Timeout("a write to complete"))?
            .map_err(Into::into)
    }
}

/// The TLS alert a node sent, if `error` carries one.
fn alert_in(error: &octopoll_wire::Error) -> Option<String> {
    let octopoll_wire::Error::Io { source, .. } = error else {
        return None;
    };
    match source.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(format!("TLS alert {alert:?}")),
        _ => None,
    }
}

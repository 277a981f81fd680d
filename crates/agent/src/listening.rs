//! A *listening* Tentacle: it accepts TLS on its port (10933 by default),
//! demands a client certificate whose thumbprint it trusts (the server's), and
//! answers `MX-CLIENT` with `MX-SERVER`. Then, per connection: a request, the
//! response, and `NEXT` (answered `PROCEED`, another request follows) or `END`.
//! Requests run on the same simulated [`Services`] a polling agent hosts.
//!
//! Two of them given one certificate (a PFX exported from one and imported into
//! the other) are the clustered active/passive pair of the Octopus docs: behind
//! one address, the server cannot tell which one answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use octopoll_pki::{Identity, Thumbprint, TrustedThumbprints};
use octopoll_wire::{ControlMessage, Envelope, Exchange, Limits, RemoteIdentity};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::services::Services;
use crate::{Error, Result, ServiceConfig};

/// Tentacle's default listening port.
pub const DEFAULT_PORT: u16 = 10933;
/// Bound on a client's TLS handshake, preamble and identity.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit between exchanges (Tentacle's
/// `TcpClientReceiveTimeout` on the service side: the client pools for 9 min).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long one write may wait for a caller that stops reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listening Tentacle's settings.
#[derive(Clone, Debug)]
pub struct ListeningConfig {
    /// Its machine name, for logs.
    pub name: String,
    /// The server thumbprints it trusts (`configure --trust`).
    pub trusted: Vec<Thumbprint>,
    /// How its services behave.
    pub services: ServiceConfig,
    /// Decoder limits.
    pub limits: Limits,
    /// A write (a response, an identity or control line) that a caller that
    /// stopped reading holds up longer ends the connection.
    pub write_timeout: Duration,
}

impl ListeningConfig {
    /// `name` trusting the servers `trusted`, with default services and limits.
    pub fn trusting(name: impl Into<String>, trusted: Vec<Thumbprint>) -> Self {
        Self {
            name: name.into(),
            trusted,
            services: ServiceConfig::default(),
            limits: Limits::default(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// A running listening Tentacle; [`ListeningTentacle::stop`] ends it.
pub struct ListeningTentacle {
    addr: SocketAddr,
    thumbprint: Thumbprint,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl ListeningTentacle {
    /// Starts serving on `listener` as `identity`.
    pub fn start(
        identity: &Identity,
        config: ListeningConfig,
        listener: TcpListener,
    ) -> Result<Self> {
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            what: "listening Tentacle",
            source,
        })?;
        let trusted = TrustedThumbprints::new();
        for thumbprint in &config.trusted {
            trusted.insert(*thumbprint);
        }
        let tls = octopoll_pki::tls::polling_server_config(identity, trusted)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let services = Arc::new(Services::new(config.services.clone()));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let span = info_span!("listening", agent = %config.name, %addr);
        info!(parent: &span, thumbprint = %identity.thumbprint(), "listening Tentacle started");
        let (stop, connections) = (shutdown.clone(), tracker.clone());
        let (limits, write_timeout) = (config.limits, config.write_timeout);
        tracker.spawn(
            async move {
                loop {
                    let (tcp, peer) = tokio::select! {
                        _ = stop.cancelled() => break,
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(error) => {
                                warn!(%error, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let (acceptor, services, stop) =
                        (acceptor.clone(), services.clone(), stop.clone());
                    connections.spawn(
                        async move {
                            tokio::select! {
                                result = serve(acceptor, services, tcp, limits, write_timeout) => match result {
                                    Ok(()) => debug!("connection closed"),
                                    Err(error) => warn!(%error, "connection ended"),
                                },
                                _ = stop.cancelled() => {}
                            }
                        }
                        .instrument(info_span!("client", %peer)),
                    );
                }
            }
            .instrument(span),
        );
        Ok(Self {
            addr,
            thumbprint: identity.thumbprint(),
            shutdown,
            tracker,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate it presents.
    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// Stops listening and drops every connection (a killed member of a cluster).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Why one listening connection ended badly.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Protocol(#[from] octopoll_wire::Error),
}

/// One connection: identify, then requests until `END` or a close.
async fn serve(
    acceptor: TlsAcceptor,
    services: Arc<Services>,
    tcp: TcpStream,
    limits: Limits,
    write_timeout: Duration,
) -> std::result::Result<(), ServeError> {
    let written = |during: &'static str| move |_| ServeError::Timeout(during);
    let _ = tcp.set_nodelay(true);
    let mut exchange = timeout(HANDSHAKE_TIMEOUT, async {
        let tls = acceptor.accept(tcp).await.map_err(ServeError::Tls)?;
        let mut exchange = Exchange::new(tls, limits);
        exchange.read_preamble().await?;
        match exchange.read_identity().await? {
            RemoteIdentity::Client => {}
            other => {
                return Err(ServeError::Protocol(
                    octopoll_wire::Error::UnexpectedIdentity {
                        expected: "MX-CLIENT",
                        got: other.to_string(),
                    },
                ))
            }
        }
        timeout(
            write_timeout,
            exchange.write_identity(&RemoteIdentity::Server),
        )
        .await
        .map_err(written("the identity line to be taken"))??;
        Ok(exchange)
    })
    .await
    .map_err(|_| ServeError::Timeout("the TLS handshake, preamble and identity"))??;
    loop {
        let Some(message) = timeout(RECEIVE_TIMEOUT, exchange.read_message())
            .await
            .map_err(|_| ServeError::Timeout("a request"))??
        else {
            return Ok(());
        };
        let Envelope::Request(request) = message.envelope else {
            return Err(octopoll_wire::Error::Envelope {
                reason: "expected a request".into(),
            }
            .into());
        };
        debug!(request_id = %request.id, service = %request.service, "request");
        let (response, streams) = services.dispatch(&request, message.streams).await;
        timeout(
            write_timeout,
            exchange.write_message(&Envelope::Response(response), &streams),
        )
        .await
        .map_err(written("the response to be taken"))??;
        match timeout(RECEIVE_TIMEOUT, exchange.read_control())
            .await
            .map_err(|_| ServeError::Timeout("NEXT or END"))??
        {
            Some(ControlMessage::Next) => timeout(
                write_timeout,
                exchange.write_control(ControlMessage::Proceed),
            )
            .await
            .map_err(written("PROCEED to be taken"))??,
            Some(ControlMessage::End) | None => return Ok(()),
            Some(other) => {
                return Err(octopoll_wire::Error::UnexpectedControl {
                    line: other.to_string(),
                    expected: "NEXT or END",
                }
                .into())
            }
        }
    }
}

//! Agent settings, with Tentacle's defaults, and its trusted server entries.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use octopoll_pki::Thumbprint;
use octopoll_wire::{Limits, SubscriptionId};

use crate::{BackoffConfig, Error, Ramp};

/// Where a node's comms port is: the `Address` of a trusted server entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    /// Host name or IP literal; also sent as SNI.
    pub host: String,
    /// Comms port (10943 by default).
    pub port: u16,
}

/// The default comms port of an Octopus node.
pub const DEFAULT_COMMS_PORT: u16 = 10943;

impl ServerAddress {
    /// `host:port` for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl From<std::net::SocketAddr> for ServerAddress {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

impl FromStr for ServerAddress {
    type Err = Error;

    /// Parses `https://host:port`, `host:port` or `host` (port 10943), as
    /// Tentacle.config's `Address` holds them.
    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadAddress {
            text: text.to_owned(),
            reason,
        };
        let rest = text.strip_prefix("https://").unwrap_or(text);
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
            ),
            _ => (rest, DEFAULT_COMMS_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected https://host:port"));
        }
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// One entry of `Tentacle.Communication.TrustedOctopusServers` for a polling Tentacle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedServer {
    /// The thumbprint the node must present.
    pub thumbprint: Thumbprint,
    /// The node's comms address.
    pub address: ServerAddress,
    /// The subscription this Tentacle identifies with.
    pub subscription: SubscriptionId,
}

/// Tentacle's `TcpClientConnectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Tentacle's `TcpClientReceiveRequestTimeoutForPolling`: longer than the node's 30 s long-poll.
pub const DEFAULT_RECEIVE_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Tentacle's `TcpClientTimeout` for any other read or write.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How an agent polls.
#[derive(Clone, Debug)]
pub struct PollingConfig {
    /// Connections per trusted server entry (`PollingConnectionCount`, 1 by default).
    pub connections_per_node: usize,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// TCP connect bound.
    pub connect_timeout: Duration,
    /// Wait for the next request (or null) on an identified connection.
    pub receive_request_timeout: Duration,
    /// Bound on every other read and write.
    pub io_timeout: Duration,
    /// Decoder limits.
    pub limits: Limits,
    /// Paces the first connection of every link sharing it; `None`: connect at once.
    pub ramp: Option<Ramp>,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            connections_per_node: 1,
            backoff: BackoffConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            receive_request_timeout: DEFAULT_RECEIVE_REQUEST_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            limits: Limits::default(),
            ramp: None,
        }
    }
}

/// How the simulated services behave.
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    /// Added to every script's run time (on top of the `sleep` commands in its body).
    pub script_base_duration: Duration,
}

/// Everything an agent needs besides its identity and servers.
#[derive(Clone, Debug, Default)]
pub struct AgentConfig {
    /// Polling behaviour.
    pub polling: PollingConfig,
    /// Service behaviour.
    pub services: ServiceConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_tentacle_config() {
        let a: ServerAddress = "https://10.0.255.160:10943".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.255.160", 10943));
        let b: ServerAddress = "octo1.domain.com".parse().unwrap();
        assert_eq!(b.port, 10943);
        let c: ServerAddress = "[::1]:10944".parse().unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 10944));
        assert_eq!(c.authority(), "[::1]:10944");
        assert!("https://host:notaport".parse::<ServerAddress>().is_err());
        assert!("https://:1".parse::<ServerAddress>().is_err());
    }
}

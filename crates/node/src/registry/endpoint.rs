//! How a node reaches a registered machine: the machine polls the nodes under
//! its subscription (`poll://…/`), or it listens at an address the node
//! connects to (`https://host:port/`). The URI alone says which, as in an
//! Octopus machine's `Endpoint.Uri`.

use std::fmt;
use std::str::FromStr;

use octopoll_wire::SubscriptionId;

/// The port a listening Tentacle serves when its URI names none.
pub const DEFAULT_LISTENING_PORT: u16 = 10933;

/// Where a listening Tentacle is: a host and port the node connects to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListeningAddress {
    host: String,
    port: u16,
}

impl ListeningAddress {
    /// `host` (a name or an IP address, IPv6 in brackets) and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, EndpointError> {
        format!("https://{}:{port}/", host.into()).parse()
    }

    /// The `host:port` to connect to.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host part.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ListeningAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}:{}/", self.host, self.port)
    }
}

impl FromStr for ListeningAddress {
    type Err = EndpointError;

    /// `https://host:port/`, the trailing slash optional, the port 10933 when
    /// absent. A path, query, user or another scheme is refused.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| EndpointError::Listening {
            uri: text.to_owned(),
            why: why.to_owned(),
        };
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("the scheme must be https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry a user or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not have a path, query or fragment"));
        }
        let host = url.host_str().ok_or_else(|| bad("it has no host"))?;
        // `Url` forgets a port that is https's own 443, so look at what was written.
        let written = text
            .get("https://".len()..)
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .unwrap_or_default();
        let port = url.port().unwrap_or(if written.ends_with(":443") {
            443
        } else {
            DEFAULT_LISTENING_PORT
        });
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// How the node reaches a machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A polling Tentacle (`TentacleActive`): it connects to every node and
    /// identifies with this subscription.
    Polling(SubscriptionId),
    /// A listening Tentacle (`TentaclePassive`): the node connects to it.
    Listening(ListeningAddress),
}

impl Endpoint {
    /// The subscription of a polling machine.
    pub fn subscription(&self) -> Option<&SubscriptionId> {
        match self {
            Self::Polling(subscription) => Some(subscription),
            Self::Listening(_) => None,
        }
    }

    /// The address of a listening machine.
    pub fn listening(&self) -> Option<&ListeningAddress> {
        match self {
            Self::Polling(_) => None,
            Self::Listening(address) => Some(address),
        }
    }

    /// `polling` or `listening`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Polling(_) => "polling",
            Self::Listening(_) => "listening",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Polling(subscription) => subscription.fmt(f),
            Self::Listening(address) => address.fmt(f),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// `poll://…/` or `https://host:port/`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("poll://") {
            text.parse()
                .map(Self::Polling)
                .map_err(|e| EndpointError::Polling {
                    uri: text.to_owned(),
                    why: format!("{e}"),
                })
        } else if text.starts_with("https://") {
            text.parse().map(Self::Listening)
        } else {
            Err(EndpointError::Scheme(text.to_owned()))
        }
    }
}

impl From<SubscriptionId> for Endpoint {
    fn from(subscription: SubscriptionId) -> Self {
        Self::Polling(subscription)
    }
}

impl From<ListeningAddress> for Endpoint {
    fn from(address: ListeningAddress) -> Self {
        Self::Listening(address)
    }
}

/// Why a URI is not an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Neither `poll://` nor `https://`.
    #[error("{0:?} is neither a polling subscription (poll://…/) nor a listening address (https://host:port/)")]
    Scheme(String),
    /// A `poll://` URI that is not a subscription id.
    #[error("{uri:?} is not a polling subscription: {why}")]
    Polling {
        /// The URI.
        uri: String,
        /// Why.
        why: String,
    },
    /// An `https://` URI that is not a listening address.
    #[error("{uri:?} is not a listening Tentacle address (https://host:port/): {why}")]
    Listening {
        /// The URI.
        uri: String,
        /// Why.
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_say_which_kind() {
        let polling: Endpoint = "poll://abc123/".parse().unwrap();
        assert_eq!(polling.kind(), "polling");
        assert_eq!(polling.to_string(), "poll://abc123/");
        let listening: Endpoint = "https://127.0.0.1:10933/".parse().unwrap();
        assert_eq!(
            listening.listening().unwrap().authority(),
            "127.0.0.1:10933"
        );
        assert_eq!(listening.to_string(), "https://127.0.0.1:10933/");
    }

    #[test]
    fn listening_addresses_default_and_keep_ports() {
        let bare: ListeningAddress = "https://tentacle.example".parse().unwrap();
        assert_eq!(bare.authority(), "tentacle.example:10933");
        let https: ListeningAddress = "https://tentacle.example:443/".parse().unwrap();
        assert_eq!(https.port(), 443);
        let v6: ListeningAddress = "https://[::1]:1234/".parse().unwrap();
        assert_eq!(v6.authority(), "[::1]:1234");
        assert_eq!(
            ListeningAddress::new("10.0.0.1", 5).unwrap().to_string(),
            "https://10.0.0.1:5/"
        );
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, says) in [
            ("tcp://host:1/", "neither"),
            ("https://host:1/path", "path"),
            ("https://user@host:1/", "user"),
            ("https://host:99999/", "not a listening"),
            ("poll://not valid/", "not a polling"),
        ] {
            let error = uri.parse::<Endpoint>().unwrap_err().to_string();
            assert!(error.contains(says), "{uri}: {error}");
        }
    }
}

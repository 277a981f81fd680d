//! The cluster file: what every node process of one cluster shares — its name
//! (the registry's namespace), the shared registry, the API key, the server
//! certificate every node presents, the timeouts — and where each node listens.
//! `octopoll run` writes one for the node processes it starts; for containers or
//! hosts of your own, write it by hand:
//!
//! ```toml
//! name = "octopoll"
//! registry = "redis://redis:6379"     # env OCTOPOLL_REGISTRY wins
//! # Halibut's Redis queue, as Octopus's --multiNodePollingTentaclesRedisConnectionString:
//! # a URL or StackExchange.Redis's "host:port,password=…"; env
//! # OCTOPUS_MULTI_NODE_POLLING_TENTACLES_REDIS_CONNECTION_STRING wins. Left out: per-node queues.
//! multi_node_polling_redis = "redis://redis:6379"
//! redis_drop_delay = "30s"            # a failed queue read drops its connection after up to this
//! api_key = "API-…"                   # env OCTOPOLL_API_KEY wins; better kept there
//! certificate = "certs/node.crt.pem"  # relative to this file
//! private_key = "certs/node.key.pem"
//! long_poll = "30s"
//! pickup_timeout = "2m"
//!
//! [[nodes]]                           # node 1
//! comms = "0.0.0.0:10943"
//! api = "0.0.0.0:443"
//! control = "0.0.0.0:8080"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use octopoll_node::{NodeConfig, NodeId};
use octopoll_pki::ApiKey;
use serde::{Deserialize, Serialize};

/// The environment variable whose value replaces `api_key`.
pub const API_KEY_ENV: &str = "OCTOPOLL_API_KEY";
/// The environment variable whose value replaces `registry`.
pub const REGISTRY_ENV: &str = "OCTOPOLL_REGISTRY";
/// The environment variable whose value replaces `multi_node_polling_redis`, as
/// Octopus Server spells it.
pub const QUEUE_REDIS_ENV: &str = "OCTOPUS_MULTI_NODE_POLLING_TENTACLES_REDIS_CONNECTION_STRING";

/// A cluster file as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster's name: its keys' namespace in the registry.
    #[serde(default = "default_name")]
    pub name: String,
    /// The shared machine registry, `redis://host:port` (or `redis+unix:///path`).
    /// Required for more than one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Halibut's Redis queue shared by the nodes (Octopus's
    /// `--multiNodePollingTentaclesRedisConnectionString`): a `redis://` URL or a
    /// StackExchange.Redis connection string. Left out, each node has its own queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_node_polling_redis: Option<String>,
    /// The most a node waits, drawn at random, before dropping a connection whose
    /// read of the Redis queue failed (Halibut: 30 s), so reconnects spread out.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub redis_drop_delay: Option<Duration>,
    /// The key `POST /api/machines` requires (or set `OCTOPOLL_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The server certificate (PEM) every node presents.
    pub certificate: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub private_key: PathBuf,
    /// Long-poll wait before the null request.
    #[serde(default = "default_long_poll", with = "humantime_serde")]
    pub long_poll: Duration,
    /// A request nobody collects fails after this.
    #[serde(default = "default_pickup_timeout", with = "humantime_serde")]
    pub pickup_timeout: Duration,
    /// How long a stopping node lets exchanges in flight finish.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// Most TLS handshakes a node runs at once; more wait their turn.
    #[serde(default = "default_handshakes")]
    pub max_concurrent_handshakes: usize,
    /// Bounds on what a peer can make a node hold or do (`[limits]`, as in
    /// scenario files).
    #[serde(default)]
    pub limits: crate::limits::LimitKeys,
    /// The nodes, node 1 first.
    pub nodes: Vec<NodeEntry>,
}

/// Where one node listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The comms (polling) port; port 0 picks a free one.
    pub comms: SocketAddr,
    /// The HTTPS registration API; port 0 picks a free one.
    pub api: SocketAddr,
    /// The node process's control API (plain HTTP: status, faults, requests);
    /// loopback only unless the network is yours. Port 0 picks a free one.
    #[serde(default = "default_control")]
    pub control: SocketAddr,
}

fn default_name() -> String {
    "octopoll".into()
}
fn default_long_poll() -> Duration {
    octopoll_node::config::DEFAULT_LONG_POLL
}
fn default_pickup_timeout() -> Duration {
    octopoll_node::config::DEFAULT_PICKUP_TIMEOUT
}
fn default_drain() -> Duration {
    octopoll_node::config::DEFAULT_DRAIN
}
fn default_handshakes() -> usize {
    octopoll_node::config::DEFAULT_MAX_CONCURRENT_HANDSHAKES
}
fn default_control() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// A cluster file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterFileError {
    /// It could not be read.
    #[error("cannot read the cluster file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a cluster file.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line and column.
        message: String,
    },
    /// It parsed but cannot work.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

/// One node's settings, resolved from a cluster file and the environment.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// The cluster's name.
    pub cluster: String,
    /// The shared registry, if any.
    pub registry: Option<String>,
    /// The Redis queue, if the nodes share one: its URL, the cluster's name as
    /// its key prefix, Halibut's timings but for `redis_drop_delay`.
    pub queue_redis: Option<octopoll_node::RedisQueueConfig>,
    /// Node settings, with this node's id.
    pub config: NodeConfig,
    /// The server certificate and key, resolved against the file's directory.
    pub certificate: PathBuf,
    /// The key.
    pub private_key: PathBuf,
    /// Where this node listens.
    pub listen: NodeEntry,
    /// How many nodes the cluster has.
    pub nodes: u16,
}

impl ClusterFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ClusterFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ClusterFileError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// The file's text; an error for a path TOML cannot hold (not UTF-8).
    pub fn render(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Node `n`'s settings: the file's values, `OCTOPOLL_API_KEY` and
    /// `OCTOPOLL_REGISTRY` over them (when `env` holds them), paths resolved
    /// against `path`'s directory.
    pub fn node(
        &self,
        path: &Path,
        n: u16,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeSettings, ClusterFileError> {
        let invalid = |message: String| ClusterFileError::Invalid {
            path: path.to_owned(),
            message,
        };
        let count =
            u16::try_from(self.nodes.len()).map_err(|_| invalid("more than 65535 nodes".into()))?;
        if count == 0 {
            return Err(invalid("no [[nodes]]: a cluster needs at least one".into()));
        }
        let listen = usize::from(n)
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| {
                invalid(format!(
                    "--node {n} does not exist: the file has {count} [[nodes]] (1 to {count})"
                ))
            })?
            .clone();
        let api_key = env(API_KEY_ENV)
            .or_else(|| self.api_key.clone())
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "no API key: set api_key in the file or {API_KEY_ENV}"
                ))
            })?;
        let registry = env(REGISTRY_ENV).or_else(|| self.registry.clone());
        if registry.is_none() && count > 1 {
            return Err(invalid(format!(
                "{count} nodes need a shared registry to agree on the machines: set registry = \"redis://HOST:PORT\" or {REGISTRY_ENV}"
            )));
        }
        let queue_redis = env(QUEUE_REDIS_ENV)
            .or_else(|| self.multi_node_polling_redis.clone())
            .filter(|text| !text.trim().is_empty())
            .map(|text| redis_url(&text))
            .transpose()
            .map_err(|message| invalid(format!("multi_node_polling_redis: {message}")))?
            .map(|url| {
                let mut queue = octopoll_node::RedisQueueConfig::new(url, &self.name);
                if let Some(delay) = self.redis_drop_delay {
                    queue.timing.drop_delay_max = delay;
                }
                queue
            });
        if self.max_concurrent_handshakes == 0 {
            return Err(invalid(
                "max_concurrent_handshakes must be at least 1".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = NodeConfig::new(NodeId(n), ApiKey::new(api_key));
        config.long_poll = self.long_poll;
        config.pickup_timeout = self.pickup_timeout;
        config.drain = self.drain;
        config.max_concurrent_handshakes = self.max_concurrent_handshakes;
        self.limits
            .apply(&mut config)
            .map_err(|bad| invalid(format!("[limits] {}: {}", bad.key, bad.message)))?;
        Ok(NodeSettings {
            cluster: self.name.clone(),
            registry,
            queue_redis,
            config,
            certificate: base.join(&self.certificate),
            private_key: base.join(&self.private_key),
            listen,
            nodes: count,
        })
    }
}

/// A Redis URL from what Octopus accepts as its connection string: a URL as it
/// is, or StackExchange.Redis's `host[:port][,option=value…]` (`password`, `user`,
/// `ssl`, `defaultDatabase`; other options are refused by name).
pub fn redis_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("://") {
        return Ok(text.to_owned());
    }
    let mut parts = text.split(',').map(str::trim);
    let host = parts.next().filter(|h| !h.is_empty() && !h.contains('='));
    let Some(host) = host else {
        return Err(format!(
            "`{text}` names no Redis host (write host:port or redis://host:port)"
        ));
    };
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    };
    let (mut user, mut password, mut tls, mut database) = (String::new(), None, false, None);
    for option in parts.filter(|p| !p.is_empty()) {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("`{option}` is not option=value"))?;
        match key.trim().to_ascii_lowercase().as_str() {
            "password" => password = Some(value.trim().to_owned()),
            "user" => user = value.trim().to_owned(),
            "ssl" => tls = value.trim().eq_ignore_ascii_case("true"),
            "defaultdatabase" => database = Some(value.trim().to_owned()),
            // How StackExchange.Redis itself connects: nothing to carry over.
            "abortconnect" | "connecttimeout" | "synctimeout" | "asynctimeout" | "connectretry"
            | "keepalive" | "allowadmin" | "name" | "clientname" => {}
            other => {
                return Err(format!(
                    "the connection string option `{other}` is not supported (password, user, ssl, defaultDatabase are)"
                ))
            }
        }
    }
    let scheme = if tls { "rediss" } else { "redis" };
    let auth = match password {
        Some(password) => format!("{user}:{password}@"),
        None if !user.is_empty() => format!("{user}@"),
        None => String::new(),
    };
    let database = database.map(|d| format!("/{d}")).unwrap_or_default();
    Ok(format!("{scheme}://{auth}{host}{database}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octopus_connection_strings_become_urls() {
        assert_eq!(redis_url("redis://r:6379").unwrap(), "redis://r:6379");
        assert_eq!(redis_url("redis-host").unwrap(), "redis://redis-host:6379");
        assert_eq!(
            redis_url("redis:6380,password=s3cret,abortConnect=false").unwrap(),
            "redis://:s3cret@redis:6380"
        );
        assert_eq!(
            redis_url("redis,tiebreaker=x").unwrap_err(),
            "the connection string option `tiebreaker` is not supported (password, user, ssl, defaultDatabase are)"
        );
        assert_eq!(
            redis_url("redis:6380, password=s3cret ,ssl=True,defaultDatabase=2").unwrap(),
            "rediss://:s3cret@redis:6380/2"
        );
        assert!(redis_url(",password=x")
            .unwrap_err()
            .contains("names no Redis host"));
        assert!(redis_url("r,nonsense")
            .unwrap_err()
            .contains("not option=value"));
    }

    const FILE: &str = r#"
name = "lab"
registry = "redis://redis:6379"
certificate = "certs/node.crt.pem"
private_key = "certs/node.key.pem"
long_poll = "10s"

[[nodes]]
comms = "0.0.0.0:10943"
api = "0.0.0.0:443"

[[nodes]]
comms = "0.0.0.0:10944"
api = "0.0.0.0:444"
control = "0.0.0.0:8080"
"#;

    fn parse(text: &str) -> ClusterFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_node_takes_its_entry_and_the_environment_wins() {
        let file = parse(FILE);
        let path = Path::new("/etc/octopoll/cluster.toml");
        let env = |name: &str| (name == API_KEY_ENV).then(|| "API-FROMENV".to_string());
        let two = file.node(path, 2, env).unwrap();
        assert_eq!(two.config.id, NodeId(2));
        assert!(two.config.api_key.matches("API-FROMENV"));
        assert_eq!(two.config.long_poll, Duration::from_secs(10));
        assert_eq!(two.listen.control, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            two.certificate,
            Path::new("/etc/octopoll/certs/node.crt.pem")
        );
        assert_eq!(two.nodes, 2);
        let one = file.node(path, 1, env).unwrap();
        assert_eq!(one.listen.control, default_control());
        // Round trip: what octopoll writes, it reads.
        let again = parse(&file.render().unwrap());
        assert_eq!(again.nodes.len(), 2);
    }

    #[test]
    fn what_cannot_work_is_refused_saying_what_to_do() {
        let file = parse(FILE);
        let path = Path::new("c.toml");
        let none = |_: &str| None;
        let error = file.node(path, 3, none).unwrap_err().to_string();
        assert!(
            error.contains("--node 3 does not exist") && error.contains("(1 to 2)"),
            "{error}"
        );
        let error = file.node(path, 1, none).unwrap_err().to_string();
        assert!(error.contains(API_KEY_ENV), "{error}");
        let mut lonely = file.clone();
        lonely.api_key = Some("k".into());
        lonely.registry = None;
        let error = lonely.node(path, 1, none).unwrap_err().to_string();
        assert!(error.contains("need a shared registry"), "{error}");
        lonely.nodes.truncate(1);
        assert!(
            lonely.node(path, 1, none).is_ok(),
            "one node needs no registry"
        );
        let unknown = toml::from_str::<ClusterFile>(&format!("{FILE}\nextra = 1"));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn the_redis_queue_takes_octopus_spelling_and_its_drop_delay() {
        let path = Path::new("c.toml");
        let key_only = |name: &str| (name == API_KEY_ENV).then(|| "API-K".to_string());
        assert!(parse(FILE)
            .node(path, 1, key_only)
            .unwrap()
            .queue_redis
            .is_none());
        let text = FILE.replace(
            "long_poll",
            "multi_node_polling_redis = \"q:6380,password=s3cret\"\nredis_drop_delay = \"0s\"\nlong_poll",
        );
        let file = parse(&text);
        let queue = file.node(path, 1, key_only).unwrap().queue_redis.unwrap();
        assert_eq!(queue.url, "redis://:s3cret@q:6380");
        assert_eq!(queue.prefix, "lab");
        assert_eq!(queue.timing.drop_delay_max, Duration::ZERO);
        // The environment wins, as Octopus's does; Halibut's delay when unset.
        let env = |name: &str| match name {
            QUEUE_REDIS_ENV => Some("redis://env:1".to_string()),
            _ => key_only(name),
        };
        let mut file = parse(&text);
        file.redis_drop_delay = None;
        let queue = file.node(path, 1, env).unwrap().queue_redis.unwrap();
        assert_eq!(queue.url, "redis://env:1");
        assert_eq!(queue.timing.drop_delay_max, Duration::from_secs(30));
        // What octopoll writes, it reads.
        let again = parse(&parse(&text).render().unwrap());
        assert_eq!(again.redis_drop_delay, Some(Duration::ZERO));
    }
}

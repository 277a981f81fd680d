//! A real HAProxy in front of the nodes, in `mode tcp` (TLS passes through
//! untouched, so the agents' pinning and the nodes' client-certificate checks still
//! hold end to end): the L4 balancer of the unique-port topology, and the single
//! balanced address of the load-balanced anti-pattern.
//!
//! octopoll writes the config to a temporary directory, starts
//! `haproxy -Ws -f <config>` and waits for the `READY=1` that HAProxy's
//! systemd-notify support sends once every listener is bound, so no probe
//! connection ever reaches a node. Stopping sends SIGTERM to the master process
//! (SIGKILL after a bound); its worker exits with it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::Command;
use tracing::{debug, info};

use crate::supervised::{find_program, tail_of, NotReady, Supervised};

/// How long HAProxy may take to bind its listeners.
const READY_BOUND: Duration = Duration::from_secs(10);
/// How long a stopping HAProxy may take before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// Most connections HAProxy is asked to accept at once: each takes two descriptors
/// of the 20,000 a process may hold here.
const MAX_CONNECTIONS: usize = 9_000;
/// Fewest: small runs still get room for reconnects.
const MIN_CONNECTIONS: usize = 1_024;

/// Where HAProxy was looked for when none was given.
const SEARCH_PATH: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/bin"];

/// What can go wrong with the balancer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// No HAProxy binary was found.
    #[error("HAProxy is not installed (looked for `haproxy` on PATH and in /usr/sbin): install it with `sudo apt-get install haproxy` (Debian/Ubuntu; octopoll needs a build with systemd-notify support, as Debian's is), point --haproxy at the binary, or use --topology unique-port-direct, which needs no balancer")]
    NotInstalled,
    /// The binary given does not exist.
    #[error("HAProxy binary {0} does not exist: install HAProxy (`sudo apt-get install haproxy`) or fix --haproxy")]
    Missing(PathBuf),
    /// Writing the config or the readiness socket failed.
    #[error("preparing HAProxy's config in {dir}")]
    Prepare {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HAProxy could not be started.
    #[error("starting {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HAProxy exited before it was ready.
    #[error("HAProxy exited before it was ready ({status}): {stderr}")]
    Exited {
        /// Its exit status.
        status: String,
        /// What it printed, trimmed.
        stderr: String,
    },
    /// HAProxy did not report ready in time.
    #[error("HAProxy did not report ready within {0:?}")]
    NotReady(Duration),
}

/// How frontends pick a server.
#[derive(Clone, Debug)]
pub struct Frontend {
    /// Its name in the config (`node-1`, `cluster`).
    pub name: String,
    /// The address it listens on.
    pub bind: SocketAddr,
    /// Its servers, by name; more than one are balanced round-robin.
    pub servers: Vec<(String, SocketAddr)>,
}

/// A balancer's whole configuration.
#[derive(Clone, Debug)]
pub struct BalancerConfig {
    /// The frontends.
    pub frontends: Vec<Frontend>,
    /// Inactivity bound in both directions; must exceed the long-poll and the
    /// longest request, so the balancer is never what cuts an idle poll.
    pub idle_timeout: Duration,
    /// Connections to make room for (HAProxy's `maxconn`, within 1,024–9,000).
    pub connections: usize,
}

impl BalancerConfig {
    /// The unique-port topology's balancer: frontend *i* forwards to node *i*.
    pub fn per_node(
        frontends: &[SocketAddr],
        nodes: &[SocketAddr],
        idle_timeout: Duration,
        connections: usize,
    ) -> Self {
        Self {
            frontends: frontends
                .iter()
                .zip(nodes)
                .enumerate()
                .map(|(i, (&bind, &node))| Frontend {
                    name: format!("node-{}", i + 1),
                    bind,
                    servers: vec![(format!("node-{}", i + 1), node)],
                })
                .collect(),
            idle_timeout,
            connections,
        }
    }

    /// The load-balanced anti-pattern: one frontend, round-robin over every node.
    pub fn round_robin(
        frontend: SocketAddr,
        nodes: &[SocketAddr],
        idle_timeout: Duration,
        connections: usize,
    ) -> Self {
        Self {
            frontends: vec![Frontend {
                name: "cluster".into(),
                bind: frontend,
                servers: nodes
                    .iter()
                    .enumerate()
                    .map(|(i, &node)| (format!("node-{}", i + 1), node))
                    .collect(),
            }],
            idle_timeout,
            connections,
        }
    }

    /// The HAProxy configuration file.
    pub fn render(&self) -> String {
        let idle = format!("{}s", self.idle_timeout.as_secs().max(1));
        // Twice the connections, for reconnects racing old connections' closes.
        let maxconn = (self.connections * 2).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
        // noreuseport: a second HAProxy on the same port fails to start instead of
        // silently sharing the port with this one.
        let mut text = format!(
            "# Written by octopoll: an L4 (TCP pass-through) balancer in front of the nodes.\n\
             global\n\
             \x20 maxconn {maxconn}\n\
             \x20 noreuseport\n\
             \n\
             defaults\n\
             \x20 mode tcp\n\
             \x20 maxconn {maxconn}\n\
             \x20 timeout connect 5s\n\
             \x20 timeout client {idle}\n\
             \x20 timeout server {idle}\n\
             \x20 timeout tunnel {idle}\n"
        );
        for frontend in &self.frontends {
            let name = &frontend.name;
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "\nfrontend {name}\n  bind {} backlog 4096\n  default_backend {name}\n\nbackend {name}\n",
                frontend.bind
            );
            if frontend.servers.len() > 1 {
                text.push_str("  balance roundrobin\n");
            }
            for (server, addr) in &frontend.servers {
                let _ = writeln!(text, "  server {server} {addr}");
            }
        }
        text
    }
}

/// Finds the HAProxy binary: `explicit` if given, else `haproxy` on PATH or in the
/// usual sbin directories.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, BalancerError> {
    find_program("haproxy", explicit, &SEARCH_PATH).ok_or_else(|| match explicit {
        Some(path) => BalancerError::Missing(path.to_owned()),
        None => BalancerError::NotInstalled,
    })
}

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    child: Supervised,
    frontends: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes `config`, starts `binary` on it and waits until every frontend listens.
    pub async fn start(binary: &Path, config: &BalancerConfig) -> Result<Self, BalancerError> {
        let dir = tempfile::Builder::new()
            .prefix("octopoll-haproxy-")
            .tempdir()
            .map_err(|source| BalancerError::Prepare {
                dir: std::env::temp_dir(),
                source,
            })?;
        let prepare = |source| BalancerError::Prepare {
            dir: dir.path().to_owned(),
            source,
        };
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config.render()).map_err(prepare)?;
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).map_err(prepare)?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(prepare)?;

        let mut command = Command::new(binary);
        command
            .arg("-Ws")
            .arg("-f")
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Its own process group, so stopping signals the master and its worker
        // together, and a Ctrl-C at the terminal is left to octopoll.
        let mut child =
            Supervised::spawn("HAProxy", command).map_err(|source| BalancerError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        debug!(config = %config_path.display(), "HAProxy starting");

        let ready = async {
            let mut buf = [0u8; 512];
            loop {
                let n = notify.recv(&mut buf).await?;
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    return Ok::<_, std::io::Error>(());
                }
            }
        };
        child
            .until_ready(ready, READY_BOUND)
            .await
            .map_err(|not_ready| match not_ready {
                NotReady::Failed(source) => prepare(source),
                NotReady::TimedOut => BalancerError::NotReady(READY_BOUND),
                NotReady::Exited(status) => BalancerError::Exited {
                    status,
                    stderr: tail_of(&stderr_path),
                },
            })?;
        let frontends = config.frontends.iter().map(|f| f.bind).collect();
        info!(?frontends, "HAProxy ready");
        Ok(Self {
            child,
            frontends,
            dir,
        })
    }

    /// The frontend addresses, in config order.
    pub fn frontends(&self) -> &[SocketAddr] {
        &self.frontends
    }

    /// The directory holding the config HAProxy runs with.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops HAProxy: SIGTERM to its process group (master and worker), then
    /// SIGKILL after a bound. Dropped unstopped, the group is killed.
    pub async fn stop(self) {
        self.child.stop(STOP_BOUND).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn per_node_config_forwards_each_port_to_one_node() {
        let config = BalancerConfig::per_node(
            &[addr("127.0.0.1:10943"), addr("127.0.0.1:10944")],
            &[addr("127.0.0.1:40001"), addr("127.0.0.1:40002")],
            Duration::from_secs(90),
            600,
        );
        let text = config.render();
        assert!(text.contains("mode tcp"), "{text}");
        assert!(text.contains("maxconn 1200"), "{text}");
        assert!(text.contains("noreuseport"), "{text}");
        assert!(text.contains("timeout tunnel 90s"), "{text}");
        assert!(
            text.contains(
                "frontend node-2\n  bind 127.0.0.1:10944 backlog 4096\n  default_backend node-2"
            ),
            "{text}"
        );
        assert!(
            text.contains("backend node-2\n  server node-2 127.0.0.1:40002\n"),
            "{text}"
        );
        assert!(!text.contains("roundrobin"), "{text}");
    }

    #[test]
    fn round_robin_config_balances_one_frontend_over_every_node() {
        let config = BalancerConfig::round_robin(
            addr("127.0.0.1:10943"),
            &[
                addr("127.0.0.1:40001"),
                addr("127.0.0.1:40002"),
                addr("127.0.0.1:40003"),
            ],
            Duration::from_secs(90),
            60,
        );
        let text = config.render();
        assert!(text.contains("maxconn 1024"), "{text}");
        assert_eq!(text.matches("frontend ").count(), 1, "{text}");
        assert!(text.contains("balance roundrobin"), "{text}");
        assert!(text.contains("server node-3 127.0.0.1:40003"), "{text}");
    }

    #[test]
    fn a_missing_binary_says_how_to_install_haproxy() {
        let error = find_binary(Some(Path::new("/nonexistent/haproxy"))).unwrap_err();
        assert!(
            error.to_string().contains("apt-get install haproxy"),
            "{error}"
        );
        assert!(BalancerError::NotInstalled
            .to_string()
            .contains("--topology unique-port-direct"));
    }
}

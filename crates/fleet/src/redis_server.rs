//! A Redis server of octopoll's own, for runs whose nodes share their machine
//! registry across processes and none was given (`--redis URL`): Debian's
//! `redis-server`, on a Unix socket in a temporary directory (no port to collide
//! on) or on a TCP address (to put a chaos proxy in front of it), with
//! persistence off, stopped with the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tracing::info;

use octopoll_lab::supervised::{find_program, tail_of, NotReady, Supervised};

/// How long redis-server may take to accept connections.
const READY_BOUND: Duration = Duration::from_secs(10);
/// How long a stopping redis-server may take before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// What can go wrong starting Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// No redis-server binary.
    #[error("redis-server is not installed (looked on PATH and in /usr/bin, /usr/sbin): install it with `sudo apt-get install redis-server`, or pass --redis redis://HOST:PORT for a Redis server of your own")]
    NotInstalled,
    /// The temporary directory or the process could not be made.
    #[error("starting redis-server in {dir}")]
    Spawn {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// redis-server exited before it was ready.
    #[error("redis-server exited before it was ready ({status}): {log}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// It did not answer in time.
    #[error("redis-server did not answer within {0:?}: {1}")]
    NotReady(Duration, String),
}

/// Where a [`LocalRedis`] listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket in its temporary directory.
    UnixSocket,
    /// A TCP address (give a free port: redis-server cannot pick one itself).
    Tcp(SocketAddr),
}

/// A running redis-server of octopoll's own.
#[derive(Debug)]
pub struct LocalRedis {
    child: Supervised,
    url: String,
    /// Held open: a guard (see [`LocalRedis::start_guarded`]) stops Redis when it closes.
    _guard_stdin: Option<tokio::process::ChildStdin>,
    _dir: tempfile::TempDir,
}

impl LocalRedis {
    /// Starts `redis-server` (`binary`, or found on PATH) and waits until it answers.
    pub async fn start(binary: Option<&Path>) -> Result<Self, RedisError> {
        Self::start_with(binary, None, Listen::UnixSocket).await
    }

    /// [`LocalRedis::start`] on `listen`.
    pub async fn start_on(binary: Option<&Path>, listen: Listen) -> Result<Self, RedisError> {
        Self::start_with(binary, None, listen).await
    }

    /// [`LocalRedis::start`], with redis-server run under `octopoll guard` (the
    /// `octopoll` binary at `guard`): it then stops even when this process is
    /// killed outright, with no chance to stop it.
    pub async fn start_guarded(binary: Option<&Path>, guard: &Path) -> Result<Self, RedisError> {
        Self::start_with(binary, Some(guard), Listen::UnixSocket).await
    }

    async fn start_with(
        binary: Option<&Path>,
        guard: Option<&Path>,
        listen: Listen,
    ) -> Result<Self, RedisError> {
        let binary = find_program("redis-server", binary, &["/usr/bin", "/usr/sbin"])
            .ok_or(RedisError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("octopoll-redis-")
            .tempdir()
            .map_err(|source| RedisError::Spawn {
                dir: std::env::temp_dir(),
                source,
            })?;
        let socket = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let mut command = match guard {
            Some(guard) => {
                let mut command = Command::new(guard);
                // The guard deletes the directory too, should this process be
                // killed before its TempDir can.
                command
                    .arg("guard")
                    .arg("--remove")
                    .arg(dir.path())
                    .arg("--")
                    .arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let url = match listen {
            Listen::UnixSocket => {
                command
                    .args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(&socket);
                format!("redis+unix://{}", socket.display())
            }
            Listen::Tcp(addr) => {
                command
                    .args(["--bind", &addr.ip().to_string(), "--port"])
                    .arg(addr.port().to_string());
                format!("redis://{addr}")
            }
        };
        command
            .args(["--save", ""])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(if guard.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child =
            Supervised::spawn("redis-server", command).map_err(|source| RedisError::Spawn {
                dir: dir.path().to_owned(),
                source,
            })?;
        let guard_stdin = child.child_mut().stdin.take();
        let answers = async {
            while ping(&url).await.is_err() {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok::<_, std::convert::Infallible>(())
        };
        child
            .until_ready(answers, READY_BOUND)
            .await
            .map_err(|not_ready| match not_ready {
                NotReady::Exited(status) => RedisError::Exited {
                    status,
                    log: tail_of(&log),
                },
                _ => RedisError::NotReady(READY_BOUND, tail_of(&log)),
            })?;
        info!(%url, "redis-server ready");
        Ok(Self {
            child,
            url,
            _guard_stdin: guard_stdin,
            _dir: dir,
        })
    }

    /// The URL clients connect to (`redis+unix:///…/redis.sock`, `redis://ADDR`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops it (SIGTERM, then SIGKILL after a bound).
    pub async fn stop(self) {
        self.child.stop(STOP_BOUND).await;
    }
}

/// Sends PING to `url`.
pub async fn ping(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .map(drop)
}

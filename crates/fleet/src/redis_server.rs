//! A Redis server of octopoll's own, for runs whose nodes share their machine
//! registry across processes and none was given (`--redis URL`): Debian's
//! `redis-server`, on a Unix socket in a temporary directory (no port to collide
//! on) or on a TCP address (to put a chaos proxy in front of it), with
//! persistence off, stopped with the run.

use std::net::{IpAddr, SocketAddr};
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

/// Ports tried by [`LocalRedis::start_on_tcp`].
const TCP_ATTEMPTS: usize = 3;

/// A running redis-server of octopoll's own.
#[derive(Debug)]
pub struct LocalRedis {
    /// `None` while it is down ([`LocalRedis::kill`]).
    child: Option<Supervised>,
    spec: Spec,
    url: String,
    /// Held open: a guard (see [`LocalRedis::start_guarded`]) stops Redis when it closes.
    _guard_stdin: Option<tokio::process::ChildStdin>,
    _dir: tempfile::TempDir,
}

/// How to start it, again after a kill.
#[derive(Debug, Clone)]
struct Spec {
    binary: PathBuf,
    guard: Option<PathBuf>,
    listen: Listen,
    dir: PathBuf,
}

impl Spec {
    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn url(&self) -> String {
        match self.listen {
            Listen::UnixSocket => format!("redis+unix://{}", self.socket().display()),
            Listen::Tcp(addr) => format!("redis://{addr}"),
        }
    }

    /// Spawns redis-server and waits until it answers.
    async fn spawn(&self) -> Result<(Supervised, Option<tokio::process::ChildStdin>), RedisError> {
        let mut command = match &self.guard {
            Some(guard) => {
                let mut command = Command::new(guard);
                // The guard deletes the directory too, should this process be
                // killed before its TempDir can.
                command
                    .arg("guard")
                    .arg("--remove")
                    .arg(&self.dir)
                    .arg("--")
                    .arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        match self.listen {
            Listen::UnixSocket => {
                command
                    .args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(self.socket());
            }
            Listen::Tcp(addr) => {
                command
                    .args(["--bind", &addr.ip().to_string(), "--port"])
                    .arg(addr.port().to_string());
            }
        }
        // As Octopus asks of the queue's Redis: no persistence, never evict.
        command
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log())
            .stdin(if self.guard.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child =
            Supervised::spawn("redis-server", command).map_err(|source| RedisError::Spawn {
                dir: self.dir.clone(),
                source,
            })?;
        let guard_stdin = child.child_mut().stdin.take();
        let url = self.url();
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
                    log: tail_of(&self.log()),
                },
                _ => RedisError::NotReady(READY_BOUND, tail_of(&self.log())),
            })?;
        info!(%url, "redis-server ready");
        Ok((child, guard_stdin))
    }
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

    /// [`LocalRedis::start`] on TCP, on a free port of `ip`: what a relay in
    /// front of it (the chaos proxy) needs. The port is picked a moment before
    /// redis-server binds it, so a port taken in between is tried again.
    pub async fn start_on_tcp(binary: Option<&Path>, ip: IpAddr) -> Result<Self, RedisError> {
        let mut attempt = 1;
        loop {
            let port = std::net::TcpListener::bind((ip, 0))
                .and_then(|listener| listener.local_addr())
                .map_err(|source| RedisError::Spawn {
                    dir: std::env::temp_dir(),
                    source,
                })?
                .port();
            match Self::start_on(binary, Listen::Tcp(SocketAddr::new(ip, port))).await {
                Err(RedisError::Exited { .. }) if attempt < TCP_ATTEMPTS => attempt += 1,
                started => return started,
            }
        }
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
        let spec = Spec {
            binary,
            guard: guard.map(Path::to_owned),
            listen,
            dir: dir.path().to_owned(),
        };
        let (child, guard_stdin) = spec.spawn().await?;
        Ok(Self {
            child: Some(child),
            url: spec.url(),
            spec,
            _guard_stdin: guard_stdin,
            _dir: dir,
        })
    }

    /// The URL clients connect to (`redis+unix:///…/redis.sock`, `redis://ADDR`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Whether it runs (not [`LocalRedis::kill`]ed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it outright (SIGKILL): what it held is gone, as with a Redis that
    /// crashed without persistence. Nothing if it is down already.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await;
            info!(url = %self.url, "redis-server killed");
        }
    }

    /// Starts it again, empty, on the same address; nothing if it runs.
    pub async fn start_again(&mut self) -> Result<(), RedisError> {
        if self.child.is_none() {
            let (child, guard_stdin) = self.spec.spawn().await?;
            self.child = Some(child);
            if guard_stdin.is_some() {
                self._guard_stdin = guard_stdin;
            }
        }
        Ok(())
    }

    /// Stops it (SIGTERM, then SIGKILL after a bound).
    pub async fn stop(self) {
        if let Some(child) = self.child {
            child.stop(STOP_BOUND).await;
        }
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

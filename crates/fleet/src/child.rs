//! octopoll's own child processes (`octopoll node`, `octopoll swarm`) and how they
//! talk to their parent: the child prints one JSON line on stdout when it is
//! ready (its control API's address and its listeners) and one when it has
//! stopped (its final figures); its log lines on stderr are printed by the parent,
//! each behind the child's name. A child started with `--parent-watch` stops when
//! its stdin closes, so it never outlives a parent that died without stopping it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use octopoll_lab::supervised::Supervised;

/// How long a child may take to stop before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(20);

/// What a child announces on stdout, one JSON line each.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announcement<R, S> {
    /// It serves its control API and does its job.
    Ready(R),
    /// It has stopped; its final figures.
    Stopped(S),
}

/// A node process's listeners, as it announces them when ready.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listening {
    /// Its control API.
    pub control: SocketAddr,
    /// Its comms port (nodes only).
    pub comms: Option<SocketAddr>,
    /// Its registration API (nodes only).
    pub api: Option<SocketAddr>,
}

/// Prints an announcement to stdout, for the parent.
pub fn announce<R: Serialize, S: Serialize>(what: &Announcement<R, S>) -> anyhow::Result<()> {
    let line = serde_json::to_string(what)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// What stops a child process: `interrupted` (a signal), and with `parent_watch`
/// its stdin ending.
pub fn stop_token(
    parent_watch: bool,
    interrupted: impl std::future::Future<Output = &'static str> + Send + 'static,
) -> CancellationToken {
    let stop = CancellationToken::new();
    if parent_watch {
        watch_parent(stop.clone());
    }
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let signal = interrupted.await;
        tracing::info!(signal, "stopping");
        on_signal.cancel();
    });
    stop
}

/// Cancels `stop` once stdin ends (the parent closed it or died).
fn watch_parent(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        tracing::info!("the parent process went away; stopping");
        stop.cancel();
    });
}

/// An octopoll child process as its parent holds it.
#[derive(Debug)]
pub struct ChildProcess {
    process: Supervised,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Held open: the child's `--parent-watch` stops it when this closes.
    _stdin: tokio::process::ChildStdin,
}

impl ChildProcess {
    /// Starts `program` with `args` (a subcommand and its flags) and `env` added
    /// to its environment as `name`, and waits up to `within` for its ready line.
    pub async fn start<R: DeserializeOwned>(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        within: Duration,
    ) -> anyhow::Result<(Self, R)> {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .arg("--parent-watch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = Supervised::spawn(name, command)
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let child = process.child_mut();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            bail!("{name} was started without its pipes");
        };
        relay(name.to_owned(), stderr);
        let mut child = Self {
            process,
            stdout: BufReader::new(stdout).lines(),
            _stdin: stdin,
        };
        let ready = tokio::time::timeout(within, child.next::<R, serde_json::Value>())
            .await
            .with_context(|| format!("{name} was not ready within {within:?}"))??;
        match ready {
            Announcement::Ready(ready) => Ok((child, ready)),
            Announcement::Stopped(_) => bail!("{name} stopped before it was ready"),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.process.name()
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The next announcement; an error if it exited instead.
    async fn next<R: DeserializeOwned, S: DeserializeOwned>(
        &mut self,
    ) -> anyhow::Result<Announcement<R, S>> {
        loop {
            let Some(line) = self.stdout.next_line().await? else {
                let status = self.process.wait().await?;
                bail!(
                    "{} exited ({status}); its last log lines are above",
                    self.process.name()
                );
            };
            if let Ok(announcement) = serde_json::from_str(&line) {
                return Ok(announcement);
            }
            tracing::debug!(child = self.process.name(), line, "child stdout");
        }
    }

    /// Stops it (SIGTERM) and returns its final figures, if it announced them
    /// before exiting; kills it if it takes too long.
    pub async fn stop<S: DeserializeOwned>(mut self) -> Option<S> {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        let stopped = tokio::time::timeout(STOP_BOUND, async {
            loop {
                match self.next::<serde_json::Value, S>().await {
                    Ok(Announcement::Stopped(figures)) => return Some(figures),
                    Ok(Announcement::Ready(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        self.process.stop(STOP_BOUND).await;
        stopped
    }

    /// Kills it at once, as a crash would.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }
}

/// How the children's log lines are printed; standard error until set.
static PRINT_LINE: OnceLock<fn(&str)> = OnceLock::new();

/// Sets how the log lines of every child are printed (each one `[name] line\n`),
/// for a binary whose terminal shows a live display the lines must not break. The
/// first call wins.
pub fn print_child_lines_with(print: fn(&str)) {
    let _ = PRINT_LINE.set(print);
}

/// Prints each line the child writes on stderr behind its name.
fn relay(name: String, stderr: tokio::process::ChildStderr) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = format!("[{name}] {line}\n");
            match PRINT_LINE.get() {
                Some(print) => print(&line),
                None => {
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                }
            }
        }
    });
}

//! A child process octopoll starts and must never leave behind: it runs in its
//! own process group (a Ctrl-C at the terminal reaches octopoll alone, which
//! then stops its children in order), stops with SIGTERM and then SIGKILL after a
//! bound, and is killed, group and all, if its handle is dropped unstopped (an
//! error path, a panic, octopoll interrupted).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tracing::{debug, warn};

/// A running child process, in its own process group.
#[derive(Debug)]
pub struct Supervised {
    /// What it is, for messages: `HAProxy`, `node-2`, `swarm 1/3`.
    name: String,
    child: Child,
}

impl Supervised {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> std::io::Result<Self> {
        let child = command.process_group(0).kill_on_drop(true).spawn()?;
        let name = name.into();
        debug!(name, pid = child.id(), "child process started");
        Ok(Self { name, child })
    }

    /// What it is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The child itself, to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for it to exit on its own.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Whether it has exited, and how, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `bound` for `ready`, unless the child exits first; kills it
    /// (group and all) if it does not become ready.
    pub async fn until_ready<E>(
        &mut self,
        ready: impl std::future::Future<Output = Result<(), E>>,
        bound: Duration,
    ) -> Result<(), NotReady<E>> {
        let outcome = tokio::select! {
            ready = tokio::time::timeout(bound, ready) => match ready {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(NotReady::Failed(error)),
                Err(_) => Err(NotReady::TimedOut),
            },
            status = self.child.wait() => Err(NotReady::Exited(
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            )),
        };
        if outcome.is_err() {
            self.kill().await;
        }
        outcome
    }

    /// Sends `signal` to its whole process group.
    pub fn signal(&self, signal: Signal) {
        let Some(pid) = self.child.id() else { return };
        let Ok(pid) = i32::try_from(pid) else { return };
        if let Err(error) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal) {
            debug!(name = %self.name, %error, ?signal, "could not signal the process group");
        }
    }

    /// Stops it: SIGTERM to its group, then SIGKILL if it has not exited within `bound`.
    pub async fn stop(mut self, bound: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                warn!(name = %self.name, ?bound, "did not stop in time; killing it");
                self.kill().await
            }
        }
    }

    /// Kills it and its group at once, and reaps it.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        self.child.wait().await.ok()
    }
}

impl Drop for Supervised {
    /// Not stopped: kill the whole group now, so nothing outlives the run holding
    /// its ports.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Why a child did not become ready.
#[derive(Debug)]
pub enum NotReady<E> {
    /// Waiting for it failed.
    Failed(E),
    /// It exited first, with this status.
    Exited(String),
    /// It was not ready in time.
    TimedOut,
}

/// Finds a program: `explicit` if given (it must exist), else `name` on PATH or in
/// one of `also_in`. `None` when it is nowhere.
pub fn find_program(name: &str, explicit: Option<&Path>, also_in: &[&str]) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return path.is_file().then(|| path.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also_in.iter().map(PathBuf::from))
        .map(|dir| dir.join(OsStr::new(name)))
        .find(|candidate| candidate.is_file())
}

/// The last lines of a file, for an error message.
pub fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        "(it printed nothing)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_child_is_killed_with_its_group() {
        let mut command = Command::new("sh");
        // A grandchild in the same group must go too.
        command.args(["-c", "sleep 60 & sleep 60"]);
        let child = Supervised::spawn("sleeper", command).unwrap();
        let pid = nix::unistd::Pid::from_raw(child.pid().unwrap() as i32);
        drop(child);
        let gone = async {
            while nix::sys::signal::killpg(pid, None).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the whole process group is gone");
    }

    #[tokio::test]
    async fn stop_kills_what_ignores_sigterm() {
        let mut command = Command::new("sh");
        command.args(["-c", "trap '' TERM; sleep 60"]);
        let child = Supervised::spawn("stubborn", command).unwrap();
        // Give the shell a moment to install its trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = child.stop(Duration::from_millis(300)).await.unwrap();
        assert!(!status.success());
    }

    #[test]
    fn programs_are_found_on_path_or_where_told() {
        assert!(find_program("sh", None, &[]).is_some());
        assert!(find_program("no-such-program-octopoll", None, &["/usr/sbin"]).is_none());
        assert!(find_program("x", Some(Path::new("/no/such/file")), &[]).is_none());
    }
}

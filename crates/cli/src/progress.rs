//! The live progress line of a run: rewritten in place on a terminal, a plain line
//! every few seconds otherwise (so CI logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// One progress sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Time into the workload.
    pub elapsed: Duration,
    /// Planned workload time.
    pub total: Duration,
    /// Coverage ratio now.
    pub coverage: f64,
    /// Connections held now.
    pub connections: usize,
    /// Requests queued so far.
    pub queued: u64,
    /// Completed so far.
    pub completed: u64,
    /// Failed so far.
    pub failed: u64,
    /// What the run is doing (`running`, `draining`).
    pub phase: &'static str,
}

/// Where progress goes.
pub struct Progress {
    mode: Mode,
    last_plain: Option<Duration>,
}

enum Mode {
    Quiet,
    Terminal,
    Plain,
}

/// Seconds between plain lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress on stderr: live if it is a terminal, plain lines if not, none if `quiet`.
    pub fn stderr(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Self {
            mode,
            last_plain: None,
        }
    }

    /// Shows a sample.
    pub fn show(&mut self, sample: &Sample) {
        let line = format!(
            "[{:>5.1}s/{:.0}s] {:<8} coverage {:.3}  conns {:>5}  queued {:>6}  done {:>6}  failed {:>4}  in flight {:>4}",
            sample.elapsed.as_secs_f64(),
            sample.total.as_secs_f64(),
            sample.phase,
            sample.coverage,
            sample.connections,
            sample.queued,
            sample.completed,
            sample.failed,
            sample.queued.saturating_sub(sample.completed + sample.failed),
        );
        let mut err = std::io::stderr().lock();
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => {
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            Mode::Plain => {
                let due = self
                    .last_plain
                    .is_none_or(|last| sample.elapsed >= last + PLAIN_EVERY);
                if due {
                    self.last_plain = Some(sample.elapsed);
                    let _ = writeln!(err, "{line}");
                }
            }
        }
    }

    /// Ends the live line.
    pub fn finish(&mut self) {
        if let Mode::Terminal = self.mode {
            let _ = writeln!(std::io::stderr());
        }
    }
}

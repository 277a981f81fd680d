//! The live view of a run on stderr: on a terminal, an indicatif display
//! redrawn in place (elapsed and total, coverage, requests, pickup p99, the next
//! scheduled fault, and a line per node: up or down, agents connected, queue,
//! completed and failed); otherwise a plain line every few seconds, so CI logs
//! stay readable; nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One node's figures in a sample.
#[derive(Clone, Debug)]
pub struct NodeReading {
    /// `node-1`, …
    pub node: String,
    /// Whether it runs.
    pub up: bool,
    /// Agents holding a connection to it.
    pub agents: usize,
    /// Requests waiting in its queue.
    pub queue: usize,
    /// Requests queued on it that completed.
    pub completed: u64,
    /// Requests queued on it that failed.
    pub failed: u64,
}

/// One progress sample.
#[derive(Clone, Debug)]
pub struct Reading {
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
    /// Pickup p99 so far, in milliseconds.
    pub pickup_p99_ms: f64,
    /// The next scheduled fault and when, if any is left.
    pub next_fault: Option<String>,
    /// Per node, node 1 first.
    pub nodes: Vec<NodeReading>,
}

impl Reading {
    fn headline(&self) -> String {
        format!(
            "[{:>5.1}s/{:.0}s] {:<8} coverage {:.3}  conns {:>5}  queued {:>6}  done {:>6}  failed {:>4}  in flight {:>4}  pickup p99 {:.1} ms",
            self.elapsed.as_secs_f64(),
            self.total.as_secs_f64(),
            self.phase,
            self.coverage,
            self.connections,
            self.queued,
            self.completed,
            self.failed,
            self.queued.saturating_sub(self.completed + self.failed),
            self.pickup_p99_ms,
        )
    }

    fn fault_line(&self) -> String {
        match &self.next_fault {
            Some(fault) => format!("next fault: {fault}"),
            None => "next fault: none scheduled".into(),
        }
    }
}

impl NodeReading {
    fn line(&self) -> String {
        format!(
            "  {:<8} {:<4}  agents {:>5}  queue {:>5}  completed {:>6}  failed {:>5}",
            self.node,
            if self.up { "up" } else { "DOWN" },
            self.agents,
            self.queue,
            self.completed,
            self.failed
        )
    }
}

/// Where progress goes.
pub struct Progress {
    mode: Mode,
    last_plain: Option<Duration>,
}

enum Mode {
    Quiet,
    Terminal(Live),
    Plain,
}

/// The terminal display: a bar for the run, a line for the next fault, one per node.
struct Live {
    display: MultiProgress,
    run: Option<ProgressBar>,
    fault: Option<ProgressBar>,
    nodes: Vec<ProgressBar>,
}

/// Seconds between plain lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The live display while one is on screen, so log lines can be printed above it
/// instead of through it (see [`LogWriter`]).
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<MultiProgress>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A log writer for `tracing-subscriber`: one log event per writer, printed above
/// the live display when there is one, straight to stderr otherwise.
#[derive(Default)]
pub struct LogWriter {
    line: Vec<u8>,
}

impl LogWriter {
    /// A writer for one log event.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        match live().as_ref() {
            Some(display) => {
                let _ = display.println(text.trim_end());
            }
            None => {
                let _ = std::io::stderr().lock().write_all(&self.line);
            }
        }
    }
}

impl Progress {
    /// Progress on stderr: live if it is a terminal, plain lines if not, none if `quiet`.
    pub fn stderr(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let display = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            *live() = Some(display.clone());
            Mode::Terminal(Live {
                display,
                run: None,
                fault: None,
                nodes: Vec::new(),
            })
        } else {
            Mode::Plain
        };
        Self {
            mode,
            last_plain: None,
        }
    }

    /// Shows a sample.
    pub fn show(&mut self, sample: &Reading) {
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Terminal(live) => live.show(sample),
            Mode::Plain => {
                let due = self
                    .last_plain
                    .is_none_or(|last| sample.elapsed >= last + PLAIN_EVERY);
                if due {
                    self.last_plain = Some(sample.elapsed);
                    let nodes: Vec<String> = sample
                        .nodes
                        .iter()
                        .map(|n| {
                            let state = if n.up { "" } else { " DOWN" };
                            format!("{}{state} {}a/{}q", n.node, n.agents, n.queue)
                        })
                        .collect();
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}  [{}]", sample.headline(), nodes.join(" "));
                }
            }
        }
    }

    /// Ends the live display, leaving its last state on screen.
    pub fn finish(&mut self) {
        if let Mode::Terminal(live) = &mut self.mode {
            for bar in live
                .run
                .iter()
                .chain(live.fault.iter())
                .chain(live.nodes.iter())
            {
                bar.abandon();
            }
        }
    }
}

impl Live {
    fn line(&self) -> ProgressBar {
        let bar = self.display.add(ProgressBar::new(1));
        bar.set_style(
            ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    }

    fn show(&mut self, sample: &Reading) {
        let total_ms = sample.total.as_millis().max(1) as u64;
        let run = self.run.get_or_insert_with(|| {
            let bar = self.display.add(ProgressBar::new(total_ms));
            let style = ProgressStyle::with_template("{bar:24.cyan/blue} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        run.set_length(total_ms);
        run.set_position((sample.elapsed.as_millis() as u64).min(total_ms));
        run.set_message(sample.headline());
        if self.fault.is_none() {
            self.fault = Some(self.line());
        }
        if let Some(fault) = &self.fault {
            fault.set_message(sample.fault_line());
        }
        while self.nodes.len() < sample.nodes.len() {
            let bar = self.line();
            self.nodes.push(bar);
        }
        for (bar, node) in self.nodes.iter().zip(&sample.nodes) {
            bar.set_message(node.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_a_node_and_the_run_are_doing() {
        let sample = Reading {
            elapsed: Duration::from_secs(3),
            total: Duration::from_secs(30),
            coverage: 0.667,
            connections: 20,
            queued: 10,
            completed: 7,
            failed: 1,
            phase: "running",
            pickup_p99_ms: 1.25,
            next_fault: Some("start node-2 in 4.0s".into()),
            nodes: vec![NodeReading {
                node: "node-2".into(),
                up: false,
                agents: 0,
                queue: 0,
                completed: 3,
                failed: 1,
            }],
        };
        assert!(sample.headline().contains("coverage 0.667"));
        assert!(sample.headline().contains("in flight    2"));
        assert!(
            sample.headline().contains("pickup p99 1.2 ms")
                || sample.headline().contains("pickup p99 1.3 ms")
        );
        assert_eq!(sample.fault_line(), "next fault: start node-2 in 4.0s");
        assert!(
            sample.nodes[0].line().contains("node-2   DOWN"),
            "{}",
            sample.nodes[0].line()
        );
    }
}

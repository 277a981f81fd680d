//! What a process costs the machine, read from `/proc` (Linux): CPU time and
//! resident memory, sampled once a second over a run, for the report's process
//! figures and the benchmarks' memory per connection and peak CPU.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_report::ProcessFigures;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Clock ticks per second in `/proc/<pid>/stat` (Linux's USER_HZ, 100 on every
/// architecture it runs on).
const TICKS_PER_SECOND: f64 = 100.0;
/// How often usage is sampled.
const EVERY: Duration = Duration::from_secs(1);

/// CPU seconds (user + system) `pid` has used, if it runs.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    Some((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
}

/// Resident memory of `pid` in KiB, if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One watched process.
#[derive(Debug)]
struct Watched {
    figures: ProcessFigures,
    started_cpu: f64,
    last: Option<(Instant, f64)>,
}

/// Samples a set of processes once a second until stopped.
#[derive(Clone, Debug)]
pub struct UsageSampler {
    watched: Arc<Mutex<Vec<Watched>>>,
    stop: CancellationToken,
}

impl UsageSampler {
    /// Starts sampling `processes`, each a (role, pid).
    pub fn start(processes: Vec<(String, u32)>) -> Self {
        let watched = processes
            .into_iter()
            .map(|(role, pid)| Watched {
                started_cpu: cpu_seconds(pid).unwrap_or(0.0),
                figures: ProcessFigures {
                    role,
                    pid,
                    ..ProcessFigures::default()
                },
                last: None,
            })
            .collect();
        let sampler = Self {
            watched: Arc::new(Mutex::new(watched)),
            stop: CancellationToken::new(),
        };
        let running = sampler.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    _ = running.stop.cancelled() => break,
                    _ = ticks.tick() => running.sample(),
                }
            }
        });
        sampler
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sample(&self) {
        let now = Instant::now();
        for watched in self.lock().iter_mut() {
            let pid = watched.figures.pid;
            let Some(cpu) = cpu_seconds(pid) else {
                continue;
            };
            if let Some((then, before)) = watched.last {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    let percent = 100.0 * (cpu - before) / wall;
                    let peak = &mut watched.figures.peak_cpu_percent;
                    *peak = peak.max(percent);
                }
            }
            watched.last = Some((now, cpu));
            watched.figures.cpu_s = cpu - watched.started_cpu;
            if let Some(rss) = rss_kib(pid) {
                let peak = &mut watched.figures.peak_rss_kib;
                *peak = (*peak).max(rss);
            }
        }
    }

    /// Records every process's memory now as before the mesh formed.
    pub fn mark_before_mesh(&self) {
        for watched in self.lock().iter_mut() {
            watched.figures.rss_before_mesh_kib = rss_kib(watched.figures.pid).unwrap_or(0);
        }
    }

    /// Records every process's memory now as with the mesh formed.
    pub fn mark_at_mesh(&self) {
        for watched in self.lock().iter_mut() {
            watched.figures.rss_at_mesh_kib = rss_kib(watched.figures.pid).unwrap_or(0);
        }
    }

    /// Takes a last sample, stops, and returns the figures.
    pub fn finish(&self) -> Vec<ProcessFigures> {
        self.sample();
        self.stop.cancel();
        self.lock().iter().map(|w| w.figures.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        // Burn a little CPU so the figure cannot be zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(pid).unwrap() > 0.0);
        assert!(rss_kib(pid).unwrap() > 1_000);
        assert!(cpu_seconds(u32::MAX).is_none());
    }
}

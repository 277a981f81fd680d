//! The toxics in force on one direction of one connection, their per-connection state,
//! and what the writer may do next: hold, receive, write a piece at a time, or close.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::toxic::{Latency, Slicer, Stream, Toxic, ToxicKind};

/// A toxic as published to live connections; the revision changes on every update.
#[derive(Clone, Debug)]
pub(crate) struct ToxicEntry {
    /// The toxic.
    pub(crate) toxic: Toxic,
    /// Distinguishes this version of the toxic from earlier ones of the same name.
    pub(crate) revision: u64,
}

/// A connection's traffic, both directions together, for `idle_timeout`: when
/// data last arrived either way, and whether the connection was forgotten.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Nanoseconds from `base` to the last data.
    last: AtomicU64,
    forgotten: AtomicBool,
}

impl Activity {
    /// A connection whose clock starts `now`.
    pub(crate) fn new(now: Instant) -> Arc<Self> {
        Arc::new(Activity {
            base: now,
            last: AtomicU64::new(0),
            forgotten: AtomicBool::new(false),
        })
    }

    /// Data arrived `at`.
    pub(crate) fn touch(&self, at: Instant) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        after(
            self.base,
            Duration::from_nanos(self.last.load(Ordering::Relaxed)),
        )
    }

    /// Whether an `idle_timeout` forgot the connection: nothing passes again.
    pub(crate) fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Relaxed)
    }

    fn forget(&self) {
        self.forgotten.store(true, Ordering::Relaxed);
    }
}

/// A chunk read from one side, timestamped on arrival.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The bytes.
    pub(crate) data: Bytes,
    /// When they were read.
    pub(crate) arrived: Instant,
}

/// The chunk being written, and what the toxics decided about it so far.
#[derive(Debug)]
pub(crate) struct Head {
    data: Bytes,
    arrived: Instant,
    /// When the current piece became next in line (bandwidth counts from here).
    since: Instant,
    /// Bytes left of the current slicer piece.
    slice_left: Option<usize>,
    /// Latency drawn for this chunk, by toxic revision.
    delays: Vec<(u64, Duration)>,
}

impl Head {
    /// Takes `chunk` as the next to write.
    pub(crate) fn new(chunk: Chunk, now: Instant) -> Self {
        Head {
            data: chunk.data,
            arrived: chunk.arrived,
            since: now,
            slice_left: None,
            delays: Vec::new(),
        }
    }

    /// Whether every byte has been written.
    pub(crate) fn is_done(&self) -> bool {
        self.data.is_empty()
    }
}

/// Why the toxics end a connection on a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fatal {
    /// `timeout` with a timeout above 0: close.
    TimedOut,
    /// `reset_peer`: close with RST.
    Reset,
}

/// What the writer may do now.
#[derive(Debug)]
pub(crate) enum Action {
    /// Nothing passes (a `timeout` or `reset_peer` toxic holds the data).
    Hold,
    /// Take the next chunk.
    Receive,
    /// Write `data` (a prefix of the head) no earlier than `at`.
    Write {
        /// Not before.
        at: Instant,
        /// The piece.
        data: Bytes,
    },
    /// The source ended: shut the destination down at `at` (after any `slow_close`).
    Finish {
        /// Not before.
        at: Instant,
    },
    /// A `limit_data` toxic is used up: close the connection.
    LimitReached,
    /// The connection was forgotten (`idle_timeout`): take what arrives and
    /// drop it, so the end of the source is still seen.
    Swallow,
    /// Forgotten, and the source has ended: end this direction without telling
    /// the destination.
    Vanish,
}

/// The writer's next step, and a timer that ends the connection whatever it does.
#[derive(Debug)]
pub(crate) struct Plan {
    /// When and how the connection ends, if a toxic says so.
    pub(crate) fatal: Option<(Instant, Fatal)>,
    /// What to do meanwhile.
    pub(crate) action: Action,
    /// When to plan again although nothing happened (an `idle_timeout` falls due).
    pub(crate) recheck: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Live {
    name: String,
    revision: u64,
    kind: ToxicKind,
    /// Whether the toxicity draw picked this connection.
    active: bool,
    /// When this connection first saw this revision.
    seen_at: Instant,
    /// Bytes written since the toxic was first seen (for `limit_data`).
    passed: u64,
}

/// The toxics of one direction as this connection sees them.
#[derive(Debug)]
pub(crate) struct Gates {
    stream: Stream,
    /// Shared with the other direction.
    activity: Arc<Activity>,
    live: Vec<Live>,
    rng: SmallRng,
    /// When the slicer lets the next piece go.
    slice_ready_at: Instant,
}

impl Gates {
    /// No toxics yet, for `stream` of the connection whose traffic is `activity`.
    pub(crate) fn new(stream: Stream, activity: Arc<Activity>) -> Self {
        Gates {
            stream,
            activity,
            live: Vec::new(),
            rng: SmallRng::from_rng(&mut rand::rng()),
            slice_ready_at: Instant::now(),
        }
    }

    /// Takes the proxy's current toxics: new or changed ones get a fresh toxicity
    /// draw and timer; `limit_data` counts survive an update.
    pub(crate) fn refresh(&mut self, entries: &[ToxicEntry], now: Instant) {
        let stream = self.stream;
        let old = std::mem::take(&mut self.live);
        for entry in entries.iter().filter(|e| e.toxic.stream == stream) {
            let previous = old.iter().find(|l| l.name == entry.toxic.name);
            let live = match previous {
                Some(same) if same.revision == entry.revision => same.clone(),
                _ => Live {
                    name: entry.toxic.name.clone(),
                    revision: entry.revision,
                    kind: entry.toxic.kind,
                    active: draw(&mut self.rng, entry.toxic.toxicity),
                    seen_at: now,
                    passed: previous.map_or(0, |p| p.passed),
                },
            };
            self.live.push(live);
        }
    }

    /// Decides the next step given the head chunk (if any) and when the source ended.
    pub(crate) fn plan(&mut self, head: Option<&mut Head>, eof_at: Option<Instant>) -> Plan {
        let now = Instant::now();
        let mut recheck: Option<Instant> = None;
        for live in self.live.iter().filter(|l| l.active) {
            if let ToxicKind::IdleTimeout(t) = live.kind {
                let idle_since = self.activity.last().max(live.seen_at);
                let at = after(idle_since, Duration::from_millis(t.timeout));
                if at <= now {
                    self.activity.forget();
                } else {
                    recheck = Some(recheck.map_or(at, |r| r.min(at)));
                }
            }
        }
        if self.activity.is_forgotten() {
            let action = if eof_at.is_some() {
                Action::Vanish
            } else {
                Action::Swallow
            };
            return Plan {
                fatal: None,
                action,
                recheck: None,
            };
        }
        let mut fatal: Option<(Instant, Fatal)> = None;
        let mut hold = false;
        let mut limit_left: Option<u64> = None;
        let mut slicer: Option<Slicer> = None;
        let mut slow_close = Duration::ZERO;
        for live in self.live.iter().filter(|l| l.active) {
            match live.kind {
                ToxicKind::Timeout(t) => {
                    hold = true;
                    if t.timeout > 0 {
                        let at = after(live.seen_at, Duration::from_millis(t.timeout));
                        earliest(&mut fatal, at, Fatal::TimedOut);
                    }
                }
                ToxicKind::ResetPeer(r) => {
                    hold = true;
                    let at = after(live.seen_at, Duration::from_millis(r.timeout));
                    earliest(&mut fatal, at, Fatal::Reset);
                }
                ToxicKind::LimitData(l) => {
                    let left = l.bytes.saturating_sub(live.passed);
                    limit_left = Some(limit_left.map_or(left, |m| m.min(left)));
                }
                ToxicKind::SlowClose(s) => {
                    slow_close = slow_close.max(Duration::from_millis(s.delay));
                }
                ToxicKind::Slicer(s) => {
                    if slicer.is_none() {
                        slicer = Some(s);
                    }
                }
                ToxicKind::Latency(_) | ToxicKind::Bandwidth(_) | ToxicKind::IdleTimeout(_) => {}
            }
        }
        let action = if hold {
            Action::Hold
        } else if limit_left == Some(0) {
            Action::LimitReached
        } else if let Some(head) = head {
            self.next_write(head, limit_left, slicer)
        } else if let Some(eof_at) = eof_at {
            Action::Finish {
                at: after(eof_at, slow_close),
            }
        } else {
            Action::Receive
        };
        Plan {
            fatal,
            action,
            recheck,
        }
    }

    /// The next piece of `head` to write, and when.
    fn next_write(
        &mut self,
        head: &mut Head,
        limit_left: Option<u64>,
        slicer: Option<Slicer>,
    ) -> Action {
        let mut len = head.data.len();
        if let Some(left) = limit_left {
            len = len.min(to_usize(left));
        }
        if let Some(s) = slicer {
            let rng = &mut self.rng;
            len = len.min(*head.slice_left.get_or_insert_with(|| slice_size(rng, s)));
        }
        for live in self.live.iter().filter(|l| l.active) {
            if let ToxicKind::Bandwidth(b) = live.kind {
                // At most 100 ms worth at a time, so a slow rate still trickles.
                len = len.min(to_usize(b.rate.saturating_mul(100)).max(1));
            }
        }
        let mut at = head.since;
        if slicer.is_some() {
            at = at.max(self.slice_ready_at);
        }
        for live in self.live.iter().filter(|l| l.active) {
            match live.kind {
                ToxicKind::Bandwidth(b) => {
                    at = at.max(after(head.since, transfer_time(len, b.rate)));
                }
                ToxicKind::Latency(l) => {
                    let delay = match head.delays.iter().find(|(rev, _)| *rev == live.revision) {
                        Some(&(_, delay)) => delay,
                        None => {
                            let delay = latency(&mut self.rng, l);
                            head.delays.push((live.revision, delay));
                            delay
                        }
                    };
                    at = at.max(after(head.arrived, delay));
                }
                _ => {}
            }
        }
        Action::Write {
            at,
            data: head.data.slice(..len),
        }
    }

    /// Records that `n` bytes of `head` were written at `now`.
    pub(crate) fn wrote(&mut self, head: &mut Head, n: usize, now: Instant) {
        let n = n.min(head.data.len());
        head.data = head.data.slice(n..);
        head.since = now;
        if let Some(left) = head.slice_left.as_mut() {
            *left = left.saturating_sub(n);
            if *left == 0 {
                head.slice_left = None;
                let delay = self
                    .live
                    .iter()
                    .filter(|l| l.active)
                    .find_map(|l| match l.kind {
                        ToxicKind::Slicer(s) => Some(Duration::from_micros(s.delay)),
                        _ => None,
                    });
                self.slice_ready_at = after(now, delay.unwrap_or(Duration::ZERO));
            }
        }
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        for live in self.live.iter_mut().filter(|l| l.active) {
            if let ToxicKind::LimitData(_) = live.kind {
                live.passed = live.passed.saturating_add(n);
            }
        }
    }
}

/// Whether a connection is affected by a toxic of this toxicity.
fn draw(rng: &mut SmallRng, toxicity: f64) -> bool {
    toxicity >= 1.0 || (toxicity > 0.0 && rng.random::<f64>() < toxicity)
}

fn earliest(fatal: &mut Option<(Instant, Fatal)>, at: Instant, why: Fatal) {
    if fatal.is_none_or(|(current, _)| at < current) {
        *fatal = Some((at, why));
    }
}

/// `t + d`, saturating at a year ahead instead of overflowing.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// How long `len` bytes take at `rate` KB/s (1 byte per ms per KB/s).
fn transfer_time(len: usize, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    Duration::from_nanos(len.saturating_mul(1_000_000) / rate)
}

/// `latency` ± `jitter` ms, never below zero.
fn latency(rng: &mut SmallRng, l: Latency) -> Duration {
    let offset = if l.jitter == 0 {
        0
    } else {
        rng.random_range(0..=l.jitter.saturating_mul(2))
    };
    Duration::from_millis(l.latency.saturating_add(offset).saturating_sub(l.jitter))
}

/// A slicer piece size: `average_size` ± `size_variation`, at least one byte.
fn slice_size(rng: &mut SmallRng, s: Slicer) -> usize {
    let variation = s.size_variation.min(s.average_size);
    let size = if variation == 0 {
        s.average_size
    } else {
        s.average_size
            .saturating_sub(variation)
            .saturating_add(rng.random_range(0..=variation.saturating_mul(2)))
    };
    to_usize(size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toxic::{LimitData, Timeout};

    fn entry(kind: ToxicKind, revision: u64) -> ToxicEntry {
        ToxicEntry {
            toxic: Toxic::new(kind, Stream::Downstream),
            revision,
        }
    }

    fn head(bytes: &'static [u8]) -> Head {
        let now = Instant::now();
        Head::new(
            Chunk {
                data: Bytes::from_static(bytes),
                arrived: now,
            },
            now,
        )
    }

    #[test]
    fn no_toxics_writes_whole_chunks_at_once() {
        let mut gates = Gates::new(Stream::Downstream, Activity::new(Instant::now()));
        let mut head = head(b"hello");
        let plan = gates.plan(Some(&mut head), None);
        assert!(plan.fatal.is_none());
        match plan.action {
            Action::Write { at, data } => {
                assert!(at <= Instant::now());
                assert_eq!(&data[..], b"hello");
            }
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn toxics_on_the_other_stream_do_not_apply() {
        let mut gates = Gates::new(Stream::Upstream, Activity::new(Instant::now()));
        let timeout = entry(ToxicKind::Timeout(Timeout { timeout: 0 }), 1);
        gates.refresh(&[timeout], Instant::now());
        assert!(matches!(gates.plan(None, None).action, Action::Receive));
    }

    #[test]
    fn limit_data_cuts_the_piece_then_closes() {
        let mut gates = Gates::new(Stream::Downstream, Activity::new(Instant::now()));
        let limit = entry(ToxicKind::LimitData(LimitData { bytes: 3 }), 1);
        gates.refresh(&[limit], Instant::now());
        let mut head = head(b"hello");
        let Action::Write { data, .. } = gates.plan(Some(&mut head), None).action else {
            panic!("expected a write");
        };
        assert_eq!(&data[..], b"hel");
        gates.wrote(&mut head, data.len(), Instant::now());
        assert!(matches!(
            gates.plan(Some(&mut head), None).action,
            Action::LimitReached
        ));
    }

    #[test]
    fn slicer_sizes_stay_within_variation() {
        let mut rng = SmallRng::seed_from_u64(7);
        let s = Slicer {
            average_size: 10,
            size_variation: 4,
            delay: 0,
        };
        for _ in 0..1000 {
            let size = slice_size(&mut rng, s);
            assert!((6..=14).contains(&size), "{size}");
        }
    }

    #[test]
    fn zero_toxicity_never_applies() {
        let mut rng = SmallRng::seed_from_u64(7);
        assert!((0..1000).all(|_| !draw(&mut rng, 0.0)));
        assert!((0..1000).all(|_| draw(&mut rng, 1.0)));
    }
}

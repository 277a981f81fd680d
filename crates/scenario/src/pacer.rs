//! When the workload's requests are due: request *n* (from 0) at
//! `start + n / rate`, however late the generator woke.
//!
//! The pacer sleeps until the next request's scheduled instant, never a fixed
//! period after the last batch: a period after the batch would add the batch's
//! own time and the timer's rounding to every wait, and the drift would grow to
//! a whole period before a catch-up, so the from-schedule latency would measure
//! the generator. Requests due while it slept (a timer coarser than the period,
//! a busy runtime) come back together in one batch.

use std::ops::Range;
use std::time::Duration;

use tokio::time::Instant;

/// The schedule of `rate` requests a second for `lasting`, from `started`.
#[derive(Debug)]
pub struct Pacer {
    started: Instant,
    rate: f64,
    lasting: Duration,
    /// Requests handed out so far: the next one's index.
    handed_out: u64,
}

impl Pacer {
    /// `rate` must be above 0 (scenarios refuse anything else).
    pub fn new(started: Instant, rate: f64, lasting: Duration) -> Self {
        Self {
            started,
            rate: rate.max(f64::MIN_POSITIVE),
            lasting,
            handed_out: 0,
        }
    }

    /// When request `n` is due.
    pub fn scheduled(&self, n: u64) -> Instant {
        self.started + Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// How many requests are due by `now`: those whose [`Pacer::scheduled`]
    /// instant has come. Estimated from the rate, then settled against
    /// `scheduled` itself, so float rounding can never make a request's own
    /// instant count it as not due yet (the wait would spin).
    fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let mut due = (elapsed * self.rate) as u64 + 1;
        while self.scheduled(due) <= now {
            due += 1;
        }
        while due > 0 && self.scheduled(due - 1) > now {
            due -= 1;
        }
        due
    }

    /// Waits until at least one request is due and returns the indices of every
    /// request due by now; `None` once the schedule is over.
    pub async fn next_batch(&mut self) -> Option<Range<u64>> {
        let end = self.started + self.lasting;
        loop {
            let now = Instant::now();
            // Requests due before the end are handed out even if the generator
            // only woke after it.
            let due = if now >= end {
                let mut before_end = self.due_by(end);
                while before_end > 0 && self.scheduled(before_end - 1) >= end {
                    before_end -= 1;
                }
                if before_end <= self.handed_out {
                    return None;
                }
                before_end
            } else {
                self.due_by(now)
            };
            if due > self.handed_out {
                let batch = self.handed_out..due;
                self.handed_out = due;
                return Some(batch);
            }
            tokio::time::sleep_until(self.scheduled(self.handed_out).min(end)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How late each request of `rate` a second over `lasting` is handed out,
    /// by a generator that spends `busy` on every batch.
    async fn lateness(rate: f64, lasting: Duration, busy: Duration) -> Vec<Duration> {
        let mut pacer = Pacer::new(Instant::now(), rate, lasting);
        let mut late = Vec::new();
        while let Some(batch) = pacer.next_batch().await {
            for n in batch {
                late.push(Instant::now().duration_since(pacer.scheduled(n)));
            }
            tokio::time::sleep(busy).await;
        }
        late
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_is_handed_out_on_schedule_without_drift() {
        // 30 a second: a period of 33.3 ms, which the 1 ms timer rounds up, so a
        // sleep of one period after each batch would drift by a whole period.
        let late = lateness(30.0, Duration::from_secs(10), Duration::ZERO).await;
        assert_eq!(late.len(), 300);
        let worst = late.iter().max().copied().unwrap_or_default();
        assert!(worst <= Duration::from_millis(1), "{worst:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_generator_slower_than_the_period_sends_what_is_due_in_batches() {
        // 1,000 a second with 5 ms spent per batch: batches of about five, each
        // request late by at most the time spent, and none skipped.
        let late = lateness(1000.0, Duration::from_secs(2), Duration::from_millis(5)).await;
        assert_eq!(late.len(), 2000);
        let worst = late.iter().max().copied().unwrap_or_default();
        assert!(worst <= Duration::from_millis(6), "{worst:?}");
    }
}

//! Halibut's reconnect delay for a polling connection.
//!
//! After a failed connection the loop sleeps `elapsed × (1 + r)`, clamped to
//! `[min, max]` (5 s and 2 min in Halibut), where `elapsed` runs from the first
//! attempt after the last successful identification (so a 60 s connect timeout
//! alone makes the next wait at least 60 s) and `r` in `[0, 1)` is drawn
//! once per polling connection. So a drop right after identifying waits `min`, and a
//! node that stays down is retried less and less often.

use std::time::Duration;

use tokio::time::Instant;

/// The bounds of the delay (configurable so tests and demos run fast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Shortest delay (Halibut: 5 s).
    pub min: Duration,
    /// Longest delay (Halibut: 2 min).
    pub max: Duration,
}

/// Halibut's shortest reconnect delay.
pub const DEFAULT_MIN_DELAY: Duration = Duration::from_secs(5);
/// Halibut's longest reconnect delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(120);

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: DEFAULT_MIN_DELAY,
            max: DEFAULT_MAX_DELAY,
        }
    }
}

impl BackoffConfig {
    /// 100 ms to 1 s: for tests and demos that must not wait Halibut's 5 s.
    pub const FAST: Self = Self {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
}

/// The reconnect state of one polling connection.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    jitter: f64,
    first_attempt: Option<Instant>,
}

impl Backoff {
    /// A backoff with jitter factor `jitter` (drawn once, in `[0, 1)`).
    pub fn new(config: BackoffConfig, jitter: f64) -> Self {
        Self {
            config,
            jitter: jitter.clamp(0.0, 0.999_999),
            first_attempt: None,
        }
    }

    /// An attempt starts: the first one after an identification starts the clock.
    pub fn attempting(&mut self) {
        self.first_attempt.get_or_insert_with(Instant::now);
    }

    /// The connection identified: the next attempt starts a new series.
    pub fn identified(&mut self) {
        self.first_attempt = None;
    }

    /// An attempt failed: how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        let first = *self.first_attempt.get_or_insert_with(Instant::now);
        let grown = first.elapsed().mul_f64(1.0 + self.jitter);
        grown.clamp(self.config.min, self.config.max.max(self.config.min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halibut(jitter: f64) -> Backoff {
        Backoff::new(BackoffConfig::default(), jitter)
    }

    #[tokio::test(start_paused = true)]
    async fn first_failure_waits_the_minimum() {
        assert_eq!(halibut(0.5).failed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_grows_with_time_since_first_failure_and_jitter() {
        let mut backoff = halibut(0.5);
        backoff.failed();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(backoff.failed(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            backoff.failed(),
            Duration::from_secs(120),
            "clamped to the max"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_at_the_first_attempt_not_the_failure() {
        let mut backoff = halibut(0.0);
        backoff.attempting();
        tokio::time::advance(Duration::from_secs(60)).await; // a connect timing out
        assert_eq!(backoff.failed(), Duration::from_secs(60));
        backoff.attempting(); // later attempts do not restart it
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(backoff.failed(), Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn identifying_resets_the_series() {
        let mut backoff = halibut(0.0);
        backoff.failed();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(backoff.failed(), Duration::from_secs(60));
        backoff.identified();
        assert_eq!(backoff.failed(), Duration::from_secs(5));
    }
}

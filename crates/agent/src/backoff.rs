//! Reconnect delays for a polling connection.
//!
//! The default is Halibut's, rule by rule (OctopusDeploy/Halibut,
//! `source/Halibut/Util/RetryPolicy.cs` and `Transport/PollingClient.cs`):
//! - after a failed attempt the loop sleeps `elapsed × (1 + r)`, clamped to
//!   `[min, max]` (5 s and 2 min in Halibut), where `r` in `[0, 1)` is drawn once
//!   per polling connection (`RetryPolicy.Create`);
//! - `elapsed` is a stopwatch that starts at the first attempt after the last
//!   identification (`Try`), keeps running across failed attempts and their
//!   sleeps, and is reset (stopped at zero) when a connection identifies
//!   (`Success`, called from the identified callback). So when an identified
//!   connection drops, the stopwatch is not running: the first retry comes after
//!   exactly `min`, without jitter; the attempt after it failing fast also waits
//!   about `min`; jitter shows from the third consecutive failure on, once the
//!   stopwatch holds a sleep;
//! - a connect that times out takes its time into `elapsed`, so a 60 s connect
//!   timeout alone makes the next wait at least 60 s.
//!
//! Inside one attempt (`Transport/SecureClient.cs`), a connect that is reset or
//! times out before the connection is identified is tried again, up to
//! [`ATTEMPT_CONNECTS`] times, `min / 5` apart (Halibut: 5 tries, 1 s apart);
//! a refused connection or a TLS authentication failure ends the attempt at once
//! ([`crate::poller::PollError::retried_within_an_attempt`]).
//!
//! The other strategies exist to compare against it: `fixed` (always `min`),
//! `exponential-full-jitter` (AWS's: uniform in `[0, min(max, min × 2^n)]` after the
//! n-th consecutive failure) and `none` (retry at once: what a reconnect storm
//! looks like).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How the delay between reconnect attempts is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackoffStrategy {
    /// Halibut's: time since the first failed attempt × (1 + r), clamped to `[min, max]`.
    #[default]
    Halibut,
    /// Always `min`.
    Fixed,
    /// Uniform in `[0, min(max, min × 2^n)]` after the n-th consecutive failure.
    ExponentialFullJitter,
    /// No delay: retry at once (reproduces a reconnect storm).
    None,
}

impl BackoffStrategy {
    /// Every strategy.
    pub const ALL: [BackoffStrategy; 4] = [
        BackoffStrategy::Halibut,
        BackoffStrategy::Fixed,
        BackoffStrategy::ExponentialFullJitter,
        BackoffStrategy::None,
    ];

    /// The strategy's name: `halibut`, `fixed`, `exponential-full-jitter`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackoffStrategy::Halibut => "halibut",
            BackoffStrategy::Fixed => "fixed",
            BackoffStrategy::ExponentialFullJitter => "exponential-full-jitter",
            BackoffStrategy::None => "none",
        }
    }
}

impl fmt::Display for BackoffStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for BackoffStrategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown backoff strategy {text:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The strategy and bounds of the delay (configurable so tests and demos run fast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// How the delay is chosen.
    pub strategy: BackoffStrategy,
    /// Shortest delay (Halibut: 5 s); the base of the exponential strategy.
    pub min: Duration,
    /// Longest delay (Halibut: 2 min).
    pub max: Duration,
}

/// Halibut's shortest reconnect delay.
pub const DEFAULT_MIN_DELAY: Duration = Duration::from_secs(5);
/// Halibut's longest reconnect delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(120);
/// Connects one attempt may make when they are reset or time out (Halibut's
/// `RetryCountLimit`).
pub const ATTEMPT_CONNECTS: u32 = 5;

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            strategy: BackoffStrategy::Halibut,
            min: DEFAULT_MIN_DELAY,
            max: DEFAULT_MAX_DELAY,
        }
    }
}

impl BackoffConfig {
    /// How long one attempt waits between its connects: `min / 5` (Halibut's
    /// `RetryListeningSleepInterval`, 1 s of its 5 s minimum).
    pub fn connect_retry_interval(&self) -> Duration {
        self.min / 5
    }

    /// Halibut's strategy from 100 ms to 1 s: for tests and demos that must not wait
    /// Halibut's 5 s.
    pub const FAST: Self = Self {
        strategy: BackoffStrategy::Halibut,
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
    failures: u32,
    /// Fresh randomness per attempt for the full-jitter strategy, seeded from the
    /// connection's jitter so a seeded swarm stays reproducible.
    rng: SmallRng,
}

impl Backoff {
    /// A backoff with jitter factor `jitter` (drawn once, in `[0, 1)`).
    pub fn new(config: BackoffConfig, jitter: f64) -> Self {
        let jitter = jitter.clamp(0.0, 0.999_999);
        Self {
            config,
            jitter,
            first_attempt: None,
            failures: 0,
            rng: SmallRng::seed_from_u64((jitter * u64::MAX as f64) as u64),
        }
    }

    /// An attempt starts: the first one after an identification starts the clock.
    pub fn attempting(&mut self) {
        self.first_attempt.get_or_insert_with(Instant::now);
    }

    /// The connection identified: the next attempt starts a new series.
    pub fn identified(&mut self) {
        self.first_attempt = None;
        self.failures = 0;
    }

    /// Consecutive failed attempts since the last identification.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt failed, or an identified connection dropped: how long to wait
    /// before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let (min, max) = (self.config.min, self.config.max.max(self.config.min));
        // No attempt since the last identification: Halibut's stopwatch is not
        // running, so nothing has elapsed.
        let elapsed = self
            .first_attempt
            .map_or(Duration::ZERO, |first| first.elapsed());
        match self.config.strategy {
            BackoffStrategy::Halibut => elapsed.mul_f64(1.0 + self.jitter).clamp(min, max),
            BackoffStrategy::Fixed => min,
            BackoffStrategy::ExponentialFullJitter => {
                let exponent = (self.failures - 1).min(30);
                let ceiling = min.saturating_mul(1 << exponent).min(max);
                ceiling.mul_f64(self.rng.random::<f64>())
            }
            BackoffStrategy::None => Duration::ZERO,
        }
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
        backoff.attempting();
        backoff.failed();
        tokio::time::advance(Duration::from_secs(20)).await;
        backoff.attempting();
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

    fn with(strategy: BackoffStrategy) -> Backoff {
        let config = BackoffConfig {
            strategy,
            ..BackoffConfig::default()
        };
        Backoff::new(config, 0.5)
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_always_waits_the_minimum() {
        let mut backoff = with(BackoffStrategy::Fixed);
        for _ in 0..5 {
            assert_eq!(backoff.failed(), Duration::from_secs(5));
            tokio::time::advance(Duration::from_secs(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn none_retries_at_once() {
        let mut backoff = with(BackoffStrategy::None);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(backoff.failed(), Duration::ZERO);
        assert_eq!(backoff.failed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_stays_under_a_doubling_ceiling_capped_at_the_max() {
        let mut backoff = with(BackoffStrategy::ExponentialFullJitter);
        let mut delays = Vec::new();
        for failure in 0..12u32 {
            let delay = backoff.failed();
            let ceiling = Duration::from_secs(5 * (1u64 << failure)).min(Duration::from_secs(120));
            assert!(
                delay <= ceiling,
                "failure {failure}: {delay:?} > {ceiling:?}"
            );
            delays.push(delay);
        }
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "the delays are random: {delays:?}"
        );
        backoff.identified();
        assert!(
            backoff.failed() <= Duration::from_secs(5),
            "a new series starts low"
        );
    }

    #[test]
    fn strategies_parse_from_their_names() {
        for strategy in BackoffStrategy::ALL {
            assert_eq!(strategy.as_str().parse::<BackoffStrategy>(), Ok(strategy));
        }
        let error = "linear".parse::<BackoffStrategy>().unwrap_err();
        assert!(error.contains("exponential-full-jitter"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_connection_retries_at_the_minimum_and_jitter_shows_from_the_third_failure() {
        let mut backoff = halibut(0.5);
        backoff.attempting();
        backoff.identified();
        tokio::time::advance(Duration::from_secs(3600)).await; // an hour connected
        assert_eq!(
            backoff.failed(),
            Duration::from_secs(5),
            "the drop: exactly the minimum"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        backoff.attempting();
        tokio::time::advance(Duration::from_millis(10)).await; // refused at once
        assert_eq!(
            backoff.failed(),
            Duration::from_secs(5),
            "a fast failure: the minimum"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        backoff.attempting();
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(
            backoff.failed(),
            Duration::from_millis(5020).mul_f64(1.5),
            "the third: the stopwatch held a sleep, times 1 + r"
        );
    }

    #[test]
    fn an_attempt_retries_its_connect_a_fifth_of_the_minimum_apart() {
        assert_eq!(
            BackoffConfig::default().connect_retry_interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            BackoffConfig::FAST.connect_retry_interval(),
            Duration::from_millis(20)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn identifying_resets_the_series() {
        let mut backoff = halibut(0.0);
        backoff.attempting();
        backoff.failed();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(backoff.failed(), Duration::from_secs(60));
        backoff.identified();
        assert_eq!(backoff.failed(), Duration::from_secs(5));
    }
}

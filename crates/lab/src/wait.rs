//! Waiting for a condition with a ceiling, as tests do: check every 20 ms, give
//! up after `within` with the last state seen.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(20);

/// A condition that did not hold in time, with the last state read.
#[derive(Debug, thiserror::Error)]
#[error("waited {waited:?}; last state: {last:?}")]
pub struct Timeout<S: std::fmt::Debug> {
    /// How long it waited.
    pub waited: Duration,
    /// The state when it gave up.
    pub last: S,
}

/// Reads `state` every 20 ms until `condition` holds (and returns that state), or
/// `within` has passed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let started = tokio::time::Instant::now();
/// let late = octopoll_lab::wait::until(
///     Duration::from_millis(100),
///     || started.elapsed(),
///     |elapsed| *elapsed >= Duration::from_millis(40),
/// )
/// .await;
/// assert!(late.is_ok());
/// let never = octopoll_lab::wait::until(Duration::from_millis(50), || 1, |n| *n == 2).await;
/// assert_eq!(never.unwrap_err().last, 1);
/// # }
/// ```
pub async fn until<S: std::fmt::Debug>(
    within: Duration,
    mut state: impl FnMut() -> S,
    condition: impl FnMut(&S) -> bool,
) -> Result<S, Timeout<S>> {
    until_async(within, || std::future::ready(state()), condition).await
}

/// [`until`] for a state that takes an `await` to read (an HTTP call).
pub async fn until_async<S: std::fmt::Debug, F: Future<Output = S>>(
    within: Duration,
    mut state: impl FnMut() -> F,
    mut condition: impl FnMut(&S) -> bool,
) -> Result<S, Timeout<S>> {
    let started = Instant::now();
    loop {
        let now = state().await;
        if condition(&now) {
            return Ok(now);
        }
        let waited = started.elapsed();
        if waited >= within {
            return Err(Timeout { waited, last: now });
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_ceiling_with_the_last_state() {
        let mut reads = 0;
        let timeout = until(
            Duration::from_secs(1),
            || {
                reads += 1;
                reads
            },
            |_| false,
        )
        .await
        .unwrap_err();
        assert_eq!(timeout.waited, Duration::from_secs(1));
        assert_eq!(timeout.last, 51, "read at 0, 20, …, 1000 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn returns_the_state_that_met_the_condition() {
        let started = Instant::now();
        let met = until(
            Duration::from_secs(5),
            || started.elapsed(),
            |e| *e >= Duration::from_millis(70),
        )
        .await
        .unwrap();
        assert_eq!(met, Duration::from_millis(80));
    }
}

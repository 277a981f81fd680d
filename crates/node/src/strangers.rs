//! Warnings about peers that never identified, summarised: a port scanner or a
//! fleet with the wrong certificate is one log line per reason every interval,
//! with how many were held back, not a line per connection. Every one is still
//! counted in the node's `close_reasons`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often each reason is logged at most.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// When each reason was last logged, and how many have come since.
#[derive(Debug, Default)]
pub(crate) struct Strangers {
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Strangers {
    /// Whether to log this `reason` at `now`: `Some(n)` with the `n` held back
    /// since it was last logged, or `None` to hold this one back too.
    pub(crate) fn admit(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(reason) {
            Some((last, held)) if now.duration_since(*last) < INTERVAL => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                seen.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_one_line_per_reason_per_interval_with_the_count_held_back() {
        let strangers = Strangers::default();
        let start = Instant::now();
        assert_eq!(strangers.admit("untrusted-certificate", start), Some(0));
        for _ in 0..500 {
            assert_eq!(
                strangers.admit("untrusted-certificate", Instant::now()),
                None
            );
        }
        // Another reason has its own line.
        assert_eq!(
            strangers.admit("handshake-timeout", Instant::now()),
            Some(0)
        );
        tokio::time::advance(INTERVAL).await;
        assert_eq!(
            strangers.admit("untrusted-certificate", Instant::now()),
            Some(500)
        );
        assert_eq!(
            strangers.admit("untrusted-certificate", Instant::now()),
            None
        );
    }
}

//! A connection ramp: agents sharing one open their first polling connections at
//! most at a set rate, so thousands starting at once do not all handshake in the
//! same instant. Reconnects are left to the backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Paces first connections; clones share the pace.
#[derive(Clone, Debug)]
pub struct Ramp {
    interval: Duration,
    next: Arc<Mutex<Option<Instant>>>,
}

impl Ramp {
    /// At most `per_second` first connections a second (over every clone); `None`
    /// for a rate that is not a positive number.
    pub fn per_second(per_second: f64) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Arc::default(),
        })
    }

    /// The connections per second it allows.
    pub fn rate(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    /// Waits for this caller's turn: the first goes at once, each next one an
    /// interval after the one before.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_come_an_interval_apart() {
        let ramp = Ramp::per_second(10.0).unwrap();
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..4 {
            let ramp = ramp.clone();
            waits.push(tokio::spawn(async move {
                ramp.wait().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for wait in waits {
            times.push(wait.await.unwrap() - start);
        }
        times.sort();
        assert_eq!(
            times,
            [0, 100, 200, 300].map(Duration::from_millis).to_vec()
        );
        // Idle for a while: the next turn is now, not owed from the past.
        tokio::time::advance(Duration::from_secs(5)).await;
        let before = Instant::now();
        ramp.wait().await;
        assert_eq!(Instant::now(), before);
    }

    #[test]
    fn a_rate_must_be_positive() {
        assert!(Ramp::per_second(0.0).is_none());
        assert!(Ramp::per_second(f64::NAN).is_none());
        assert_eq!(Ramp::per_second(250.0).unwrap().rate(), 250.0);
    }
}

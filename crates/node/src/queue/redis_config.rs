//! How a node reaches Halibut's Redis queue, and the queue's timings: plain
//! settings, here without the `redis` feature so a cluster's configuration can
//! name the queue whether or not this build can use it.

use std::time::Duration;

/// Halibut's timings for its Redis queue; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisQueueTiming {
    /// Before the first heartbeat of a request (Halibut: 7 s).
    pub heartbeat_first: Duration,
    /// Between heartbeats (Halibut: 15 s).
    pub heartbeat_every: Duration,
    /// Silence after which the sender presumes the processor gone (Halibut: 60 s).
    pub processor_silence: Duration,
    /// Silence after which the processor presumes the sender gone (Halibut: 90 s).
    pub sender_silence: Duration,
    /// How often the sender asks whether its request was collected (Halibut: 15 s).
    pub collected_check: Duration,
    /// The sender's first look for a response without a pulse, and the step it
    /// grows by (Halibut: 15 s).
    pub response_poll_step: Duration,
    /// The longest wait between those looks (Halibut: 2 min).
    pub response_poll_max: Duration,
    /// How long a stored response is kept (Halibut: 20 min).
    pub response_ttl: Duration,
    /// Between retries of a failed Redis call (Halibut: 1 s).
    pub retry_every: Duration,
    /// How long a failing Redis call is retried (Halibut: 30 s).
    pub retry_for: Duration,
    /// How often the data-loss canary is read (Halibut: 60 s).
    pub canary_every: Duration,
    /// The most a failed collection waits before its connection is dropped,
    /// drawn at random (Halibut: 30 s).
    pub drop_delay_max: Duration,
}

impl Default for RedisQueueTiming {
    fn default() -> Self {
        Self {
            heartbeat_first: Duration::from_secs(7),
            heartbeat_every: Duration::from_secs(15),
            processor_silence: Duration::from_secs(60),
            sender_silence: Duration::from_secs(90),
            collected_check: Duration::from_secs(15),
            response_poll_step: Duration::from_secs(15),
            response_poll_max: Duration::from_secs(120),
            response_ttl: Duration::from_secs(20 * 60),
            retry_every: Duration::from_secs(1),
            retry_for: Duration::from_secs(30),
            canary_every: Duration::from_secs(60),
            drop_delay_max: Duration::from_secs(30),
        }
    }
}

/// Where a cluster's Redis queue is (Octopus:
/// `--multiNodePollingTentaclesRedisConnectionString`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisQueueConfig {
    /// `redis://[:password@]host:port` or `redis+unix:///path`.
    pub url: String,
    /// What every key starts with; one per cluster sharing a Redis.
    pub prefix: String,
    /// Halibut's timings.
    pub timing: RedisQueueTiming,
}

impl RedisQueueConfig {
    /// The queue at `url`, keys under `prefix`, with Halibut's timings.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            timing: RedisQueueTiming::default(),
        }
    }
}

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

    /// The `host:port` a `redis://` (or `rediss://`) URL names (6379 when it
    /// names none); `None` for a Unix socket or a URL that does not parse.
    ///
    /// ```
    /// # use octopoll_node::RedisQueueConfig;
    /// let queue = RedisQueueConfig::new("redis://:secret@127.0.0.1:6380/2", "octopus");
    /// assert_eq!(queue.tcp_server().as_deref(), Some("127.0.0.1:6380"));
    /// assert_eq!(RedisQueueConfig::new("redis+unix:///tmp/r.sock", "").tcp_server(), None);
    /// ```
    pub fn tcp_server(&self) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return None;
        }
        let host = url.host()?;
        Some(format!("{host}:{}", url.port().unwrap_or(6379)))
    }

    /// The same queue reached through `proxy` (a TCP relay to
    /// [`tcp_server`](Self::tcp_server)): password, database and timings kept.
    /// `None` where `tcp_server` is.
    pub fn through(&self, proxy: std::net::SocketAddr) -> Option<Self> {
        self.tcp_server()?;
        let mut url = url::Url::parse(&self.url).ok()?;
        url.set_ip_host(proxy.ip()).ok()?;
        url.set_port(Some(proxy.port())).ok()?;
        Some(Self {
            url: url.into(),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_through_a_proxy_keeps_its_password_database_and_timings() {
        let mut queue = RedisQueueConfig::new("redis://:pw@10.0.0.5/3", "p");
        queue.timing.retry_for = Duration::from_secs(5);
        assert_eq!(queue.tcp_server().as_deref(), Some("10.0.0.5:6379"));
        let proxied = queue.through("127.0.0.9:4000".parse().unwrap()).unwrap();
        assert_eq!(proxied.url, "redis://:pw@127.0.0.9:4000/3");
        assert_eq!(proxied.prefix, "p");
        assert_eq!(proxied.timing, queue.timing);
    }

    #[test]
    fn a_socket_or_a_bad_url_has_no_tcp_server() {
        for url in [
            "redis+unix:///tmp/redis.sock",
            "unix:///r.sock",
            "not a url",
            "",
        ] {
            let queue = RedisQueueConfig::new(url, "");
            assert_eq!(queue.tcp_server(), None, "{url}");
            assert_eq!(queue.through("127.0.0.1:1".parse().unwrap()), None, "{url}");
        }
    }
}

//! What every use of Redis in a node shares: the command connection's bounds, the
//! URL as it may be shown, and a pub/sub channel that notices a silent link.
//!
//! A subscribed connection only ever receives, so a link that died without a FIN
//! or RST (a NAT entry dropped, a host gone, a firewall in between) looks exactly
//! like a quiet channel: changes published meanwhile are never heard. [`Channel`]
//! pings whenever it has been quiet for [`PING_EVERY`] and takes a link that does
//! not answer within [`PING_WITHIN`] for lost, so whoever reads it subscribes
//! again and catches up.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManagerConfig, PubSubSink, PubSubStream};

/// How long a channel may be quiet before it is pinged.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a ping's answer may take before the link is taken for lost.
pub(crate) const PING_WITHIN: Duration = Duration::from_secs(3);
/// How long connecting and subscribing may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// Bounded waits, so a call while Redis is gone fails within seconds instead of
/// hanging its caller.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_WITHIN))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// `url` with its user name and password hidden: it goes into logs and into API
/// answers.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Why a [`Channel`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// Redis or the network closed the connection.
    Closed,
    /// A ping went unanswered: the link is dead without having said so.
    Silent,
}

impl Lost {
    /// `closed` or `silent`, for the log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lost::Closed => "closed",
            Lost::Silent => "silent",
        }
    }
}

/// A pub/sub connection that pings while quiet.
pub(crate) struct Channel {
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Channel {
    /// Opens a pub/sub connection of its own, subscribed to nothing yet, within a bound.
    pub(crate) async fn open(client: &redis::Client) -> redis::RedisResult<Self> {
        let opened = async {
            let (sink, stream) = client.get_async_pubsub().await?.split();
            Ok(Self { sink, stream })
        };
        tokio::time::timeout(CONNECT_WITHIN, opened)
            .await
            .unwrap_or_else(|_| Err(timed_out("connecting")))
    }

    /// [`Channel::open`], then subscribes to `channel`, within a bound.
    pub(crate) async fn subscribe(
        client: &redis::Client,
        channel: &str,
    ) -> redis::RedisResult<Self> {
        let mut opened = Self::open(client).await?;
        tokio::time::timeout(CONNECT_WITHIN, opened.sink.subscribe(channel))
            .await
            .unwrap_or_else(|_| Err(timed_out("subscribing")))?;
        Ok(opened)
    }

    /// A handle that subscribes and unsubscribes while the messages are read.
    pub(crate) fn sink(&self) -> PubSubSink {
        self.sink.clone()
    }

    /// The next message, or why the link is gone. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<redis::Msg, Lost> {
        loop {
            tokio::select! {
                message = self.stream.next() => return message.ok_or(Lost::Closed),
                () = tokio::time::sleep(PING_EVERY) => {
                    match tokio::time::timeout(PING_WITHIN, self.sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return Err(Lost::Closed),
                        Err(_) => return Err(Lost::Silent),
                    }
                }
            }
        }
    }
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} took over {CONNECT_WITHIN:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_never_leave_the_url() {
        assert_eq!(
            redacted("redis://user:s3cret@redis:6379/0"),
            "redis://***@redis:6379/0"
        );
        assert_eq!(redacted("redis://:s3cret@redis"), "redis://***@redis");
        assert_eq!(redacted("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(
            redacted("redis+unix:///tmp/a@b/redis.sock"),
            "redis+unix:///tmp/a@b/redis.sock"
        );
    }
}

//! `[limits]`: the bounds a node puts on what a peer can make it hold or do, in
//! scenario files and cluster files alike. Every key is optional; an absent key
//! keeps the node's default (listed with the test that covers it in
//! `docs/LIMITS.md`).

use std::time::Duration;

use octopoll_node::NodeConfig;
use serde::{Deserialize, Serialize};

/// `[limits]` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitKeys {
    /// Bound on a new polling connection's TLS handshake.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub handshake_timeout: Option<Duration>,
    /// Bound on the `MX` preamble and identity line after the handshake.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub identification_timeout: Option<Duration>,
    /// Longest identity or control line, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<usize>,
    /// Largest inflated message, in bytes (decompression bombs stop here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Largest data stream (all of one message's together), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_bytes: Option<u64>,
    /// Most connections a node holds before they identify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unauthenticated_connections: Option<usize>,
    /// Most polling connections one subscription holds to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_subscription: Option<usize>,
    /// Registrations a node accepts per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrations_per_second: Option<u32>,
    /// Registrations a node accepts at once before the rate applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_burst: Option<u32>,
    /// Most connections a node's registration API holds at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_connections: Option<usize>,
    /// Largest registration API request body, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_body_bytes: Option<usize>,
    /// Bound on receiving an API request's headers.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_header_timeout: Option<Duration>,
    /// Bound on one whole API request.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_request_timeout: Option<Duration>,
}

/// A `[limits]` value that cannot be: the key and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLimit {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl LimitKeys {
    /// Every limit `config` has, written out (for a cluster file a run hands its
    /// node processes).
    pub fn of(config: &NodeConfig) -> Self {
        Self {
            handshake_timeout: Some(config.handshake_timeout),
            identification_timeout: Some(config.identification_timeout),
            max_line_bytes: Some(config.limits.max_line_bytes),
            max_message_bytes: Some(config.limits.max_message_bytes),
            max_stream_bytes: Some(config.limits.max_stream_bytes),
            max_unauthenticated_connections: Some(config.max_unauthenticated_connections),
            max_connections_per_subscription: Some(config.max_connections_per_subscription),
            registrations_per_second: Some(config.registrations_per_second),
            registration_burst: Some(config.registration_burst),
            max_api_connections: Some(config.max_api_connections),
            max_api_body_bytes: Some(config.max_api_body_bytes),
            api_header_timeout: Some(config.api_header_timeout),
            api_request_timeout: Some(config.api_request_timeout),
        }
    }

    /// Sets the keys present on `config`; a zero count or duration is refused
    /// (a limit of nothing would refuse every peer).
    pub fn apply(&self, config: &mut NodeConfig) -> Result<(), BadLimit> {
        fn positive<T: PartialOrd + Default + Copy + std::fmt::Debug>(
            key: &'static str,
            value: Option<T>,
            target: &mut T,
        ) -> Result<(), BadLimit> {
            match value {
                Some(v) if v <= T::default() => Err(BadLimit {
                    key,
                    message: format!("must be more than zero, got {v:?}"),
                }),
                Some(v) => {
                    *target = v;
                    Ok(())
                }
                None => Ok(()),
            }
        }
        positive(
            "handshake_timeout",
            self.handshake_timeout,
            &mut config.handshake_timeout,
        )?;
        positive(
            "identification_timeout",
            self.identification_timeout,
            &mut config.identification_timeout,
        )?;
        positive(
            "max_line_bytes",
            self.max_line_bytes,
            &mut config.limits.max_line_bytes,
        )?;
        positive(
            "max_message_bytes",
            self.max_message_bytes,
            &mut config.limits.max_message_bytes,
        )?;
        positive(
            "max_stream_bytes",
            self.max_stream_bytes,
            &mut config.limits.max_stream_bytes,
        )?;
        positive(
            "max_unauthenticated_connections",
            self.max_unauthenticated_connections,
            &mut config.max_unauthenticated_connections,
        )?;
        positive(
            "max_connections_per_subscription",
            self.max_connections_per_subscription,
            &mut config.max_connections_per_subscription,
        )?;
        positive(
            "registrations_per_second",
            self.registrations_per_second,
            &mut config.registrations_per_second,
        )?;
        positive(
            "registration_burst",
            self.registration_burst,
            &mut config.registration_burst,
        )?;
        positive(
            "max_api_connections",
            self.max_api_connections,
            &mut config.max_api_connections,
        )?;
        positive(
            "max_api_body_bytes",
            self.max_api_body_bytes,
            &mut config.max_api_body_bytes,
        )?;
        positive(
            "api_header_timeout",
            self.api_header_timeout,
            &mut config.api_header_timeout,
        )?;
        positive(
            "api_request_timeout",
            self.api_request_timeout,
            &mut config.api_request_timeout,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_node::NodeId;
    use octopoll_pki::ApiKey;

    fn config() -> NodeConfig {
        NodeConfig::new(NodeId(1), ApiKey::new("API-TEST"))
    }

    #[test]
    fn written_out_and_read_back_the_limits_are_the_same() {
        let mut original = config();
        original.max_connections_per_subscription = 3;
        original.identification_timeout = Duration::from_millis(1500);
        let text = toml::to_string(&LimitKeys::of(&original)).unwrap();
        let keys: LimitKeys = toml::from_str(&text).unwrap();
        let mut copy = config();
        keys.apply(&mut copy).unwrap();
        assert_eq!(LimitKeys::of(&copy), LimitKeys::of(&original));
    }

    #[test]
    fn zero_is_refused_naming_the_key_and_the_config_is_untouched_by_it() {
        let keys: LimitKeys = toml::from_str("max_unauthenticated_connections = 0").unwrap();
        let mut c = config();
        let before = c.max_unauthenticated_connections;
        let error = keys.apply(&mut c).unwrap_err();
        assert_eq!(error.key, "max_unauthenticated_connections");
        assert_eq!(c.max_unauthenticated_connections, before);
        let keys: LimitKeys = toml::from_str("identification_timeout = \"0s\"").unwrap();
        assert_eq!(
            keys.apply(&mut c).unwrap_err().key,
            "identification_timeout"
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error = toml::from_str::<LimitKeys>("max_connections = 3").unwrap_err();
        assert!(error.to_string().contains("max_connections"), "{error}");
    }
}

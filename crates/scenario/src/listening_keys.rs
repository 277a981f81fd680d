//! `[listening_cluster]`: the docs' clustered listening Tentacle beside the
//! polling swarm (`octopoll run --listening-cluster`), and when it fails over.

use std::time::Duration;

use serde::Deserialize;

use crate::listening_cluster::ListeningClusterConfig;

/// Shortest time between the cluster's health checks.
const SHORTEST_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `[listening_cluster]`. Setting any key turns the cluster on unless
/// `enabled = false`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListeningClusterKeys {
    /// Run the cluster.
    pub enabled: Option<bool>,
    /// Time between health checks of its target (default 2s).
    #[serde(default, with = "humantime_serde::option")]
    pub check_interval: Option<Duration>,
    /// When the active member fails, from the start of the workload (scaled
    /// by `time_scale`; default: halfway through the run).
    #[serde(default, with = "humantime_serde::option")]
    pub failover_at: Option<Duration>,
    /// Whether the two members share one certificate, as the docs require
    /// (default true; false shows the node refusing the passive member).
    pub shared_certificate: Option<bool>,
}

/// A key with a value that cannot be: the key and why.
pub type BadKey = (&'static str, String);

impl ListeningClusterKeys {
    /// The cluster a run of `duration` (already scaled by `scale`) has, if any.
    pub fn config(
        &self,
        duration: Duration,
        scale: f64,
    ) -> Result<Option<ListeningClusterConfig>, BadKey> {
        let any_set = self.check_interval.is_some()
            || self.failover_at.is_some()
            || self.shared_certificate.is_some();
        if !self.enabled.unwrap_or(any_set) {
            return Ok(None);
        }
        let mut config = ListeningClusterConfig::default();
        if let Some(interval) = self.check_interval {
            if interval < SHORTEST_CHECK_INTERVAL || interval >= duration {
                return Err((
                    "check_interval",
                    format!(
                        "must be from {} to below the run's duration ({})",
                        humantime::format_duration(SHORTEST_CHECK_INTERVAL),
                        humantime::format_duration(duration)
                    ),
                ));
            }
            config.check_interval = interval;
        }
        if let Some(at) = self.failover_at {
            let at = at.mul_f64(scale);
            if at >= duration {
                return Err((
                    "failover_at",
                    format!(
                        "{} is not before the end of the run ({})",
                        humantime::format_duration(at),
                        humantime::format_duration(duration)
                    ),
                ));
            }
            config.failover_at = Some(at);
        }
        config.shared_certificate = self.shared_certificate.unwrap_or(true);
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: Duration = Duration::from_secs(30);

    #[test]
    fn off_unless_asked_and_any_key_asks() {
        assert_eq!(ListeningClusterKeys::default().config(RUN, 1.0), Ok(None));
        let keys = ListeningClusterKeys {
            shared_certificate: Some(false),
            ..Default::default()
        };
        let config = keys.config(RUN, 1.0).unwrap().unwrap();
        assert!(!config.shared_certificate);
        let off = ListeningClusterKeys {
            enabled: Some(false),
            ..keys
        };
        assert_eq!(off.config(RUN, 1.0), Ok(None));
    }

    #[test]
    fn times_are_scaled_and_checked_against_the_run() {
        let keys = ListeningClusterKeys {
            failover_at: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let config = keys.config(RUN / 2, 0.5).unwrap().unwrap();
        assert_eq!(config.failover_at, Some(Duration::from_secs(10)));
        assert_eq!(keys.config(RUN, 2.0).unwrap_err().0, "failover_at");
        let fast = ListeningClusterKeys {
            check_interval: Some(Duration::from_millis(10)),
            ..Default::default()
        };
        assert_eq!(fast.config(RUN, 1.0).unwrap_err().0, "check_interval");
    }
}

//! Counters a node keeps, and which subscriptions hold a connection to it and
//! when each last polled.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octopoll_wire::SubscriptionId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::coverage::PairState;

/// Live counters of one node. Cheap to update from every connection task.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Poll times are kept as microseconds since this instant.
    epoch: Instant,
    handshakes_ok: AtomicU64,
    refused_untrusted: AtomicU64,
    refused_subscription: AtomicU64,
    refused_other: AtomicU64,
    protocol_errors: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
    probes: AtomicU64,
    refused_limit: AtomicU64,
    anomalies: AtomicU64,
    closed: AtomicU64,
    collected: AtomicU64,
    /// Connections accepted and not identified yet (or closed) now.
    unauthenticated: AtomicUsize,
    /// How many connections ended for each reason (see `ConnectionError::reason`).
    reasons: Mutex<BTreeMap<&'static str, u64>>,
    /// Every subscription that ever identified here (entries are never removed:
    /// one small cell per machine).
    pairs: Mutex<HashMap<SubscriptionId, Arc<PairCell>>>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            handshakes_ok: AtomicU64::default(),
            refused_untrusted: AtomicU64::default(),
            refused_subscription: AtomicU64::default(),
            refused_other: AtomicU64::default(),
            protocol_errors: AtomicU64::default(),
            dropped: AtomicU64::default(),
            stalled: AtomicU64::default(),
            probes: AtomicU64::default(),
            refused_limit: AtomicU64::default(),
            anomalies: AtomicU64::default(),
            closed: AtomicU64::default(),
            collected: AtomicU64::default(),
            unauthenticated: AtomicUsize::default(),
            reasons: Mutex::default(),
            pairs: Mutex::default(),
        }
    }
}

/// One subscription's connections to a node, and when one of them last polled.
#[derive(Debug, Default)]
struct PairCell {
    connections: AtomicUsize,
    /// Connections inside a long-poll wait now: polling by definition.
    waiting: AtomicUsize,
    /// Microseconds since the metrics' epoch, plus one (0: never polled).
    last_poll: AtomicU64,
}

impl PairCell {
    /// Lost without a connection; polling when waiting now or polled within
    /// `interval` before `now`; stale otherwise.
    fn state(&self, epoch: Instant, now: Instant, interval: Duration) -> PairState {
        if self.connections.load(Ordering::Acquire) == 0 {
            return PairState::Lost;
        }
        if self.waiting.load(Ordering::Acquire) > 0 {
            return PairState::Polling;
        }
        match self.last_poll.load(Ordering::Acquire).checked_sub(1) {
            Some(micros) => {
                let polled = epoch + Duration::from_micros(micros);
                if now.saturating_duration_since(polled) <= interval {
                    PairState::Polling
                } else {
                    PairState::Stale
                }
            }
            None => PairState::Stale,
        }
    }
}

/// How a polling connection ended, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The agent said `END` or closed cleanly, or the node stopped.
    Clean,
    /// The client certificate is not a registered machine's.
    Untrusted,
    /// The identity's subscription is not the one registered for the certificate.
    Subscription,
    /// TLS failed for another reason, or the handshake or identity timed out.
    Handshake,
    /// The peer broke the protocol.
    Protocol,
    /// The transport failed or closed in the middle of something.
    Dropped,
    /// The peer stopped responding after it identified.
    Stalled,
    /// The peer was not a Halibut client (a browser or scanner).
    Probe,
    /// Closed for a limit: too many unauthenticated connections, or too many for
    /// its subscription.
    Limit,
}

/// A snapshot of a node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Polling connections identified and held now.
    pub connections: usize,
    /// Distinct subscriptions with at least one connection now.
    pub subscriptions: usize,
    /// Connections that completed identification.
    pub handshakes_ok: u64,
    /// Handshakes refused for an unregistered certificate.
    pub refused_untrusted: u64,
    /// Connections refused for a subscription that does not match the certificate.
    pub refused_subscription: u64,
    /// Handshakes that failed otherwise or timed out.
    pub refused_other: u64,
    /// Connections closed for a protocol error.
    pub protocol_errors: u64,
    /// Connections whose transport failed or closed mid-exchange.
    pub dropped: u64,
    /// Identified connections that stopped responding in time.
    pub stalled: u64,
    /// Non-Halibut probes answered with the HTML page.
    pub probes: u64,
    /// Connections closed for a limit (unauthenticated connections, connections
    /// per subscription).
    pub refused_limit: u64,
    /// Responses that matched no request in flight.
    pub anomalies: u64,
    /// Connections that ended, for any reason, after being counted above.
    pub closed: u64,
    /// Requests this node's connections collected (in shared-queue mode, whichever
    /// node queued them).
    pub collected: u64,
    /// Requests waiting in the queue now.
    pub queued: usize,
    /// Connections in their TLS handshake (or preamble and identity) now.
    pub handshaking: usize,
    /// Connections accepted and not identified yet now.
    pub unauthenticated: usize,
    /// How many connections ended for each reason, by its kebab-case code
    /// (`clean`, `untrusted-certificate`, `identification-timeout`,
    /// `message-instead-of-next`, `stream-length-mismatch`, …; the full list is in
    /// `docs/LIMITS.md`).
    pub close_reasons: BTreeMap<String, u64>,
    /// Requests created on this node.
    pub requests_created: u64,
    /// Requests that completed with a response.
    pub requests_completed: u64,
    /// Requests that failed, any reason.
    pub requests_failed: u64,
}

impl NodeStats {
    /// Connections refused: untrusted, wrong subscription, or another reason.
    pub fn refused(&self) -> u64 {
        self.refused_untrusted + self.refused_subscription + self.refused_other
    }
}

impl NodeMetrics {
    /// Counts an API connection that ended badly, by `reason` (`api-…`), in the
    /// same table as the polling connections' reasons.
    pub fn api_ended(&self, reason: &'static str) {
        self.count_reason(reason);
    }

    fn count_reason(&self, reason: &'static str) {
        *self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts how a connection ended and the specific `reason`; `closed` last, so
    /// a reader who sees it sees the rest.
    pub fn ended(&self, how: Ending, reason: &'static str) {
        self.count_reason(reason);
        let counter = match how {
            Ending::Clean => None,
            Ending::Untrusted => Some(&self.refused_untrusted),
            Ending::Subscription => Some(&self.refused_subscription),
            Ending::Handshake => Some(&self.refused_other),
            Ending::Protocol => Some(&self.protocol_errors),
            Ending::Dropped => Some(&self.dropped),
            Ending::Stalled => Some(&self.stalled),
            Ending::Probe => Some(&self.probes),
            Ending::Limit => Some(&self.refused_limit),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.closed.fetch_add(1, Ordering::Release);
    }

    /// Counts a response that matched nothing.
    pub fn anomaly(&self) {
        self.anomalies.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request collected by one of this node's connections.
    pub fn collected(&self) {
        self.collected.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an identified connection for `subscription` until the guard drops
    /// (it counts as polling from now), unless `subscription` holds `max`
    /// connections already: then `None`, and nothing is counted. Checked and
    /// counted under one lock, so racing connections cannot overshoot.
    pub fn try_open(
        self: &Arc<Self>,
        subscription: &SubscriptionId,
        max: usize,
    ) -> Option<ConnectionGuard> {
        let pair = {
            let mut pairs = self.lock();
            let pair = pairs.entry(subscription.clone()).or_default();
            if pair.connections.load(Ordering::Acquire) >= max {
                return None;
            }
            // The poll time first, so no reader sees the new connection with an old one.
            self.mark_polled(pair);
            pair.connections.fetch_add(1, Ordering::AcqRel);
            pair.clone()
        };
        self.handshakes_ok.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard {
            metrics: self.clone(),
            pair,
        })
    }

    /// Records that `pair` polled now.
    fn mark_polled(&self, pair: &PairCell) {
        let micros = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros() as u64;
        pair.last_poll.store(micros + 1, Ordering::Release);
    }

    /// Counts a connection as unauthenticated until the guard drops, unless `max`
    /// are already: then `None`, and the caller closes it.
    pub fn try_unauthenticated(self: &Arc<Self>, max: usize) -> Option<UnauthenticatedGuard> {
        let admitted = self
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| UnauthenticatedGuard {
            metrics: self.clone(),
        })
    }

    /// How many connections `subscription` holds to this node now.
    pub fn connections_of(&self, subscription: &SubscriptionId) -> usize {
        self.lock()
            .get(subscription)
            .map_or(0, |p| p.connections.load(Ordering::Acquire))
    }

    /// Where `subscription` stands with this node: polling means connected and
    /// polled within `interval` (the long-poll).
    pub fn pair_state(&self, subscription: &SubscriptionId, interval: Duration) -> PairState {
        let Some(pair) = self.lock().get(subscription).cloned() else {
            return PairState::Never;
        };
        pair.state(self.epoch, Instant::now(), interval)
    }

    /// How many subscriptions are polling this node now (see [`NodeMetrics::pair_state`]):
    /// one pass over the pairs, for a cheap coverage figure.
    pub fn polling_pairs(&self, interval: Duration) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|pair| pair.state(self.epoch, now, interval) == PairState::Polling)
            .count()
    }

    /// A snapshot; queue and request figures are filled by the node.
    pub fn snapshot(&self) -> NodeStats {
        let (connections, subscriptions) = self
            .lock()
            .values()
            .map(|p| p.connections.load(Ordering::Acquire))
            .filter(|&n| n > 0)
            .fold((0, 0), |(all, subs), n| (all + n, subs + 1));
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeStats {
            connections,
            subscriptions,
            handshakes_ok: load(&self.handshakes_ok),
            refused_untrusted: load(&self.refused_untrusted),
            refused_subscription: load(&self.refused_subscription),
            refused_other: load(&self.refused_other),
            protocol_errors: load(&self.protocol_errors),
            dropped: load(&self.dropped),
            stalled: load(&self.stalled),
            probes: load(&self.probes),
            refused_limit: load(&self.refused_limit),
            anomalies: load(&self.anomalies),
            closed: self.closed.load(Ordering::Acquire),
            collected: load(&self.collected),
            unauthenticated: self.unauthenticated.load(Ordering::Acquire),
            close_reasons: self
                .reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
            ..NodeStats::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SubscriptionId, Arc<PairCell>>> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps a connection counted while it lives, and records its polls.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<NodeMetrics>,
    pair: Arc<PairCell>,
}

impl ConnectionGuard {
    /// The connection waits for work (a long-poll) until the returned guard drops.
    pub fn waiting(&self) -> WaitingGuard<'_> {
        self.pair.waiting.fetch_add(1, Ordering::AcqRel);
        WaitingGuard { pair: &self.pair }
    }

    /// The connection polled now: it was just handed work or the null request, or
    /// is about to wait for more.
    pub fn polled(&self) {
        self.metrics.mark_polled(&self.pair);
    }
}

/// Counts a connection as not identified yet while it lives.
#[derive(Debug)]
pub struct UnauthenticatedGuard {
    metrics: Arc<NodeMetrics>,
}

impl Drop for UnauthenticatedGuard {
    fn drop(&mut self) {
        self.metrics.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a connection as inside a long-poll wait while it lives.
#[derive(Debug)]
pub struct WaitingGuard<'a> {
    pair: &'a PairCell,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.pair.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.pair.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_connections_per_subscription() {
        let metrics = Arc::new(NodeMetrics::default());
        let sub: SubscriptionId = "poll://a/".parse().unwrap();
        let a = metrics.try_open(&sub, usize::MAX).unwrap();
        let b = metrics.try_open(&sub, usize::MAX).unwrap();
        assert_eq!(metrics.connections_of(&sub), 2);
        drop(a);
        assert_eq!(metrics.snapshot().connections, 1);
        drop(b);
        assert_eq!(metrics.snapshot().subscriptions, 0);
        assert_eq!(metrics.snapshot().handshakes_ok, 2);
    }

    #[test]
    fn caps_admit_up_to_their_limit_and_free_a_place_on_drop() {
        let metrics = Arc::new(NodeMetrics::default());
        let sub: SubscriptionId = "poll://a/".parse().unwrap();
        let a = metrics.try_open(&sub, 2).unwrap();
        let _b = metrics.try_open(&sub, 2).unwrap();
        assert!(
            metrics.try_open(&sub, 2).is_none(),
            "a third over a cap of 2"
        );
        assert_eq!(
            metrics.snapshot().handshakes_ok,
            2,
            "the refused one is not counted"
        );
        drop(a);
        assert!(metrics.try_open(&sub, 2).is_some());

        let one = metrics.try_unauthenticated(1).unwrap();
        assert!(metrics.try_unauthenticated(1).is_none());
        assert_eq!(metrics.snapshot().unauthenticated, 1);
        drop(one);
        assert_eq!(metrics.snapshot().unauthenticated, 0);
        assert!(metrics.try_unauthenticated(1).is_some());
    }

    #[test]
    fn endings_are_counted_by_reason() {
        let metrics = NodeMetrics::default();
        metrics.ended(Ending::Protocol, "bad-deflate");
        metrics.ended(Ending::Protocol, "bad-deflate");
        metrics.api_ended("api-header-timeout");
        let stats = metrics.snapshot();
        assert_eq!(stats.close_reasons["bad-deflate"], 2);
        assert_eq!(stats.close_reasons["api-header-timeout"], 1);
        assert_eq!(stats.protocol_errors, 2);
        assert_eq!(stats.closed, 2, "API connections are not polling closes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_is_polling_until_a_long_poll_interval_passes_without_a_poll() {
        let metrics = Arc::new(NodeMetrics::default());
        let sub: SubscriptionId = "poll://a/".parse().unwrap();
        let interval = Duration::from_secs(30);
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Never);
        let guard = metrics.try_open(&sub, usize::MAX).unwrap();
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Polling);
        tokio::time::advance(interval).await;
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Polling);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Stale);
        guard.polled();
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Polling);
        {
            let _waiting = guard.waiting();
            tokio::time::advance(interval * 2).await;
            assert_eq!(
                metrics.pair_state(&sub, interval),
                PairState::Polling,
                "a connection inside a long-poll wait is polling however long it waits"
            );
        }
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Stale);
        drop(guard);
        assert_eq!(metrics.pair_state(&sub, interval), PairState::Lost);
    }
}

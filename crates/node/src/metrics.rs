//! Counters a node keeps, and which subscriptions hold a connection to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use octopoll_wire::SubscriptionId;
use serde::Serialize;

/// Live counters of one node. Cheap to update from every connection task.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    handshakes_ok: AtomicU64,
    refused_untrusted: AtomicU64,
    refused_subscription: AtomicU64,
    refused_other: AtomicU64,
    protocol_errors: AtomicU64,
    dropped: AtomicU64,
    stalled: AtomicU64,
    probes: AtomicU64,
    anomalies: AtomicU64,
    closed: AtomicU64,
    connected: Mutex<HashMap<SubscriptionId, usize>>,
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
}

/// A snapshot of a node's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Responses that matched no request in flight.
    pub anomalies: u64,
    /// Connections that ended, for any reason, after being counted above.
    pub closed: u64,
    /// Requests waiting in the queue now.
    pub queued: usize,
    /// Requests created on this node.
    pub requests_created: u64,
    /// Requests that completed with a response.
    pub requests_completed: u64,
    /// Requests that failed, any reason.
    pub requests_failed: u64,
}

impl NodeMetrics {
    /// Counts how a connection ended; `closed` last, so a reader who sees it sees the rest.
    pub fn ended(&self, how: Ending) {
        let counter = match how {
            Ending::Clean => None,
            Ending::Untrusted => Some(&self.refused_untrusted),
            Ending::Subscription => Some(&self.refused_subscription),
            Ending::Handshake => Some(&self.refused_other),
            Ending::Protocol => Some(&self.protocol_errors),
            Ending::Dropped => Some(&self.dropped),
            Ending::Stalled => Some(&self.stalled),
            Ending::Probe => Some(&self.probes),
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

    /// Records an identified connection for `subscription` until the guard drops.
    pub fn open(self: &Arc<Self>, subscription: &SubscriptionId) -> ConnectionGuard {
        self.handshakes_ok.fetch_add(1, Ordering::Relaxed);
        *self.lock().entry(subscription.clone()).or_insert(0) += 1;
        ConnectionGuard {
            metrics: self.clone(),
            subscription: subscription.clone(),
        }
    }

    /// How many connections `subscription` holds to this node now.
    pub fn connections_of(&self, subscription: &SubscriptionId) -> usize {
        self.lock().get(subscription).copied().unwrap_or(0)
    }

    /// A snapshot; queue and request figures are filled by the node.
    pub fn snapshot(&self) -> NodeStats {
        let connected = self.lock();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeStats {
            connections: connected.values().sum(),
            subscriptions: connected.len(),
            handshakes_ok: load(&self.handshakes_ok),
            refused_untrusted: load(&self.refused_untrusted),
            refused_subscription: load(&self.refused_subscription),
            refused_other: load(&self.refused_other),
            protocol_errors: load(&self.protocol_errors),
            dropped: load(&self.dropped),
            stalled: load(&self.stalled),
            probes: load(&self.probes),
            anomalies: load(&self.anomalies),
            closed: self.closed.load(Ordering::Acquire),
            ..NodeStats::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SubscriptionId, usize>> {
        self.connected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps a connection counted while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<NodeMetrics>,
    subscription: SubscriptionId,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut connected = self.metrics.lock();
        if let Some(count) = connected.get_mut(&self.subscription) {
            *count -= 1;
            if *count == 0 {
                connected.remove(&self.subscription);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_connections_per_subscription() {
        let metrics = Arc::new(NodeMetrics::default());
        let sub: SubscriptionId = "poll://a/".parse().unwrap();
        let a = metrics.open(&sub);
        let b = metrics.open(&sub);
        assert_eq!(metrics.connections_of(&sub), 2);
        drop(a);
        assert_eq!(metrics.snapshot().connections, 1);
        drop(b);
        assert_eq!(metrics.snapshot().subscriptions, 0);
        assert_eq!(metrics.snapshot().handshakes_ok, 2);
    }
}

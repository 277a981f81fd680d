//! The chaos proxies of a lab and the network faults a scenario does through
//! them: one in front of each node (`node-1`, `node-2`, … in the proxy's API),
//! and, on the Redis queue, one on each node's way to Redis (`node-1-redis`, …).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use octopoll_chaos::toxic::{
    Bandwidth, IdleTimeout, Latency, LimitData, ResetPeer, Slicer, SlowClose, Timeout,
};
use octopoll_chaos::{Chaos, ProxyConfig, ProxyUpdate, Stream, Toxic as ChaosToxic, ToxicKind};
use octopoll_node::NodeId;
use serde::Serialize;

use crate::actions::{NetworkAction, Streams, Toxic};

/// Which of a node's links a network fault goes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// Between the agents (or HAProxy) and the node.
    #[default]
    Agents,
    /// Between the node and the Redis queue the nodes share.
    Redis,
}

/// The chaos proxies, one per node and link.
#[derive(Clone, Debug, Default)]
pub struct ChaosFronts {
    chaos: Chaos,
    addresses: Vec<SocketAddr>,
}

/// The name of `node`'s proxy on `link` in the chaos API: `node-2`, `node-2-redis`.
pub fn proxy_name(node: NodeId, link: Link) -> String {
    match link {
        Link::Agents => node.to_string(),
        Link::Redis => format!("{node}-redis"),
    }
}

impl ChaosFronts {
    /// No proxies yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a proxy on a free port of `bind` in front of each node.
    pub async fn front_nodes(
        &mut self,
        bind: IpAddr,
        nodes: &[(NodeId, SocketAddr)],
    ) -> Result<(), octopoll_chaos::Error> {
        for (id, addr) in nodes {
            let name = proxy_name(*id, Link::Agents);
            let config = ProxyConfig::new(name, SocketAddr::new(bind, 0), addr.to_string());
            // On an error the proxies made so far go with `chaos`.
            self.addresses.push(self.chaos.create(config).await?.listen);
        }
        Ok(())
    }

    /// Starts a proxy on a free port of `bind` for each of nodes 1 to `nodes`
    /// to reach the Redis at `server` (`host:port`) through: the address each
    /// node uses instead.
    pub async fn front_redis(
        &self,
        bind: IpAddr,
        nodes: u16,
        server: &str,
    ) -> Result<BTreeMap<NodeId, SocketAddr>, octopoll_chaos::Error> {
        let mut relays = BTreeMap::new();
        for id in (1..=nodes).map(NodeId) {
            let name = proxy_name(id, Link::Redis);
            let config = ProxyConfig::new(name, SocketAddr::new(bind, 0), server.to_owned());
            relays.insert(id, self.chaos.create(config).await?.listen);
        }
        Ok(relays)
    }

    /// The address agents use for each node, node 1 first.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.addresses.clone()
    }

    /// The proxies, to serve their HTTP API or drive them directly.
    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }

    /// Applies `action` to `node`'s `link`; `tag` keeps the toxics of
    /// different faults apart.
    pub async fn apply(
        &self,
        node: NodeId,
        link: Link,
        action: &NetworkAction,
        tag: usize,
    ) -> Result<(), octopoll_chaos::Error> {
        self.change(&proxy_name(node, link), action, tag, true)
            .await
    }

    /// Undoes `action` on `node`'s `link`.
    pub async fn lift(
        &self,
        node: NodeId,
        link: Link,
        action: &NetworkAction,
        tag: usize,
    ) -> Result<(), octopoll_chaos::Error> {
        self.change(&proxy_name(node, link), action, tag, false)
            .await
    }

    async fn change(
        &self,
        proxy: &str,
        action: &NetworkAction,
        tag: usize,
        on: bool,
    ) -> Result<(), octopoll_chaos::Error> {
        if let NetworkAction::Down = action {
            // Down is the proxy disabled; lifting it enables the proxy again.
            return self.enable(proxy, !on).await;
        }
        for toxic in toxics(action, tag) {
            let done = if on {
                self.chaos.add_toxic(proxy, toxic).await.map(drop)
            } else {
                self.chaos.remove_toxic(proxy, &toxic.name).await
            };
            done?;
        }
        Ok(())
    }

    async fn enable(&self, proxy: &str, enabled: bool) -> Result<(), octopoll_chaos::Error> {
        let update = ProxyUpdate {
            enabled: Some(enabled),
            ..ProxyUpdate::default()
        };
        self.chaos.update(proxy, update).await.map(drop)
    }

    /// Stops every proxy.
    pub async fn stop(&self) {
        self.chaos.shutdown().await;
    }
}

/// The chaos toxics that make up `action`, named `<type>_<stream>_<tag>`.
fn toxics(action: &NetworkAction, tag: usize) -> Vec<ChaosToxic> {
    let (kind, streams, toxicity, name) = match action {
        NetworkAction::Down => return Vec::new(),
        NetworkAction::Partition => (
            ToxicKind::Timeout(Timeout { timeout: 0 }),
            Streams::Both,
            1.0,
            "partition",
        ),
        NetworkAction::Toxic {
            toxic,
            stream,
            toxicity,
        } => (kind_of(toxic), *stream, f64::from(*toxicity), toxic.kind()),
    };
    let streams: &[Stream] = match streams {
        Streams::Upstream => &[Stream::Upstream],
        Streams::Downstream => &[Stream::Downstream],
        Streams::Both => &[Stream::Upstream, Stream::Downstream],
    };
    streams
        .iter()
        .map(|&stream| {
            ChaosToxic::new(kind, stream)
                .with_name(format!("{name}_{}_{tag}", stream.as_str()))
                .with_toxicity(toxicity)
        })
        .collect()
}

fn kind_of(toxic: &Toxic) -> ToxicKind {
    match *toxic {
        Toxic::Latency { latency, jitter } => ToxicKind::Latency(Latency { latency, jitter }),
        Toxic::Bandwidth { rate } => ToxicKind::Bandwidth(Bandwidth { rate }),
        Toxic::Timeout { timeout } => ToxicKind::Timeout(Timeout { timeout }),
        Toxic::ResetPeer { timeout } => ToxicKind::ResetPeer(ResetPeer { timeout }),
        Toxic::Slicer {
            average_size,
            size_variation,
            delay,
        } => ToxicKind::Slicer(Slicer {
            average_size,
            size_variation,
            delay,
        }),
        Toxic::LimitData { bytes } => ToxicKind::LimitData(LimitData { bytes }),
        Toxic::SlowClose { delay } => ToxicKind::SlowClose(SlowClose { delay }),
        Toxic::IdleTimeout { timeout } => ToxicKind::IdleTimeout(IdleTimeout { timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_holds_both_directions_and_toxics_are_named_per_fault() {
        let toxics = toxics(&NetworkAction::Partition, 3);
        let names: Vec<&str> = toxics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["partition_upstream_3", "partition_downstream_3"]);
        assert!(toxics
            .iter()
            .all(|t| t.kind == ToxicKind::Timeout(Timeout { timeout: 0 })));
        let latency = NetworkAction::Toxic {
            toxic: Toxic::Latency {
                latency: 100,
                jitter: 5,
            },
            stream: Streams::Downstream,
            toxicity: 0.5,
        };
        let toxics = super::toxics(&latency, 0);
        assert_eq!(toxics.len(), 1);
        assert_eq!(toxics[0].name, "latency_downstream_0");
        assert_eq!(toxics[0].toxicity, 0.5);
    }
}

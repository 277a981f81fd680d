//! A TCP fault-injection proxy, after Shopify's toxiproxy, for failover testing.
//!
//! Placed between polling agents and each node, a proxy forwards connections to its
//! upstream and injects network faults into them: latency, limited bandwidth, slow
//! closes, stalls and timeouts, resets, sliced writes, data limits, and (octopoll's
//! own) the idle timeout of a NAT gateway that silently forgets a quiet connection. Faults
//! ("toxics") carry toxiproxy's names, fields and semantics, and the HTTP API
//! ([`api`]) has toxiproxy's shape, so anyone who knows toxiproxy can drive it:
//!
//! ```text
//! POST /proxies               {"name":"node1","listen":"127.0.0.1:0","upstream":"n1:10943"}
//! POST /proxies/node1/toxics  {"type":"latency","attributes":{"latency":1000,"jitter":0}}
//! POST /proxies/node1         {"enabled":false}
//! POST /reset
//! ```
//!
//! Toxics apply to live connections at once, whether or not data is flowing; taking
//! a proxy down stops its listener and cuts its connections.

pub mod api;
pub mod chaos;
mod connection;
pub mod error;
mod gate;
mod pipe;
pub mod proxy;
#[cfg(test)]
mod testutil;
pub mod toxic;

pub use chaos::Chaos;
pub use error::{Error, Result};
pub use proxy::{ProxyConfig, ProxyInfo, ProxyUpdate};
pub use toxic::{Stream, Toxic, ToxicKind, ToxicUpdate};

//! Toxics: the faults a proxy injects, with toxiproxy's names, attributes and JSON shape
//! (`{"name","type","stream","toxicity","attributes"}`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// Which direction of a connection a toxic applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to server (agent to node).
    Upstream,
    /// Server to client (node to agent); the default, as in toxiproxy.
    #[default]
    Downstream,
}

impl Stream {
    /// `upstream` or `downstream`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `latency`: delays every chunk by `latency` ± `jitter` ms from when it arrived,
/// so throughput is not reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Delay in milliseconds.
    pub latency: u64,
    /// Random variation either side of the delay, in milliseconds.
    pub jitter: u64,
}

/// `bandwidth`: limits throughput to `rate` KB/s (1 KB = 1000 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bandwidth {
    /// Rate in KB/s; must be above 0.
    pub rate: u64,
}

/// `slow_close`: delays closing the socket by `delay` ms after the stream ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowClose {
    /// Delay in milliseconds.
    pub delay: u64,
}

/// `timeout`: stops all data and closes the connection after `timeout` ms; with 0 the
/// connection stays open and data is held until the toxic is removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeout {
    /// Milliseconds before the connection is closed; 0 holds data instead.
    pub timeout: u64,
}

/// `reset_peer`: resets the connection (TCP RST on both sides) at once, or after
/// `timeout` ms during which data in that direction is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResetPeer {
    /// Milliseconds before the reset; 0 resets at once.
    pub timeout: u64,
}

/// `slicer`: slices data into pieces of `average_size` ± `size_variation` bytes with
/// `delay` µs between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slicer {
    /// Mean piece size in bytes; must be above 0.
    pub average_size: u64,
    /// Variation either side of the mean, in bytes; at most `average_size`.
    pub size_variation: u64,
    /// Pause between pieces, in microseconds.
    pub delay: u64,
}

/// `limit_data`: closes the connection once `bytes` bytes have passed in that
/// direction (a limit of 0 closes it at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitData {
    /// Bytes let through before the close.
    pub bytes: u64,
}

/// `idle_timeout` (octopoll's; toxiproxy has none): what a NAT gateway, firewall
/// or load balancer does to a connection that carries no data either way for
/// `timeout` ms: it forgets it. From then on nothing passes in either
/// direction and neither side is told (no FIN, no RST); each finds out only by
/// its own timeouts. Data either way restarts the clock (both streams share
/// it, whichever the toxic is on). With 0, every connection goes dark at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleTimeout {
    /// Milliseconds without data, either way, before the connection is forgotten.
    pub timeout: u64,
}

/// A toxic's type and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToxicKind {
    /// `latency`.
    Latency(Latency),
    /// `bandwidth`.
    Bandwidth(Bandwidth),
    /// `slow_close`.
    SlowClose(SlowClose),
    /// `timeout`.
    Timeout(Timeout),
    /// `reset_peer`.
    ResetPeer(ResetPeer),
    /// `slicer`.
    Slicer(Slicer),
    /// `limit_data`.
    LimitData(LimitData),
    /// `idle_timeout`.
    IdleTimeout(IdleTimeout),
}

/// The toxic types understood, as toxiproxy names them.
pub const TOXIC_TYPES: [&str; 8] = [
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "idle_timeout",
];

impl ToxicKind {
    /// Toxiproxy's name for the type: `latency`, `bandwidth`, …
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency(_) => "latency",
            ToxicKind::Bandwidth(_) => "bandwidth",
            ToxicKind::SlowClose(_) => "slow_close",
            ToxicKind::Timeout(_) => "timeout",
            ToxicKind::ResetPeer(_) => "reset_peer",
            ToxicKind::Slicer(_) => "slicer",
            ToxicKind::LimitData(_) => "limit_data",
            ToxicKind::IdleTimeout(_) => "idle_timeout",
        }
    }

    /// The attributes as a JSON object.
    pub fn attributes(&self) -> Value {
        match self {
            ToxicKind::Latency(a) => json!({"latency": a.latency, "jitter": a.jitter}),
            ToxicKind::Bandwidth(a) => json!({"rate": a.rate}),
            ToxicKind::SlowClose(a) => json!({"delay": a.delay}),
            ToxicKind::Timeout(a) => json!({"timeout": a.timeout}),
            ToxicKind::ResetPeer(a) => json!({"timeout": a.timeout}),
            ToxicKind::Slicer(a) => json!({
                "average_size": a.average_size,
                "size_variation": a.size_variation,
                "delay": a.delay,
            }),
            ToxicKind::LimitData(a) => json!({"bytes": a.bytes}),
            ToxicKind::IdleTimeout(a) => json!({"timeout": a.timeout}),
        }
    }

    /// Builds a kind from its type name and attributes (`null` or missing fields mean 0).
    pub fn from_parts(type_name: &str, attributes: Value) -> Result<Self> {
        let attributes = match attributes {
            Value::Null => Value::Object(Map::new()),
            other => other,
        };
        let bad = |e: serde_json::Error| {
            Error::InvalidToxic(format!("attributes of a `{type_name}` toxic: {e}"))
        };
        let kind = match type_name {
            "latency" => ToxicKind::Latency(serde_json::from_value(attributes).map_err(bad)?),
            "bandwidth" => ToxicKind::Bandwidth(serde_json::from_value(attributes).map_err(bad)?),
            "slow_close" => ToxicKind::SlowClose(serde_json::from_value(attributes).map_err(bad)?),
            "timeout" => ToxicKind::Timeout(serde_json::from_value(attributes).map_err(bad)?),
            "reset_peer" => ToxicKind::ResetPeer(serde_json::from_value(attributes).map_err(bad)?),
            "slicer" => ToxicKind::Slicer(serde_json::from_value(attributes).map_err(bad)?),
            "limit_data" => ToxicKind::LimitData(serde_json::from_value(attributes).map_err(bad)?),
            "idle_timeout" => {
                ToxicKind::IdleTimeout(serde_json::from_value(attributes).map_err(bad)?)
            }
            other => {
                return Err(Error::InvalidToxic(format!(
                    "unknown toxic type `{other}`; expected one of {}",
                    TOXIC_TYPES.join(", ")
                )))
            }
        };
        kind.validate()?;
        Ok(kind)
    }

    /// Checks the attributes make sense (a rate above 0, a slice size above 0, …).
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| -> Result<()> { Err(Error::InvalidToxic(why)) };
        match *self {
            ToxicKind::Bandwidth(a) if a.rate == 0 => {
                invalid("bandwidth rate must be above 0 KB/s".into())
            }
            ToxicKind::Slicer(a) if a.average_size == 0 => {
                invalid("slicer average_size must be above 0 bytes".into())
            }
            ToxicKind::Slicer(a) if a.size_variation > a.average_size => invalid(format!(
                "slicer size_variation ({}) must not exceed average_size ({})",
                a.size_variation, a.average_size
            )),
            _ => Ok(()),
        }
    }
}

/// A toxic installed on a proxy, serialized exactly as toxiproxy does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ToxicJson", into = "ToxicJson")]
pub struct Toxic {
    /// Unique within its proxy; defaults to `<type>_<stream>`.
    pub name: String,
    /// The direction it applies to.
    pub stream: Stream,
    /// Probability in 0..=1 that a connection is affected, drawn once per connection.
    pub toxicity: f64,
    /// Type and attributes.
    pub kind: ToxicKind,
}

impl Toxic {
    /// A toxic named `<type>_<stream>` affecting every connection.
    pub fn new(kind: ToxicKind, stream: Stream) -> Self {
        Toxic {
            name: default_name(&kind, stream),
            stream,
            toxicity: 1.0,
            kind,
        }
    }

    /// The same toxic under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same toxic with another toxicity.
    pub fn with_toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// Checks the name, toxicity and attributes.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::InvalidToxic("toxic name must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&self.toxicity) {
            return Err(Error::InvalidToxic(format!(
                "toxicity of toxic `{}` must be between 0 and 1, not {}",
                self.name, self.toxicity
            )));
        }
        self.kind.validate()
    }

    /// This toxic with `update` applied: attributes given replace those present, the
    /// rest are kept (as toxiproxy's update does).
    pub fn updated(&self, update: &ToxicUpdate) -> Result<Toxic> {
        let mut attributes = match self.kind.attributes() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Some(given) = &update.attributes {
            for (key, value) in given {
                attributes.insert(key.clone(), value.clone());
            }
        }
        let updated = Toxic {
            name: self.name.clone(),
            stream: self.stream,
            toxicity: update.toxicity.unwrap_or(self.toxicity),
            kind: ToxicKind::from_parts(self.kind.type_name(), Value::Object(attributes))?,
        };
        updated.validate()?;
        Ok(updated)
    }
}

/// A partial update of a toxic: `POST /proxies/{proxy}/toxics/{toxic}`'s body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToxicUpdate {
    /// New toxicity, if given.
    #[serde(default)]
    pub toxicity: Option<f64>,
    /// Attributes to replace, if given.
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
}

fn default_name(kind: &ToxicKind, stream: Stream) -> String {
    format!("{}_{}", kind.type_name(), stream)
}

fn full_toxicity() -> f64 {
    1.0
}

/// Toxiproxy's JSON shape, which [`Toxic`] converts from and to.
#[derive(Serialize, Deserialize)]
struct ToxicJson {
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: Stream,
    #[serde(default = "full_toxicity")]
    toxicity: f64,
    #[serde(default)]
    attributes: Value,
}

impl TryFrom<ToxicJson> for Toxic {
    type Error = Error;

    fn try_from(json: ToxicJson) -> Result<Self> {
        let kind = ToxicKind::from_parts(&json.kind, json.attributes)?;
        let name = if json.name.is_empty() {
            default_name(&kind, json.stream)
        } else {
            json.name
        };
        let toxic = Toxic {
            name,
            stream: json.stream,
            toxicity: json.toxicity,
            kind,
        };
        toxic.validate()?;
        Ok(toxic)
    }
}

impl From<Toxic> for ToxicJson {
    fn from(toxic: Toxic) -> Self {
        ToxicJson {
            kind: toxic.kind.type_name().to_owned(),
            attributes: toxic.kind.attributes(),
            name: toxic.name,
            stream: toxic.stream,
            toxicity: toxic.toxicity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_toxiproxy_json() {
        let text = r#"{"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency":1000,"jitter":0}}"#;
        let toxic: Toxic = serde_json::from_str(text).unwrap();
        assert_eq!(
            toxic,
            Toxic::new(
                ToxicKind::Latency(Latency {
                    latency: 1000,
                    jitter: 0
                }),
                Stream::Downstream
            )
        );
        let back = serde_json::to_value(&toxic).unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn every_type_round_trips() {
        let kinds = [
            ToxicKind::Latency(Latency {
                latency: 5,
                jitter: 1,
            }),
            ToxicKind::Bandwidth(Bandwidth { rate: 10 }),
            ToxicKind::SlowClose(SlowClose { delay: 7 }),
            ToxicKind::Timeout(Timeout { timeout: 0 }),
            ToxicKind::ResetPeer(ResetPeer { timeout: 3 }),
            ToxicKind::Slicer(Slicer {
                average_size: 8,
                size_variation: 4,
                delay: 100,
            }),
            ToxicKind::LimitData(LimitData { bytes: 9 }),
        ];
        for (kind, type_name) in kinds.into_iter().zip(TOXIC_TYPES) {
            assert_eq!(kind.type_name(), type_name);
            let toxic = Toxic::new(kind, Stream::Upstream).with_toxicity(0.5);
            let text = serde_json::to_string(&toxic).unwrap();
            let back: Toxic = serde_json::from_str(&text).unwrap();
            assert_eq!(back, toxic, "{text}");
        }
    }

    #[test]
    fn defaults_name_stream_toxicity_and_attributes() {
        let toxic: Toxic = serde_json::from_str(r#"{"type":"timeout"}"#).unwrap();
        assert_eq!(toxic.name, "timeout_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
        assert_eq!(toxic.kind, ToxicKind::Timeout(Timeout { timeout: 0 }));

        let toxic: Toxic = serde_json::from_str(
            r#"{"type":"latency","stream":"upstream","attributes":{"latency":20}}"#,
        )
        .unwrap();
        assert_eq!(toxic.name, "latency_upstream");
        assert_eq!(
            toxic.kind,
            ToxicKind::Latency(Latency {
                latency: 20,
                jitter: 0
            })
        );
    }

    #[test]
    fn rejects_bad_types_and_attributes() {
        let bad = [
            r#"{"type":"bogus"}"#,
            r#"{"type":"bandwidth","attributes":{"rate":0}}"#,
            r#"{"type":"slicer","attributes":{"average_size":0}}"#,
            r#"{"type":"slicer","attributes":{"average_size":4,"size_variation":5}}"#,
            r#"{"type":"latency","attributes":{"latency":-1}}"#,
            r#"{"type":"latency","attributes":{"latncy":10}}"#,
            r#"{"type":"latency","toxicity":1.5}"#,
            r#"{"type":"latency","stream":"sideways"}"#,
            r#"{"name":"x"}"#,
        ];
        for text in bad {
            assert!(serde_json::from_str::<Toxic>(text).is_err(), "{text}");
        }
        let error = ToxicKind::from_parts("bogus", Value::Null).unwrap_err();
        assert!(
            error.to_string().contains("unknown toxic type `bogus`"),
            "{error}"
        );
    }

    #[test]
    fn update_merges_attributes_and_toxicity() {
        let toxic = Toxic::new(
            ToxicKind::Latency(Latency {
                latency: 100,
                jitter: 10,
            }),
            Stream::Downstream,
        );
        let update: ToxicUpdate =
            serde_json::from_str(r#"{"attributes":{"latency":300},"toxicity":0.25}"#).unwrap();
        let updated = toxic.updated(&update).unwrap();
        assert_eq!(
            updated.kind,
            ToxicKind::Latency(Latency {
                latency: 300,
                jitter: 10
            })
        );
        assert_eq!(updated.toxicity, 0.25);
        assert_eq!(updated.name, toxic.name);

        let bad: ToxicUpdate = serde_json::from_str(r#"{"toxicity":2.0}"#).unwrap();
        assert!(toxic.updated(&bad).is_err());
    }
}

//! Entries of `Tentacle.Communication.TrustedOctopusServers`: the servers a
//! Tentacle trusts and, for polling, the addresses it polls.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::{ConfigError, TrustedServerProblem};

/// How a Tentacle talks to a trusted server: Octopus.Client's
/// `CommunicationStyle`, written as its number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CommunicationStyle {
    /// 0: no communication; what a missing field reads as, as in Newtonsoft.
    #[default]
    None,
    /// 1: a listening Tentacle; the server connects to it.
    TentaclePassive,
    /// 2: a polling Tentacle; it connects to the server.
    TentacleActive,
}

impl CommunicationStyle {
    /// The number Tentacle writes.
    pub fn number(self) -> u8 {
        match self {
            Self::None => 0,
            Self::TentaclePassive => 1,
            Self::TentacleActive => 2,
        }
    }

    /// The style numbered `number`, if octopoll knows it (SSH and the rest are not Tentacles).
    pub fn from_number(number: i64) -> Option<Self> {
        match number {
            0 => Some(Self::None),
            1 => Some(Self::TentaclePassive),
            2 => Some(Self::TentacleActive),
            _ => None,
        }
    }

    /// The style named `name`, ignoring case: the enum names, `Listening` and
    /// `Polling`, or a number in a string.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        if is("None") {
            Some(Self::None)
        } else if is("TentaclePassive") || is("Listening") {
            Some(Self::TentaclePassive)
        } else if is("TentacleActive") || is("Polling") {
            Some(Self::TentacleActive)
        } else {
            name.parse().ok().and_then(Self::from_number)
        }
    }
}

impl fmt::Display for CommunicationStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::TentaclePassive => "TentaclePassive",
            Self::TentacleActive => "TentacleActive",
        })
    }
}

impl Serialize for CommunicationStyle {
    /// As a number: Tentacle's property-level converter overrides the global
    /// `StringEnumConverter` for this field.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.number())
    }
}

/// One trusted server, as Tentacle's `OctopusServerConfiguration` serialises it:
/// fields in this order, nulls written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedOctopusServer {
    /// The server's certificate thumbprint, as written (normally uppercase hex).
    #[serde(rename = "Thumbprint")]
    pub thumbprint: String,
    /// Listening or polling.
    #[serde(rename = "CommunicationStyle")]
    pub communication_style: CommunicationStyle,
    /// For polling, the server's comms address (`https://host:10943`); else `None`.
    #[serde(rename = "Address")]
    pub address: Option<String>,
    /// The legacy `Octopus.Communications.Squid` value; octopoll writes `None`.
    #[serde(rename = "Squid")]
    pub squid: Option<String>,
    /// For polling, the subscription (`poll://…/`) the Tentacle polls for.
    #[serde(rename = "SubscriptionId")]
    pub subscription_id: Option<String>,
}

impl TrustedOctopusServer {
    /// A polling entry: this Tentacle polls `address` for `subscription_id`.
    pub fn polling(thumbprint: &str, address: &str, subscription_id: &str) -> Self {
        Self {
            thumbprint: thumbprint.to_owned(),
            communication_style: CommunicationStyle::TentacleActive,
            address: Some(address.to_owned()),
            squid: None,
            subscription_id: Some(subscription_id.to_owned()),
        }
    }

    /// A listening entry, as `configure --trust` writes it.
    pub fn listening(thumbprint: &str) -> Self {
        Self {
            thumbprint: thumbprint.to_owned(),
            communication_style: CommunicationStyle::TentaclePassive,
            address: None,
            squid: None,
            subscription_id: None,
        }
    }

    /// Whether `other` is the same server for Tentacle's AddOrUpdate: the same
    /// thumbprint and address, ignoring case. Tentacle compares `Uri.AbsoluteUri`,
    /// which adds a trailing slash; here a trailing slash is ignored instead.
    pub fn same_server(&self, other: &Self) -> bool {
        fn address(a: &Option<String>) -> Option<&str> {
            a.as_deref().map(|a| a.trim_end_matches('/'))
        }
        let same_address = match (address(&self.address), address(&other.address)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, None) => true,
            _ => false,
        };
        same_address && self.thumbprint.eq_ignore_ascii_case(&other.thumbprint)
    }
}

/// Tentacle's AddOrUpdate: drops the entries for the same server as `entry`
/// (see [`TrustedOctopusServer::same_server`]) and appends `entry`.
pub fn add_or_update(servers: &mut Vec<TrustedOctopusServer>, entry: TrustedOctopusServer) {
    servers.retain(|existing| !existing.same_server(&entry));
    servers.push(entry);
}

/// The JSON Tentacle writes for `servers`.
pub(super) fn to_json(servers: &[TrustedOctopusServer]) -> String {
    serde_json::to_string(servers).expect("strings, options and a u8 always serialise to JSON")
}

/// Reads the JSON list, as Newtonsoft would: property names ignore case,
/// unknown properties are ignored, `null` is an empty list.
///
/// Never panics: the text may be anything (it is fuzzed).
pub(super) fn from_json(text: &str) -> Result<Vec<TrustedOctopusServer>, ConfigError> {
    let value: Value =
        serde_json::from_str(text).map_err(|source| ConfigError::TrustedServersJson { source })?;
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(problem(TrustedServerProblem::NotAList)),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| entry_from(i + 1, item).map_err(problem))
        .collect()
}

fn problem(problem: TrustedServerProblem) -> ConfigError {
    ConfigError::TrustedServers { problem }
}

fn entry_from(index: usize, item: &Value) -> Result<TrustedOctopusServer, TrustedServerProblem> {
    let Value::Object(fields) = item else {
        return Err(TrustedServerProblem::NotAnObject { index });
    };
    let thumbprint = text_field(index, fields, "Thumbprint")?
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or(TrustedServerProblem::NoThumbprint { index })?;
    Ok(TrustedOctopusServer {
        thumbprint,
        communication_style: style_field(index, fields)?,
        address: text_field(index, fields, "Address")?.map(str::to_owned),
        squid: text_field(index, fields, "Squid")?.map(str::to_owned),
        subscription_id: text_field(index, fields, "SubscriptionId")?.map(str::to_owned),
    })
}

/// A property by name: exact first, then ignoring case, as Newtonsoft matches.
fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn text_field<'a>(
    index: usize,
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, TrustedServerProblem> {
    match field(fields, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(TrustedServerProblem::NotText {
            index,
            field: name,
            value: other.to_string(),
        }),
    }
}

fn style_field(
    index: usize,
    fields: &Map<String, Value>,
) -> Result<CommunicationStyle, TrustedServerProblem> {
    let style = match field(fields, "CommunicationStyle") {
        None | Some(Value::Null) => Some(CommunicationStyle::None),
        Some(Value::Number(number)) => number.as_i64().and_then(CommunicationStyle::from_number),
        Some(Value::String(name)) => CommunicationStyle::from_name(name),
        Some(_) => None,
    };
    style.ok_or_else(|| TrustedServerProblem::CommunicationStyle {
        index,
        value: field(fields, "CommunicationStyle").map_or_else(String::new, Value::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6";

    #[test]
    fn writes_tentacles_exact_json() {
        let servers = [
            TrustedOctopusServer::polling(TP, "https://octo:10943", "poll://abc/"),
            TrustedOctopusServer::listening("X"),
        ];
        assert_eq!(
            to_json(&servers),
            concat!(
                r#"[{"Thumbprint":"77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6","CommunicationStyle":2,"#,
                r#""Address":"https://octo:10943","Squid":null,"SubscriptionId":"poll://abc/"},"#,
                r#"{"Thumbprint":"X","CommunicationStyle":1,"Address":null,"Squid":null,"SubscriptionId":null}]"#,
            )
        );
    }

    #[test]
    fn reads_what_it_writes() {
        let servers = vec![
            TrustedOctopusServer::polling(TP, "https://a:10943", "poll://abc/"),
            TrustedOctopusServer::listening(TP),
        ];
        assert_eq!(from_json(&to_json(&servers)).unwrap(), servers);
    }

    #[test]
    fn style_reads_from_a_number_or_a_name() {
        for (json, style) in [
            ("0", CommunicationStyle::None),
            ("1", CommunicationStyle::TentaclePassive),
            ("2", CommunicationStyle::TentacleActive),
            (r#""TentaclePassive""#, CommunicationStyle::TentaclePassive),
            (r#""tentacleactive""#, CommunicationStyle::TentacleActive),
            (r#""Listening""#, CommunicationStyle::TentaclePassive),
            (r#""POLLING""#, CommunicationStyle::TentacleActive),
            (r#""2""#, CommunicationStyle::TentacleActive),
        ] {
            let text = format!(r#"[{{"Thumbprint":"{TP}","CommunicationStyle":{json}}}]"#);
            let servers = from_json(&text).unwrap();
            assert_eq!(servers[0].communication_style, style, "{json}");
        }
    }

    #[test]
    fn property_names_ignore_case_and_unknown_ones_are_skipped() {
        let text = r#"[{"thumbprint":" ab ","communicationstyle":2,"ADDRESS":"https://a:1",
            "KubernetesTentacleCommunicationMode":"Polling"}]"#;
        let servers = from_json(text).unwrap();
        assert_eq!(servers[0].thumbprint, "ab", "thumbprints are trimmed");
        assert_eq!(servers[0].address.as_deref(), Some("https://a:1"));
        assert_eq!(servers[0].subscription_id, None);
    }

    #[test]
    fn null_is_an_empty_list() {
        assert!(from_json("null").unwrap().is_empty());
        assert!(from_json(" [ ] ").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_value() {
        let cases = [
            (r#"{"Thumbprint":"A"}"#, TrustedServerProblem::NotAList),
            (r#"[1]"#, TrustedServerProblem::NotAnObject { index: 1 }),
            (
                r#"[{"Thumbprint":"A"},{"Thumbprint":"  "}]"#,
                TrustedServerProblem::NoThumbprint { index: 2 },
            ),
            (
                r#"[{"Thumbprint":"A","CommunicationStyle":3}]"#,
                TrustedServerProblem::CommunicationStyle {
                    index: 1,
                    value: "3".into(),
                },
            ),
            (
                r#"[{"Thumbprint":"A","CommunicationStyle":"Ssh"}]"#,
                TrustedServerProblem::CommunicationStyle {
                    index: 1,
                    value: r#""Ssh""#.into(),
                },
            ),
            (
                r#"[{"Thumbprint":"A","Address":10943}]"#,
                TrustedServerProblem::NotText {
                    index: 1,
                    field: "Address",
                    value: "10943".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            match from_json(text) {
                Err(ConfigError::TrustedServers { problem }) => assert_eq!(problem, expected),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = from_json(r#"[{"Thumbprint":"A","CommunicationStyle":7}]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key Tentacle.Communication.TrustedOctopusServers entry 1: CommunicationStyle 7 \
             is not None (0), TentaclePassive (1, listening) or TentacleActive (2, polling)"
        );
    }

    #[test]
    fn bad_json_is_a_json_error() {
        let err = from_json("[{").unwrap_err();
        assert!(
            matches!(err, ConfigError::TrustedServersJson { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn add_or_update_replaces_the_same_server_and_appends() {
        let mut servers = vec![
            TrustedOctopusServer::polling(TP, "https://a:10943", "poll://one/"),
            TrustedOctopusServer::polling(TP, "https://b:10943", "poll://one/"),
            TrustedOctopusServer::listening(TP),
        ];
        let lower = TP.to_lowercase();
        add_or_update(
            &mut servers,
            TrustedOctopusServer::polling(&lower, "HTTPS://A:10943/", "poll://two/"),
        );
        let addresses: Vec<_> = servers.iter().map(|s| s.address.as_deref()).collect();
        assert_eq!(
            addresses,
            [Some("https://b:10943"), None, Some("HTTPS://A:10943/")]
        );
        // Both addresses None: the same server.
        add_or_update(&mut servers, TrustedOctopusServer::listening(&lower));
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[2].thumbprint, lower);
        // Another thumbprint: a new entry.
        add_or_update(&mut servers, TrustedOctopusServer::listening("OTHER"));
        assert_eq!(servers.len(), 4);
    }

    /// Damaged lists and deep nesting give errors, never panics (serde_json
    /// stops at 128 levels).
    #[test]
    fn never_panics_on_damaged_lists() {
        let good = to_json(&[
            TrustedOctopusServer::polling(TP, "https://a:10943", "poll://abc/"),
            TrustedOctopusServer::listening(TP),
        ]);
        for end in 0..good.len() {
            let _ = from_json(&good[..end]);
        }
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let specials = b"[]{}\":,0-9enul ";
        for _ in 0..2000 {
            let mut bytes = good.clone().into_bytes();
            for _ in 0..2 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let at = (seed >> 33) as usize % bytes.len();
                bytes[at] = specials[(seed >> 17) as usize % specials.len()];
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = from_json(&text);
            }
        }
        assert!(from_json(&"[".repeat(100_000)).is_err());
    }
}

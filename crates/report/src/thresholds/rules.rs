//! How a metric's conditions are written in `[thresholds]`: one condition, a
//! table with `abort_on_fail`, or a list of either (k6's forms).

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expression::{Condition, Selector};

/// One condition on a metric, and whether breaching it stops the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// `p(99) < 50`.
    pub condition: Condition,
    /// Stop the run as soon as the condition is breached (it still reports).
    pub abort_on_fail: bool,
    /// How long into the workload before `abort_on_fail` is looked at, so a
    /// run's first seconds cannot stop it.
    pub delay_abort_eval: Duration,
}

impl Rule {
    /// `condition`, which only fails the run at the end.
    pub fn new(condition: Condition) -> Self {
        Self {
            condition,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
        }
    }
}

/// A metric's conditions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules(pub Vec<Rule>);

/// The table form: `{ threshold = "p(99) < 50", abort_on_fail = true, delay_abort_eval = "10s" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    threshold: String,
    #[serde(default)]
    abort_on_fail: bool,
    #[serde(default, with = "humantime_serde")]
    delay_abort_eval: Option<Duration>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RuleVisitor)
    }
}

const EXPECTED_RULE: &str =
    "a condition such as \"p(99) < 50\", or { threshold = \"…\", abort_on_fail = true }";

struct RuleVisitor;

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = Rule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED_RULE)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Rule, E> {
        text.parse().map(Rule::new).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
        let table = RuleTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Rule {
            condition: table.threshold.parse().map_err(de::Error::custom)?,
            abort_on_fail: table.abort_on_fail,
            delay_abort_eval: table.delay_abort_eval.unwrap_or_default(),
        })
    }
}

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RulesVisitor;

        impl<'de> Visitor<'de> for RulesVisitor {
            type Value = Rules;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{EXPECTED_RULE}, or a list of them")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Rules, E> {
                RuleVisitor.visit_str(text).map(|rule| Rules(vec![rule]))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rules, A::Error> {
                RuleVisitor.visit_map(map).map(|rule| Rules(vec![rule]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rules, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element()? {
                    rules.push(rule);
                }
                if rules.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one condition"));
                }
                Ok(Rules(rules))
            }
        }

        deserializer.deserialize_any(RulesVisitor)
    }
}

/// Written back as it reads best: a condition's text, or the table when it
/// aborts; always a list.
impl Serialize for Rules {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Table {
                threshold: String,
                abort_on_fail: bool,
                #[serde(with = "humantime_serde")]
                delay_abort_eval: Duration,
            },
        }
        serializer.collect_seq(self.0.iter().map(|rule| {
            let threshold = rule.condition.to_string();
            if rule.abort_on_fail {
                Written::Table {
                    threshold,
                    abort_on_fail: true,
                    delay_abort_eval: rule.delay_abort_eval,
                }
            } else {
                Written::Text(threshold)
            }
        }))
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thresholds::expression::Aggregate;

    #[test]
    fn a_rule_is_a_string_a_table_or_a_list_and_is_written_back_as_read() {
        let one: Rules = serde_json::from_str(r#""p(99) < 50""#).unwrap();
        assert_eq!(one.0.len(), 1);
        assert_eq!(one.0[0].condition.aggregate, Aggregate::Percentile(99.0));
        let table: Rules = serde_json::from_str(
            r#"{"threshold": "rate < 2", "abort_on_fail": true, "delay_abort_eval": "10s"}"#,
        )
        .unwrap();
        assert!(table.0[0].abort_on_fail);
        assert_eq!(table.0[0].delay_abort_eval, Duration::from_secs(10));
        let list: Rules = serde_json::from_str(r#"["avg < 5", {"threshold": "max < 9"}]"#).unwrap();
        assert_eq!(list.0.len(), 2);
        let written = serde_json::to_string(&table).unwrap();
        assert_eq!(
            written,
            r#"[{"threshold":"rate < 2","abort_on_fail":true,"delay_abort_eval":"10s"}]"#
        );
        assert_eq!(serde_json::from_str::<Rules>(&written).unwrap(), table);
    }

    #[test]
    fn a_bad_rule_says_what_would_do() {
        for (text, says) in [
            ("3", "a condition such as"),
            ("[]", "at least one condition"),
            (r#""p99 < 3""#, "unknown aggregate"),
            (
                r#"{"threshold": "avg < 1", "abort": true}"#,
                "unknown field `abort`",
            ),
            (r#"{"abort_on_fail": true}"#, "missing field `threshold`"),
        ] {
            let error = serde_json::from_str::<Rules>(text).unwrap_err();
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }
}

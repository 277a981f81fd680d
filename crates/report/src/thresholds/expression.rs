//! k6's threshold expressions, for octopoll's figures: a metric with an
//! optional filter (`pickup_ms{node:node-2}`, `failed{reason:pickup-timeout}`)
//! and conditions on it (`p(99.9) < 200`, `rate < 0.5`, `count == 0`). Pure
//! parsers with errors that say what was expected.

use std::fmt;
use std::str::FromStr;

use octopoll_node::{FailReason, NodeId};

/// The keys of the thresholds table that are not metrics.
pub const FIXED_KEYS: [&str; 6] = [
    "coverage_min",
    "pickup_p99_ms",
    "failed_max",
    "lost_max",
    "full_mesh_after_fault_s",
    "listening_cluster_failed_max",
];

/// What a threshold reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Queued → collected, milliseconds.
    PickupMs,
    /// Scheduled → collected, milliseconds (coordinated omission counted).
    PickupFromScheduleMs,
    /// Queued → response of completed requests, milliseconds.
    EndToEndMs,
    /// Requests queued.
    Queued,
    /// Requests completed.
    Completed,
    /// Requests failed.
    Failed,
    /// Polling connections the nodes identified (TLS handshakes completed).
    Handshakes,
    /// Connections the nodes refused.
    Refused,
}

impl Metric {
    /// Every metric, in the order the docs list them.
    pub const ALL: [Metric; 8] = [
        Metric::PickupMs,
        Metric::PickupFromScheduleMs,
        Metric::EndToEndMs,
        Metric::Queued,
        Metric::Completed,
        Metric::Failed,
        Metric::Handshakes,
        Metric::Refused,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Metric::PickupMs => "pickup_ms",
            Metric::PickupFromScheduleMs => "pickup_from_schedule_ms",
            Metric::EndToEndMs => "end_to_end_ms",
            Metric::Queued => "queued",
            Metric::Completed => "completed",
            Metric::Failed => "failed",
            Metric::Handshakes => "handshakes",
            Metric::Refused => "refused",
        }
    }

    /// A latency (k6's trend), rather than a count.
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::PickupMs | Metric::PickupFromScheduleMs | Metric::EndToEndMs
        )
    }

    /// A count of requests, which `share` divides by the requests queued.
    fn counts_requests(self) -> bool {
        matches!(self, Metric::Completed | Metric::Failed)
    }
}

/// A metric and the part of it a threshold reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    /// The metric.
    pub metric: Metric,
    /// Only what was queued on (or, for connections, handled by) this node.
    pub node: Option<NodeId>,
    /// Only failures for this reason (`failed` only).
    pub reason: Option<FailReason>,
}

/// A selector or condition that does not parse: what was written and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct ExpressionError {
    /// As written.
    pub text: String,
    /// What was expected instead.
    pub why: String,
}

fn refuse<T>(text: &str, why: impl Into<String>) -> Result<T, ExpressionError> {
    Err(ExpressionError {
        text: text.to_owned(),
        why: why.into(),
    })
}

/// `pickup_ms`, `pickup_ms{node:node-2}`, `failed{reason:pickup-timeout,node:1}`.
impl FromStr for Selector {
    type Err = ExpressionError;

    fn from_str(text: &str) -> Result<Self, ExpressionError> {
        let (name, tags) = match text.split_once('{') {
            None => (text, None),
            Some((name, rest)) => match rest.strip_suffix('}') {
                Some(tags) => (name, Some(tags)),
                None => return refuse(text, "a filter ends with }"),
            },
        };
        let names = || {
            Metric::ALL
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(metric) = Metric::ALL.into_iter().find(|m| m.name() == name.trim()) else {
            return refuse(
                text,
                format!(
                    "unknown metric; one of {} (or a fixed key: {})",
                    names(),
                    FIXED_KEYS.join(", ")
                ),
            );
        };
        let mut selector = Selector {
            metric,
            node: None,
            reason: None,
        };
        for tag in tags.into_iter().flat_map(|t| t.split(',')) {
            let Some((key, value)) = tag.split_once(':') else {
                return refuse(text, format!("a filter is key:value, got {tag:?}"));
            };
            let value = value.trim();
            match key.trim() {
                "node" => {
                    let number = value.strip_prefix("node-").unwrap_or(value);
                    match number.parse::<u16>() {
                        Ok(n) if n >= 1 => selector.node = Some(NodeId(n)),
                        _ => return refuse(text, format!("node:node-N (N from 1), got {value:?}")),
                    }
                }
                "reason" if metric == Metric::Failed => match FailReason::named(value) {
                    Some(reason) => selector.reason = Some(reason),
                    None => {
                        let reasons: Vec<&str> =
                            FailReason::ALL.iter().map(|r| r.as_str()).collect();
                        return refuse(
                            text,
                            format!("unknown reason; one of {}", reasons.join(", ")),
                        );
                    }
                },
                "reason" => return refuse(text, "only failed has a reason"),
                other => return refuse(text, format!("unknown filter {other:?}; node or reason")),
            }
        }
        Ok(selector)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric.name())?;
        let tags: Vec<String> = self
            .node
            .map(|n| format!("node:{n}"))
            .into_iter()
            .chain(self.reason.map(|r| format!("reason:{r}")))
            .collect();
        if !tags.is_empty() {
            write!(f, "{{{}}}", tags.join(","))?;
        }
        Ok(())
    }
}

/// What a condition takes of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregate {
    /// A percentile of a latency, above 0 and at most 100: `p(99.9)`.
    Percentile(f64),
    /// The mean of a latency.
    Avg,
    /// The median of a latency (`p(50)`).
    Med,
    /// The least of a latency.
    Min,
    /// The most of a latency.
    Max,
    /// How many: requests measured, or counted.
    Count,
    /// How many per second of the workload.
    Rate,
    /// Of the requests queued, the share (0–1) this count is.
    Share,
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Percentile(p) => write!(f, "p({p})"),
            Aggregate::Avg => f.write_str("avg"),
            Aggregate::Med => f.write_str("med"),
            Aggregate::Min => f.write_str("min"),
            Aggregate::Max => f.write_str("max"),
            Aggregate::Count => f.write_str("count"),
            Aggregate::Rate => f.write_str("rate"),
            Aggregate::Share => f.write_str("share"),
        }
    }
}

/// How the figure compares with the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Whether `actual` meets the condition against `limit`.
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
            Op::Ne => actual != limit,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// One condition: `p(99) < 50`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// What is taken of the metric.
    pub aggregate: Aggregate,
    /// How it compares.
    pub op: Op,
    /// With what.
    pub limit: f64,
}

/// `p(99.9) < 200`, `avg<=3`, `count == 0`, `rate < 0.5`, `share < 0.01`.
impl FromStr for Condition {
    type Err = ExpressionError;

    fn from_str(text: &str) -> Result<Self, ExpressionError> {
        const OPS: [(&str, Op); 6] = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let Some((at, token, op)) = OPS
            .iter()
            .filter_map(|&(token, op)| text.find(token).map(|at| (at, token, op)))
            .min_by_key(|&(at, token, _)| (at, std::cmp::Reverse(token.len())))
        else {
            return refuse(text, "expected AGGREGATE OP NUMBER, e.g. \"p(99) < 50\"");
        };
        let (left, right) = (text[..at].trim(), text[at + token.len()..].trim());
        let limit: f64 = match right.parse() {
            Ok(limit) if f64::is_finite(limit) => limit,
            _ => return refuse(text, format!("{right:?} is not a number")),
        };
        let aggregate = match left {
            "avg" => Aggregate::Avg,
            "med" => Aggregate::Med,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "count" => Aggregate::Count,
            "rate" => Aggregate::Rate,
            "share" => Aggregate::Share,
            _ => {
                let inner = left
                    .strip_prefix("p(")
                    .and_then(|rest| rest.strip_suffix(')'));
                match inner.map(|p| p.trim().parse::<f64>()) {
                    Some(Ok(p)) if p > 0.0 && p <= 100.0 => Aggregate::Percentile(p),
                    Some(_) => return refuse(text, "a percentile is p(N), N above 0, at most 100"),
                    None => {
                        return refuse(
                            text,
                            format!(
                                "unknown aggregate {left:?}; p(N), avg, med, min, max, count, rate or share"
                            ),
                        )
                    }
                }
            }
        };
        Ok(Condition {
            aggregate,
            op,
            limit,
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.aggregate, self.op.as_str(), self.limit)
    }
}

impl Selector {
    /// Whether `condition` can be taken of this metric: percentiles, avg, med,
    /// min and max of latencies; rate of counts; share of completed and failed.
    pub fn admits(&self, condition: &Condition) -> Result<(), String> {
        let metric = self.metric;
        let fits = match condition.aggregate {
            Aggregate::Count => true,
            Aggregate::Rate => !metric.is_latency(),
            Aggregate::Share => metric.counts_requests(),
            _ => metric.is_latency(),
        };
        if fits {
            Ok(())
        } else if metric.is_latency() {
            Err(format!(
                "{metric} is a latency: p(N), avg, med, min, max or count",
                metric = metric.name()
            ))
        } else if condition.aggregate == Aggregate::Share {
            Err("share is of completed or failed requests".into())
        } else {
            Err(format!("{} is a count: count or rate", metric.name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_read_like_k6_and_print_back_the_same() {
        for text in [
            "pickup_ms",
            "end_to_end_ms{node:node-2}",
            "failed{node:node-1,reason:pickup-timeout}",
            "handshakes{node:node-3}",
        ] {
            let selector: Selector = text.parse().unwrap();
            assert_eq!(selector.to_string(), text);
        }
        let short: Selector = "failed{ reason: node-lost , node:2 }".parse().unwrap();
        assert_eq!(short.node, Some(NodeId(2)));
        assert_eq!(short.reason, Some(FailReason::NodeLost));
    }

    #[test]
    fn a_bad_selector_says_what_would_do() {
        for (text, says) in [
            ("pickup_p99", "unknown metric; one of pickup_ms"),
            ("pickup_ms{node:0}", "node:node-N"),
            ("pickup_ms{node:node-2", "ends with }"),
            ("pickup_ms{reason:node-lost}", "only failed has a reason"),
            (
                "failed{reason:gone}",
                "unknown reason; one of pickup-timeout",
            ),
            ("failed{zone}", "a filter is key:value"),
            ("failed{zone:eu}", "unknown filter \"zone\""),
        ] {
            let error = text.parse::<Selector>().unwrap_err();
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn conditions_parse_with_or_without_spaces() {
        let c: Condition = "p(99.9) < 200".parse().unwrap();
        assert_eq!(
            c,
            Condition {
                aggregate: Aggregate::Percentile(99.9),
                op: Op::Lt,
                limit: 200.0
            }
        );
        assert_eq!(c.to_string(), "p(99.9) < 200");
        let c: Condition = "avg<=3.5".parse().unwrap();
        assert_eq!((c.aggregate, c.op, c.limit), (Aggregate::Avg, Op::Le, 3.5));
        let c: Condition = "count==0".parse().unwrap();
        assert_eq!((c.aggregate, c.op), (Aggregate::Count, Op::Eq));
        let c: Condition = "rate >= 10".parse().unwrap();
        assert_eq!((c.aggregate, c.op), (Aggregate::Rate, Op::Ge));
        assert!(Op::Ne.holds(1.0, 0.0) && !Op::Ne.holds(0.0, 0.0));
    }

    #[test]
    fn a_bad_condition_says_what_would_do() {
        for (text, says) in [
            ("p99 < 50", "unknown aggregate \"p99\""),
            ("p(0) < 50", "a percentile is p(N)"),
            ("p(101) < 50", "a percentile is p(N)"),
            ("avg < fast", "\"fast\" is not a number"),
            ("avg < inf", "is not a number"),
            ("avg 50", "expected AGGREGATE OP NUMBER"),
        ] {
            let error = text.parse::<Condition>().unwrap_err();
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn latencies_take_percentiles_and_counts_take_rates() {
        let pickup: Selector = "pickup_ms".parse().unwrap();
        let failed: Selector = "failed".parse().unwrap();
        let handshakes: Selector = "handshakes".parse().unwrap();
        let p99: Condition = "p(99) < 1".parse().unwrap();
        let rate: Condition = "rate < 1".parse().unwrap();
        let share: Condition = "share < 0.01".parse().unwrap();
        assert!(pickup.admits(&p99).is_ok());
        assert!(pickup.admits(&rate).unwrap_err().contains("is a latency"));
        assert!(failed.admits(&rate).is_ok() && failed.admits(&share).is_ok());
        assert!(failed.admits(&p99).unwrap_err().contains("is a count"));
        assert!(handshakes
            .admits(&share)
            .unwrap_err()
            .contains("share is of completed or failed"));
    }
}

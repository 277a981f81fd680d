//! One threshold's outcome: the limit, the figure measured, and by how much it missed.

use std::fmt;

use serde::Serialize;

/// One threshold's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The key, e.g. `pickup_p99_ms` or `pickup_ms{node:node-2}`.
    pub name: String,
    /// The condition on a metric (`p(99) < 50`); `None` for a fixed key, whose
    /// limit says it all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The limit set.
    pub limit: f64,
    /// The figure measured; `None` when it never happened (a mesh that never healed).
    pub actual: Option<f64>,
    /// Whether the figure is within the limit.
    pub passed: bool,
    /// By how much it missed (0 when passed; infinite when it never happened).
    pub by: f64,
}

impl Verdict {
    /// A figure that must be at least `limit`.
    pub fn at_least(name: &'static str, limit: f64, actual: Option<f64>) -> Self {
        let by = actual.map_or(f64::INFINITY, |a| (limit - a).max(0.0));
        Self {
            name: name.to_owned(),
            condition: None,
            limit,
            actual,
            passed: actual.is_some_and(|a| a >= limit),
            by,
        }
    }

    /// A figure that must be at most `limit`.
    pub fn at_most(name: &'static str, limit: f64, actual: Option<f64>) -> Self {
        let by = actual.map_or(f64::INFINITY, |a| (a - limit).max(0.0));
        Self {
            name: name.to_owned(),
            condition: None,
            limit,
            actual,
            passed: actual.is_some_and(|a| a <= limit),
            by,
        }
    }

    /// What was asked: `coverage_min 0.99`, `pickup_ms p(99) < 50`.
    pub fn asked(&self) -> String {
        match &self.condition {
            Some(condition) => format!("{} {condition}", self.name),
            None => format!("{} {}", self.name, round(self.limit)),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let absent = if self.condition.is_some() {
            "nothing measured"
        } else {
            "never"
        };
        let actual = self
            .actual
            .map_or(absent.to_string(), |a| format!("{}", round(a)));
        let asked = self.asked();
        if self.passed {
            write!(f, "{asked}: {actual} (passed)")
        } else if self.by.is_infinite() || self.by == 0.0 {
            write!(f, "{asked}: {actual} (BREACHED)")
        } else {
            write!(f, "{asked}: {actual} (BREACHED by {})", round(self.by))
        }
    }
}

/// Three decimals at most, no trailing zeros.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

//! One threshold's outcome: the limit, the figure measured, and by how much it missed.

use std::fmt;

use serde::Serialize;

/// One threshold's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The key, e.g. `pickup_p99_ms`.
    pub name: &'static str,
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
            name,
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
            name,
            limit,
            actual,
            passed: actual.is_some_and(|a| a <= limit),
            by,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actual = self
            .actual
            .map_or("never".to_string(), |a| format!("{}", round(a)));
        if self.passed {
            write!(f, "{} {}: {actual} (passed)", self.name, round(self.limit))
        } else if self.by.is_infinite() {
            write!(
                f,
                "{} {}: {actual} (BREACHED)",
                self.name,
                round(self.limit)
            )
        } else {
            write!(
                f,
                "{} {}: {actual} (BREACHED by {})",
                self.name,
                round(self.limit),
                round(self.by)
            )
        }
    }
}

/// Three decimals at most, no trailing zeros.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

//! Two runs' JSON reports side by side: how each headline figure moved, and
//! limits on how much worse a figure may get than in the baseline
//! (`pickup_ms.p99=10%`), so CI can fail a change that made a run slower.
//! Reports are read as JSON values by dotted path, so a report written by an
//! older octopoll still compares on the figures it has.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Latencies, failures, churn.
    Lower,
    /// Throughput, completions, coverage.
    Higher,
}

/// The figures `compare` shows, in order, and which way each improves. A
/// limit may name any other number in the report; it improves downwards.
pub const FIGURES: [(&str, Better); 18] = [
    ("requests.per_s", Better::Higher),
    ("requests.completed", Better::Higher),
    ("requests.failed", Better::Lower),
    ("requests.lost", Better::Lower),
    ("coverage", Better::Higher),
    ("full_coverage_ms", Better::Lower),
    ("pickup_ms.p50", Better::Lower),
    ("pickup_ms.p95", Better::Lower),
    ("pickup_ms.p99", Better::Lower),
    ("pickup_ms.p999", Better::Lower),
    ("pickup_from_schedule_ms.p99", Better::Lower),
    ("end_to_end_ms.p50", Better::Lower),
    ("end_to_end_ms.p95", Better::Lower),
    ("end_to_end_ms.p99", Better::Lower),
    ("end_to_end_ms.p999", Better::Lower),
    ("churn.handshakes", Better::Lower),
    ("churn.refused", Better::Lower),
    ("churn.agent_failures", Better::Lower),
];

/// Which way `path` improves.
pub fn better(path: &str) -> Better {
    FIGURES
        .iter()
        .find(|(figure, _)| *figure == path)
        .map_or(Better::Lower, |(_, better)| *better)
}

/// The number at a dotted `path` of a JSON report, if there is one.
pub fn figure(report: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(report, |value, key| value.get(key))
        .and_then(Value::as_f64)
}

/// How one figure moved.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Dotted path in the report.
    pub path: String,
    /// In the baseline.
    pub base: f64,
    /// In the new run.
    pub new: f64,
    /// How much worse, as a share of the baseline: negative is better, 0 the
    /// same, infinite worse from a baseline of 0.
    pub worse_by: f64,
}

impl Change {
    /// `path` in both reports, if both have it.
    pub fn of(base: &Value, new: &Value, path: &str) -> Option<Self> {
        let (b, n) = (figure(base, path)?, figure(new, path)?);
        let worse = match better(path) {
            Better::Lower => n - b,
            Better::Higher => b - n,
        };
        let worse_by = if worse == 0.0 {
            0.0
        } else if b == 0.0 {
            f64::INFINITY.copysign(worse)
        } else {
            worse / b.abs()
        };
        Some(Self {
            path: path.to_owned(),
            base: b,
            new: n,
            worse_by,
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = match self.worse_by {
            0.0 => "same".to_owned(),
            w if w.is_infinite() && w > 0.0 => "worse (from 0)".to_owned(),
            w if w.is_infinite() => "better (from 0)".to_owned(),
            w if w > 0.0 => format!("{:.1} % worse", w * 100.0),
            w => format!("{:.1} % better", -w * 100.0),
        };
        write!(
            f,
            "{:<30} {:>12} {:>12}   {change}",
            self.path,
            short(self.base),
            short(self.new)
        )
    }
}

fn short(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

/// A limit on a figure: `pickup_ms.p99=10%`, at most 10 % worse than the
/// baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    /// Dotted path in the report.
    pub path: String,
    /// How much worse it may get, as a share (0.1 for 10 %).
    pub max_worse: f64,
}

/// A limit that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected FIGURE=PERCENT, e.g. pickup_ms.p99=10%")]
pub struct BadLimit(pub String);

impl FromStr for Limit {
    type Err = BadLimit;

    fn from_str(text: &str) -> Result<Self, BadLimit> {
        let bad = || BadLimit(text.to_owned());
        let (path, percent) = text.split_once('=').ok_or_else(bad)?;
        let percent = percent.trim().trim_end_matches('%').trim();
        let max: f64 = percent.parse().map_err(|_| bad())?;
        if path.trim().is_empty() || !max.is_finite() || max < 0.0 {
            return Err(bad());
        }
        Ok(Self {
            path: path.trim().to_owned(),
            max_worse: max / 100.0,
        })
    }
}

/// A limit checked: the change it was checked on (`None`: a report lacks the
/// figure, a breach) and whether it held.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitVerdict {
    /// The limit.
    pub limit: Limit,
    /// The figure's change.
    pub change: Option<Change>,
    /// Whether it held.
    pub passed: bool,
}

impl fmt::Display for LimitVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asked = format!(
            "{} at most {} % worse",
            self.limit.path,
            short(self.limit.max_worse * 100.0)
        );
        let outcome = if self.passed { "passed" } else { "BREACHED" };
        match &self.change {
            None => write!(f, "{asked}: not in both reports ({outcome})"),
            Some(change) => write!(
                f,
                "{asked}: {} → {} ({outcome})",
                short(change.base),
                short(change.new)
            ),
        }
    }
}

/// The headline figures of both reports, and each limit checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Every figure of [`FIGURES`] both reports have.
    pub changes: Vec<Change>,
    /// Each limit, checked.
    pub limits: Vec<LimitVerdict>,
    /// The two runs ran different scenarios (their embedded scenarios differ).
    pub different_scenarios: bool,
}

/// Compares `new` with the baseline `base` under `limits`.
pub fn compare(base: &Value, new: &Value, limits: &[Limit]) -> Comparison {
    let changes = FIGURES
        .iter()
        .filter_map(|(path, _)| Change::of(base, new, path))
        .collect();
    let limits = limits
        .iter()
        .map(|limit| {
            let change = Change::of(base, new, &limit.path);
            let passed = change
                .as_ref()
                .is_some_and(|c| c.worse_by <= limit.max_worse);
            LimitVerdict {
                limit: limit.clone(),
                change,
                passed,
            }
        })
        .collect();
    let scenario = |report: &Value| report.get("scenario").cloned();
    Comparison {
        changes,
        limits,
        different_scenarios: scenario(base) != scenario(new),
    }
}

impl Comparison {
    /// Whether every limit held.
    pub fn passed(&self) -> bool {
        self.limits.iter().all(|l| l.passed)
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.different_scenarios {
            writeln!(
                f,
                "  note: the runs' scenarios differ; the figures may not be comparable"
            )?;
        }
        writeln!(
            f,
            "  {:<30} {:>12} {:>12}   change",
            "figure", "base", "new"
        )?;
        for change in &self.changes {
            writeln!(f, "  {change}")?;
        }
        for limit in &self.limits {
            writeln!(f, "  limit    {limit}")?;
        }
        if !self.limits.is_empty() {
            let breached = self.limits.iter().filter(|l| !l.passed).count();
            let verdict = if breached == 0 {
                format!("PASSED: {0} of {0} limits held", self.limits.len())
            } else {
                format!(
                    "FAILED: {breached} of {} limits breached",
                    self.limits.len()
                )
            };
            writeln!(f, "  verdict  {verdict}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"scenario": "a", "requests": {"per_s": 20.0, "failed": 0, "completed": 100},
               "pickup_ms": {"p99": 2.0}, "coverage": 1.0})
    }

    #[test]
    fn a_figure_is_worse_the_way_it_should_not_go() {
        let new = json!({"scenario": "a", "requests": {"per_s": 15.0, "failed": 3, "completed": 100},
                         "pickup_ms": {"p99": 1.0}, "coverage": 1.0});
        let per_s = Change::of(&base(), &new, "requests.per_s").unwrap();
        assert_eq!(per_s.worse_by, 0.25, "throughput down a quarter");
        let p99 = Change::of(&base(), &new, "pickup_ms.p99").unwrap();
        assert_eq!(p99.worse_by, -0.5, "latency halved");
        let failed = Change::of(&base(), &new, "requests.failed").unwrap();
        assert!(failed.worse_by.is_infinite() && failed.worse_by > 0.0);
        assert_eq!(Change::of(&base(), &new, "coverage").unwrap().worse_by, 0.0);
        assert_eq!(Change::of(&base(), &new, "churn.handshakes"), None);
        assert!(p99.to_string().contains("50.0 % better"), "{p99}");
    }

    #[test]
    fn limits_hold_or_breach_and_a_missing_figure_breaches() {
        let new = json!({"scenario": "b", "requests": {"per_s": 19.0}, "pickup_ms": {"p99": 2.3}});
        let limits: Vec<Limit> = [
            "pickup_ms.p99=10%",
            "requests.per_s = 5",
            "churn.refused=0%",
        ]
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
        let comparison = compare(&base(), &new, &limits);
        let passed: Vec<bool> = comparison.limits.iter().map(|l| l.passed).collect();
        assert_eq!(passed, [false, true, false]);
        assert!(comparison.different_scenarios);
        assert!(!comparison.passed());
        let text = comparison.to_string();
        assert!(
            text.contains("limit    pickup_ms.p99 at most 10 % worse: 2 → 2.3 (BREACHED)"),
            "{text}"
        );
        assert!(
            text.contains("churn.refused at most 0 % worse: not in both reports (BREACHED)"),
            "{text}"
        );
        assert!(
            text.contains("verdict  FAILED: 2 of 3 limits breached"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_limit_says_what_is_expected() {
        for bad in [
            "pickup_ms.p99",
            "=10%",
            "pickup_ms.p99=fast",
            "x=-5%",
            "x=inf",
        ] {
            let error = bad.parse::<Limit>().unwrap_err();
            assert!(
                error.to_string().contains("expected FIGURE=PERCENT"),
                "{bad}: {error}"
            );
        }
        assert_eq!("a.b=2.5%".parse::<Limit>().unwrap().max_worse, 0.025);
    }
}

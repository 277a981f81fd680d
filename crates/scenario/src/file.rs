//! Scenario files: a run written down as TOML — topology, load, faults over time,
//! pass/fail thresholds — so one command runs it and CI gets an exit code.
//!
//! Values come in layers: the built-in default (`scenarios/default.toml`, compiled
//! in), then the scenario file, then the command line's flags. A key unknown to
//! the schema, a value of the wrong type, or an impossible value (0 nodes, a fault
//! after the end, a fault on node 7 of 3) is refused before anything starts, with
//! the file, line and key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use octopoll_agent::BackoffStrategy;
use octopoll_node::QueueMode;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::fault::FaultKeys;
use crate::workload::Mix;
use octopoll_fleet::process_args::KeyTypeName;
use octopoll_lab::topology::Topology;
use octopoll_report::thresholds::Thresholds;

/// The built-in default scenario: what `octopoll run` runs with no file.
pub const DEFAULT_SCENARIO: &str = include_str!("../../../scenarios/default.toml");

/// Most agents a run has. Past what one process holds (each polling connection
/// costs a descriptor at both ends, and a process may hold 20,000 here), a run
/// splits itself over processes; past what one node process holds, it is refused.
pub const MAX_AGENTS: usize = 100_000;
/// Most nodes.
pub const MAX_NODES: u16 = 64;

/// A scenario as written: every key optional, so files and flags can be layered.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// A short name for reports.
    pub name: Option<String>,
    /// What the scenario shows.
    pub description: Option<String>,
    /// Seed for agent ids, request choice, jitter and `random` fault targets.
    pub seed: Option<u64>,
    /// How long to queue work.
    #[serde(default, with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// How long to wait for unfinished requests after the workload.
    #[serde(default, with = "humantime_serde::option")]
    pub drain: Option<Duration>,
    /// How long to wait for every polling connection before the workload.
    #[serde(default, with = "humantime_serde::option")]
    pub mesh_timeout: Option<Duration>,
    /// Multiplies `duration` and every fault's `at` and `duration` (0.25 runs a
    /// scenario in a quarter of the time).
    pub time_scale: Option<f64>,
    /// Agent processes: 0 keeps the run in this process; absent, the run decides
    /// by the open-file limit.
    pub processes: Option<usize>,
    /// The nodes.
    #[serde(default)]
    pub cluster: ClusterKeys,
    /// Bounds on what a peer can make a node hold or do.
    #[serde(default)]
    pub limits: octopoll_fleet::limits::LimitKeys,
    /// The agents.
    #[serde(default)]
    pub agents: AgentKeys,
    /// The work queued.
    #[serde(default)]
    pub workload: WorkloadKeys,
    /// Faults over time (a later layer's list replaces an earlier one's).
    pub faults: Option<Vec<FaultKeys>>,
    /// The docs' clustered listening Tentacle, failed over during the run.
    #[serde(default)]
    pub listening_cluster: crate::listening_keys::ListeningClusterKeys,
    /// Pass/fail limits.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Where the results go.
    #[serde(default)]
    pub output: OutputKeys,
}

/// `[output]`: the run's results and live views.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputKeys {
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Write the per-second time series as CSV here.
    pub csv: Option<PathBuf>,
    /// Write the self-contained HTML report with plots here.
    pub html: Option<PathBuf>,
    /// Write the thresholds and invariants as JUnit XML here, for CI.
    pub junit: Option<PathBuf>,
    /// No live progress.
    pub quiet: Option<bool>,
    /// Serve the control API here during the run.
    pub control: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics on `/metrics` here during the run.
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[cluster]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterKeys {
    /// Node count.
    pub nodes: Option<u16>,
    /// How agents reach the nodes.
    pub topology: Option<Topology>,
    /// `per-node` or `shared`.
    pub queue: Option<QueueMode>,
    /// Address of node 1.
    pub bind: Option<IpAddr>,
    /// Comms port of node 1 (0: free ports).
    pub comms_port: Option<u16>,
    /// API port of node 1 (0: free ports).
    pub api_port: Option<u16>,
    /// Long-poll wait before the null request.
    #[serde(default, with = "humantime_serde::option")]
    pub long_poll: Option<Duration>,
    /// A request nobody collects fails after this.
    #[serde(default, with = "humantime_serde::option")]
    pub pickup_timeout: Option<Duration>,
    /// How long a stopping node lets exchanges in flight finish.
    #[serde(default, with = "humantime_serde::option")]
    pub node_drain: Option<Duration>,
    /// The HAProxy binary.
    pub haproxy: Option<PathBuf>,
    /// Put the fault proxy between the agents and every node even without network
    /// faults (network faults imply it).
    pub chaos: Option<bool>,
    /// Most TLS handshakes each node runs at once.
    pub max_concurrent_handshakes: Option<usize>,
    /// The Redis that node processes share their registry through (runs split
    /// over processes); absent, octopoll starts its own.
    pub redis: Option<String>,
    /// The Redis queue: the most a node waits, at random, before dropping a
    /// connection whose queue read failed (Halibut: 30 s).
    #[serde(default, with = "humantime_serde::option")]
    pub redis_drop_delay: Option<Duration>,
}

/// `[agents]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKeys {
    /// Agent count.
    pub count: Option<usize>,
    /// `ecdsa` or `rsa`.
    pub key_type: Option<KeyTypeName>,
    /// Polling connections per node.
    pub connections_per_node: Option<usize>,
    /// Reconnect strategy.
    pub backoff: Option<BackoffStrategy>,
    /// Shortest reconnect delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_min: Option<Duration>,
    /// Longest reconnect delay.
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_max: Option<Duration>,
    /// First connections per second over the whole swarm (0: all at once).
    pub ramp: Option<f64>,
}

/// `[workload]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadKeys {
    /// Requests per second over the cluster.
    pub rate: Option<f64>,
    /// Request kinds and weights.
    pub mix: Option<Mix>,
    /// Shortest simulated script run time.
    #[serde(default, with = "humantime_serde::option")]
    pub min_script_time: Option<Duration>,
    /// Longest simulated script run time.
    #[serde(default, with = "humantime_serde::option")]
    pub max_script_time: Option<Duration>,
    /// Bytes of text in each echo request.
    pub payload_bytes: Option<usize>,
    /// Bytes in each upload's data stream.
    pub stream_bytes: Option<usize>,
}

/// A scenario's text and where it came from, for error messages.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file name as the user gave it (or `built-in default`).
    pub name: String,
    /// Its text.
    pub text: String,
}

impl Source {
    /// `text`, named `name` in errors.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The file at `path`.
    pub fn read(path: &Path) -> Result<Self, ReadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReadError {
            path: path.to_owned(),
            source,
        })?;
        Ok(Source::new(path.display().to_string(), text))
    }

    /// A TOML error in this text, with its line, key and a hint where one helps.
    pub(crate) fn error(&self, error: &toml::de::Error) -> ScenarioError {
        let line = error.span().map(|span| line_at(&self.text, span.start));
        let location = match line {
            Some(line) => format!("{}:{line}", self.name),
            None => self.name.clone(),
        };
        let mut error = ScenarioError::from_toml(error);
        error.location = location;
        // The full path of the key on the error's line (`cluster.nodez`), where
        // the document parses that far; else the key the line starts with.
        let on_line = line.and_then(|line| {
            let lines = key_lines(&self.text)?;
            let deepest = lines
                .into_iter()
                .filter(|(_, l)| *l == line)
                .map(|(key, _)| key);
            deepest.max_by_key(|key| key.len())
        });
        if let Some(key) = on_line.or_else(|| line.and_then(|l| key_on_line(&self.text, l))) {
            error.key = key;
        }
        error
    }
}

/// The line of every key and array element in `text` (`cluster.nodes`,
/// `faults[1]`, `faults[1].target`), if it parses as TOML.
pub(crate) fn key_lines(text: &str) -> Option<BTreeMap<String, usize>> {
    fn table(table: &DeTable<'_>, prefix: &str, text: &str, lines: &mut BTreeMap<String, usize>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            lines.insert(path.clone(), line_at(text, key.span().start));
            inside(value, &path, text, lines);
        }
    }
    fn inside(
        value: &Spanned<DeValue<'_>>,
        path: &str,
        text: &str,
        lines: &mut BTreeMap<String, usize>,
    ) {
        match value.get_ref() {
            DeValue::Table(t) => table(t, path, text, lines),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    lines.insert(path.clone(), line_at(text, item.span().start));
                    inside(item, &path, text, lines);
                }
            }
            _ => {}
        }
    }
    let document = DeTable::parse(text).ok()?;
    let mut lines = BTreeMap::new();
    table(document.get_ref(), "", text, &mut lines);
    Some(lines)
}

/// A scenario refused before anything started.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {key}: {message}")]
pub struct ScenarioError {
    /// `file:line`, or the flag the value came from.
    pub location: String,
    /// The key, e.g. `cluster.nodes` or `faults[2].target`.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ScenarioError {
    /// A schema error (unknown key, wrong type) with a hint where one helps;
    /// the location is the caller's to fill in.
    fn from_toml(error: &toml::de::Error) -> Self {
        let mut message = error.message().trim().to_string();
        let key = key_in_message(&message).unwrap_or_else(|| "(file)".into());
        if let Some(hint) = hint(&message) {
            message = format!("{message}; {hint}");
        }
        ScenarioError {
            location: String::new(),
            key,
            message,
        }
    }
}

/// A file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading scenario {path}")]
pub struct ReadError {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A scenario file that could not be read, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading it failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Its text is not a valid scenario.
    #[error(transparent)]
    Invalid(#[from] ScenarioError),
}

impl ScenarioFile {
    /// Parses `source` alone, refusing unknown keys and wrong types with file,
    /// line and key. Runs layer files with [`Layers`](crate::layers::Layers).
    pub fn parse(source: &Source) -> Result<Self, ScenarioError> {
        toml::from_str(&source.text).map_err(|error| source.error(&error))
    }

    /// A merged table as a scenario (the location is left for the caller).
    pub(crate) fn deserialize_table(table: toml::Table) -> Result<Self, ScenarioError> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|error| ScenarioError::from_toml(&error))
    }
}

/// What would fix a schema error: the known key nearest a misspelt one, a unit
/// for a bare number where a duration goes.
fn hint(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (wrong, expected) = rest.split_once('`')?;
        let nearest = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|known| (strsim::damerau_levenshtein(wrong, known), known))
            .min()?;
        let close = nearest.0 <= (wrong.len() / 3).max(2);
        return close.then(|| format!("did you mean `{}`?", nearest.1));
    }
    if message.ends_with("expected a duration") {
        let number = message.split('`').nth(1)?;
        return Some(format!(
            "a duration needs a unit and quotes, e.g. \"{number}s\" or \"{number}ms\""
        ));
    }
    None
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key a TOML error message names (`unknown field `nodez``).
fn key_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    message
        .starts_with("unknown field")
        .then(|| message[start..end].to_string())
}

/// The key on 1-based `line`, if the line is `key = value`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    Some(key.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScenarioFile, ScenarioError> {
        ScenarioFile::parse(&Source::new("test.toml", text))
    }

    #[test]
    fn an_unknown_key_names_the_file_line_and_key_and_suggests_the_right_one() {
        let error = parse("seed = 3\n[cluster]\nnodez = 3\n").unwrap_err();
        assert_eq!(error.location, "test.toml:3");
        assert_eq!(error.key, "cluster.nodez");
        assert!(
            error.message.starts_with("unknown field `nodez`"),
            "{error}"
        );
        assert!(error.message.ends_with("did you mean `nodes`?"), "{error}");
        let far = parse("[agents]\nbananas = 1\n").unwrap_err();
        assert!(!far.message.contains("did you mean"), "{far}");
        let top = parse("duratoin = \"5s\"\n").unwrap_err();
        assert_eq!(top.key, "duratoin");
        assert!(top.message.ends_with("did you mean `duration`?"), "{top}");
    }

    #[test]
    fn a_wrong_type_names_the_file_line_and_key() {
        let error = parse("[cluster]\nnodes = \"three\"\n").unwrap_err();
        assert_eq!(error.location, "test.toml:2");
        assert_eq!(error.key, "cluster.nodes");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[test]
    fn a_bare_number_for_a_duration_suggests_a_unit() {
        let error = parse("seed = 1\nduration = 5\n").unwrap_err();
        assert_eq!(
            (error.location.as_str(), error.key.as_str()),
            ("test.toml:2", "duration")
        );
        assert!(error.message.ends_with(r#"e.g. "5s" or "5ms""#), "{error}");
        let nested = parse("[cluster]\nlong_poll = 2.5\n").unwrap_err();
        assert_eq!(nested.key, "cluster.long_poll");
        assert!(nested.message.contains(r#""2.5s""#), "{nested}");
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let error = parse("seed = 1\n[cluster\nnodes = 2\n").unwrap_err();
        assert_eq!(error.location, "test.toml:2");
    }
}

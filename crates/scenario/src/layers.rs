//! A run's configuration in layers: the built-in default, then scenario files,
//! then the command line's flags, each key replacing the one below it. The
//! layers are merged as TOML tables, so a new key is one field of
//! [`ScenarioFile`] and nothing else; and every value remembers where it came
//! from, so an error names the file and line, or the flag, that set it.
//!
//! ```
//! use octopoll_scenario::layers::Layers;
//! use octopoll_scenario::file::Source;
//!
//! let mut layers = Layers::new();
//! layers.file(&Source::new("quick.toml", "duration = \"5s\"\n[cluster]\nnodes = 2\n"))?;
//! layers.flag("--nodes", "cluster.nodes", Some(4))?;
//! let config = layers.resolve()?;
//! assert_eq!(config.lab.cluster.nodes, 4);
//! assert_eq!(config.duration, std::time::Duration::from_secs(5));
//! assert_eq!(layers.origin("cluster.nodes").to_string(), "--nodes");
//! assert_eq!(layers.origin("duration").to_string(), "quick.toml:1");
//!
//! // A value no layer could hold is blamed on the layer that set it.
//! layers.file(&Source::new("broken.toml", "cluster.nodes = 0\n"))?;
//! let error = layers.resolve().unwrap_err();
//! assert_eq!(error.to_string(), "broken.toml:1: cluster.nodes: 0 nodes: a cluster has 1 to 64");
//! # Ok::<(), octopoll_scenario::file::ScenarioError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use toml::{Table, Value};

use crate::file::{key_lines, LoadError, ScenarioError, ScenarioFile, Source};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `scenarios/default.toml`, compiled in.
    Default,
    /// A line of a scenario file.
    File {
        /// The file as the user named it.
        name: String,
        /// 1-based.
        line: usize,
    },
    /// A command-line flag.
    Flag(&'static str),
    /// No layer sets the key (nor anything around it).
    Unset,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default (scenarios/default.toml)"),
            Origin::File { name, line } => write!(f, "{name}:{line}"),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Unset => f.write_str("(not set)"),
        }
    }
}

/// The merged layers and where each key came from.
#[derive(Clone, Debug)]
pub struct Layers {
    table: Table,
    /// By key path: `cluster.nodes`, `faults[1].target`; tables and array
    /// elements too, so a missing key is blamed on what holds it.
    origins: BTreeMap<String, Origin>,
}

impl Default for Layers {
    fn default() -> Self {
        Self::new()
    }
}

impl Layers {
    /// The built-in default alone: what `octopoll run` runs with no file.
    pub fn new() -> Self {
        let mut layers = Layers {
            table: Table::new(),
            origins: BTreeMap::new(),
        };
        let default = Source::new("built-in default", crate::file::DEFAULT_SCENARIO);
        let (table, _) = parse(&default).expect("the built-in default scenario parses");
        layers.merge(table, &|_| Origin::Default);
        layers
    }

    /// Puts a scenario (a file's text) over the layers so far. Unknown keys and
    /// values of the wrong type are refused with the file, line and key.
    /// A file that does not name its scenario names it after itself
    /// (`storm.toml` runs as `storm`), not after the default beneath it, and
    /// one that does not describe itself has no description.
    pub fn file(&mut self, source: &Source) -> Result<&mut Self, ScenarioError> {
        let (mut table, lines) = parse(source)?;
        let stem = Path::new(&source.name).file_stem().and_then(|s| s.to_str());
        if let (false, Some(stem)) = (table.contains_key("name"), stem) {
            table.insert("name".into(), Value::String(stem.to_owned()));
        }
        if !table.contains_key("description") {
            // The default's says "3 nodes, 100 agents …": not this file's.
            self.table.remove("description");
            self.origins.remove("description");
        }
        let origin = |path: &str| Origin::File {
            name: source.name.clone(),
            line: lookup(&lines, path).copied().unwrap_or(1),
        };
        self.merge(table, &origin);
        Ok(self)
    }

    /// Reads the scenario file at `path` and puts it over the layers so far.
    pub fn read(&mut self, path: &Path) -> Result<&mut Self, LoadError> {
        let source = Source::read(path)?;
        Ok(self.file(&source)?)
    }

    /// Sets `key` (a dotted path, `cluster.nodes`) from the command line's
    /// `flag`; `None` (the flag not given) leaves it.
    pub fn flag<T: Serialize>(
        &mut self,
        flag: &'static str,
        key: &str,
        value: Option<T>,
    ) -> Result<&mut Self, ScenarioError> {
        let Some(value) = value else { return Ok(self) };
        let value = Value::try_from(value).map_err(|error| ScenarioError {
            location: flag.to_string(),
            key: key.to_string(),
            message: error.to_string(),
        })?;
        let nested = key.rsplit('.').fold(value, |inner, part| {
            Value::Table(Table::from_iter([(part.to_string(), inner)]))
        });
        let Value::Table(table) = nested else {
            unreachable!("a key has at least one part, so the fold ends in a table")
        };
        // A flag is typed by the command line, but its key must be one of ours.
        scenario_of(&table).map_err(|error| ScenarioError {
            location: flag.to_string(),
            ..error
        })?;
        self.merge(table, &|_| Origin::Flag(flag));
        Ok(self)
    }

    /// [`Layers::flag`] for a duration, written as `octopoll run` reads it (`1m 30s`).
    pub fn flag_duration(
        &mut self,
        flag: &'static str,
        key: &str,
        value: Option<Duration>,
    ) -> Result<&mut Self, ScenarioError> {
        self.flag(
            flag,
            key,
            value.map(|d| humantime::format_duration(d).to_string()),
        )
    }

    /// Where the value at `key` (`cluster.nodes`, `faults[0].target`) came
    /// from; for a key no layer sets, where the table holding it came from.
    pub fn origin(&self, key: &str) -> Origin {
        lookup(&self.origins, key).cloned().unwrap_or(Origin::Unset)
    }

    /// A refusal of the value at `key`, blamed on where it was set.
    pub(crate) fn refuse(&self, key: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            location: self.origin(key).to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The merged layers as one scenario file's text, outputs left out: what
    /// a report embeds so the run can be made again (`run --from-report`).
    pub fn resolved_text(&self) -> String {
        let mut table = self.table.clone();
        table.remove("output");
        toml::to_string(&table).unwrap_or_default()
    }

    /// The merged layers as a scenario.
    pub fn scenario(&self) -> Result<ScenarioFile, ScenarioError> {
        scenario_of(&self.table).map_err(|error| ScenarioError {
            location: self.origin(&error.key).to_string(),
            ..error
        })
    }

    /// Merges `from` over the layers: tables key by key, anything else (arrays
    /// included: a later `faults` list replaces the earlier) whole.
    fn merge(&mut self, from: Table, origin: &dyn Fn(&str) -> Origin) {
        merge_into(&mut self.table, from, "", &mut self.origins, origin);
    }
}

/// Keys whose value is one thing written as a table: a later layer replaces it
/// whole (`mix = { echo = 1 }` means echo alone, not echo over the default mix).
const WHOLE_VALUES: &[&str] = &["workload.mix"];

fn merge_into(
    into: &mut Table,
    from: Table,
    prefix: &str,
    origins: &mut BTreeMap<String, Origin>,
    origin: &dyn Fn(&str) -> Origin,
) {
    for (key, value) in from {
        let path = join(prefix, &key);
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(new))
                if !WHOLE_VALUES.contains(&path.as_str()) =>
            {
                origins.entry(path.clone()).or_insert_with(|| origin(&path));
                merge_into(existing, new, &path, origins, origin);
            }
            (_, value) => {
                let under = [format!("{path}."), format!("{path}[")];
                origins.retain(|k, _| k != &path && !under.iter().any(|u| k.starts_with(u)));
                record(&value, &path, origins, origin);
                into.insert(key, value);
            }
        }
    }
}

/// Records the origin of `value` at `path` and of everything inside it.
fn record(
    value: &Value,
    path: &str,
    origins: &mut BTreeMap<String, Origin>,
    origin: &dyn Fn(&str) -> Origin,
) {
    origins.insert(path.to_string(), origin(path));
    match value {
        Value::Table(table) => {
            for (key, value) in table {
                record(value, &join(path, key), origins, origin);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                record(value, &format!("{path}[{i}]"), origins, origin);
            }
        }
        _ => {}
    }
}

/// The entry for `key`, else for the nearest table or array holding it.
fn lookup<'a, T>(map: &'a BTreeMap<String, T>, key: &str) -> Option<&'a T> {
    let mut key = key;
    loop {
        if let Some(found) = map.get(key) {
            return Some(found);
        }
        key = &key[..key.rfind(['.', '['])?];
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `source` checked against the schema, as a table, with the line of every key.
fn parse(source: &Source) -> Result<(Table, BTreeMap<String, usize>), ScenarioError> {
    ScenarioFile::parse(source)?;
    let table: Table = toml::from_str(&source.text).map_err(|error| source.error(&error))?;
    Ok((table, key_lines(&source.text).unwrap_or_default()))
}

fn scenario_of(table: &Table) -> Result<ScenarioFile, ScenarioError> {
    ScenarioFile::deserialize_table(table.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(text: &str) -> Layers {
        let mut layers = Layers::new();
        layers.file(&Source::new("test.toml", text)).unwrap();
        layers
    }

    #[test]
    fn an_unnamed_file_is_named_after_itself_and_has_no_borrowed_description() {
        let scenario = over("seed = 4\n").scenario().unwrap();
        assert_eq!(scenario.name.as_deref(), Some("test"));
        assert_eq!(scenario.description, None);
        let named = over("name = \"storm\"\ndescription = \"d\"\n")
            .scenario()
            .unwrap();
        assert_eq!(named.name.as_deref(), Some("storm"));
        assert_eq!(named.description.as_deref(), Some("d"));
        assert_eq!(
            Layers::new().scenario().unwrap().name.as_deref(),
            Some("default")
        );
    }

    #[test]
    fn the_resolved_text_runs_the_same_again_without_the_outputs() {
        let mut layers = over(
            "seed = 9\n[cluster]\nnodes = 2\n[[faults]]\nat = \"2s\"\naction = \"kill\"\ntarget = \"node-2\"\n[thresholds]\n\"pickup_ms{node:node-1}\" = \"p(99) < 5\"\n[output]\njson = \"r.json\"\n",
        );
        layers.flag("--rate", "workload.rate", Some(7.5)).unwrap();
        let first = layers.resolve().unwrap();
        let text = first.scenario.clone().unwrap();
        assert!(!text.contains("r.json"), "outputs left out:\n{text}");
        let mut again = Layers::new();
        again
            .file(&Source::new("r.json (its scenario)", text))
            .unwrap();
        let second = again.resolve().unwrap();
        assert_eq!(
            (second.seed, second.rate, second.lab.cluster.nodes),
            (9, 7.5, 2)
        );
        assert_eq!(second.faults, first.faults);
        assert_eq!(second.thresholds, first.thresholds);
        assert_eq!(second.name.as_deref(), Some("test"));
        assert_eq!(again.scenario().unwrap().output.json, None);
    }

    #[test]
    fn each_value_knows_its_layer() {
        let mut layers = over("seed = 4\n[cluster]\nnodes = 5\n");
        layers.flag("--agents", "agents.count", Some(7)).unwrap();
        assert_eq!(layers.origin("seed").to_string(), "test.toml:1");
        assert_eq!(layers.origin("cluster.nodes").to_string(), "test.toml:3");
        assert_eq!(layers.origin("agents.count"), Origin::Flag("--agents"));
        assert_eq!(layers.origin("agents.ramp"), Origin::Default);
        let scenario = layers.scenario().unwrap();
        assert_eq!(scenario.cluster.nodes, Some(5));
        assert_eq!(scenario.agents.count, Some(7));
        assert_eq!(scenario.seed, Some(4));
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_located() {
        let layers = over(
            "cluster.nodes = 2\nfaults = [\n  { at = \"1s\", action = \"kill\", target = \"node-1\" },\n  { at = \"2s\", action = \"kill\", target = \"node-9\" },\n]\n",
        );
        assert_eq!(layers.origin("cluster.nodes").to_string(), "test.toml:1");
        assert_eq!(layers.origin("faults[1].target").to_string(), "test.toml:4");
        let error = layers.resolve().unwrap_err();
        assert_eq!(error.location, "test.toml:4");
        assert_eq!(error.key, "faults[1].target");
    }

    #[test]
    fn a_later_list_replaces_the_earlier_and_its_origins() {
        let mut layers =
            over("[[faults]]\nat = \"1s\"\naction = \"kill\"\ntarget = \"node-1\"\n\n[[faults]]\nat = \"2s\"\naction = \"kill\"\ntarget = \"node-2\"\n");
        assert_eq!(layers.origin("faults[1].at").to_string(), "test.toml:7");
        layers
            .file(&Source::new(
                "second.toml",
                "[[faults]]\nat = \"3s\"\naction = \"stop\"\ntarget = \"all\"\n",
            ))
            .unwrap();
        assert_eq!(layers.scenario().unwrap().faults.unwrap().len(), 1);
        assert_eq!(layers.origin("faults[0].at").to_string(), "second.toml:2");
        // The first list's second fault is gone: only the new list is left to blame.
        assert_eq!(layers.origin("faults[1].at").to_string(), "second.toml:1");
    }

    #[test]
    fn a_bad_flag_is_blamed_on_the_flag() {
        let mut layers = over("[cluster]\nnodes = 2\n");
        layers.flag("--nodes", "cluster.nodes", Some(0)).unwrap();
        let error = layers.resolve().unwrap_err();
        assert_eq!(
            (error.location.as_str(), error.key.as_str()),
            ("--nodes", "cluster.nodes")
        );
        let error = Layers::new()
            .flag("--nope", "cluster.nope", Some(1))
            .unwrap_err();
        assert_eq!(error.location, "--nope");
        let error = Layers::new()
            .flag_duration("--long-poll", "cluster.long_poll", Some(Duration::ZERO))
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "--long-poll: cluster.long_poll: must be above 0"
        );
    }

    #[test]
    fn a_mix_replaces_the_default_mix_whole() {
        let config = over("[workload]\nmix = { echo = 1 }\n").resolve().unwrap();
        assert_eq!(
            (
                config.mix.echo,
                config.mix.script,
                config.mix.capabilities,
                config.mix.upload
            ),
            (1, 0, 0, 0)
        );
    }

    #[test]
    fn a_flag_duration_reads_back_as_the_same_duration() {
        let mut layers = Layers::new();
        let wait = Duration::from_millis(90_250);
        layers
            .flag_duration("--drain", "drain", Some(wait))
            .unwrap();
        assert_eq!(layers.resolve().unwrap().drain, wait);
    }
}

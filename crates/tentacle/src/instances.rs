//! The instance index: which `Tentacle.config` an instance name means.
//!
//! Tentacle keeps one JSON file per instance in `/etc/octopus/Tentacle/Instances/`
//! (`{"Name": …, "ConfigurationFilePath": …}`, the file named after the
//! lower-cased name with spaces as `-`). octopoll keeps the same files in
//! `$OCTOPOLL_TENTACLE_INSTANCES`, else `$XDG_CONFIG_HOME/octopoll/tentacle/instances`,
//! else `~/.config/octopoll/tentacle/instances`, so it never needs root.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The instance name Tentacle uses when none is given.
pub const DEFAULT_INSTANCE: &str = "Tentacle";
/// Overrides where the index lives.
pub const INSTANCES_ENV: &str = "OCTOPOLL_TENTACLE_INSTANCES";

/// One instance's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    /// Its name.
    pub name: String,
    /// Its Tentacle.config.
    pub configuration_file_path: PathBuf,
}

/// The index directory.
pub fn directory() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(INSTANCES_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set: set OCTOPOLL_TENTACLE_INSTANCES to where instances are recorded")?;
    Ok(base.join("octopoll").join("tentacle").join("instances"))
}

fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.config", name.replace(' ', "-").to_lowercase()))
}

/// Every recorded instance, by name.
pub fn list() -> anyhow::Result<Vec<Instance>> {
    let dir = directory()?;
    let mut instances = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(instances),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "config") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let instance: Instance = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an instance record", path.display()))?;
            instances.push(instance);
        }
    }
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(instances)
}

/// Records (or re-points) `instance`.
pub fn save(instance: &Instance) -> anyhow::Result<()> {
    let dir = directory()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = file_of(&dir, &instance.name);
    let text = serde_json::to_string_pretty(instance)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Which config file a command works on, Tentacle's way: `--instance` by name;
/// else `--config`; else `./Tentacle.config` if it exists; else the default
/// instance; else the only one.
pub fn select(instance: Option<&str>, config: Option<&Path>) -> anyhow::Result<(String, PathBuf)> {
    let all = list()?;
    let names = || {
        let names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        if names.is_empty() {
            "none (create one with create-instance)".to_owned()
        } else {
            names.join(", ")
        }
    };
    let find = |name: &str| {
        all.iter()
            .find(|i| i.name == name)
            .or_else(|| all.iter().find(|i| i.name.eq_ignore_ascii_case(name)))
    };
    if let Some(name) = instance {
        return match find(name) {
            Some(i) => Ok((i.name.clone(), i.configuration_file_path.clone())),
            None => bail!(
                "Instance {name} of Tentacle has not been configured on this machine. Available instances: {}.",
                names()
            ),
        };
    }
    if let Some(config) = config {
        return Ok((String::new(), config.to_owned()));
    }
    let local = PathBuf::from("Tentacle.config");
    if local.exists() {
        return Ok((String::new(), local));
    }
    if let Some(i) = find(DEFAULT_INSTANCE) {
        return Ok((i.name.clone(), i.configuration_file_path.clone()));
    }
    match all.as_slice() {
        [only] => Ok((only.name.clone(), only.configuration_file_path.clone())),
        [] => bail!("Unable to find default instance of Tentacle. Available instances: {}.", names()),
        _ => bail!(
            "There is more than one instance of Tentacle configured on this machine. Please pass --instance=INSTANCENAME when invoking this command to target a specific instance. Available instances: {}.",
            names()
        ),
    }
}

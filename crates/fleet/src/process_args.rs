//! The flags of `octopoll node` and `octopoll swarm`. They live in the library,
//! beside the parent that builds them ([`SwarmArgs::to_args`]), so what a
//! multi-process run passes is exactly what the child parses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use octopoll_agent::{
    BackoffConfig, BackoffStrategy, Ramp, RegistrationTarget, RegistrationTrust, ServerAddress,
    SwarmConfig,
};
use octopoll_pki::{ApiKey, KeyType, Thumbprint};
use serde::{Deserialize, Serialize};

use crate::cluster_file::API_KEY_ENV;
use crate::swarm_process::SwarmSettings;

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 500ms, 2m)"))
}

/// `octopoll node`.
#[derive(Clone, Debug, Args)]
pub struct NodeArgs {
    /// The cluster file: the cluster's name, registry, API key, certificate,
    /// timeouts, and every node's addresses.
    #[arg(long, value_name = "FILE")]
    pub cluster_file: PathBuf,
    /// Which node of the file this process is, from 1.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub node: u16,
    /// Stop when stdin closes (set by a parent octopoll, so no child outlives it).
    #[arg(long, hide = true)]
    pub parent_watch: bool,
}

/// A share `i/n` of a swarm, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which share, from 1.
    pub index: usize,
    /// How many.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("expected I/N with 1 ≤ I ≤ N (e.g. 2/3), got {text:?}");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            index.trim().parse().map_err(|_| bad())?,
            count.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `octopoll swarm`.
#[derive(Clone, Debug, Args)]
pub struct SwarmArgs {
    /// Agents in the whole swarm (this process runs its --shard of them).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub agents: u64,
    /// Which share of the agents this process runs, as I/N.
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// The registration API to register with: `https://host:port` of a node (or
    /// of a balancer in front of every node's API).
    #[arg(long, value_name = "URL")]
    pub register: String,
    /// The API key (better: the OCTOPOLL_API_KEY environment variable).
    #[arg(long, env = API_KEY_ENV, hide_env_values = true)]
    pub api_key: String,
    /// The server certificate's thumbprint, to pin the registration API.
    #[arg(long, value_name = "THUMBPRINT", conflicts_with_all = ["insecure", "server_certificate"])]
    pub server_thumbprint: Option<String>,
    /// The server certificate (PEM) to pin the registration API to, instead of
    /// its thumbprint (a container reads it from the cluster's certificate volume).
    #[arg(long, value_name = "PATH", conflicts_with = "insecure")]
    pub server_certificate: Option<PathBuf>,
    /// Accept any certificate on the registration API (the comms connections are
    /// still pinned to the thumbprint the API reports).
    #[arg(long)]
    pub insecure: bool,
    /// A node's comms address to poll, `host:port` or `https://host:port`;
    /// once per node (10943 when no port is given).
    #[arg(long = "poll", value_name = "ADDRESS", required = true)]
    pub poll: Vec<String>,
    /// Agent names are PREFIX-00001, …; `auto` takes this host's name, so
    /// replicas of one container image get names of their own.
    #[arg(long, default_value = "agent")]
    pub name_prefix: String,
    /// Seed for subscriptions and jitter (mixed with the prefix).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Key type of the agents' certificates.
    #[arg(long, value_enum, default_value_t = KeyTypeName::Ecdsa)]
    pub key_type: KeyTypeName,
    /// Polling connections each agent holds per node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub connections_per_node: u64,
    /// Reconnect strategy.
    #[arg(long, default_value = "halibut", value_parser = |s: &str| s.parse::<BackoffStrategy>())]
    pub backoff: BackoffStrategy,
    /// Shortest reconnect delay.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub backoff_max: Duration,
    /// How long an identified connection waits for the next request before it
    /// gives up (longer than the nodes' long-poll).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub receive_timeout: Duration,
    /// First connections per second over this process's agents (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Where this process's control API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Register, then wait for `POST /api/swarm/poll` before polling.
    #[arg(long)]
    pub hold: bool,
    /// Stop when stdin closes (set by a parent octopoll, so no child outlives it).
    #[arg(long, hide = true)]
    pub parent_watch: bool,
}

impl SwarmArgs {
    /// The settings the flags say, checked.
    pub fn settings(&self) -> anyhow::Result<SwarmSettings> {
        let total = usize::try_from(self.agents).context("--agents is too large")?;
        if self.shard.count > total {
            bail!(
                "--shard {} splits {total} agents into more shares than agents",
                self.shard
            );
        }
        let range = crate::plan::share(total, self.shard.index - 1, self.shard.count);
        let nodes = self
            .poll
            .iter()
            .map(|a| {
                a.parse::<ServerAddress>()
                    .with_context(|| format!("--poll {a}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trust = match (&self.server_thumbprint, &self.server_certificate, self.insecure) {
            (Some(text), _, _) => RegistrationTrust::Pinned(
                text.parse::<Thumbprint>()
                    .map_err(|e| anyhow::anyhow!("--server-thumbprint {text}: {e}"))?,
            ),
            (None, Some(path), _) => {
                let cert = octopoll_pki::pem::load_cert(path)
                    .with_context(|| format!("--server-certificate {}", path.display()))?;
                RegistrationTrust::Pinned(Thumbprint::of(&cert))
            }
            (None, None, true) => RegistrationTrust::DangerousAcceptAny,
            (None, None, false) => bail!(
                "give --server-thumbprint THUMBPRINT or --server-certificate PEM to pin the registration API, or --insecure to accept any certificate on it"
            ),
        };
        if self.backoff_min > self.backoff_max {
            bail!("--backoff-min is longer than --backoff-max");
        }
        let prefix = match self.name_prefix.as_str() {
            "auto" => std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("agent-{}", std::process::id())),
            other => other.to_owned(),
        };
        let mut swarm = SwarmConfig::new(range.len());
        swarm.first = range.start;
        swarm.total = total;
        swarm.key_type = self.key_type.into();
        // Replicas with their own prefixes get subscriptions of their own too.
        swarm.seed = self.seed ^ fnv1a(prefix.as_bytes());
        swarm.name_prefix = prefix;
        let polling = &mut swarm.agent.polling;
        polling.connections_per_node = self.connections_per_node as usize;
        polling.backoff = BackoffConfig {
            strategy: self.backoff,
            min: self.backoff_min,
            max: self.backoff_max,
        };
        polling.receive_request_timeout = self.receive_timeout;
        polling.ramp = Ramp::per_second(self.ramp);
        Ok(SwarmSettings {
            swarm,
            target: RegistrationTarget {
                api_url: self.register.clone(),
                api_key: ApiKey::new(self.api_key.clone()),
                trust,
            },
            nodes,
            control: self.control,
            hold: self.hold,
        })
    }

    /// The flags as a command line (the API key left out: it goes in the
    /// environment, where `ps` does not show it).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "swarm".to_string(),
            format!("--agents={}", self.agents),
            format!("--shard={}", self.shard),
            format!("--register={}", self.register),
            format!("--name-prefix={}", self.name_prefix),
            format!("--seed={}", self.seed),
            format!("--key-type={}", key_type_name(self.key_type)),
            format!("--connections-per-node={}", self.connections_per_node),
            format!("--backoff={}", self.backoff),
            format!(
                "--backoff-min={}",
                humantime::format_duration(self.backoff_min)
            ),
            format!(
                "--backoff-max={}",
                humantime::format_duration(self.backoff_max)
            ),
            format!(
                "--receive-timeout={}",
                humantime::format_duration(self.receive_timeout)
            ),
            format!("--ramp={}", self.ramp),
            format!("--control={}", self.control),
        ];
        match (&self.server_thumbprint, &self.server_certificate) {
            (Some(thumbprint), _) => args.push(format!("--server-thumbprint={thumbprint}")),
            (None, Some(path)) => args.push(format!("--server-certificate={}", path.display())),
            (None, None) if self.insecure => args.push("--insecure".into()),
            (None, None) => {}
        }
        args.extend(self.poll.iter().map(|a| format!("--poll={a}")));
        if self.hold {
            args.push("--hold".into());
        }
        args
    }
}

fn key_type_name(key_type: KeyTypeName) -> &'static str {
    match key_type {
        KeyTypeName::Ecdsa => "ecdsa",
        KeyTypeName::Rsa => "rsa",
    }
}

/// FNV-1a, for mixing a name into a seed the same way on every machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A certificate key type, as a scenario or flag names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyTypeName {
    /// ECDSA P-256 (fast).
    Ecdsa,
    /// RSA-2048 (what Octopus and Tentacle use).
    Rsa,
}

impl From<KeyTypeName> for KeyType {
    fn from(value: KeyTypeName) -> Self {
        match value {
            KeyTypeName::Ecdsa => KeyType::EcdsaP256,
            KeyTypeName::Rsa => KeyType::Rsa2048,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Swarm(SwarmArgs),
    }

    fn parse(args: &[String]) -> SwarmArgs {
        let mut argv = vec!["octopoll".to_string()];
        argv.extend(args.iter().cloned());
        let Sub::Swarm(args) = Wrapper::try_parse_from(argv).unwrap().command;
        args
    }

    #[test]
    fn what_the_parent_writes_the_child_reads() {
        let args = parse(&[
            "swarm".into(),
            "--agents=10".into(),
            "--shard=2/3".into(),
            "--register=https://127.0.0.1:8443".into(),
            "--api-key=API-X".into(),
            "--server-thumbprint=0123456789ABCDEF0123456789ABCDEF01234567".into(),
            "--poll=127.0.0.1:10943".into(),
            "--poll=https://127.0.0.2:10943".into(),
            "--backoff-min=100ms".into(),
            "--ramp=500".into(),
            "--hold".into(),
        ]);
        let again = parse(&[args.to_args(), vec!["--api-key=API-X".into()]].concat());
        assert_eq!(again.to_args(), args.to_args());
        let settings = again.settings().unwrap();
        assert_eq!((settings.swarm.first, settings.swarm.agents), (3, 3));
        assert_eq!(settings.swarm.total, 10);
        assert_eq!(settings.nodes.len(), 2);
        assert_eq!(
            settings.swarm.agent.polling.backoff.min,
            Duration::from_millis(100)
        );
        assert!(settings.hold);
        assert_eq!(settings.swarm.agent.polling.ramp.unwrap().rate(), 500.0);
        assert!(
            !args.to_args().iter().any(|a| a.contains("API-X")),
            "no key on the command line"
        );
    }

    #[test]
    fn bad_shares_and_missing_trust_are_refused() {
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        let mut args = parse(&[
            "swarm".into(),
            "--agents=2".into(),
            "--shard=1/3".into(),
            "--register=https://n:1".into(),
            "--api-key=k".into(),
            "--insecure".into(),
            "--poll=n".into(),
        ]);
        assert!(args
            .settings()
            .unwrap_err()
            .to_string()
            .contains("more shares than agents"));
        args.shard = Shard { index: 1, count: 1 };
        args.insecure = false;
        assert!(args
            .settings()
            .unwrap_err()
            .to_string()
            .contains("--server-thumbprint"));
    }
}

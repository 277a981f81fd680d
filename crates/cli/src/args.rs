//! Command-line flags. They only fill plain values; `commands::*` turn them into
//! the library's configs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use octopoll_cli::topology::Topology;
use octopoll_node::QueueMode;

/// Simulate Octopus Deploy High Availability with polling Tentacles, end to end.
#[derive(Debug, Parser)]
#[command(name = "octopoll", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an in-process HA cluster with a swarm of polling agents, queue work, report.
    Run(RunArgs),
    /// Write a node and an agent development certificate as PEM files.
    Certs(CertsArgs),
}

/// Certificate key algorithm.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyTypeArg {
    /// ECDSA P-256 (fast).
    Ecdsa,
    /// RSA-2048 (what Octopus and Tentacle use).
    Rsa,
}

impl From<KeyTypeArg> for octopoll_pki::KeyType {
    fn from(value: KeyTypeArg) -> Self {
        match value {
            KeyTypeArg::Ecdsa => octopoll_pki::KeyType::EcdsaP256,
            KeyTypeArg::Rsa => octopoll_pki::KeyType::Rsa2048,
        }
    }
}

/// Pending request queue mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QueueArg {
    /// A queue per node: only a connection to the node that queued it collects a request.
    PerNode,
    /// One queue shared by every node: any node's connection of the subscription collects it.
    Shared,
}

impl From<QueueArg> for QueueMode {
    fn from(value: QueueArg) -> Self {
        match value {
            QueueArg::PerNode => QueueMode::PerNode,
            QueueArg::Shared => QueueMode::Shared,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 500ms, 2m)"))
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err("expected a positive number of requests per second".into()),
    }
}

/// `octopoll run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Polling agents (simulated Tentacles).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=9_000))]
    pub agents: u64,
    /// How long to queue work.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub duration: Duration,
    /// Requests per second over the whole cluster.
    #[arg(long, default_value_t = 20.0, value_parser = positive_rate, allow_negative_numbers = true)]
    pub rate: f64,
    /// Seed: the same seed gives the same agents, requests and jitter.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Wait this long for unfinished requests after the workload.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain: Duration,
    /// Wait this long for every agent to poll every node before queuing work.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub mesh_timeout: Duration,
    /// Long-poll wait before a node sends the null request (Halibut: 30s).
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub long_poll: Duration,
    /// A request nobody collects fails after this (Halibut: 2m).
    #[arg(long, default_value = "2m", value_parser = duration)]
    pub pickup_timeout: Duration,
    /// How agents reach the nodes (see the README's "Topologies").
    #[arg(long, value_enum, default_value_t = Topology::UniquePortDirect)]
    pub topology: Topology,
    /// Pending request queue: per node (Halibut's default), or shared by all nodes
    /// (Halibut's Redis queue: any node's connection collects the work).
    #[arg(long, value_enum, default_value_t = QueueArg::PerNode)]
    pub queue: QueueArg,
    /// The HAProxy binary for the unique-port and load-balanced topologies
    /// (default: `haproxy` on PATH or in /usr/sbin).
    #[arg(long, value_name = "PATH")]
    pub haproxy: Option<PathBuf>,
    /// Address node 1 binds (unique-address: node N binds this + N − 1).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Comms port of node 1; node N listens on this + N − 1 (unique-address: every
    /// node on this port; behind HAProxy: the balancer's ports). 0 picks free ports.
    #[arg(long, default_value_t = 10943)]
    pub comms_port: u16,
    /// HTTPS registration API port of node 1, likewise. 0 (default) picks free ports.
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Polling connections each agent holds per node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub connections_per_node: u64,
    /// Key type of every certificate.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::Ecdsa)]
    pub key_type: KeyTypeArg,
    /// Longest simulated script run time.
    #[arg(long, default_value = "200ms", value_parser = duration)]
    pub max_script_time: Duration,
    /// No live progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `octopoll certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write `node.crt.pem`, `node.key.pem`, `agent.crt.pem`, `agent.key.pem` into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Key type.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::Ecdsa)]
    pub key_type: KeyTypeArg,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

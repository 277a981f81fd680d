//! Command-line flags. They only fill plain values; `commands::*` turn them into
//! the library's configs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use octopoll_agent::BackoffStrategy;
use octopoll_fleet::process_args::KeyTypeName;
pub use octopoll_fleet::process_args::{NodeArgs, SwarmArgs};
use octopoll_lab::topology::Topology;
use octopoll_node::QueueMode;
use octopoll_scenario::file::ScenarioError;
use octopoll_scenario::layers::Layers;

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
    /// Run an HA cluster with a swarm of polling agents, queue work, report (in this
    /// process, or split over node and agent processes when it is too large for one).
    Run(Box<RunArgs>),
    /// Write a node and an agent development certificate as PEM files.
    Certs(CertsArgs),
    /// Run the chaos (fault) proxy on its own, driven by its toxiproxy-shaped HTTP API.
    Proxy(ProxyArgs),
    /// Run one node of a cluster as its own process (the cluster file says where
    /// every node listens; the nodes share their registry through Redis).
    Node(NodeArgs),
    /// Run a swarm of polling agents (or one share of one) as its own process:
    /// register them with a node's API, then poll every node given.
    Swarm(Box<SwarmArgs>),
    /// Run PROGRAM until it exits or this process's stdin closes (how octopoll
    /// keeps a program that cannot watch its parent from outliving it).
    #[command(hide = true)]
    Guard(GuardArgs),
    /// Exit 0 if a node's or swarm's control API answers 2xx at URL (a container
    /// health check), 1 otherwise, saying why.
    Health(HealthArgs),
    /// Tentacle.exe's commands (create-instance, new-certificate, import-certificate,
    /// show-thumbprint, configure, register-with, poll-server, list-instances,
    /// deregister-from, agent): the Octopus docs' commands, as written, against an
    /// octopoll cluster. `octopoll tentacle help` lists them.
    Tentacle(TentacleArgs),
    /// Measure handshake rate (vs bare rustls), full-mesh time, memory per
    /// connection, dispatch latency and a restart storm; print a Markdown table.
    Bench(BenchArgs),
    /// Compare two runs' JSON reports: how each headline figure moved; exit 99
    /// when a figure got worse than a --max-worse limit allows.
    Compare(CompareArgs),
}

/// `octopoll compare`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit codes:
  0   every limit held (or none was given)
  2   a report cannot be read, or a limit does not parse
  99  a figure got worse than its --max-worse limit, or is missing from a report")]
pub struct CompareArgs {
    /// The baseline run's JSON report (`octopoll run --json`).
    pub base: PathBuf,
    /// The new run's JSON report.
    pub new: PathBuf,
    /// FIGURE=PERCENT: the figure (a dotted path in the report, e.g.
    /// pickup_ms.p99, end_to_end_ms.p95, requests.per_s) may be at most this
    /// much worse than in the baseline. Repeat for more.
    #[arg(long = "max-worse", value_name = "FIGURE=PERCENT")]
    pub max_worse: Vec<octopoll_report::compare::Limit>,
}

/// `octopoll tentacle …`: passed whole to the Tentacle-style parser.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct TentacleArgs {
    /// The Tentacle command and its options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

/// Which benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// Identified polling connections a second, beside bare rustls.
    Handshake,
    /// Cold start to full mesh, and memory per held connection (measures the
    /// handshake rate first, for the bound).
    Mesh,
    /// Pickup latency at a fixed request rate.
    Dispatch,
    /// Every node restarted at once: recovery time and peak node CPU.
    Storm,
    /// Dispatch through per-node queues and through Halibut's Redis queue, and
    /// Redis commands per request.
    Queue,
    /// The Redis queue's faults: a node killed while it processes requests
    /// (beside per-node queues), and Redis down past Halibut's retries with and
    /// without the random drop delay.
    RedisFaults,
    /// All of them.
    All,
}

/// `octopoll bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    pub what: BenchWhat,
    /// Agents in the mesh, dispatch and storm runs (× 3 nodes).
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Key type of every certificate.
    #[arg(long, value_enum, default_value_t = KeyTypeName::Ecdsa)]
    pub key_type: KeyTypeName,
    /// Clients connecting at once in the handshake benchmark.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests a second in the dispatch benchmark.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// `octopoll proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where the HTTP API listens (toxiproxy's default port is 8474).
    #[arg(long, default_value = "127.0.0.1:8474")]
    pub api: std::net::SocketAddr,
    /// A proxy to create at start, as NAME=LISTEN=UPSTREAM (repeatable); more can
    /// be created with `POST /proxies`.
    #[arg(long, value_name = "NAME=LISTEN=UPSTREAM")]
    pub proxy: Vec<String>,
    /// Let `POST /proxies` open proxies on any address, not only loopback ones.
    /// A proxy relays to anywhere: allow it only where the API is reachable by
    /// people you trust.
    #[arg(long)]
    pub allow_public_listen: bool,
}

/// Pending request queue mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QueueArg {
    /// A queue per node: only a connection to the node that queued it collects a request.
    PerNode,
    /// One queue shared by every node in this process (no Redis): any node's connection collects it.
    Shared,
    /// Halibut's Redis queue, shared by every node and process: octopoll's own
    /// redis-server unless --redis names one.
    Redis,
}

impl From<QueueArg> for QueueMode {
    fn from(value: QueueArg) -> Self {
        match value {
            QueueArg::PerNode => QueueMode::PerNode,
            QueueArg::Shared => QueueMode::Shared,
            QueueArg::Redis => QueueMode::Redis,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 500ms, 2m)"))
}

fn non_negative_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => Ok(value),
        _ => Err("expected a number of 0 or more".into()),
    }
}

fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err("expected a positive number".into()),
    }
}

/// `octopoll run`.
///
/// Every flag overrides the scenario file's key of the same name (the key is shown
/// in brackets); the defaults are those of `scenarios/default.toml`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit codes:
  0   the run finished and every threshold held
  1   the run could not start or failed (a busy port, HAProxy missing, a lost request)
  2   bad flags or a bad scenario file (file:line: key: what is wrong)
  99  a [thresholds] limit was breached, or an abort_on_fail one stopped the run
  130 interrupted (Ctrl-C, SIGTERM); the reports cover what ran")]
pub struct RunArgs {
    /// A scenario file (TOML); without one, the built-in default runs.
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// Run again what a JSON report ran: the scenario it embeds (seed
    /// included), with any flags given on top.
    #[arg(long, value_name = "REPORT.json", conflicts_with = "scenario")]
    pub from_report: Option<PathBuf>,
    /// Server nodes in the cluster [cluster.nodes; 3].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: Option<u16>,
    /// Polling agents (simulated Tentacles) [agents.count; 100].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub agents: Option<u64>,
    /// Agent processes; 0 keeps the run in this process. Left out, a run larger
    /// than one process holds puts each node in a process of its own and splits the
    /// agents over as many as they need [processes].
    #[arg(long)]
    pub processes: Option<usize>,
    /// The Redis that node processes share their registry through, in a run split
    /// over processes; left out, octopoll starts its own [cluster.redis].
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// First polling connections per second over the whole swarm; 0 opens them
    /// all at once [agents.ramp; 0].
    #[arg(long, value_parser = non_negative_number)]
    pub ramp: Option<f64>,
    /// How long to queue work [duration; 30s].
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Multiplies the duration and every fault's time [time_scale; 1].
    #[arg(long, value_parser = positive_number, allow_negative_numbers = true)]
    pub time_scale: Option<f64>,
    /// Requests per second over the whole cluster [workload.rate; 20].
    #[arg(long, value_parser = positive_number, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Seed: the same seed gives the same agents, requests, jitter and fault targets [seed; 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report as JSON to this file [output.json].
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a per-second time series as CSV to this file [output.csv].
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Write one self-contained HTML report with plots (connections per node,
    /// pickup p99, failures by reason, faults marked) to this file [output.html].
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Write each threshold, and the invariants every run holds (nothing lost,
    /// every fault carried out), as a JUnit XML test case to this file, for CI
    /// [output.junit].
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Check the scenario and flags (and that the outputs can be written), say
    /// what would run, and exit without running it.
    #[arg(long)]
    pub check: bool,
    /// Wait this long for unfinished requests after the workload [drain; 10s].
    #[arg(long, value_parser = duration)]
    pub drain: Option<Duration>,
    /// Wait this long for every polling connection before queuing work [mesh_timeout; 30s].
    #[arg(long, value_parser = duration)]
    pub mesh_timeout: Option<Duration>,
    /// Long-poll wait before a node sends the null request [cluster.long_poll; 30s].
    #[arg(long, value_parser = duration)]
    pub long_poll: Option<Duration>,
    /// A request nobody collects fails after this [cluster.pickup_timeout; 2m].
    #[arg(long, value_parser = duration)]
    pub pickup_timeout: Option<Duration>,
    /// How agents reach the nodes (see the README's "Topologies") [cluster.topology; unique-port-direct].
    #[arg(long, value_enum)]
    pub topology: Option<Topology>,
    /// Pending request queue: per node (Halibut's default), or shared by all nodes
    /// through Halibut's Redis queue (`redis`; any node's connection collects the
    /// work), or shared in this process only (`shared`) [cluster.queue; per-node].
    #[arg(long, value_enum)]
    pub queue: Option<QueueArg>,
    /// The HAProxy binary for the unique-port and load-balanced topologies
    /// [cluster.haproxy; `haproxy` on PATH or in /usr/sbin].
    #[arg(long, value_name = "PATH")]
    pub haproxy: Option<PathBuf>,
    /// Put the chaos proxy in front of every node even without network faults [cluster.chaos].
    #[arg(long)]
    pub chaos: bool,
    /// Also run the Octopus docs' clustered listening Tentacle: two members
    /// sharing one certificate behind one address, registered as one listening
    /// machine, health-checked through a node and failed over halfway
    /// [listening_cluster.enabled].
    #[arg(long)]
    pub listening_cluster: bool,
    /// Serve the live dashboard and its control API here during the run: the page
    /// on `/`, `GET /api/cluster`, `POST /api/nodes/{n}/kill|stop|start|restart`,
    /// and with --chaos the proxies' toxiproxy-shaped routes. On by default at
    /// 127.0.0.1:8080 when stderr is a terminal (off with --quiet) [output.control].
    #[arg(long, visible_alias = "dashboard", value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// Address node 1 binds (unique-address: node N binds this + N − 1) [cluster.bind; 127.0.0.1].
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Comms port of node 1; node N listens on this + N − 1 (unique-address: every
    /// node on this port; behind HAProxy: the balancer's ports). 0 picks free ports
    /// [cluster.comms_port; 10943].
    #[arg(long)]
    pub comms_port: Option<u16>,
    /// HTTPS registration API port of node 1, likewise; 0 picks free ports [cluster.api_port; 0].
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Polling connections each agent holds per node [agents.connections_per_node; 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub connections_per_node: Option<u64>,
    /// Key type of every certificate [agents.key_type; ecdsa].
    #[arg(long, value_enum)]
    pub key_type: Option<KeyTypeName>,
    /// Agent reconnect strategy [agents.backoff; halibut].
    #[arg(long, value_parser = backoff_strategy)]
    pub backoff: Option<BackoffStrategy>,
    /// Shortest reconnect delay [agents.backoff_min; 100ms].
    #[arg(long, value_parser = duration)]
    pub backoff_min: Option<Duration>,
    /// Longest reconnect delay [agents.backoff_max; 1s].
    #[arg(long, value_parser = duration)]
    pub backoff_max: Option<Duration>,
    /// Longest simulated script run time [workload.max_script_time; 200ms].
    #[arg(long, value_parser = duration)]
    pub max_script_time: Option<Duration>,
    /// Serve Prometheus metrics on `/metrics` here during the run: connections,
    /// agents per pair state, handshakes, requests, pickup latency, reconnects
    /// [output.metrics].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// No live progress on stderr [output.quiet].
    #[arg(long, short)]
    pub quiet: bool,
}

impl RunArgs {
    /// Puts the flags given over `layers`, each remembered as its flag.
    pub fn apply_to(&self, layers: &mut Layers) -> Result<(), ScenarioError> {
        layers
            .flag("--seed", "seed", self.seed)?
            .flag_duration("--duration", "duration", self.duration)?
            .flag_duration("--drain", "drain", self.drain)?
            .flag_duration("--mesh-timeout", "mesh_timeout", self.mesh_timeout)?
            .flag("--time-scale", "time_scale", self.time_scale)?
            .flag("--processes", "processes", self.processes)?
            .flag("--nodes", "cluster.nodes", self.nodes)?
            .flag("--topology", "cluster.topology", self.topology)?
            .flag("--queue", "cluster.queue", self.queue.map(QueueMode::from))?
            .flag("--bind", "cluster.bind", self.bind)?
            .flag("--comms-port", "cluster.comms_port", self.comms_port)?
            .flag("--api-port", "cluster.api_port", self.api_port)?
            .flag_duration("--long-poll", "cluster.long_poll", self.long_poll)?
            .flag_duration(
                "--pickup-timeout",
                "cluster.pickup_timeout",
                self.pickup_timeout,
            )?
            .flag("--haproxy", "cluster.haproxy", self.haproxy.as_ref())?
            .flag("--chaos", "cluster.chaos", self.chaos.then_some(true))?
            .flag("--redis", "cluster.redis", self.redis.as_ref())?
            .flag(
                "--listening-cluster",
                "listening_cluster.enabled",
                self.listening_cluster.then_some(true),
            )?
            .flag("--agents", "agents.count", self.agents)?
            .flag("--key-type", "agents.key_type", self.key_type)?
            .flag(
                "--connections-per-node",
                "agents.connections_per_node",
                self.connections_per_node,
            )?
            .flag("--backoff", "agents.backoff", self.backoff)?
            .flag_duration("--backoff-min", "agents.backoff_min", self.backoff_min)?
            .flag_duration("--backoff-max", "agents.backoff_max", self.backoff_max)?
            .flag("--ramp", "agents.ramp", self.ramp)?
            .flag("--rate", "workload.rate", self.rate)?
            .flag_duration(
                "--max-script-time",
                "workload.max_script_time",
                self.max_script_time,
            )?
            .flag("--json", "output.json", self.json.as_ref())?
            .flag("--csv", "output.csv", self.csv.as_ref())?
            .flag("--html", "output.html", self.html.as_ref())?
            .flag("--junit", "output.junit", self.junit.as_ref())?
            .flag("--quiet", "output.quiet", self.quiet.then_some(true))?
            .flag("--control", "output.control", self.control)?
            .flag("--metrics", "output.metrics", self.metrics)?;
        Ok(())
    }
}

fn backoff_strategy(text: &str) -> Result<BackoffStrategy, String> {
    text.parse()
}

/// `octopoll certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write `node.crt.pem`, `node.key.pem`, `agent.crt.pem`, `agent.key.pem` into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Key type.
    #[arg(long, value_enum, default_value_t = KeyTypeName::Ecdsa)]
    pub key_type: KeyTypeName,
    /// Replace existing files.
    #[arg(long, conflicts_with = "keep")]
    pub force: bool,
    /// Leave existing files as they are and succeed (a container that runs on
    /// every start keeps the cluster's certificate).
    #[arg(long)]
    pub keep: bool,
}

/// `octopoll guard`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["command", "remove"]))]
pub struct GuardArgs {
    /// Delete this directory once the program has stopped or, with no program,
    /// once stdin closes (repeatable).
    #[arg(long, value_name = "DIR")]
    pub remove: Vec<PathBuf>,
    /// The program, then its arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `octopoll health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The control API URL to ask, e.g. `http://127.0.0.1:8080/api/node`.
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
}

//! Tentacle's command line, read as Tentacle reads it: option names are
//! case-insensitive (`--apiKey` = `--apikey`), `-opt` works like `--opt`, a value
//! comes as `--opt=value`, `--opt:value` or `--opt value` (the next argument
//! verbatim, even one starting with `-`), booleans as `True`/`False`, and a flag
//! ignores an inline value. [`parse`] rewrites the arguments into clap's
//! spelling and lets clap do the rest (help, unknown options, missing values).
//! Windows' `/opt:value` form is not read: on Unix it cannot be told from a path.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// `octopoll tentacle`: Tentacle.exe's commands against an octopoll cluster.
#[derive(Debug, Parser)]
#[command(
    name = "octopoll tentacle",
    about = "Tentacle.exe's commands: configure an instance (Tentacle.config), register it with a node, run it",
    disable_help_subcommand = true
)]
pub struct TentacleCli {
    /// The command.
    #[command(subcommand)]
    pub command: TentacleCommand,
}

/// Which instance a command works on.
#[derive(Clone, Debug, Default, Args)]
pub struct InstanceArgs {
    /// Name of the instance to use.
    #[arg(long)]
    pub instance: Option<String>,
    /// Configuration file to use.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The API a command talks to.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// The Octopus Server (an octopoll node's API), e.g. https://127.0.0.1:8443.
    #[arg(long)]
    pub server: String,
    /// An API key.
    #[arg(long = "apiKey", visible_alias = "apikey")]
    pub api_key: String,
    /// octopoll: pin the API's HTTPS certificate to this thumbprint. Without it the
    /// API's certificate is accepted as presented (Tentacle checks it against the
    /// system's roots, which a development node is not under); the comms
    /// connection is pinned to the thumbprint the API reports either way.
    #[arg(long = "server-thumbprint")]
    pub server_thumbprint: Option<String>,
}

/// Where the server's comms port is.
#[derive(Clone, Debug, Args)]
pub struct CommsArgs {
    /// The comms port (beats a port in --server-comms-address); default 10943.
    #[arg(long = "server-comms-port")]
    pub server_comms_port: Option<u16>,
    /// The comms address, when it is not --server's host.
    #[arg(long = "server-comms-address")]
    pub server_comms_address: Option<String>,
}

/// `text` or `json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Plain text.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// `TentacleActive` (polling) or `TentaclePassive` (listening).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CommsStyle {
    /// Polling: the Tentacle connects to the server.
    #[value(name = "TentacleActive")]
    TentacleActive,
    /// Listening: the server connects to the Tentacle.
    #[value(name = "TentaclePassive")]
    TentaclePassive,
}

/// A .NET `bool.Parse` value: `True` or `False`, any case.
fn dotnet_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{text:?} is not True or False")),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum TentacleCommand {
    /// Registers a new instance and creates its (empty) Tentacle.config.
    #[command(name = "create-instance")]
    CreateInstance {
        /// Instance name (default: Tentacle).
        #[arg(long)]
        instance: Option<String>,
        /// The Tentacle.config to create (default: Tentacle.config in --home).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The home directory (default: the config file's directory).
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// Generates this instance's certificate (RSA-2048, as Tentacle), or exports a
    /// new one as a PFX file without installing it.
    #[command(name = "new-certificate")]
    NewCertificate {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// Only if the instance has no certificate yet.
        #[arg(long = "if-blank")]
        if_blank: bool,
        /// Write the new certificate and its key to this PKCS#12 file instead.
        #[arg(long = "export-pfx")]
        export_pfx: Option<PathBuf>,
        /// The PFX file's password.
        #[arg(long = "pfx-password")]
        pfx_password: Option<String>,
    },
    /// Installs a certificate from a PFX file.
    #[command(name = "import-certificate")]
    ImportCertificate {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// The PKCS#12 file.
        #[arg(long = "from-file")]
        from_file: PathBuf,
        /// Its password.
        #[arg(long = "pfx-password", default_value = "")]
        pfx_password: String,
    },
    /// Prints the instance's certificate thumbprint.
    #[command(name = "show-thumbprint")]
    ShowThumbprint {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// text or json.
        #[arg(long, value_enum, ignore_case = true, default_value = "text")]
        format: Format,
    },
    /// Changes the instance's settings (all are checked before any is written).
    Configure(ConfigureArgs),
    /// Registers this Tentacle as a machine with the server and trusts it.
    #[command(name = "register-with")]
    RegisterWith(RegisterArgs),
    /// Polls one more server node with the subscription already registered (run
    /// once per HA node).
    #[command(name = "poll-server")]
    PollServer {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// The node.
        #[command(flatten)]
        api: ApiArgs,
        /// Where its comms port is.
        #[command(flatten)]
        comms: CommsArgs,
    },
    /// Removes every trusted server but those at a `--keep` address (scheme, host
    /// and port must match): the last step of moving polling Tentacles from every
    /// node's address to a load balancer.
    #[command(name = "clear-trusted-servers")]
    ClearTrustedServers {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// An address to keep, e.g. `https://lb:10943` (repeat for more).
        #[arg(long)]
        keep: Vec<String>,
    },
    /// Lists the instances on this machine.
    #[command(name = "list-instances")]
    ListInstances {
        /// text or json.
        #[arg(long, value_enum, ignore_case = true, default_value = "text")]
        format: Format,
    },
    /// Deletes this Tentacle's machine from the server (the trust stays).
    #[command(name = "deregister-from")]
    DeregisterFrom {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// The server.
        #[command(flatten)]
        api: ApiArgs,
        /// Delete every machine with this certificate.
        #[arg(long)]
        multiple: bool,
    },
    /// Runs the instance in the foreground until Ctrl-C or SIGTERM: polls its
    /// TentacleActive servers and, unless NoListen, listens on its port for its
    /// TentaclePassive ones. The config is read once: edits to Tentacle.config
    /// take effect on the next start.
    #[command(alias = "run")]
    Agent {
        /// Which instance.
        #[command(flatten)]
        instance: InstanceArgs,
        /// Accepted for Tentacle's command lines; octopoll always runs until stopped.
        #[arg(long, hide = true)]
        console: bool,
        /// Accepted for Tentacle's command lines.
        #[arg(long, hide = true)]
        noninteractive: bool,
    },
}

/// `configure`: the settings to change (every one is checked before any is written).
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Which instance.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The home directory.
    #[arg(long, visible_alias = "homedir")]
    pub home: Option<PathBuf>,
    /// The application directory.
    #[arg(long, visible_alias = "appdir")]
    pub app: Option<PathBuf>,
    /// The listening port.
    #[arg(long)]
    pub port: Option<u16>,
    /// True: do not listen (a polling Tentacle).
    #[arg(long = "noListen", value_parser = dotnet_bool)]
    pub no_listen: Option<bool>,
    /// The address to listen on, or `any`.
    #[arg(long = "listenIpAddress")]
    pub listen_ip_address: Option<String>,
    /// Polling connections per server.
    #[arg(long = "pollingConnectionCount")]
    pub polling_connection_count: Option<std::num::NonZeroUsize>,
    /// Trust a server thumbprint (repeatable).
    #[arg(long)]
    pub trust: Vec<String>,
    /// Stop trusting a thumbprint (repeatable).
    #[arg(long = "remove-trust")]
    pub remove_trust: Vec<String>,
    /// Trust no server.
    #[arg(long = "reset-trust")]
    pub reset_trust: bool,
}

/// `register-with`: the machine to register, where, and how the server reaches it.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Which instance.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The server.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Where the comms port is.
    #[command(flatten)]
    pub comms: CommsArgs,
    /// TentacleActive (polling) or TentaclePassive (listening: the node calls
    /// this Tentacle at --publicHostName and its listening port).
    #[arg(
        long = "comms-style",
        value_enum,
        ignore_case = true,
        default_value = "TentaclePassive"
    )]
    pub comms_style: CommsStyle,
    /// The machine's name (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// An environment (repeatable).
    #[arg(long, visible_alias = "env")]
    pub environment: Vec<String>,
    /// A role (repeatable).
    #[arg(long)]
    pub role: Vec<String>,
    /// Replace a machine with the same name or certificate (octopoll deletes
    /// and registers it again, so it gets a new id; Octopus updates it).
    #[arg(long)]
    pub force: bool,
    /// The subscription to poll with (default: the one already configured, else a new one).
    #[arg(long = "server-subscription-id")]
    pub server_subscription_id: Option<String>,
    /// TentaclePassive: the host name or address the server calls this
    /// Tentacle on (default: this host's name).
    #[arg(long = "publicHostName", visible_alias = "public-host-name")]
    pub public_host_name: Option<String>,
    /// TentaclePassive: the port the server calls back on, if not the
    /// configured listening port (Tentacle.Services.PortNumber, 10933).
    #[arg(long = "tentacle-comms-port")]
    pub tentacle_comms_port: Option<u16>,
}

/// Parses Tentacle-style `args` (after `tentacle`).
pub fn parse(args: Vec<OsString>) -> Result<TentacleCli, clap::Error> {
    TentacleCli::try_parse_from(normalize(args))
}

/// Rewrites Tentacle-style arguments into clap's: `-Opt:v` → `--opt=v` with the
/// option's declared spelling, values after value-taking options kept verbatim,
/// inline values of flags dropped, the command name lower-cased.
fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let command = TentacleCli::command();
    let mut out: Vec<OsString> = vec!["octopoll tentacle".into()];
    let mut args = args.into_iter();
    // The command: the first argument, lower-cased, leading - or / trimmed.
    let Some(first) = args.next() else {
        return out;
    };
    let name = first
        .to_string_lossy()
        .trim_start_matches(['-', '/'])
        .to_lowercase();
    let sub = command
        .get_subcommands()
        .find(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name));
    let Some(sub) = sub else {
        // Unknown or help: clap says so.
        out.push(first);
        out.extend(args);
        return out;
    };
    out.push(sub.get_name().into());
    let options: Vec<(String, bool)> = sub
        .get_arguments()
        .flat_map(|arg| {
            let takes = arg.get_action().takes_values();
            arg.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(move |long| (long.to_owned(), takes))
        })
        .chain([("help".to_owned(), false)])
        .collect();
    // A value-taking option waiting for its value: joined as `--opt=value`, so a
    // value starting with `-` stays a value.
    let mut pending: Option<String> = None;
    for arg in args.by_ref() {
        if let Some(long) = pending.take() {
            let mut joined = OsString::from(format!("--{long}="));
            joined.push(&arg);
            out.push(joined);
            continue;
        }
        let text = arg.to_string_lossy().into_owned();
        if text == "--" {
            out.push(arg);
            break;
        }
        let body = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-'))
            .filter(|b| b.chars().next().is_some_and(|c| c.is_ascii_alphabetic()));
        let Some(body) = body else {
            out.push(arg);
            continue;
        };
        let (name, value) = match body.find(['=', ':']) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        match options
            .iter()
            .find(|(long, _)| long.eq_ignore_ascii_case(name))
        {
            Some((long, true)) => match value {
                Some(value) => out.push(format!("--{long}={value}").into()),
                None => pending = Some(long.clone()),
            },
            // A flag: Tentacle ignores an inline value (`--force=false` sets it).
            Some((long, false)) => out.push(format!("--{long}").into()),
            None => out.push(arg),
        }
    }
    if let Some(long) = pending {
        // No value follows: clap says which option lacks one.
        out.push(format!("--{long}").into());
    }
    out.extend(args);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<TentacleCli, clap::Error> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn tentacle_spellings_all_parse_the_same() {
        for args in [
            &["poll-server", "--server=https://a:1", "--apikey=API-X"][..],
            &[
                "poll-server",
                "--server",
                "https://a:1",
                "--apiKey",
                "API-X",
            ],
            &["Poll-Server", "-SERVER:https://a:1", "-ApiKey=API-X"],
        ] {
            let cli = parse_str(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let TentacleCommand::PollServer { api, .. } = cli.command else {
                panic!("poll-server")
            };
            assert_eq!(
                (api.server.as_str(), api.api_key.as_str()),
                ("https://a:1", "API-X")
            );
        }
    }

    #[test]
    fn values_are_taken_verbatim_and_booleans_read_as_dotnet_does() {
        let cli = parse_str(&[
            "configure",
            "--instance",
            "Tentacle",
            "--noListen",
            "False",
            "--trust",
            "-ABC",
        ])
        .unwrap();
        let TentacleCommand::Configure(ConfigureArgs {
            no_listen, trust, ..
        }) = cli.command
        else {
            panic!("configure")
        };
        assert_eq!(no_listen, Some(false));
        assert_eq!(trust, ["-ABC"]);
        assert!(parse_str(&["configure", "--noListen", "yes"]).is_err());
    }

    #[test]
    fn a_flag_ignores_an_inline_value_and_unknown_options_are_refused() {
        let cli = parse_str(&[
            "register-with",
            "--server=s",
            "--apikey=k",
            "--comms-style",
            "TentacleActive",
            "--force=false",
        ])
        .unwrap();
        let TentacleCommand::RegisterWith(RegisterArgs {
            force, comms_style, ..
        }) = cli.command
        else {
            panic!("register-with")
        };
        assert!(force);
        assert_eq!(comms_style, CommsStyle::TentacleActive);
        let error = parse_str(&["show-thumbprint", "--colour=red"]).unwrap_err();
        assert!(error.to_string().contains("--colour"), "{error}");
    }
}

//! What each `octopoll tentacle` command does. Every command that changes an
//! instance loads its Tentacle.config, checks everything, and saves once
//! (atomically): a command that fails writes nothing.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use octopoll_agent::tentacle::{CommunicationStyle, TentacleConfig, TrustedOctopusServer};
use octopoll_agent::{
    Agent, AgentConfig, RegistrationClient, RegistrationTrust, RunningAgent, ServerAddress,
    TrustedServer,
};
use octopoll_node::ListeningAddress;
use octopoll_pki::{ApiKey, Identity, KeyType, Thumbprint};
use octopoll_wire::api::{EndpointResource, MachineResource};
use octopoll_wire::SubscriptionId;

use super::instances::{self, Instance, DEFAULT_INSTANCE};
use super::options::{
    ApiArgs, CommsArgs, CommsStyle, ConfigureArgs, Format, InstanceArgs, RegisterArgs,
    TentacleCommand,
};

/// Runs `command`, writing what Tentacle would print to `out`; `agent` runs
/// until `stop` resolves.
pub async fn run(
    command: TentacleCommand,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    match command {
        TentacleCommand::CreateInstance {
            instance,
            config,
            home,
        } => create_instance(instance, config, home, out),
        TentacleCommand::NewCertificate {
            instance,
            if_blank,
            export_pfx,
            pfx_password,
        } => new_certificate(&instance, if_blank, export_pfx, pfx_password, out),
        TentacleCommand::ImportCertificate {
            instance,
            from_file,
            pfx_password,
        } => import_certificate(&instance, &from_file, &pfx_password, out),
        TentacleCommand::ShowThumbprint { instance, format } => {
            show_thumbprint(&instance, format, out)
        }
        TentacleCommand::Configure(args) => configure(args, out),
        TentacleCommand::RegisterWith(args) => register_with(args, out).await,
        TentacleCommand::PollServer {
            instance,
            api,
            comms,
        } => poll_server(&instance, &api, &comms, out).await,
        TentacleCommand::ClearTrustedServers { instance, keep } => {
            clear_trusted_servers(&instance, &keep, out)
        }
        TentacleCommand::ListInstances { format } => list_instances(format, out),
        TentacleCommand::DeregisterFrom {
            instance,
            api,
            multiple,
        } => deregister_from(&instance, &api, multiple, out).await,
        TentacleCommand::Agent { instance, .. } => agent(&instance, out, stop).await,
    }
}

/// `show-thumbprint`.
fn show_thumbprint(
    instance: &InstanceArgs,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (_, _, config) = load(instance)?;
    let thumbprint = config.thumbprint()?;
    match format {
        Format::Text => write!(
            out,
            "{}",
            thumbprint.map(|t| t.to_string()).unwrap_or_default()
        )?,
        Format::Json => write!(
            out,
            "{}",
            serde_json::json!({ "Thumbprint": thumbprint.map(|t| t.to_string()) })
        )?,
    }
    Ok(())
}

/// `configure`: every setting checked, then one save.
fn configure(args: ConfigureArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let ConfigureArgs {
        instance,
        home,
        app,
        port,
        no_listen,
        listen_ip_address,
        polling_connection_count,
        trust,
        remove_trust,
        reset_trust,
    } = args;
    let (_, path, mut config) = load(&instance)?;
    let mut servers = config.trusted_servers()?;
    if reset_trust {
        writeln!(out, "Removing all trusted Octopus Servers...")?;
        servers.clear();
    }
    if !remove_trust.is_empty() {
        writeln!(
            out,
            "Removing {} trusted Octopus Servers",
            remove_trust.len()
        )?;
        servers.retain(|s| !remove_trust.contains(&s.thumbprint));
    }
    if !trust.is_empty() {
        writeln!(out, "Adding {} trusted Octopus Servers", trust.len())?;
        for thumbprint in &trust {
            let parsed: Thumbprint = thumbprint
                .trim()
                .parse()
                .with_context(|| format!("--trust {thumbprint:?}"))?;
            octopoll_agent::tentacle::trusted_servers::add_or_update(
                &mut servers,
                TrustedOctopusServer::listening(&parsed.to_string()),
            );
        }
    }
    config.set_trusted_servers(&servers);
    if let Some(home) = home {
        let home = created_directory(&home)?;
        writeln!(out, "Home directory set to: {}", home.display())?;
        config.set_home(&home);
    }
    if let Some(app) = app {
        let app = created_directory(&app)?;
        writeln!(out, "Application directory set to: {}", app.display())?;
        config.set_application_directory(&app);
    }
    if let Some(port) = port {
        writeln!(out, "Services listen port: {port}")?;
        config.set_port(port);
    }
    if let Some(no_listen) = no_listen {
        writeln!(
            out,
            "{}",
            if no_listen {
                "Tentacle will not listen on a port"
            } else {
                "Tentacle will listen on a TCP port"
            }
        )?;
        config.set_no_listen(no_listen);
    }
    if let Some(ip) = listen_ip_address {
        if ip.eq_ignore_ascii_case("any") {
            writeln!(out, "Listen on any IP address")?;
            config.set_listen_ip(None);
        } else {
            let parsed = ip.parse().with_context(|| {
                format!("--listenIpAddress {ip:?} is not an IP address or `any`")
            })?;
            writeln!(out, "Listen on IP address: {ip}")?;
            config.set_listen_ip(Some(parsed));
        }
    }
    if let Some(count) = polling_connection_count {
        config.set_polling_connection_count(count);
    }
    save(&config, &path, out)
}

/// `register-with`: registers the machine, then trusts the server (polling: with
/// the subscription to poll it with).
async fn register_with(args: RegisterArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let RegisterArgs {
        instance,
        api,
        comms,
        comms_style,
        name,
        environment,
        role,
        force,
        server_subscription_id,
        public_host_name,
        tentacle_comms_port,
    } = args;
    let (_, path, mut config) = load(&instance)?;
    let identity = config.certificate()?.context(
        "No certificate has been generated for this Tentacle. Please run the new-certificate command first.",
    )?;
    let name = name.unwrap_or_else(host_name);
    // Polling: the node's comms address and the subscription to poll it
    // with. Listening: the address the node is to call back on.
    let (endpoint, polling) = match comms_style {
        CommsStyle::TentacleActive => {
            let address = comms_address(&api, &comms)?;
            let subscription = polling_subscription(&config, &address, server_subscription_id)?;
            let endpoint = EndpointResource::polling(&subscription, identity.thumbprint());
            (endpoint, Some((address, subscription)))
        }
        CommsStyle::TentaclePassive => {
            let host = public_host_name.unwrap_or_else(host_name);
            let port = match tentacle_comms_port {
                Some(port) => port,
                None => config.port()?,
            };
            let address = ListeningAddress::new(&host, port)
                .with_context(|| format!("--publicHostName {host:?}"))?;
            if config.no_listen()? {
                writeln!(out, "Warning: Tentacle.Services.NoListen is True, so this Tentacle opens no port and the server cannot reach it: run configure --noListen False")?;
            }
            let endpoint = EndpointResource::listening(&address, identity.thumbprint());
            (endpoint, None)
        }
    };
    writeln!(
        out,
        "Registering the tentacle with the server at {}",
        api.server
    )?;
    let (client, key) = client(&api)?;
    let server = client.server_thumbprint(&api.server, &key).await?;
    let machine = MachineResource {
        id: None,
        name,
        endpoint,
        roles: role,
        environment_ids: environment,
    };
    match client.register(&api.server, &key, &machine).await {
        Err(octopoll_agent::Error::Rejected { status: 409, .. }) if force => {
            replace_machine(&client, &api.server, &key, &machine, out).await?;
        }
        Err(octopoll_agent::Error::Rejected {
            status: 409,
            message,
            ..
        }) => bail!("{message}: pass --force to replace it"),
        other => {
            other?;
        }
    }
    match polling {
        Some((address, subscription)) => {
            config.add_or_update_trusted_server(TrustedOctopusServer::polling(
                &server.to_string(),
                &address,
                subscription.as_str(),
            ))?;
            if config
                .get(octopoll_agent::tentacle::config::POLLING_CONNECTION_COUNT)
                .is_none()
            {
                writeln!(out, "Setting the polling connection count to 1")?;
                config.set_polling_connection_count(std::num::NonZeroUsize::MIN);
            }
        }
        None => config
            .add_or_update_trusted_server(TrustedOctopusServer::listening(&server.to_string()))?,
    }
    save(&config, &path, out)?;
    writeln!(out, "Machine registered successfully")?;
    Ok(())
}

/// `poll-server`: polls one more node with the subscription already registered.
async fn poll_server(
    instance: &InstanceArgs,
    api: &ApiArgs,
    comms: &CommsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (name, path, mut config) = load(instance)?;
    let address = comms_address(api, comms)?;
    let (client, key) = client(api)?;
    let server = client.server_thumbprint(&api.server, &key).await?;
    let servers = config.trusted_servers()?;
    let trusted: Vec<&TrustedOctopusServer> = servers
        .iter()
        .filter(|s| s.thumbprint.eq_ignore_ascii_case(&server.to_string()))
        .collect();
    if trusted.is_empty() {
        bail!("The Octopus Server with the thumbprint '{server}' is not yet trusted. Trust this Octopus Server using 'octopoll tentacle configure --trust=\"{server}\" --instance {name}', or register with it first (register-with --comms-style TentacleActive)");
    }
    let Some(subscription) = trusted
        .iter()
        .find(|s| s.communication_style == CommunicationStyle::TentacleActive)
        .and_then(|s| s.subscription_id.clone())
    else {
        bail!("This Tentacle has not been configured to connect to the specified Octopus Server as a polling Tentacle: run register-with --comms-style TentacleActive against one node first");
    };
    config.add_or_update_trusted_server(TrustedOctopusServer::polling(
        &server.to_string(),
        &address,
        &subscription,
    ))?;
    save(&config, &path, out)?;
    writeln!(out, "Polling endpoint configured")?;
    if let Some(pid) = tell_running_agent(&path) {
        writeln!(out, "The running agent (pid {pid}) polls it now.")?;
    }
    Ok(())
}

/// An address as `clear-trusted-servers --keep` compares it: scheme, host (any
/// case) and port (the scheme's default when none is written).
fn address_key(address: &str) -> Option<(String, String, u16)> {
    let url = url::Url::parse(address).ok()?;
    Some((
        url.scheme().to_owned(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// `clear-trusted-servers`.
fn clear_trusted_servers(
    instance: &InstanceArgs,
    keep: &[String],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut kept_keys = Vec::with_capacity(keep.len());
    for address in keep {
        let key = address_key(address).with_context(|| {
            format!("--keep {address:?} is not an address (write it as https://host:port)")
        })?;
        kept_keys.push(key);
    }
    let (_, path, mut config) = load(instance)?;
    let servers = config.trusted_servers()?;
    let (kept, removed): (Vec<_>, Vec<_>) = servers.into_iter().partition(|server| {
        server
            .address
            .as_deref()
            .and_then(address_key)
            .is_some_and(|key| kept_keys.contains(&key))
    });
    config.set_trusted_servers(&kept);
    save(&config, &path, out)?;
    for server in &removed {
        let what = server.address.as_deref().unwrap_or("a listening trust");
        writeln!(out, "Removed trusted server {what} ({})", server.thumbprint)?;
    }
    writeln!(out, "Kept {} trusted server(s)", kept.len())?;
    if let Some(pid) = tell_running_agent(&path) {
        writeln!(out, "The running agent (pid {pid}) polls only those now.")?;
    }
    Ok(())
}

/// `list-instances`.
fn list_instances(format: Format, out: &mut impl Write) -> anyhow::Result<()> {
    let all = instances::list()?;
    match format {
        Format::Text if all.is_empty() => write!(out, "No instances installed")?,
        Format::Text => {
            for i in &all {
                writeln!(
                    out,
                    "Instance '{}' uses configuration '{}'.",
                    i.name,
                    i.configuration_file_path.display()
                )?;
            }
        }
        Format::Json => {
            let list: Vec<_> = all
                .iter()
                .map(|i| serde_json::json!({"InstanceName": i.name, "ConfigurationFilePath": i.configuration_file_path}))
                .collect();
            write!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
    }
    Ok(())
}

/// `deregister-from`: deletes this Tentacle's machine (or, with `multiple`, every
/// machine with its certificate); the trust stays.
async fn deregister_from(
    instance: &InstanceArgs,
    api: &ApiArgs,
    multiple: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (name, _, config) = load(instance)?;
    let thumbprint = config.thumbprint()?.context("This Tentacle does not have a thumbprint. The Tentacle must have a thumbprint in order to deregister it.")?;
    let (client, key) = client(api)?;
    let matches: Vec<_> = client
        .machines(&api.server, &key)
        .await?
        .into_iter()
        .filter(|m| {
            m.endpoint
                .thumbprint
                .eq_ignore_ascii_case(&thumbprint.to_string())
        })
        .collect();
    match matches.len() {
        0 => bail!("No machine was found matching this Tentacle's thumbprint."),
        n if n > 1 && !multiple => bail!("The Tentacle matches more than one machine on the server. To deregister all of these machines specify the --multiple flag."),
        _ => {}
    }
    for machine in &matches {
        writeln!(
            out,
            "Deleting machine '{}' from the Octopus Server...",
            machine.name
        )?;
        let id = machine.id.as_deref().unwrap_or_default();
        client.delete_machine(&api.server, &key, id).await?;
    }
    let server = client.server_thumbprint(&api.server, &key).await?;
    writeln!(out, "The Octopus Server is still trusted. If you wish to remove trust for this Octopus Server, use 'octopoll tentacle configure --remove-trust={server} --instance {name}'")?;
    writeln!(out, "Machine deregistered successfully")?;
    Ok(())
}

fn create_instance(
    instance: Option<String>,
    config: Option<PathBuf>,
    home: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let name = instance.unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
    let home = match (&home, &config) {
        (Some(home), _) => absolute(home)?,
        (None, Some(config)) => absolute(config)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => absolute(Path::new("."))?,
    };
    let path = match config {
        Some(config) if config.is_absolute() => config,
        Some(config) => home.join(config),
        None => home.join("Tentacle.config"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut settings = if path.exists() {
        writeln!(
            out,
            "Configuration file at {} already exists.",
            path.display()
        )?;
        TentacleConfig::load(&path).with_context(|| format!("reading {}", path.display()))?
    } else {
        writeln!(out, "Creating empty configuration file: {}", path.display())?;
        TentacleConfig::new()
    };
    writeln!(out, "Saving instance: {name}")?;
    writeln!(out, "Setting home directory to: {}", home.display())?;
    settings.set_home(&home);
    settings
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    instances::save(&Instance {
        name,
        configuration_file_path: path,
    })
}

fn new_certificate(
    instance: &InstanceArgs,
    if_blank: bool,
    export_pfx: Option<PathBuf>,
    pfx_password: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if if_blank && export_pfx.is_some() {
        bail!("Invalid command: --if-blank and --export-pfx cannot be specified together");
    }
    if let Some(file) = export_pfx {
        let password = pfx_password.unwrap_or_default();
        let identity = Identity::generate("Octopus Tentacle", KeyType::Rsa2048)?;
        let pfx = octopoll_pki::pfx::export(&identity, &password)?;
        write_private(&file, &pfx).with_context(|| format!("writing {}", file.display()))?;
        writeln!(
            out,
            "A new certificate has been generated and written to {}. Thumbprint:\n{}",
            file.display(),
            identity.thumbprint()
        )?;
        return Ok(());
    }
    let (_, path, mut config) = load(instance)?;
    if if_blank && config.thumbprint()?.is_some() {
        writeln!(
            out,
            "A certificate already exists, no changes will be applied."
        )?;
        return Ok(());
    }
    let identity = Identity::generate("Octopus Tentacle", KeyType::Rsa2048)?;
    config.set_certificate(&identity)?;
    save(&config, &path, out)?;
    writeln!(
        out,
        "A new certificate has been generated and installed. Thumbprint:\n{}",
        identity.thumbprint()
    )?;
    Ok(())
}

fn import_certificate(
    instance: &InstanceArgs,
    file: &Path,
    password: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (_, path, mut config) = load(instance)?;
    let bytes = std::fs::read(file)
        .with_context(|| format!("Certificate '{}' was not found.", file.display()))?;
    let identity = octopoll_pki::pfx::import(&bytes, password)
        .with_context(|| format!("importing {}", file.display()))?;
    config.set_certificate(&identity)?;
    save(&config, &path, out)?;
    writeln!(
        out,
        "Certificate with thumbprint {} imported successfully.",
        identity.thumbprint()
    )?;
    Ok(())
}

/// Runs the instance's polling loops until `stop`.
async fn agent(
    instance: &InstanceArgs,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (name, path, mut config) = load(instance)?;
    let identity = match config.certificate()? {
        Some(identity) => identity,
        None => {
            let identity = Identity::generate("Octopus Tentacle", KeyType::Rsa2048)?;
            config.set_certificate(&identity)?;
            save(&config, &path, out)?;
            writeln!(out, "A new certificate has been generated and installed as none were yet available. Thumbprint:\n{}", identity.thumbprint())?;
            identity
        }
    };
    let name = if name.is_empty() {
        DEFAULT_INSTANCE.to_owned()
    } else {
        name
    };
    let servers = trusted_polling_servers(&config)?;
    // Listening, as Tentacle does unless NoListen: for the servers trusted as
    // TentaclePassive (`configure --trust`), on ListenIP (all addresses if unset)
    // and the configured port.
    let listening_trust: Vec<Thumbprint> = if config.no_listen()? {
        Vec::new()
    } else {
        config
            .trusted_servers()?
            .iter()
            .filter(|s| s.communication_style == CommunicationStyle::TentaclePassive)
            .map(|s| {
                s.thumbprint
                    .parse()
                    .with_context(|| format!("the trusted thumbprint {:?}", s.thumbprint))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if servers.is_empty() && listening_trust.is_empty() {
        bail!("{} has no server to poll or listen for: run register-with --comms-style TentacleActive (and poll-server for each further node) to poll, or configure --trust=THUMBPRINT --noListen False to listen", path.display());
    }
    let listener = if listening_trust.is_empty() {
        None
    } else {
        let ip = config
            .listen_ip()?
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let addr = std::net::SocketAddr::new(ip, config.port()?);
        let trusting = listening_trust.len();
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "listening on {addr} (Tentacle.Services.PortNumber, Tentacle.Services.ListenIP)"
            )
        })?;
        let tentacle = octopoll_agent::ListeningTentacle::start(
            &identity,
            octopoll_agent::ListeningConfig::trusting(name.clone(), listening_trust),
            tcp,
        )?;
        writeln!(
            out,
            "Listening on {} for {trusting} trusted server(s)",
            tentacle.local_addr()
        )?;
        Some(tentacle)
    };
    let (agent_name, agent_identity) = (name.clone(), identity.clone());
    let poller = match servers.first() {
        None => None,
        Some(first) => {
            let subscription = first.subscription.clone();
            let mut agent_config = AgentConfig::default();
            agent_config.polling.connections_per_node = config.polling_connection_count()?;
            let handle = Agent {
                name,
                servers,
                identity,
                subscription,
                config: agent_config,
            }
            .start()?;
            writeln!(
                out,
                "Polling {} server(s) as {}",
                handle.servers().len(),
                handle.subscription()
            )?;
            Some(handle)
        }
    };
    writeln!(out, "Running. Press Ctrl-C to shut down...")?;
    out.flush()?;
    let _pid = PidFile::write(&path)?;
    let mut pollers: Vec<RunningAgent> = poller.into_iter().collect();
    let mut reloads = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP (how poll-server reaches a running agent)")?;
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = reloads.recv() => {
                match removed_polling_servers(&path, &pollers) {
                    Ok(0) => {}
                    Ok(count) => {
                        // Start over with what the config trusts now (a moment's reconnect).
                        for handle in pollers.drain(..) {
                            handle.stop().await;
                        }
                        writeln!(out, "Stopped polling {count} server(s)")?;
                        out.flush()?;
                    }
                    Err(error) => tracing::warn!(error = %format!("{error:#}"), "the change could not be read; still polling as before"),
                }
                match added_polling_servers(&path, &pollers) {
                    Ok(added) if added.is_empty() => {}
                    Ok(added) => {
                        let subscription = added[0].subscription.clone();
                        let count = added.len();
                        let mut agent_config = AgentConfig::default();
                        agent_config.polling.connections_per_node = config.polling_connection_count()?;
                        pollers.push(
                            Agent {
                                name: agent_name.clone(),
                                servers: added,
                                identity: agent_identity.clone(),
                                subscription,
                                config: agent_config,
                            }
                            .start()?,
                        );
                        writeln!(out, "Polling {count} more server(s)")?;
                        out.flush()?;
                    }
                    Err(error) => tracing::warn!(error = %format!("{error:#}"), "poll-server's change could not be read; still polling as before"),
                }
            }
        }
    }
    for handle in pollers {
        handle.stop().await;
    }
    if let Some(tentacle) = listener {
        tentacle.stop().await;
    }
    Ok(())
}

/// How many servers `running` polls that the config at `path` no longer trusts.
fn removed_polling_servers(path: &Path, running: &[RunningAgent]) -> anyhow::Result<usize> {
    let config =
        TentacleConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    let trusted = trusted_polling_servers(&config)?;
    Ok(running
        .iter()
        .flat_map(|h| h.servers())
        .filter(|polled| !trusted.iter().any(|t| t.address == polled.address))
        .count())
}

/// Polling entries the config at `path` has now that none of `running` polls, all
/// with the subscription they already poll with.
fn added_polling_servers(
    path: &Path,
    running: &[RunningAgent],
) -> anyhow::Result<Vec<TrustedServer>> {
    let config =
        TentacleConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    let polled: Vec<&TrustedServer> = running.iter().flat_map(|h| h.servers()).collect();
    let mut added = Vec::new();
    for server in trusted_polling_servers(&config)? {
        if let Some(first) = polled.first() {
            if first.subscription != server.subscription {
                bail!("the new entry for {} names subscription {}, but this agent polls as {}: restart it", server.address, server.subscription, first.subscription);
            }
        }
        if !polled.iter().any(|p| p.address == server.address) {
            added.push(server);
        }
    }
    Ok(added)
}

/// The pid file of a running `agent` for the config at a path: how
/// `poll-server` finds it. Removed when the agent stops.
struct PidFile(PathBuf);

impl PidFile {
    fn path_for(config: &Path) -> PathBuf {
        let mut name = config.as_os_str().to_owned();
        name.push(".agent.pid");
        PathBuf::from(name)
    }

    fn write(config: &Path) -> anyhow::Result<Self> {
        let path = Self::path_for(config);
        std::fs::write(&path, std::process::id().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asks the agent running the config at `config` (if any) to pick up new polling
/// entries at once (SIGHUP); its pid if one was told. Only poll-server and
/// clear-trusted-servers do
/// this: a hand edit of Tentacle.config changes nothing until a restart, as with
/// Tentacle.
fn tell_running_agent(config: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(PidFile::path_for(config)).ok()?;
    let raw: i32 = text.trim().parse().ok()?;
    // A pid file a killed agent left behind may name a process that reused the
    // pid: signal only an `octopoll tentacle agent|run`.
    let cmdline = std::fs::read(format!("/proc/{raw}/cmdline")).ok()?;
    let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_agent = words.iter().any(|w| w.ends_with(b"octopoll"))
        && words.contains(&&b"tentacle"[..])
        && words.iter().any(|w| {
            let command = String::from_utf8_lossy(w);
            let command = command.trim_start_matches(['-', '/']);
            command.eq_ignore_ascii_case("agent") || command.eq_ignore_ascii_case("run")
        });
    if !is_agent {
        return None;
    }
    let pid = nix::unistd::Pid::from_raw(raw);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).ok()?;
    Some(raw)
}

/// The TentacleActive entries as the agent's trusted servers; one subscription for all.
fn trusted_polling_servers(config: &TentacleConfig) -> anyhow::Result<Vec<TrustedServer>> {
    let mut servers: Vec<TrustedServer> = Vec::new();
    for entry in config.trusted_servers()? {
        if entry.communication_style != CommunicationStyle::TentacleActive {
            continue;
        }
        let Some(address) = entry.address.as_deref() else {
            tracing::warn!(thumbprint = %entry.thumbprint, "a polling entry without an Address is skipped");
            continue;
        };
        let subscription: SubscriptionId = entry
            .subscription_id
            .as_deref()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("the SubscriptionId of the entry for {address}"))?;
        if let Some(first) = servers.first() {
            if first.subscription != subscription {
                bail!("the polling entries name two subscriptions ({} and {subscription}): one Tentacle polls every node with one", first.subscription);
            }
        }
        servers.push(TrustedServer {
            thumbprint: entry
                .thumbprint
                .parse()
                .with_context(|| format!("the Thumbprint of the entry for {address}"))?,
            address: address
                .parse::<ServerAddress>()
                .with_context(|| format!("the Address {address:?}"))?,
            subscription,
        });
    }
    Ok(servers)
}

/// The instance's name, config path and settings.
/// `register-with --force` after a conflict: deletes every machine with this
/// one's name or certificate, then registers it again. Octopus updates the
/// machine in place; the mock node has no update, so it gets a new id.
async fn replace_machine(
    client: &RegistrationClient,
    server: &str,
    key: &ApiKey,
    machine: &MachineResource,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let clashing = client.machines(server, key).await?.into_iter().filter(|m| {
        m.name == machine.name
            || m.endpoint
                .thumbprint
                .eq_ignore_ascii_case(&machine.endpoint.thumbprint)
    });
    for existing in clashing {
        writeln!(
            out,
            "Replacing the existing machine '{}' (--force)",
            existing.name
        )?;
        let id = existing.id.as_deref().unwrap_or_default();
        client.delete_machine(server, key, id).await?;
    }
    client.register(server, key, machine).await?;
    Ok(())
}

/// The subscription a polling registration uses: the one an entry for
/// `address` already has, else `--server-subscription-id`, else a new one.
fn polling_subscription(
    config: &TentacleConfig,
    address: &str,
    asked: Option<String>,
) -> anyhow::Result<SubscriptionId> {
    let servers = config.trusted_servers()?;
    let existing = servers.iter().find(|s| {
        s.communication_style == CommunicationStyle::TentacleActive
            && s.address
                .as_deref()
                .is_some_and(|a| same_address(a, address))
    });
    Ok(match (existing, asked) {
        (Some(existing), _) => existing
            .subscription_id
            .as_deref()
            .unwrap_or_default()
            .parse()
            .context("the configured polling entry's SubscriptionId")?,
        (None, Some(id)) => id
            .parse()
            .context("The ServerSubscriptionId must start with poll://")?,
        (None, None) => SubscriptionId::random(&mut rand::rng()),
    })
}

fn load(instance: &InstanceArgs) -> anyhow::Result<(String, PathBuf, TentacleConfig)> {
    let (name, path) = instances::select(instance.instance.as_deref(), instance.config.as_deref())?;
    if !path.exists() {
        bail!(
            "The configuration file for instance {name} could not be located at the specified location {}. Run create-instance first.",
            path.display()
        );
    }
    let config =
        TentacleConfig::load(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((name, path, config))
}

fn save(config: &TentacleConfig, path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    config
        .save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(out, "These changes require a restart of the Tentacle.")?;
    Ok(())
}

/// A registration client for `api` and its key.
fn client(api: &ApiArgs) -> anyhow::Result<(RegistrationClient, ApiKey)> {
    let trust = match &api.server_thumbprint {
        Some(t) => RegistrationTrust::Pinned(t.parse().context("--server-thumbprint")?),
        None => RegistrationTrust::DangerousAcceptAny,
    };
    Ok((
        RegistrationClient::new(&trust)?,
        ApiKey::new(api.api_key.clone()),
    ))
}

/// `https://host:port` of the comms port: the host of --server-comms-address or
/// --server; the port of --server-comms-port, else the comms address's, else
/// 10943 (never --server's: that is the API's).
fn comms_address(api: &ApiArgs, comms: &CommsArgs) -> anyhow::Result<String> {
    let source = comms.server_comms_address.as_deref().unwrap_or(&api.server);
    let url = if source.contains("://") {
        reqwest::Url::parse(source)
    } else {
        reqwest::Url::parse(&format!("https://{source}"))
    }
    .with_context(|| format!("{source:?} is not a server address"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("{source:?} has no host"))?;
    let from_address = comms.server_comms_address.as_ref().and(url.port());
    let port = comms.server_comms_port.or(from_address).unwrap_or(10943);
    Ok(format!("https://{host}:{port}"))
}

fn same_address(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// `path` made absolute, created if it is not there.
fn created_directory(path: &Path) -> anyhow::Result<PathBuf> {
    let path = absolute(path)?;
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "octopoll-tentacle".to_owned())
}

/// Writes `bytes` to `path` readable by its owner only (a PFX holds a private
/// key), never through a symlink.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    octopoll_pki::pem::write_file(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(server: &str, comms_at: Option<&str>, port: Option<u16>) -> String {
        let api = ApiArgs {
            server: server.into(),
            api_key: "API-X".into(),
            server_thumbprint: None,
        };
        let comms = CommsArgs {
            server_comms_port: port,
            server_comms_address: comms_at.map(Into::into),
        };
        comms_address(&api, &comms).unwrap()
    }

    #[test]
    fn the_comms_address_takes_the_host_of_one_and_the_port_of_another() {
        // --server's port is the API's, never the comms port.
        assert_eq!(
            address("https://octo:8443", None, None),
            "https://octo:10943"
        );
        assert_eq!(
            address("https://octo:8443/", None, Some(10944)),
            "https://octo:10944"
        );
        assert_eq!(
            address("https://octo", Some("https://node2:10945"), None),
            "https://node2:10945"
        );
        assert_eq!(
            address("https://octo", Some("node2:10945"), Some(10946)),
            "https://node2:10946"
        );
        assert_eq!(
            address("https://[::1]:8443", None, None),
            "https://[::1]:10943"
        );
        assert_eq!(
            address("https://[::1]", Some("[::1]"), None),
            "https://[::1]:10943"
        );
        let api = ApiArgs {
            server: "https://".into(),
            api_key: "k".into(),
            server_thumbprint: None,
        };
        let comms = CommsArgs {
            server_comms_port: None,
            server_comms_address: None,
        };
        assert!(comms_address(&api, &comms).is_err());
    }
}

//! `octopoll proxy`: the chaos proxy on its own, driven through its
//! toxiproxy-shaped HTTP API until Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use octopoll_chaos::api::ListenPolicy;
use octopoll_chaos::{Chaos, ProxyConfig};
use tokio_util::sync::CancellationToken;

use crate::args::ProxyArgs;

/// Creates the proxies given as flags, serves the API, and waits to be stopped.
pub async fn proxy(
    args: ProxyArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let chaos = Chaos::new();
    for spec in &args.proxy {
        let config = parse_spec(spec)?;
        let info = chaos
            .create(config)
            .await
            .with_context(|| format!("creating proxy {spec:?}"))?;
        println!(
            "proxy {} listening on {} -> {}",
            info.name, info.listen, info.upstream
        );
    }
    let listener = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| {
            format!(
                "binding the proxy API on {} (pass --api HOST:PORT)",
                args.api
            )
        })?;
    let addr = listener.local_addr()?;
    println!("chaos proxy API on http://{addr} (toxiproxy's: GET /proxies, POST /proxies/{{name}}/toxics, POST /reset)");
    let shutdown = CancellationToken::new();
    let listen = if args.allow_public_listen {
        ListenPolicy::Any
    } else {
        ListenPolicy::Loopback
    };
    let serving = tokio::spawn(octopoll_chaos::api::serve(
        listener,
        chaos.clone(),
        listen,
        shutdown.clone(),
    ));
    stop.await;
    shutdown.cancel();
    chaos.shutdown().await;
    serving.await.context("the proxy API task")??;
    Ok(())
}

/// `NAME=LISTEN=UPSTREAM`, e.g. `node-1=127.0.0.1:20943=127.0.0.1:10943`.
fn parse_spec(spec: &str) -> anyhow::Result<ProxyConfig> {
    let parts: Vec<&str> = spec.split('=').collect();
    let [name, listen, upstream] = parts[..] else {
        bail!("--proxy {spec:?}: expected NAME=LISTEN=UPSTREAM, e.g. node-1=127.0.0.1:20943=127.0.0.1:10943");
    };
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("--proxy {spec:?}: {listen:?} is not an address like 127.0.0.1:20943")
    })?;
    if name.is_empty() || upstream.is_empty() {
        bail!("--proxy {spec:?}: the name and upstream must not be empty");
    }
    Ok(ProxyConfig::new(name, listen, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_expected() {
        let config = parse_spec("node-1=127.0.0.1:20943=127.0.0.1:10943").unwrap();
        assert_eq!(config.name, "node-1");
        assert_eq!(config.upstream, "127.0.0.1:10943");
        let error = parse_spec("node-1=127.0.0.1:20943").unwrap_err();
        assert!(
            error.to_string().contains("NAME=LISTEN=UPSTREAM"),
            "{error}"
        );
        assert!(parse_spec("a=nowhere=b").is_err());
    }
}

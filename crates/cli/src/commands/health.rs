//! `octopoll health URL`: a container health check that needs no curl in the
//! image. Exit 0 when the control API answers 2xx, 1 (with the reason) otherwise.

use anyhow::{bail, Context};

use crate::args::HealthArgs;

/// Asks `args.url` once, within `args.timeout`.
pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("{} did not answer", args.url))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{} answered {status}", args.url);
    }
    Ok(())
}

//! `octopoll certs`: development certificates for a node and an agent.

use anyhow::{bail, Context};
use octopoll_pki::{pem, Identity};

use crate::args::CertsArgs;

/// Writes the two identities and prints their thumbprints.
pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let exists = |name| {
        let (cert, key) = pem::paths(&args.out, name);
        cert.exists() && key.exists()
    };
    if args.keep && exists("node") && exists("agent") {
        for name in ["node", "agent"] {
            let identity = pem::load(&args.out, name)
                .with_context(|| format!("reading the existing {name} certificate"))?;
            println!("{name:<6} {}  (kept)", identity.thumbprint());
        }
        return Ok(());
    }
    for name in ["node", "agent"] {
        let (cert, key) = pem::paths(&args.out, name);
        if !args.force && (cert.exists() || key.exists()) {
            bail!(
                "{} already exists; pass --force to replace it",
                cert.display()
            );
        }
    }
    for name in ["node", "agent"] {
        let identity = Identity::generate(&format!("octopoll-{name}"), args.key_type.into())
            .with_context(|| format!("generating the {name} certificate"))?;
        let path = pem::save(&identity, &args.out, name)
            .with_context(|| format!("writing the {name} certificate"))?;
        println!("{name:<6} {}  {}", identity.thumbprint(), path.display());
    }
    Ok(())
}

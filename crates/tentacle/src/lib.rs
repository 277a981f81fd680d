//! `octopoll tentacle …`: the Tentacle.exe command set, so the Octopus docs'
//! commands work as written against an octopoll cluster. An instance's settings
//! live in a real `Tentacle.config` (`octopoll_agent::tentacle::config`), the
//! instance index mirrors Tentacle's (`instances`), options are read the way
//! Tentacle's Mono.Options parser reads them (`options`), and `agent` runs the
//! configured instance until stopped: it polls its `TentacleActive` entries
//! and listens for its `TentaclePassive` trusts (unless `NoListen`).
//! `register-with` registers either kind (`--comms-style`, default
//! `TentaclePassive` as in Tentacle).
//!
//! Where octopoll differs from Tentacle it says so in `--help`:
//! * the registration API's HTTPS certificate is pinned with
//!   `--server-thumbprint`, or else accepted as presented (the comms connection
//!   is always pinned to the thumbprint the API reports), as `--ignoreSslErrors`;
//! * the certificate in Tentacle.config is not encrypted with a machine key.

pub mod commands;
pub mod instances;
pub mod options;

pub use commands::run;
pub use options::{parse, TentacleCli, TentacleCommand};

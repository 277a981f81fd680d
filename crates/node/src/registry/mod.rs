//! The machine registry: the HA cluster's shared "database" of registered Tentacles.
//!
//! Every node of a cluster holds a clone of one registry. In one process the
//! registry *is* the store. Nodes in separate processes share it through Redis
//! ([`MachineRegistry::connect`]): each keeps a local copy, kept current by
//! Redis pub/sub and looked up in Redis on a miss, so a machine registered
//! through any node can poll every node at once.
//!
//! Registering a machine also trusts its thumbprint in the [`TrustedThumbprints`]
//! set every node's TLS acceptor reads.

mod cache;
mod endpoint;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use octopoll_pki::{Thumbprint, TrustedThumbprints};
use octopoll_wire::SubscriptionId;
use serde::{Deserialize, Serialize};

use cache::Machines;
pub use endpoint::{Endpoint, EndpointError, ListeningAddress, DEFAULT_LISTENING_PORT};
#[cfg(not(feature = "redis"))]
use no_store::RedisStore;
#[cfg(feature = "redis")]
use redis::RedisStore;

/// A registered Tentacle, polling or listening.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `Machines-<n>`, assigned at registration.
    pub id: String,
    /// The display name, unique in the registry.
    pub name: String,
    /// The certificate it must present.
    #[serde(serialize_with = "display", deserialize_with = "parsed")]
    pub thumbprint: Thumbprint,
    /// How the nodes reach it: the subscription it polls with, or the address
    /// it listens at (stored as its URI).
    #[serde(serialize_with = "display", deserialize_with = "parsed")]
    pub endpoint: Endpoint,
    /// Target roles.
    pub roles: Vec<String>,
    /// Environment ids.
    pub environments: Vec<String>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn parsed<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Machine {
    /// The subscription a polling machine identifies with; `None` for a
    /// listening one.
    pub fn subscription(&self) -> Option<&SubscriptionId> {
        self.endpoint.subscription()
    }

    /// Whether the machine polls (so the nodes' acceptors trust it).
    pub fn polls(&self) -> bool {
        self.subscription().is_some()
    }

    /// The number in `Machines-<n>`, for registration order.
    fn number(&self) -> u64 {
        self.id
            .strip_prefix("Machines-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

/// What registering did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new machine.
    Created(Machine),
    /// The same machine again (same name, thumbprint and endpoint): nothing changed.
    Unchanged(Machine),
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// Another machine already has this name.
    #[error("a machine named {name:?} is already registered with another certificate or endpoint")]
    Name {
        /// The name.
        name: String,
    },
    /// Another machine already has this thumbprint.
    #[error("certificate {thumbprint} is already registered as {existing:?}")]
    Thumbprint {
        /// The thumbprint.
        thumbprint: Thumbprint,
        /// The existing machine's name.
        existing: String,
    },
    /// Another machine already has this endpoint: a polling subscription (or a
    /// listening address) belongs to one machine, or a second certificate could
    /// collect its requests and use up its connections.
    #[error("{endpoint} already belongs to machine {existing:?}")]
    Endpoint {
        /// The endpoint's URI.
        endpoint: String,
        /// The machine that has it.
        existing: String,
    },
}

/// Why registering did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// It conflicts with a registered machine.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The shared store could not be reached or answered nonsense.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the shared store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis could not be reached, or refused a command.
    #[cfg(feature = "redis")]
    #[error("the machine registry at {url} is unreachable or refused a command")]
    Redis {
        /// Where the store is.
        url: String,
        /// redis-rs's reason.
        #[source]
        source: ::redis::RedisError,
    },
    /// Redis held something that is not a machine.
    #[error("the machine registry at {url} holds a malformed machine: {reason}")]
    Malformed {
        /// Where the store is.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// A machine to register, before it has an id.
#[derive(Clone, Debug)]
pub struct NewMachine {
    /// Display name.
    pub name: String,
    /// Its certificate's thumbprint.
    pub thumbprint: Thumbprint,
    /// How the nodes reach it.
    pub endpoint: Endpoint,
    /// Target roles.
    pub roles: Vec<String>,
    /// Environment ids.
    pub environments: Vec<String>,
}

impl NewMachine {
    /// The machine it becomes with `id`.
    fn with_id(self, id: String) -> Machine {
        Machine {
            id,
            name: self.name,
            thumbprint: self.thumbprint,
            endpoint: self.endpoint,
            roles: self.roles,
            environments: self.environments,
        }
    }
}

/// The shared registry. Clones share state.
#[derive(Clone, Debug)]
pub struct MachineRegistry {
    machines: Machines,
    /// `None`: this process's registry is the store.
    store: Option<Arc<RedisStore>>,
}

impl Default for MachineRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MachineRegistry {
    /// An empty registry held in this process.
    pub fn new() -> Self {
        Self {
            machines: Machines::new(TrustedThumbprints::new()),
            store: None,
        }
    }

    /// A registry shared through the Redis server at `url` (`redis://host:port`),
    /// with the `redis` feature.
    /// under `namespace` (one cluster's keys). Loads every machine registered so
    /// far and follows the changes other processes make.
    #[cfg(feature = "redis")]
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let machines = Machines::new(TrustedThumbprints::deferring());
        let store = RedisStore::connect(url, namespace, machines.clone()).await?;
        Ok(Self {
            machines,
            store: Some(Arc::new(store)),
        })
    }

    /// Deletes every machine of the cluster `namespace` from the Redis server at
    /// `url`: for a cluster that will not run again (a finished run's).
    #[cfg(feature = "redis")]
    pub async fn forget(url: &str, namespace: &str) -> Result<(), StoreError> {
        RedisStore::forget(url, namespace).await
    }

    /// Whether the registry is shared with other processes (so the local copy can
    /// trail it by a moment).
    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// Where the shared store is, if there is one (`redis://…`).
    pub fn store_url(&self) -> Option<&str> {
        self.store.as_deref().map(RedisStore::url)
    }

    /// How many times the shared store was found empty while this process knew
    /// machines (Redis restarted without its data): each time, every agent is
    /// distrusted until it registers again. Always 0 without a shared store.
    pub fn store_emptied(&self) -> u64 {
        self.store.as_deref().map_or(0, |store| store.emptied())
    }

    /// How many times this process lost the shared store's change channel (closed,
    /// or silent past a ping) and followed it again, reloading every machine.
    /// Always 0 without a shared store.
    pub fn store_channel_losses(&self) -> u64 {
        self.store
            .as_deref()
            .map_or(0, |store| store.channel_losses())
    }

    /// The thumbprints of registered *polling* machines, as the TLS acceptors
    /// read them (a listening machine never connects to a node).
    pub fn trusted(&self) -> TrustedThumbprints {
        self.machines.trusted()
    }

    /// Registers a machine; a repeat of the same registration is `Unchanged`.
    pub async fn register(&self, new: NewMachine) -> Result<Registered, RegisterError> {
        match &self.store {
            None => Ok(self.machines.register_local(new)?),
            Some(store) => store.register(new).await,
        }
    }

    /// Removes the machine with `thumbprint`; its next handshake is refused.
    pub async fn deregister(&self, thumbprint: &Thumbprint) -> Result<Option<Machine>, StoreError> {
        match &self.store {
            None => Ok(self.machines.remove(thumbprint)),
            Some(store) => store.deregister(thumbprint).await,
        }
    }

    /// The machine presenting `thumbprint`, as this process knows it now.
    pub fn by_thumbprint(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        self.machines.get(thumbprint)
    }

    /// The machine presenting `thumbprint`: from the local copy, or else from the
    /// shared store (a machine another process registered a moment ago).
    pub async fn resolve(&self, thumbprint: &Thumbprint) -> Result<Option<Machine>, StoreError> {
        if let Some(machine) = self.machines.get(thumbprint) {
            return Ok(Some(machine));
        }
        match &self.store {
            None => Ok(None),
            Some(store) => store.fetch(thumbprint).await,
        }
    }

    /// Every registered machine, in registration order.
    pub fn machines(&self) -> Vec<Machine> {
        self.machines.all()
    }

    /// How many machines are registered.
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Whether no machine is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Without the `redis` feature there is no shared store: a stand-in with no values,
/// so every registry is held in its own process and the store's branches vanish.
#[cfg(not(feature = "redis"))]
mod no_store {
    use octopoll_pki::Thumbprint;

    use super::{Machine, NewMachine, RegisterError, Registered, StoreError};

    #[derive(Debug)]
    pub(super) enum RedisStore {}

    impl RedisStore {
        pub(super) fn url(&self) -> &str {
            match *self {}
        }

        pub(super) async fn register(&self, _: NewMachine) -> Result<Registered, RegisterError> {
            match *self {}
        }

        pub(super) async fn deregister(
            &self,
            _: &Thumbprint,
        ) -> Result<Option<Machine>, StoreError> {
            match *self {}
        }

        pub(super) async fn fetch(&self, _: &Thumbprint) -> Result<Option<Machine>, StoreError> {
            match *self {}
        }

        pub(super) fn emptied(&self) -> u64 {
            match *self {}
        }

        pub(super) fn channel_losses(&self) -> u64 {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn new_machine(name: &str, byte: u8, sub: &str) -> NewMachine {
        let thumbprint = format!("{:02X}", byte).repeat(20).parse().unwrap();
        NewMachine {
            name: name.into(),
            thumbprint,
            endpoint: sub.parse().unwrap(),
            roles: vec![],
            environments: vec![],
        }
    }

    #[tokio::test]
    async fn register_trusts_and_repeat_is_unchanged() {
        let registry = MachineRegistry::new();
        let m = new_machine("a", 1, "poll://a/");
        assert!(matches!(
            registry.register(m.clone()).await,
            Ok(Registered::Created(_))
        ));
        assert!(registry.trusted().contains(&m.thumbprint));
        assert!(matches!(
            registry.register(m.clone()).await,
            Ok(Registered::Unchanged(_))
        ));
        assert_eq!(registry.len(), 1);
        registry.deregister(&m.thumbprint).await.unwrap();
        assert!(!registry.trusted().contains(&m.thumbprint));
        assert!(!registry.trusted().defers_unknown());
    }

    #[tokio::test]
    async fn conflicts_are_refused() {
        let registry = MachineRegistry::new();
        registry
            .register(new_machine("a", 1, "poll://a/"))
            .await
            .unwrap();
        assert!(matches!(
            registry.register(new_machine("a", 2, "poll://b/")).await,
            Err(RegisterError::Conflict(Conflict::Name { .. }))
        ));
        assert!(matches!(
            registry.register(new_machine("b", 1, "poll://b/")).await,
            Err(RegisterError::Conflict(Conflict::Thumbprint { .. }))
        ));
        // Another certificate cannot take machine a's subscription.
        let taken = registry.register(new_machine("b", 2, "poll://a/")).await;
        let Err(RegisterError::Conflict(conflict)) = taken else {
            panic!("{taken:?}")
        };
        assert_eq!(
            conflict.to_string(),
            r#"poll://a/ already belongs to machine "a""#
        );
        assert!(!registry
            .trusted()
            .contains(&new_machine("b", 2, "poll://a/").thumbprint));
    }

    #[test]
    fn machines_round_trip_through_json() {
        let machine = new_machine("a", 7, "poll://abc/").with_id("Machines-12".into());
        let text = serde_json::to_string(&machine).unwrap();
        assert!(text.starts_with(r#"{"id":"Machines-12","#), "{text}");
        assert_eq!(serde_json::from_str::<Machine>(&text).unwrap(), machine);
        assert_eq!(machine.number(), 12);
    }
}

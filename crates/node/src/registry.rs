//! The machine registry: the HA cluster's shared "database" of registered Tentacles.
//!
//! Every node of a cluster holds a clone of one registry. Registering a machine
//! also trusts its thumbprint in the shared [`TrustedThumbprints`] set that every
//! node's TLS acceptor reads, so the machine can poll any node at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use octopoll_pki::{Thumbprint, TrustedThumbprints};
use octopoll_wire::SubscriptionId;
use serde::Serialize;

/// A registered polling Tentacle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `Machines-<n>`, assigned at registration.
    pub id: String,
    /// The display name, unique in the registry.
    pub name: String,
    /// The certificate it must present.
    #[serde(serialize_with = "display")]
    pub thumbprint: Thumbprint,
    /// The subscription it must identify with.
    #[serde(serialize_with = "display")]
    pub subscription: SubscriptionId,
    /// Target roles.
    pub roles: Vec<String>,
    /// Environment ids.
    pub environments: Vec<String>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// What registering did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new machine.
    Created(Machine),
    /// The same machine again (same name, thumbprint and subscription): nothing changed.
    Unchanged(Machine),
}

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// Another machine already has this name.
    #[error(
        "a machine named {name:?} is already registered with another certificate or subscription"
    )]
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
}

/// A machine to register, before it has an id.
#[derive(Clone, Debug)]
pub struct NewMachine {
    /// Display name.
    pub name: String,
    /// Its certificate's thumbprint.
    pub thumbprint: Thumbprint,
    /// Its polling subscription.
    pub subscription: SubscriptionId,
    /// Target roles.
    pub roles: Vec<String>,
    /// Environment ids.
    pub environments: Vec<String>,
}

#[derive(Debug, Default)]
struct Machines {
    by_thumbprint: HashMap<Thumbprint, Machine>,
    next_id: u64,
}

/// The shared registry. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct MachineRegistry {
    machines: Arc<RwLock<Machines>>,
    trusted: TrustedThumbprints,
}

impl MachineRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The thumbprints of registered machines, as the TLS acceptors read them.
    pub fn trusted(&self) -> TrustedThumbprints {
        self.trusted.clone()
    }

    /// Registers a machine; a repeat of the same registration is `Unchanged`.
    pub fn register(&self, new: NewMachine) -> Result<Registered, Conflict> {
        let mut machines = self.machines.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = machines.by_thumbprint.get(&new.thumbprint) {
            return if existing.name == new.name && existing.subscription == new.subscription {
                Ok(Registered::Unchanged(existing.clone()))
            } else {
                Err(Conflict::Thumbprint {
                    thumbprint: new.thumbprint,
                    existing: existing.name.clone(),
                })
            };
        }
        if machines.by_thumbprint.values().any(|m| m.name == new.name) {
            return Err(Conflict::Name { name: new.name });
        }
        machines.next_id += 1;
        let machine = Machine {
            id: format!("Machines-{}", machines.next_id),
            name: new.name,
            thumbprint: new.thumbprint,
            subscription: new.subscription,
            roles: new.roles,
            environments: new.environments,
        };
        machines
            .by_thumbprint
            .insert(machine.thumbprint, machine.clone());
        self.trusted.insert(machine.thumbprint);
        Ok(Registered::Created(machine))
    }

    /// Removes the machine with `thumbprint`; its next handshake is refused.
    pub fn deregister(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        let mut machines = self.machines.write().unwrap_or_else(|e| e.into_inner());
        let removed = machines.by_thumbprint.remove(thumbprint);
        self.trusted.remove(thumbprint);
        removed
    }

    /// The machine presenting `thumbprint`.
    pub fn by_thumbprint(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        machines.by_thumbprint.get(thumbprint).cloned()
    }

    /// Every registered machine, in registration order.
    pub fn machines(&self) -> Vec<Machine> {
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Machine> = machines.by_thumbprint.values().cloned().collect();
        all.sort_by_key(|m| m.id[9..].parse::<u64>().unwrap_or(u64::MAX));
        all
    }

    /// How many machines are registered.
    pub fn len(&self) -> usize {
        self.machines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_thumbprint
            .len()
    }

    /// Whether no machine is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_machine(name: &str, byte: u8, sub: &str) -> NewMachine {
        let thumbprint = format!("{:02X}", byte).repeat(20).parse().unwrap();
        NewMachine {
            name: name.into(),
            thumbprint,
            subscription: sub.parse().unwrap(),
            roles: vec![],
            environments: vec![],
        }
    }

    #[test]
    fn register_trusts_and_repeat_is_unchanged() {
        let registry = MachineRegistry::new();
        let m = new_machine("a", 1, "poll://a/");
        assert!(matches!(
            registry.register(m.clone()),
            Ok(Registered::Created(_))
        ));
        assert!(registry.trusted().contains(&m.thumbprint));
        assert!(matches!(
            registry.register(m.clone()),
            Ok(Registered::Unchanged(_))
        ));
        assert_eq!(registry.len(), 1);
        registry.deregister(&m.thumbprint);
        assert!(!registry.trusted().contains(&m.thumbprint));
    }

    #[test]
    fn conflicts_are_refused() {
        let registry = MachineRegistry::new();
        registry.register(new_machine("a", 1, "poll://a/")).unwrap();
        assert!(matches!(
            registry.register(new_machine("a", 2, "poll://b/")),
            Err(Conflict::Name { .. })
        ));
        assert!(matches!(
            registry.register(new_machine("b", 1, "poll://b/")),
            Err(Conflict::Thumbprint { .. })
        ));
    }
}

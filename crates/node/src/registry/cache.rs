//! The registry's copy of the machines in this process, and the trusted set the
//! TLS acceptors read beside it. In one process it is the store; with Redis it is
//! a cache the store keeps current.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use octopoll_pki::{Thumbprint, TrustedThumbprints};

use super::{Conflict, Machine, NewMachine, Registered};

#[derive(Debug, Default)]
struct Inner {
    by_thumbprint: HashMap<Thumbprint, Machine>,
    /// The last id handed out, when this copy is the store.
    next_id: u64,
}

/// Machines by thumbprint, and their thumbprints trusted. Clones share state.
#[derive(Clone, Debug)]
pub(super) struct Machines {
    inner: Arc<RwLock<Inner>>,
    trusted: TrustedThumbprints,
}

impl Machines {
    pub(super) fn new(trusted: TrustedThumbprints) -> Self {
        Self {
            inner: Arc::default(),
            trusted,
        }
    }

    pub(super) fn trusted(&self) -> TrustedThumbprints {
        self.trusted.clone()
    }

    /// Registers `new` here, as the store: the rules every store follows.
    pub(super) fn register_local(&self, new: NewMachine) -> Result<Registered, Conflict> {
        let mut inner = self.write();
        if let Some(existing) = inner.by_thumbprint.get(&new.thumbprint) {
            return same_or_conflict(existing, &new)
                .map(|()| Registered::Unchanged(existing.clone()));
        }
        if inner.by_thumbprint.values().any(|m| m.name == new.name) {
            return Err(Conflict::Name { name: new.name });
        }
        inner.next_id += 1;
        let machine = new.with_id(format!("Machines-{}", inner.next_id));
        inner
            .by_thumbprint
            .insert(machine.thumbprint, machine.clone());
        self.trusted.insert(machine.thumbprint);
        Ok(Registered::Created(machine))
    }

    /// Adds or replaces `machine` (the store registered it).
    pub(super) fn insert(&self, machine: Machine) {
        let thumbprint = machine.thumbprint;
        self.write().by_thumbprint.insert(thumbprint, machine);
        self.trusted.insert(thumbprint);
    }

    /// Removes the machine with `thumbprint`.
    pub(super) fn remove(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        let removed = self.write().by_thumbprint.remove(thumbprint);
        self.trusted.remove(thumbprint);
        removed
    }

    /// Makes this copy hold exactly `machines` (reloaded from the store).
    pub(super) fn replace_all(&self, machines: Vec<Machine>) {
        let mut inner = self.write();
        inner.by_thumbprint = machines.into_iter().map(|m| (m.thumbprint, m)).collect();
        self.trusted
            .replace_all(inner.by_thumbprint.keys().copied());
    }

    pub(super) fn get(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        self.read().by_thumbprint.get(thumbprint).cloned()
    }

    /// Every machine, in registration order.
    pub(super) fn all(&self) -> Vec<Machine> {
        let mut all: Vec<Machine> = self.read().by_thumbprint.values().cloned().collect();
        all.sort_by_key(Machine::number);
        all
    }

    pub(super) fn len(&self) -> usize {
        self.read().by_thumbprint.len()
    }

    // A poisoned lock only means a writer panicked mid-insert; the map is still valid.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A repeat of `existing`'s registration is fine; the same certificate under
/// another name or subscription is not.
pub(super) fn same_or_conflict(existing: &Machine, new: &NewMachine) -> Result<(), Conflict> {
    if existing.name == new.name && existing.subscription == new.subscription {
        Ok(())
    } else {
        Err(Conflict::Thumbprint {
            thumbprint: new.thumbprint,
            existing: existing.name.clone(),
        })
    }
}

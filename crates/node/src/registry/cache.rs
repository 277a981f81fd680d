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
    /// Removals and reloads so far: a machine read from the store before one of
    /// them may be stale, and must not be put back (see [`Machines::insert_read`]).
    removals: u64,
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
        if let Some(holder) = inner
            .by_thumbprint
            .values()
            .find(|m| m.endpoint == new.endpoint)
        {
            return Err(Conflict::Endpoint {
                endpoint: new.endpoint.to_string(),
                existing: holder.name.clone(),
            });
        }
        inner.next_id += 1;
        let machine = new.with_id(format!("Machines-{}", inner.next_id));
        // The trusted set changes under the map's lock, so the two never disagree.
        self.trust(&machine);
        inner
            .by_thumbprint
            .insert(machine.thumbprint, machine.clone());
        Ok(Registered::Created(machine))
    }

    /// Adds or replaces `machine`, as the store's change stream announced it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis store calls it
    pub(super) fn insert(&self, machine: Machine) {
        let mut inner = self.write();
        self.trust(&machine);
        inner.by_thumbprint.insert(machine.thumbprint, machine);
    }

    /// Trusts a polling machine's thumbprint; a listening machine's stays
    /// untrusted, as it never connects to a node.
    fn trust(&self, machine: &Machine) {
        if machine.polls() {
            self.trusted.insert(machine.thumbprint);
        }
    }

    /// How many removals and reloads this copy has seen: take it before reading
    /// the store, and give it to [`Machines::insert_read`].
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis store calls it
    pub(super) fn removals(&self) -> u64 {
        self.read().removals
    }

    /// Adds `machine`, read from the store when [`Machines::removals`] was
    /// `before`, unless a removal or reload came since (the machine may have been
    /// deregistered in between: putting it back would trust it for good).
    /// Returns whether it was added.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis store calls it
    pub(super) fn insert_read(&self, machine: Machine, before: u64) -> bool {
        let mut inner = self.write();
        if inner.removals != before {
            return false;
        }
        self.trust(&machine);
        inner.by_thumbprint.insert(machine.thumbprint, machine);
        true
    }

    /// Removes the machine with `thumbprint`.
    pub(super) fn remove(&self, thumbprint: &Thumbprint) -> Option<Machine> {
        let mut inner = self.write();
        inner.removals += 1;
        self.trusted.remove(thumbprint);
        inner.by_thumbprint.remove(thumbprint)
    }

    /// Makes this copy hold exactly `machines` (reloaded from the store).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis store calls it
    pub(super) fn replace_all(&self, machines: Vec<Machine>) {
        let mut inner = self.write();
        inner.removals += 1;
        inner.by_thumbprint = machines.into_iter().map(|m| (m.thumbprint, m)).collect();
        self.trusted.replace_all(
            inner
                .by_thumbprint
                .values()
                .filter(|m| m.polls())
                .map(|m| m.thumbprint),
        );
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
/// another name or endpoint is not.
pub(super) fn same_or_conflict(existing: &Machine, new: &NewMachine) -> Result<(), Conflict> {
    if existing.name == new.name && existing.endpoint == new.endpoint {
        Ok(())
    } else {
        Err(Conflict::Thumbprint {
            thumbprint: new.thumbprint,
            existing: existing.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::new_machine;

    #[test]
    fn a_read_that_a_removal_overtook_is_not_put_back() {
        let machines = Machines::new(TrustedThumbprints::deferring());
        let machine = new_machine("a", 1, "poll://a/").with_id("Machines-1".into());
        let thumbprint = machine.thumbprint;
        // Read from the store, then deregistered before the read is kept.
        let before = machines.removals();
        machines.remove(&thumbprint);
        assert!(!machines.insert_read(machine.clone(), before));
        assert!(machines.get(&thumbprint).is_none());
        assert!(!machines.trusted().contains(&thumbprint));
        // A read after the removal is kept.
        let before = machines.removals();
        assert!(machines.insert_read(machine, before));
        assert!(machines.trusted().contains(&thumbprint));
        // A reload counts as a removal.
        let before = machines.removals();
        machines.replace_all(Vec::new());
        assert_ne!(machines.removals(), before);
    }
}

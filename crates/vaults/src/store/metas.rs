//! Every vault's metadata, kept in memory between the writes that change it.
//!
//! Reading a vault's metadata is on the path of nearly every request (resolve
//! a name, check the vault is writable, serve a peer), and each read was an
//! LMDB read transaction with its page decryptions. Metadata changes rarely
//! (create, rename, set a remote, delete, clone, fork), so the store reads
//! the whole table once and keeps it until a write transaction that touched
//! it commits.
//!
//! Coherence: each writer calls [`MetaCache::changed`] after its commit
//! (whether or not it succeeded). A reader that loads the table notes the
//! generation before its read transaction and keeps what it read only if no
//! writer finished in between; otherwise it uses its copy once and the next
//! reader loads again. So a kept table is never older than the last commit
//! that finished before it was kept. This holds for the writes of one
//! `VaultStore`, which is how the store is used: one per environment, as its
//! per-vault writer locks already require.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keynode_core::VaultId;

use crate::VaultMeta;

/// The table at one moment: by id, and the ids by name.
#[derive(Debug, Default)]
pub(crate) struct Metas {
    by_id: HashMap<VaultId, VaultMeta>,
    by_name: HashMap<String, VaultId>,
}

impl Metas {
    pub(crate) fn new(all: Vec<VaultMeta>) -> Metas {
        let by_name = all.iter().map(|m| (m.name.to_string(), m.id)).collect();
        let by_id = all.into_iter().map(|m| (m.id, m)).collect();
        Metas { by_id, by_name }
    }

    pub(crate) fn get(&self, id: VaultId) -> Option<&VaultMeta> {
        self.by_id.get(&id)
    }

    pub(crate) fn named(&self, name: &str) -> Option<&VaultMeta> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &VaultMeta> {
        self.by_id.values()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Writes finished so far.
    generation: u64,
    kept: Option<Arc<Metas>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct MetaCache {
    state: Mutex<State>,
}

impl MetaCache {
    /// The table: the kept one, or `load`'s (kept if no write finished while
    /// it ran).
    pub(crate) fn get<E>(
        &self,
        load: impl FnOnce() -> Result<Vec<VaultMeta>, E>,
    ) -> Result<Arc<Metas>, E> {
        let generation = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(kept) = &state.kept {
                return Ok(kept.clone());
            }
            state.generation
        };
        let loaded = Arc::new(Metas::new(load()?));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation == generation {
            state.kept = Some(loaded.clone());
        }
        Ok(loaded)
    }

    /// A write transaction that touched the table has ended.
    pub(crate) fn changed(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        state.kept = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keynode_core::VaultName;

    fn meta(name: &str) -> VaultMeta {
        VaultMeta {
            id: VaultId::generate(),
            name: VaultName::new(name).unwrap(),
            created_ms: 1,
            remote: None,
        }
    }

    #[test]
    fn a_load_is_kept_until_a_write_and_a_load_overtaken_by_a_write_is_not() {
        let cache = MetaCache::default();
        let a = meta("a");
        let loads = std::cell::Cell::new(0);
        let load = |v: Vec<VaultMeta>| {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(v)
        };
        let first = cache.get(|| load(vec![a.clone()])).unwrap();
        assert_eq!(first.named("a").unwrap().id, a.id);
        // Kept: no second load.
        let again = cache.get(|| load(vec![])).unwrap();
        assert!(again.get(a.id).is_some());
        assert_eq!(loads.get(), 1);
        // A write drops it.
        cache.changed();
        let after = cache.get(|| load(vec![])).unwrap();
        assert!(after.get(a.id).is_none() && after.all().count() == 0);
        assert_eq!(loads.get(), 2);
        // A write that finishes while a load runs: the load is used once and
        // not kept.
        cache.changed();
        let b = meta("b");
        let raced = cache
            .get(|| {
                cache.changed();
                load(vec![b.clone()])
            })
            .unwrap();
        assert!(raced.named("b").is_some());
        let next = cache.get(|| load(vec![a.clone()])).unwrap();
        assert!(next.named("a").is_some() && next.named("b").is_none());
        assert_eq!(loads.get(), 4);
    }
}

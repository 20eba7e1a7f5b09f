//! Open repositories kept between operations.
//!
//! Opening a repository reads git's configuration files and attaches the
//! encrypted object backend, and an open handle keeps libgit2's cache of the
//! commits and trees it has read (libgit2 caches no blob, so no secret stays
//! in that cache). Under the harness's load a node opened a repository for
//! every operation: 1,010 configuration files opened in 3 s by one agent,
//! and every tree of every path read again from disk and decrypted. So the
//! store keeps a few idle handles per vault and lends them out, one borrower
//! at a time each.
//!
//! A handle lent out when a vault's repository is removed is dropped when it
//! comes back rather than kept: [`RepoPool::forget`] moves one epoch for the
//! whole pool, which every return checks (so a deletion also drops the other
//! vaults' handles lent at that moment: deletions are rare, and one counter
//! cannot go wrong).
//!
//! Handles of one vault share nothing that goes stale: refs are read from
//! disk, the bundle indexes are the node's one `BundleCache` entry (`repo/bundle.rs`), and the
//! libgit2 cache holds objects by id, which never change.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use keynode_core::VaultId;

use crate::repo::Repo;

/// Idle handles kept per vault (about as many as operations that run at once
/// on one vault).
const IDLE_PER_VAULT: usize = 4;
/// Vaults with idle handles; past it a returned handle replaces another
/// vault's.
const IDLE_VAULTS: usize = 64;

#[derive(Default)]
struct Idle {
    by_vault: HashMap<VaultId, Vec<Repo>>,
    epoch: u64,
}

/// The idle repository handles of a store.
#[derive(Default)]
pub(crate) struct RepoPool {
    idle: Mutex<Idle>,
}

impl RepoPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lends an idle handle of vault `id`, or one `open` makes.
    pub(crate) fn lend<E>(
        &self,
        id: VaultId,
        open: impl FnOnce() -> Result<Repo, E>,
    ) -> Result<Lent<'_>, E> {
        let (idle, epoch) = {
            let mut idle = self.lock();
            let repo = idle.by_vault.get_mut(&id).and_then(Vec::pop);
            (repo, idle.epoch)
        };
        let repo = match idle {
            Some(repo) => repo,
            None => open()?,
        };
        Ok(Lent {
            repo: Some(repo),
            id,
            epoch,
            pool: self,
        })
    }

    /// Drops every idle handle of vault `id`, and makes handles lent before
    /// this call be dropped when they come back (its repository is gone).
    pub(crate) fn forget(&self, id: VaultId) {
        let mut idle = self.lock();
        idle.by_vault.remove(&id);
        idle.epoch += 1;
    }

    fn give_back(&self, id: VaultId, epoch: u64, repo: Repo) {
        let mut idle = self.lock();
        if idle.epoch != epoch {
            return;
        }
        if !idle.by_vault.contains_key(&id) && idle.by_vault.len() >= IDLE_VAULTS {
            let other = idle.by_vault.keys().next().copied();
            if let Some(other) = other {
                idle.by_vault.remove(&other);
            }
        }
        let handles = idle.by_vault.entry(id).or_default();
        if handles.len() < IDLE_PER_VAULT {
            handles.push(repo);
        }
    }

    #[cfg(test)]
    pub(crate) fn idle(&self, id: VaultId) -> usize {
        self.lock().by_vault.get(&id).map_or(0, Vec::len)
    }
}

/// A handle lent by a [`RepoPool`], given back when dropped.
pub(crate) struct Lent<'p> {
    repo: Option<Repo>,
    id: VaultId,
    epoch: u64,
    pool: &'p RepoPool,
}

impl Deref for Lent<'_> {
    type Target = Repo;
    fn deref(&self) -> &Repo {
        self.repo
            .as_ref()
            .expect("a lent handle is present until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(repo) = self.repo.take() {
            self.pool.give_back(self.id, self.epoch, repo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{Author, Objects};

    fn repo(dir: &std::path::Path) -> Repo {
        let path = dir.join("v.git");
        if !path.exists() {
            let author = Author {
                name: "n".into(),
                email: "n@keynode".into(),
                time_s: 0,
            };
            Repo::init(&path, &Objects::Git, &author, "create").unwrap();
        }
        Repo::open(&path, &Objects::Git).unwrap()
    }

    #[test]
    fn handles_are_reused_bounded_and_dropped_after_a_forget() {
        let dir = tempfile::tempdir().unwrap();
        let pool = RepoPool::default();
        let id = VaultId::generate();
        let opened = std::cell::Cell::new(0);
        let open = || {
            opened.set(opened.get() + 1);
            Ok::<_, ()>(repo(dir.path()))
        };
        drop(pool.lend(id, open).unwrap());
        drop(pool.lend(id, open).unwrap());
        assert_eq!(opened.get(), 1, "the second borrower got the idle handle");

        // Six at once: six handles, of which four are kept.
        let lent: Vec<_> = (0..6).map(|_| pool.lend(id, open).unwrap()).collect();
        assert_eq!(opened.get(), 6);
        drop(lent);
        assert_eq!(pool.idle(id), IDLE_PER_VAULT);

        // A handle lent across a forget is not kept.
        let before = pool.lend(id, open).unwrap();
        pool.forget(id);
        assert_eq!(pool.idle(id), 0);
        drop(before);
        assert_eq!(pool.idle(id), 0);
        drop(pool.lend(id, open).unwrap());
        assert_eq!(pool.idle(id), 1, "handles lent after the forget are kept");
    }

    #[test]
    fn idle_vaults_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let pool = RepoPool::default();
        let ids: Vec<VaultId> = (0..IDLE_VAULTS + 5).map(|_| VaultId::generate()).collect();
        for id in &ids {
            drop(pool.lend(*id, || Ok::<_, ()>(repo(dir.path()))).unwrap());
        }
        assert_eq!(pool.lock().by_vault.len(), IDLE_VAULTS);
    }
}

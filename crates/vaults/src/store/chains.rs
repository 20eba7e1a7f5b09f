//! First-parent chains kept between pulls, for the haves a client sends.
//!
//! A client's haves sample its history at distances 1, 2, 4… and the root
//! ([`sample_haves`](crate::transfer::sample_haves)), and reaching them meant
//! reading every commit back to the root on every pull: under the harness's
//! load that walk was a tenth of a busy agent's CPU, and it grows with the
//! history. A clone's branch only moves forward by pulls, so the store keeps
//! each vault's chain of first parents (oldest first, the head last) and on
//! the next pull walks only from the new head back to where the kept chain
//! ends. A head whose walk never meets the kept chain (a vault restored to
//! another history) starts a chain of its own: what is kept is commit ids,
//! which name immutable objects, so a kept chain is never wrong, only old.
//!
//! Bounded: a chain holds at most [`HAVES_WALK_LIMIT`] + 1 ids (the walk's own
//! limit), and all chains together [`BUDGET`] ids (20 bytes each), the least
//! recently used dropped first.

use std::sync::{Mutex, PoisonError};

use keynode_core::VaultId;
use lru::LruCache;

use crate::HAVES_WALK_LIMIT;
use crate::repo::CommitId;

/// Longest chain: the head and [`HAVES_WALK_LIMIT`] ancestors.
const CHAIN: usize = HAVES_WALK_LIMIT + 1;

/// Commit ids kept over all vaults (about 1.3 MB).
pub(crate) const BUDGET: usize = CHAIN;

struct Kept {
    by_vault: LruCache<VaultId, Vec<CommitId>>,
    ids: usize,
}

/// The kept chains of a store.
pub(crate) struct Chains {
    kept: Mutex<Kept>,
}

impl Default for Chains {
    fn default() -> Self {
        Chains {
            kept: Mutex::new(Kept {
                by_vault: LruCache::unbounded(),
                ids: 0,
            }),
        }
    }
}

impl Chains {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first-parent chain of `head` (oldest first, `head` last, at most
    /// [`CHAIN`] ids), walking with `parent` (a commit's first parent) only
    /// as far as the chain kept for vault `id` does not reach.
    pub(crate) fn chain<E>(
        &self,
        id: VaultId,
        head: CommitId,
        parent: impl FnMut(CommitId) -> Result<Option<CommitId>, E>,
    ) -> Result<Vec<CommitId>, E> {
        let kept = {
            let mut kept = self.lock();
            let chain = kept.by_vault.pop(&id);
            if let Some(c) = &chain {
                kept.ids -= c.len();
            }
            chain
        };
        extend(kept.unwrap_or_default(), head, parent)
    }

    /// Keeps `chain` for vault `id`, dropping the least recently used chains
    /// past the budget.
    pub(crate) fn keep(&self, id: VaultId, chain: Vec<CommitId>) {
        let mut kept = self.lock();
        kept.ids += chain.len();
        if let Some(old) = kept.by_vault.put(id, chain) {
            kept.ids -= old.len();
        }
        while kept.ids > BUDGET {
            match kept.by_vault.pop_lru() {
                Some((_, dropped)) => kept.ids -= dropped.len(),
                None => break,
            }
        }
    }

    /// Drops what is kept for vault `id` (deleted).
    pub(crate) fn forget(&self, id: VaultId) {
        let mut kept = self.lock();
        if let Some(old) = kept.by_vault.pop(&id) {
            kept.ids -= old.len();
        }
    }

    /// Commit ids kept over all vaults.
    #[cfg(test)]
    fn ids(&self) -> usize {
        self.lock().ids
    }
}

/// `chain` (oldest first) continued up to `head`: walks back from `head` until
/// it meets the chain's last id; if the walk ends first (the root, or
/// [`CHAIN`] ids), the chain is the walk's alone.
fn extend<E>(
    mut chain: Vec<CommitId>,
    head: CommitId,
    mut parent: impl FnMut(CommitId) -> Result<Option<CommitId>, E>,
) -> Result<Vec<CommitId>, E> {
    let mut fresh = Vec::new();
    let mut at = Some(head);
    let mut met = false;
    while let Some(oid) = at {
        if chain.last() == Some(&oid) {
            met = true;
            break;
        }
        if fresh.len() == CHAIN {
            break;
        }
        fresh.push(oid);
        at = parent(oid)?;
    }
    if !met {
        chain.clear();
    }
    chain.extend(fresh.into_iter().rev());
    if chain.len() > CHAIN {
        chain.drain(..chain.len() - CHAIN);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A linear history 0 ← 1 ← … ← n-1 (each commit's parent the one before)
    /// and its parents; histories of different `tag`s share no commit.
    fn history(n: u32, tag: u8) -> (Vec<CommitId>, HashMap<CommitId, CommitId>) {
        let ids: Vec<CommitId> = (0..n)
            .map(|i| {
                let mut b = [tag; 20];
                b[..4].copy_from_slice(&(i + 1).to_be_bytes());
                CommitId::from_bytes(&b).unwrap()
            })
            .collect();
        let parents = ids.windows(2).map(|w| (w[1], w[0])).collect();
        (ids, parents)
    }

    fn walker<'a>(
        parents: &'a HashMap<CommitId, CommitId>,
        reads: &'a mut usize,
    ) -> impl FnMut(CommitId) -> Result<Option<CommitId>, ()> + 'a {
        move |oid| {
            *reads += 1;
            Ok(parents.get(&oid).copied())
        }
    }

    #[test]
    fn a_kept_chain_is_walked_only_from_the_new_head() {
        let chains = Chains::default();
        let id = VaultId::generate();
        let (ids, parents) = history(100, 0);
        let mut reads = 0;
        let chain = chains
            .chain(id, ids[59], walker(&parents, &mut reads))
            .unwrap();
        assert_eq!(chain, ids[..60]);
        assert_eq!(reads, 60);
        chains.keep(id, chain);

        let mut reads = 0;
        let chain = chains
            .chain(id, ids[99], walker(&parents, &mut reads))
            .unwrap();
        assert_eq!(chain, ids);
        assert_eq!(reads, 40, "only the 40 new commits are read");
        chains.keep(id, chain);

        let mut reads = 0;
        let chain = chains
            .chain(id, ids[99], walker(&parents, &mut reads))
            .unwrap();
        assert_eq!(chain, ids);
        assert_eq!(reads, 0, "an unmoved head reads nothing");
    }

    #[test]
    fn a_head_outside_the_kept_chain_starts_a_new_one() {
        let chains = Chains::default();
        let id = VaultId::generate();
        let (ids, parents) = history(50, 0);
        let mut reads = 0;
        chains.keep(
            id,
            chains
                .chain(id, ids[49], walker(&parents, &mut reads))
                .unwrap(),
        );
        // Restored to an older head: its walk never meets the kept head.
        let mut reads = 0;
        let chain = chains
            .chain(id, ids[20], walker(&parents, &mut reads))
            .unwrap();
        assert_eq!(chain, ids[..21]);
        assert_eq!(reads, 21, "walked to the root");
        chains.keep(id, chain);
        // Another history altogether.
        let (other, other_parents) = history(5, 1);
        let mut reads = 0;
        let chain = chains
            .chain(id, other[4], walker(&other_parents, &mut reads))
            .unwrap();
        assert_eq!(chain, other);
        assert_eq!(reads, 5);
    }

    #[test]
    fn chains_are_bounded_per_vault_and_in_all() {
        let chains = Chains::default();
        let (ids, parents) = history(CHAIN as u32 + 10, 0);
        let a = VaultId::generate();
        let mut reads = 0;
        let chain = chains
            .chain(a, *ids.last().unwrap(), walker(&parents, &mut reads))
            .unwrap();
        assert_eq!(chain.len(), CHAIN);
        assert_eq!(chain.last(), ids.last());
        assert_eq!(reads, CHAIN, "the walk stops at its limit");
        chains.keep(a, chain);
        assert_eq!(chains.ids(), CHAIN);

        // Another vault's chain pushes the older one out.
        let b = VaultId::generate();
        let mut reads = 0;
        let chain = chains
            .chain(b, ids[9], walker(&parents, &mut reads))
            .unwrap();
        chains.keep(b, chain);
        assert_eq!(chains.ids(), 10);
        chains.forget(b);
        assert_eq!(chains.ids(), 0);
    }
}

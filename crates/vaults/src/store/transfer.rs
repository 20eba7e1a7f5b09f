//! The store's side of vault transfer (clone, pull) and fork; see the crate
//! docs, section "Transfer", for the protocol.

use std::fs;
use std::io::{self, Read};
use std::sync::PoisonError;

use keynode_core::{VaultId, VaultName};

use super::{TMP_PREFIX, VaultStore, remove_path};
use crate::repo::{CommitId, Repo, parse_oid};
use crate::transfer::{MAX_HAVES, numbered_name, sample_haves};
use crate::{Advert, PackStats, PullOutcome, Remote, VaultError, VaultMeta};

impl VaultStore {
    /// Serving side, first step: what vault `id` offers (its id, name and head).
    /// The store serves any of its vaults, clones included; whether a peer may
    /// see it is the caller's decision.
    pub fn advertise(&self, id: VaultId) -> Result<Advert, VaultError> {
        let meta = self.meta(id)?;
        let head = self.repo(id)?.head_id()?;
        Ok(Advert {
            vault: id,
            name: meta.name,
            head: head.to_string(),
        })
    }

    /// Receiving side, before a pull: the commits vault `id` has, to send with
    /// the want. Its head, the remote head of its last pull, then first-parent
    /// ancestors 1, 2, 4, 8… commits back and the root, at most
    /// [`MAX_HAVES`](crate::MAX_HAVES); pass them to
    /// [`want`](crate::want) with the [`Advert`] to know whether to ask at all.
    ///
    /// The walk back to the root is done once: the store keeps each vault's
    /// chain of first parents and later walks only from the new head to where
    /// the kept chain ends (`store/chains.rs`).
    pub fn haves(&self, id: VaultId) -> Result<Vec<String>, VaultError> {
        self.meta(id)?;
        let repo = self.repo(id)?;
        let head = repo.head_id()?;
        let chain = self.chains.chain(id, head, |oid| repo.first_parent(oid))?;
        let haves = sample_haves(
            head.to_string(),
            repo.remote_head().map(|o| o.to_string()),
            chain.iter().rev().skip(1).map(CommitId::to_string),
        );
        self.chains.keep(id, chain);
        Ok(haves)
    }

    /// Serving side: streams to `sink`, in chunks of at most
    /// [`PACK_CHUNK`](crate::PACK_CHUNK) bytes, a pack of every object `want`
    /// needs that a client holding `haves` lacks (an empty pack when it lacks
    /// nothing).
    ///
    /// `want` must be the vault's head or in its history, else
    /// [`NotServed`](VaultError::NotServed) (also for ids that exist outside
    /// it); malformed ids are [`BadRevision`](VaultError::BadRevision). Haves
    /// unknown here are ignored, and only the first
    /// [`MAX_HAVES`](crate::MAX_HAVES) count. Takes no lock (except once, to
    /// write the pack builder's memory limits into an older vault's config), so a
    /// long transfer never blocks writers.
    pub fn send_pack(
        &self,
        id: VaultId,
        want: &str,
        haves: &[String],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<PackStats, VaultError> {
        self.meta(id)?;
        let want = parse_oid(want)?;
        let haves = haves
            .iter()
            .take(MAX_HAVES)
            .map(|h| parse_oid(h))
            .collect::<Result<Vec<_>, _>>()?;
        let repo = self.repo(id)?;
        if !repo.is_tuned()? {
            let lock = self.writer(id);
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            if !repo.is_tuned()? {
                repo.tune()?;
            }
        }
        repo.send_pack(want, &haves, sink)
    }

    /// Receiving side of a pull into the clone `id`: stores the pack read from
    /// `pack`, checks it brought `advert_head`, then moves the branch there only
    /// if it descends from the current head (a compare-and-swap under the
    /// vault's writer lock).
    ///
    /// The one write a clone accepts. Fails with
    /// [`NotAClone`](VaultError::NotAClone) for a vault without a remote,
    /// [`Diverged`](VaultError::Diverged) when neither head descends from the
    /// other, [`BadPack`](VaultError::BadPack) or
    /// [`MissingHead`](VaultError::MissingHead) for a bad or short pack, and
    /// `Io` when `pack` fails; in every case the branch is unchanged, and only a
    /// pack that indexed fully is kept (as unreachable objects when the pull is
    /// refused afterwards).
    ///
    /// Each pull adds a pack (a bundle, with encrypted objects), and every
    /// object lookup asks every one: past [`MAX_PACKS`](crate::MAX_PACKS)
    /// packs, a successful pull rewrites what the branch reaches into one pack
    /// and deletes the others; past [`MAX_BUNDLES`](crate::MAX_BUNDLES)
    /// bundles, it merges the smallest ones. Pulls of one vault take turns
    /// (under its writer lock).
    pub fn receive_pull(
        &self,
        id: VaultId,
        advert_head: &str,
        pack: &mut dyn Read,
    ) -> Result<PullOutcome, VaultError> {
        let _q = self.mutating();
        let meta = self.meta(id)?;
        if meta.remote.is_none() {
            return Err(VaultError::NotAClone(meta.name));
        }
        let head = parse_oid(advert_head)?;
        let repo = self.repo(id)?;
        // Pulls of one vault take turns, so a consolidation never deletes a
        // pack another pull is about to use.
        let lock = self.writer(id);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = self.max_vault_bytes;
        let room = limit.saturating_sub(self.vault_bytes(id)?);
        repo.index_pack(pack, false, room, limit)?;
        let outcome = repo.fast_forward(head)?;
        if let PullOutcome::Updated { to, .. } = &outcome {
            self.head_moved(id, to.clone());
        }
        self.consolidate(id, &repo);
        Ok(outcome)
    }

    /// Receiving side of a clone: builds a new vault from the pack read from
    /// `pack`, with its branch at `advert_head`, a new local id, `remote`
    /// recorded (so it is read-only), and `name`, or `name-1`, `name-2`… if
    /// taken.
    ///
    /// The repository is built aside and renamed into place, and its metadata
    /// written in one transaction last: a clone that fails at any point (bad,
    /// truncated or incomplete pack, missing head, failing reader) leaves no
    /// repository, no metadata and no name behind.
    ///
    /// The clone follows its remote ([`Follow::On`](crate::Follow::On)); see
    /// [`receive_clone_with`](Self::receive_clone_with).
    pub fn receive_clone(
        &self,
        name: &VaultName,
        remote: Remote,
        advert_head: &str,
        pack: &mut dyn Read,
    ) -> Result<VaultMeta, VaultError> {
        self.receive_clone_with(name, remote, advert_head, pack, crate::Follow::On)
    }

    /// [`receive_clone`](Self::receive_clone), with `follow` written in the
    /// same transaction as the clone's metadata.
    pub fn receive_clone_with(
        &self,
        name: &VaultName,
        remote: Remote,
        advert_head: &str,
        pack: &mut dyn Read,
        follow: crate::Follow,
    ) -> Result<VaultMeta, VaultError> {
        let _q = self.mutating();
        let head = parse_oid(advert_head)?;
        let id = VaultId::generate();
        let tmp = self.dir.join(format!("{TMP_PREFIX}{id}"));
        let path = self.repo_path(id);
        let built = Repo::init_clone(&tmp, &self.objects)
            .and_then(|repo| {
                repo.index_pack(pack, true, self.max_vault_bytes, self.max_vault_bytes)?;
                repo.start_branch(head)
            })
            .and_then(|()| Ok(fs::rename(&tmp, &path)?));
        if let Err(e) = built {
            let _ = remove_path(&tmp);
            return Err(e);
        }
        let mut meta = VaultMeta {
            id,
            name: name.clone(),
            created_ms: self.clock.now_ms(),
            remote: Some(remote),
        };
        match self.insert_numbered(&mut meta, name.as_str(), Some(&follow)) {
            Ok(()) => {
                self.head_moved(id, advert_head.to_owned());
                Ok(meta)
            }
            Err(e) => {
                let _ = remove_path(&path);
                Err(e)
            }
        }
    }

    /// Copies vault `id` (an own vault or a clone) into a new, writable vault
    /// with its own id, no remote and the same history. It is called `new_name`
    /// (`VaultExists` if taken), or by default `<name>-fork`, then
    /// `<name>-fork-1`, `<name>-fork-2`… whichever is free.
    ///
    /// Objects are hard-linked (copied across file systems); the copy is built
    /// aside and renamed into place, then its metadata written in one
    /// transaction. Commits to the source wait while its objects are linked.
    pub fn fork(&self, id: VaultId, new_name: Option<&VaultName>) -> Result<VaultMeta, VaultError> {
        let _q = self.mutating();
        let source = self.meta(id)?;
        if let Some(name) = new_name {
            let mut rtxn = self.env.read_txn()?;
            if self.names.get(&mut rtxn, name.as_str())?.is_some() {
                return Err(VaultError::VaultExists(name.clone()));
            }
        }
        let repo = self.repo(id)?;
        let fork_id = VaultId::generate();
        let tmp = self.dir.join(format!("{TMP_PREFIX}{fork_id}"));
        let path = self.repo_path(fork_id);
        let built = {
            let lock = self.writer(id);
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            repo.fork_to(&tmp)
        }
        .and_then(|()| Ok(fs::rename(&tmp, &path)?));
        if let Err(e) = built {
            let _ = remove_path(&tmp);
            return Err(e);
        }
        let mut meta = VaultMeta {
            id: fork_id,
            name: new_name.cloned().unwrap_or_else(|| source.name.clone()),
            created_ms: self.clock.now_ms(),
            remote: None,
        };
        let inserted = match new_name {
            Some(_) => self.insert(&meta),
            None => self.insert_numbered(&mut meta, &format!("{}-fork", source.name), None),
        };
        match inserted {
            Ok(()) => Ok(meta),
            Err(e) => {
                let _ = remove_path(&path);
                Err(e)
            }
        }
    }

    /// Adds a new vault's rows under the first free name of `base`, `base-1`,
    /// `base-2`… (setting `meta.name`), in one transaction.
    fn insert_numbered(
        &self,
        meta: &mut VaultMeta,
        base: &str,
        follow: Option<&crate::Follow>,
    ) -> Result<(), VaultError> {
        self.write_metas(|wtxn| {
            for n in 0..usize::MAX {
                let Some(name) = numbered_name(base, n) else {
                    break;
                };
                if self.names.get(wtxn, name.as_str())?.is_some() {
                    continue;
                }
                self.names.put(wtxn, name.as_str(), meta.id.as_bytes())?;
                meta.name = name;
                self.metas.put(
                    wtxn,
                    meta.id.as_bytes(),
                    &keynode_core::codec::encode(&*meta)?,
                )?;
                if let Some(follow) = follow {
                    self.put_follow(wtxn, meta.id, follow)?;
                }
                return Ok(());
            }
            Err(VaultError::VaultExists(meta.name.clone()))
        })
    }
}

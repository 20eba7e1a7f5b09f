//! Whether a clone follows its remote, and the head changes a follower (or a
//! watched environment) listens for.

use keynode_core::VaultId;
use keynode_core::codec::{decode, encode};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::VaultStore;
use crate::VaultError;

/// LMDB database of follow states: [`VaultId`] bytes → encoded [`Follow`].
/// Only clones that do not simply follow have a row: a clone without one
/// follows its remote (so clones made before following existed follow too).
pub const FOLLOW_DB: &str = "vaults.follow";

/// How many head changes a slow listener may fall behind before it is told it
/// lagged ([`broadcast::error::RecvError::Lagged`]) and should look again.
pub const HEAD_EVENTS: usize = 1024;

/// Whether a clone follows its remote: pulls on its own when the remote
/// announces a new head, and compares heads whenever it meets the remote again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Follow {
    /// Follows its remote (the default for a clone).
    On,
    /// Does not follow (`vaults clone --no-follow`, `vaults unfollow`).
    Off,
    /// Stopped following because the remote's history no longer contains ours:
    /// nothing was rewritten here. `remote_head` is the head that diverged.
    Diverged {
        /// The remote's head when it diverged (40 hex digits).
        remote_head: String,
    },
}

/// A vault's branch moved: a commit here, a restored version, a pull, or a new
/// clone. Sent after the move is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadChange {
    /// The vault.
    pub vault: VaultId,
    /// Its new head (40 hex digits).
    pub head: String,
}

/// Where listeners subscribe to a store's [`HeadChange`]s; holding it does not
/// keep the store open.
#[derive(Clone, Debug)]
pub struct HeadEvents(pub(crate) broadcast::Sender<HeadChange>);

impl HeadEvents {
    /// Head changes from now on. A receiver that falls more than
    /// [`HEAD_EVENTS`] behind gets `Lagged` and should read the heads it cares
    /// about again.
    pub fn subscribe(&self) -> broadcast::Receiver<HeadChange> {
        self.0.subscribe()
    }
}

impl VaultStore {
    /// Head changes from now on (see [`HeadEvents::subscribe`]).
    pub fn head_changes(&self) -> broadcast::Receiver<HeadChange> {
        self.heads.subscribe()
    }

    /// A handle to subscribe to head changes later, from anywhere.
    pub fn head_events(&self) -> HeadEvents {
        HeadEvents(self.heads.clone())
    }

    /// Tells listeners that `vault` is at `head` now.
    pub(crate) fn head_moved(&self, vault: VaultId, head: String) {
        // No receiver is not an error: nobody listens.
        let _ = self.heads.send(HeadChange { vault, head });
    }

    /// Whether clone `id` follows its remote; `None` for a vault that is not a
    /// clone.
    pub fn follow(&self, id: VaultId) -> Result<Option<Follow>, VaultError> {
        let meta = self.meta(id)?;
        if meta.remote.is_none() {
            return Ok(None);
        }
        let mut rtxn = self.env.read_txn()?;
        Ok(Some(match self.follows.get(&mut rtxn, id.as_bytes())? {
            Some(bytes) => decode(bytes)?,
            None => Follow::On,
        }))
    }

    /// Every clone and whether it follows.
    pub fn follows(&self) -> Result<Vec<(crate::VaultMeta, Follow)>, VaultError> {
        let metas = self.list()?;
        let mut rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for meta in metas {
            if meta.remote.is_none() {
                continue;
            }
            let follow = match self.follows.get(&mut rtxn, meta.id.as_bytes())? {
                Some(bytes) => decode(bytes)?,
                None => Follow::On,
            };
            out.push((meta, follow));
        }
        Ok(out)
    }

    /// Sets whether clone `id` follows its remote; [`VaultError::NotAClone`]
    /// for a vault of this node's own.
    pub fn set_follow(&self, id: VaultId, follow: Follow) -> Result<(), VaultError> {
        let _q = self.mutating();
        let meta = self.meta(id)?;
        if meta.remote.is_none() {
            return Err(VaultError::NotAClone(meta.name));
        }
        let mut wtxn = self.env.write_txn()?;
        self.put_follow(&mut wtxn, id, &follow)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Writes `follow` for `id` in `wtxn` (no row for [`Follow::On`]).
    pub(crate) fn put_follow(
        &self,
        wtxn: &mut keynode_core::store::heed3::RwTxn<'_>,
        id: VaultId,
        follow: &Follow,
    ) -> Result<(), VaultError> {
        match follow {
            Follow::On => {
                self.follows.delete(wtxn, id.as_bytes())?;
            }
            other => self.follows.put(wtxn, id.as_bytes(), &encode(other)?)?,
        }
        Ok(())
    }
}

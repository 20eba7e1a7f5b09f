//! [`AclStore`]: permission records in LMDB.

use std::collections::{BTreeMap, BTreeSet};

use keynode_core::codec::{decode, encode};
use keynode_core::store::heed3::types::{Bytes, Unit};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase, RoTxn, RwTxn};
use keynode_core::{GestaltId, NodeId, VaultId};

use crate::rules::{self, RecordFate};
use crate::{AclError, GestaltAction, PermId, Permission, VaultAction};

/// The LMDB environment the store lives in: the node's one encrypted
/// environment ([`keynode_core::store::open_env`], `max_dbs` leaving room for
/// [`DB_NAMES`]).
pub use keynode_core::store::Env;

/// LMDB database: encoded [`GestaltId`] → [`PermId`] (16 bytes).
pub const MEMBERS_DB: &str = "acl.members";
/// LMDB database: [`PermId`] → gestalt action mask (1 byte). A record exists iff
/// its row here does.
pub const PERMS_DB: &str = "acl.perms";
/// LMDB database: [`PermId`] ‖ [`VaultId`] (32 bytes) → vault action mask (1
/// byte, never zero).
pub const VAULTS_DB: &str = "acl.vaults";
/// LMDB database: [`PermId`] ‖ encoded [`GestaltId`] → nothing; who holds a
/// record.
pub const HOLDERS_DB: &str = "acl.holders";
/// Every database the store uses.
pub const DB_NAMES: [&str; 4] = [MEMBERS_DB, PERMS_DB, VAULTS_DB, HOLDERS_DB];

type Db = EncryptedDatabase<'static, Bytes, Bytes>;

/// The encoded key of a node member, as `codec::encode(&GestaltId::Node(n))`
/// writes it (variant tag 0, then the key bytes), built without allocating.
fn node_key(node: &NodeId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[1..].copy_from_slice(node.as_bytes());
    k
}

fn vault_key(perm: PermId, vault: VaultId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&perm.0);
    k[16..].copy_from_slice(vault.as_bytes());
    k
}

fn holder_key(perm: PermId, member: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + member.len());
    k.extend_from_slice(&perm.0);
    k.extend_from_slice(member);
    k
}

fn perm_id(bytes: &[u8]) -> Result<PermId, AclError> {
    bytes
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .map(PermId)
        .ok_or(AclError::Corrupt(MEMBERS_DB))
}

fn mask(bytes: &[u8], db: &'static str) -> Result<u8, AclError> {
    match bytes {
        [m] => Ok(*m),
        _ => Err(AclError::Corrupt(db)),
    }
}

/// The permission records of one node, shared by the members of each gestalt.
///
/// Each member ([`GestaltId`]) points at one record ([`PermId`]); every member of
/// a gestalt points at the same one, so a grant to one is a grant to all. Every
/// method runs in one LMDB transaction (writes in one write transaction), blocks,
/// and takes `&self`: share the store in an `Arc` and call it from blocking
/// threads. The decisions are the plain functions of [`rules`](crate::rules).
pub struct AclStore {
    env: Env,
    members: Db,
    perms: Db,
    vaults: Db,
    holders: EncryptedDatabase<'static, Bytes, Unit>,
}

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<AclStore>();
};

impl std::fmt::Debug for AclStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclStore").finish_non_exhaustive()
    }
}

impl AclStore {
    /// Opens the store, creating its databases ([`DB_NAMES`]) in one write
    /// transaction.
    pub fn open(env: Env) -> Result<AclStore, AclError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let members: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(MEMBERS_DB))?;
            let perms: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(PERMS_DB))?;
            let vaults: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(VAULTS_DB))?;
            let holders: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(HOLDERS_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((
                members, perms, vaults, holders,
            )))
        })?;
        let CommitOrAbort::Commit((members, perms, vaults, holders)) = created else {
            return Err(AclError::Corrupt("acl databases were not created"));
        };
        Ok(AclStore {
            env,
            members,
            perms,
            vaults,
            holders,
        })
    }

    // ---- reads inside a transaction -------------------------------------------------

    fn perm_of(&self, txn: &mut RoTxn<'_>, key: &[u8]) -> Result<Option<PermId>, AclError> {
        self.members.get(txn, key)?.map(perm_id).transpose()
    }

    fn record(&self, txn: &mut RoTxn<'_>, id: PermId) -> Result<Permission, AclError> {
        let gestalt = match self.perms.get(txn, &id.0)? {
            Some(m) => GestaltAction::set_from_mask(mask(m, PERMS_DB)?),
            None => BTreeSet::new(),
        };
        let mut vaults = BTreeMap::new();
        for item in self.vaults.prefix_iter(txn, &id.0)? {
            let (k, m) = item?;
            let vault: [u8; 16] = k
                .get(16..)
                .and_then(|b| b.try_into().ok())
                .ok_or(AclError::Corrupt(VAULTS_DB))?;
            let actions = VaultAction::set_from_mask(mask(m, VAULTS_DB)?);
            if !actions.is_empty() {
                vaults.insert(
                    VaultId::from_bytes(vault).map_err(|_| AclError::Corrupt(VAULTS_DB))?,
                    actions,
                );
            }
        }
        Ok(Permission { gestalt, vaults })
    }

    /// The encoded keys of a record's holders.
    fn holder_keys(&self, txn: &mut RoTxn<'_>, id: PermId) -> Result<Vec<Vec<u8>>, AclError> {
        let mut out = Vec::new();
        for item in self.holders.prefix_iter(txn, &id.0)? {
            let (k, ()) = item?;
            out.push(k[16..].to_vec());
        }
        Ok(out)
    }

    fn has_holders(&self, txn: &mut RoTxn<'_>, id: PermId) -> Result<bool, AclError> {
        Ok(self
            .holders
            .prefix_iter(txn, &id.0)?
            .next()
            .transpose()?
            .is_some())
    }

    // ---- writes inside a transaction ------------------------------------------------

    fn write_diff(&self, txn: &mut RwTxn<'_>, id: PermId, d: &rules::Diff) -> Result<(), AclError> {
        if let Some(g) = &d.gestalt {
            self.perms.put(txn, &id.0, &[GestaltAction::mask_of(g)])?;
        }
        for (v, a) in &d.put_vaults {
            self.vaults
                .put(txn, &vault_key(id, *v), &[VaultAction::mask_of(a)])?;
        }
        for v in &d.delete_vaults {
            self.vaults.delete(txn, &vault_key(id, *v))?;
        }
        Ok(())
    }

    fn create_record(&self, txn: &mut RwTxn<'_>, p: &Permission) -> Result<PermId, AclError> {
        let id = PermId::generate();
        self.perms
            .put(txn, &id.0, &[GestaltAction::mask_of(&p.gestalt)])?;
        let d = rules::diff(&Permission::default(), p);
        for (v, a) in &d.put_vaults {
            self.vaults
                .put(txn, &vault_key(id, *v), &[VaultAction::mask_of(a)])?;
        }
        Ok(id)
    }

    fn delete_record(&self, txn: &mut RwTxn<'_>, id: PermId) -> Result<(), AclError> {
        self.perms.delete(txn, &id.0)?;
        let vault_keys = self
            .vaults
            .prefix_iter(txn, &id.0)?
            .map(|r| r.map(|(k, _)| k.to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        for k in vault_keys {
            self.vaults.delete(txn, &k)?;
        }
        for m in self.holder_keys(txn, id)? {
            self.holders.delete(txn, &holder_key(id, &m))?;
        }
        Ok(())
    }

    /// Points `member` at record `id`, detaching it from any record it held.
    fn attach(&self, txn: &mut RwTxn<'_>, member: &[u8], id: PermId) -> Result<(), AclError> {
        if let Some(old) = self.perm_of(txn, member)? {
            if old == id {
                return Ok(());
            }
            self.holders.delete(txn, &holder_key(old, member))?;
        }
        self.members.put(txn, member, &id.0)?;
        self.holders.put(txn, &holder_key(id, member), &())?;
        Ok(())
    }

    /// Deletes records that nobody holds any more.
    fn collect(
        &self,
        txn: &mut RwTxn<'_>,
        ids: impl IntoIterator<Item = PermId>,
    ) -> Result<(), AclError> {
        for id in ids {
            let remaining = usize::from(self.has_holders(txn, id)?);
            if rules::remove_member(remaining) == RecordFate::Delete {
                self.delete_record(txn, id)?;
            }
        }
        Ok(())
    }

    /// The member's record id, creating an empty record for a new member.
    fn ensure(&self, txn: &mut RwTxn<'_>, key: &[u8]) -> Result<(PermId, bool), AclError> {
        if let Some(id) = self.perm_of(txn, key)? {
            return Ok((id, false));
        }
        let id = self.create_record(txn, &Permission::default())?;
        self.attach(txn, key, id)?;
        Ok((id, true))
    }

    /// Runs `f` on the member's record inside one write transaction and stores
    /// what it changed, adding the member if it is unknown.
    fn update(
        &self,
        member: &GestaltId,
        f: impl FnOnce(&mut Permission) -> bool,
    ) -> Result<bool, AclError> {
        let key = encode(member)?;
        let mut txn = self.env.write_txn()?;
        let (id, added) = self.ensure(&mut txn, &key)?;
        let old = self.record(&mut txn, id)?;
        let mut new = old.clone();
        let changed = f(&mut new);
        self.write_diff(&mut txn, id, &rules::diff(&old, &new))?;
        txn.commit()?;
        Ok(changed || added)
    }

    // ---- public API ------------------------------------------------------------------

    /// Adds a member with its own empty record. Returns false (and changes
    /// nothing) if it is already a member.
    pub fn add_member(&self, member: &GestaltId) -> Result<bool, AclError> {
        let key = encode(member)?;
        let mut txn = self.env.write_txn()?;
        let (_, added) = self.ensure(&mut txn, &key)?;
        txn.commit()?;
        Ok(added)
    }

    /// Removes a member; its record is deleted once nobody holds it. Returns
    /// false if it was not a member.
    pub fn remove_member(&self, member: &GestaltId) -> Result<bool, AclError> {
        let key = encode(member)?;
        let mut txn = self.env.write_txn()?;
        let Some(id) = self.perm_of(&mut txn, &key)? else {
            return Ok(false);
        };
        self.members.delete(&mut txn, &key)?;
        self.holders.delete(&mut txn, &holder_key(id, &key))?;
        self.collect(&mut txn, [id])?;
        txn.commit()?;
        Ok(true)
    }

    /// Makes `members` (unknown ones are added) and everyone who shares a record
    /// with one of them share ONE record: the [`merge`](rules::merge) (union) of
    /// all their records.
    pub fn join(&self, members: &[GestaltId]) -> Result<(), AclError> {
        let keys = members.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let mut txn = self.env.write_txn()?;
        let mut ids = BTreeSet::new();
        for k in &keys {
            if let Some(id) = self.perm_of(&mut txn, k)? {
                ids.insert(id);
            }
        }
        // Keep the record with the most holders and move the others' holders to it.
        let mut holders = BTreeMap::new();
        for id in &ids {
            holders.insert(*id, self.holder_keys(&mut txn, *id)?);
        }
        let target = match holders.iter().max_by_key(|(_, h)| h.len()) {
            Some((id, _)) => *id,
            None => self.create_record(&mut txn, &Permission::default())?,
        };
        if ids.len() > 1 {
            let records = ids
                .iter()
                .map(|id| self.record(&mut txn, *id))
                .collect::<Result<Vec<_>, _>>()?;
            let old = self.record(&mut txn, target)?;
            let new = rules::merge(&records);
            self.write_diff(&mut txn, target, &rules::diff(&old, &new))?;
            for (id, hs) in &holders {
                if *id != target {
                    for h in hs {
                        self.attach(&mut txn, h, target)?;
                    }
                }
            }
        }
        for k in &keys {
            self.attach(&mut txn, k, target)?;
        }
        self.collect(&mut txn, ids.into_iter().filter(|id| *id != target))?;
        txn.commit()?;
        Ok(())
    }

    /// Merges two gestalts: both sides hold the union of their records
    /// ([`join`](Self::join) of both lists).
    pub fn merge(&self, members_a: &[GestaltId], members_b: &[GestaltId]) -> Result<(), AclError> {
        let all: Vec<GestaltId> = members_a.iter().chain(members_b).cloned().collect();
        self.join(&all)
    }

    /// Splits a gestalt: `left` and `right` each get their own copy of the record
    /// held before the split ([`split`](rules::split); if the members held
    /// different records, their union). Unknown members are added. Members of
    /// the old record named on neither side keep the old record.
    pub fn split(&self, left: &[GestaltId], right: &[GestaltId]) -> Result<(), AclError> {
        let left = left.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let right = right.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let mut txn = self.env.write_txn()?;
        let mut ids = BTreeSet::new();
        for k in left.iter().chain(&right) {
            if let Some(id) = self.perm_of(&mut txn, k)? {
                ids.insert(id);
            }
        }
        let records = ids
            .iter()
            .map(|id| self.record(&mut txn, *id))
            .collect::<Result<Vec<_>, _>>()?;
        let (l, r) = rules::split(&rules::merge(&records));
        for (side, p) in [(&left, &l), (&right, &r)] {
            if side.is_empty() {
                continue;
            }
            let id = self.create_record(&mut txn, p)?;
            for k in side {
                self.attach(&mut txn, k, id)?;
            }
        }
        self.collect(&mut txn, ids)?;
        txn.commit()?;
        Ok(())
    }

    /// Grants a gestalt action to the member's gestalt (adding the member if
    /// unknown). Returns whether anything changed.
    pub fn set_gestalt_action(
        &self,
        member: &GestaltId,
        action: GestaltAction,
    ) -> Result<bool, AclError> {
        self.update(member, |p| rules::set_gestalt_action(p, action))
    }

    /// Revokes a gestalt action from the member's gestalt (adding the member if
    /// unknown). Returns whether anything changed.
    pub fn unset_gestalt_action(
        &self,
        member: &GestaltId,
        action: GestaltAction,
    ) -> Result<bool, AclError> {
        self.update(member, |p| rules::unset_gestalt_action(p, action))
    }

    /// Grants a vault action to the member's gestalt (adding the member if
    /// unknown). Returns whether anything changed.
    pub fn set_vault_action(
        &self,
        member: &GestaltId,
        vault: VaultId,
        action: VaultAction,
    ) -> Result<bool, AclError> {
        self.update(member, |p| rules::set_vault_action(p, vault, action))
    }

    /// Revokes a vault action from the member's gestalt (adding the member if
    /// unknown). Returns whether anything changed.
    pub fn unset_vault_action(
        &self,
        member: &GestaltId,
        vault: VaultId,
        action: VaultAction,
    ) -> Result<bool, AclError> {
        self.update(member, |p| rules::unset_vault_action(p, vault, action))
    }

    /// Shares `vault` with the member's gestalt in one transaction: `clone`,
    /// `pull` and `scan` ([`rules::share_vault`]). Returns whether anything
    /// changed.
    pub fn share_vault(&self, member: &GestaltId, vault: VaultId) -> Result<bool, AclError> {
        self.update(member, |p| rules::share_vault(p, vault))
    }

    /// Unshares `vault` from the member's gestalt in one transaction
    /// ([`rules::unshare_vault`]). Returns whether anything changed.
    pub fn unshare_vault(&self, member: &GestaltId, vault: VaultId) -> Result<bool, AclError> {
        self.update(member, |p| rules::unshare_vault(p, vault))
    }

    /// Removes every grant on `vault`, from every record (the vault was
    /// deleted). Returns how many records changed.
    pub fn purge_vault(&self, vault: VaultId) -> Result<usize, AclError> {
        let mut txn = self.env.write_txn()?;
        let mut keys = Vec::new();
        for item in self.vaults.iter(&mut txn)? {
            let (k, _) = item?;
            if k.get(16..) == Some(vault.as_bytes().as_slice()) {
                keys.push(k.to_vec());
            }
        }
        for k in &keys {
            let id = perm_id(k)?;
            let mut p = self.record(&mut txn, id)?;
            let old = p.clone();
            rules::purge_vault(&mut p, vault);
            self.write_diff(&mut txn, id, &rules::diff(&old, &p))?;
        }
        txn.commit()?;
        Ok(keys.len())
    }

    /// The record the member holds, or `None` if it is not a member.
    pub fn permission(&self, member: &GestaltId) -> Result<Option<Permission>, AclError> {
        let key = encode(member)?;
        let mut txn = self.env.read_txn()?;
        match self.perm_of(&mut txn, &key)? {
            Some(id) => Ok(Some(self.record(&mut txn, id)?)),
            None => Ok(None),
        }
    }

    /// Every member holding an action on `vault`, with its actions, sorted by
    /// member.
    pub fn vault_permissions(
        &self,
        vault: VaultId,
    ) -> Result<Vec<(GestaltId, BTreeSet<VaultAction>)>, AclError> {
        let mut txn = self.env.read_txn()?;
        // Collect the grants first: a read borrows the transaction until its
        // value is dropped.
        let mut grants = Vec::new();
        for item in self.vaults.iter(&mut txn)? {
            let (k, m) = item?;
            if k.get(16..) != Some(vault.as_bytes().as_slice()) {
                continue;
            }
            grants.push((perm_id(k)?, VaultAction::set_from_mask(mask(m, VAULTS_DB)?)));
        }
        let mut out = Vec::new();
        for (id, actions) in grants {
            for h in self.holder_keys(&mut txn, id)? {
                out.push((decode::<GestaltId>(&h)?, actions.clone()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every record with the members that share it (members sorted; groups
    /// sorted by their first member).
    pub fn all(&self) -> Result<Vec<(Vec<GestaltId>, Permission)>, AclError> {
        let mut txn = self.env.read_txn()?;
        let ids = self
            .perms
            .iter(&mut txn)?
            .map(|item| perm_id(item?.0))
            .collect::<Result<Vec<_>, AclError>>()?;
        let mut out = Vec::new();
        for id in ids {
            let mut members = self
                .holder_keys(&mut txn, id)?
                .iter()
                .map(|h| decode::<GestaltId>(h))
                .collect::<Result<Vec<_>, _>>()?;
            members.sort();
            out.push((members, self.record(&mut txn, id)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every member, sorted.
    pub fn members(&self) -> Result<Vec<GestaltId>, AclError> {
        let mut txn = self.env.read_txn()?;
        let mut out = self
            .members
            .iter(&mut txn)?
            .map(|item| Ok(decode::<GestaltId>(item?.0)?))
            .collect::<Result<Vec<_>, AclError>>()?;
        out.sort();
        Ok(out)
    }

    /// Whether `node`'s gestalt holds `action`. One read transaction, two gets.
    pub fn has_gestalt_action(
        &self,
        node: &NodeId,
        action: GestaltAction,
    ) -> Result<bool, AclError> {
        let mut txn = self.env.read_txn()?;
        let Some(id) = self.perm_of(&mut txn, &node_key(node))? else {
            return Ok(false);
        };
        Ok(match self.perms.get(&mut txn, &id.0)? {
            Some(m) => mask(m, PERMS_DB)? & action.bit() != 0,
            None => false,
        })
    }

    /// Whether `node`'s gestalt may do `action` on `vault`. One read transaction,
    /// two gets.
    pub fn may_vault(
        &self,
        node: &NodeId,
        vault: VaultId,
        action: VaultAction,
    ) -> Result<bool, AclError> {
        let mut txn = self.env.read_txn()?;
        let Some(id) = self.perm_of(&mut txn, &node_key(node))? else {
            return Ok(false);
        };
        Ok(match self.vaults.get(&mut txn, &vault_key(id, vault))? {
            Some(m) => mask(m, VAULTS_DB)? & action.bit() != 0,
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_matches_the_codec() {
        let n = keynode_core::Keypair::generate().node_id();
        assert_eq!(encode(&GestaltId::Node(n)).unwrap(), node_key(&n));
    }
}

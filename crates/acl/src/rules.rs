//! The permission rules, as plain functions: no storage, no time, no I/O.
//!
//! [`AclStore`](crate::AclStore) reads the records an operation touches, calls one
//! of these, and writes the [`diff`] back in one LMDB write transaction.

use std::collections::BTreeSet;

use keynode_core::VaultId;

use crate::{GestaltAction, Permission, VaultAction};

/// The record of a merged gestalt: the union of every record that takes part.
/// Every member of every side holds it afterwards (SPEC §4, beyond the reference
/// which applies it to one side only). With no records it is the empty record.
pub fn merge<'a>(records: impl IntoIterator<Item = &'a Permission>) -> Permission {
    let mut out = Permission::default();
    for p in records {
        out.gestalt.extend(p.gestalt.iter().copied());
        for (vault, actions) in &p.vaults {
            out.vaults
                .entry(*vault)
                .or_default()
                .extend(actions.iter().copied());
        }
    }
    out.vaults.retain(|_, a| !a.is_empty());
    out
}

/// The records of the two halves of a split gestalt: each keeps a copy of the
/// record held before the split.
pub fn split(before: &Permission) -> (Permission, Permission) {
    (before.clone(), before.clone())
}

/// Grants a gestalt action. Returns whether the record changed.
pub fn set_gestalt_action(p: &mut Permission, action: GestaltAction) -> bool {
    p.gestalt.insert(action)
}

/// Revokes a gestalt action. Returns whether the record changed.
pub fn unset_gestalt_action(p: &mut Permission, action: GestaltAction) -> bool {
    p.gestalt.remove(&action)
}

/// `vaults share` (SPEC §6.1): `clone` and `pull` on `vault`, and `scan` so the
/// gestalt can list what is shared with it. Returns whether the record changed.
pub fn share_vault(p: &mut Permission, vault: VaultId) -> bool {
    let clone = set_vault_action(p, vault, VaultAction::Clone);
    let pull = set_vault_action(p, vault, VaultAction::Pull);
    let scan = set_gestalt_action(p, GestaltAction::Scan);
    clone || pull || scan
}

/// `vaults unshare` (SPEC §6.2): drops `clone` and `pull` on `vault`, and
/// `scan` once no vault remains shared with the gestalt. Returns whether the
/// record changed.
pub fn unshare_vault(p: &mut Permission, vault: VaultId) -> bool {
    let clone = unset_vault_action(p, vault, VaultAction::Clone);
    let pull = unset_vault_action(p, vault, VaultAction::Pull);
    let scan = p.vaults.is_empty() && unset_gestalt_action(p, GestaltAction::Scan);
    clone || pull || scan
}

/// Grants a vault action. Returns whether the record changed.
pub fn set_vault_action(p: &mut Permission, vault: VaultId, action: VaultAction) -> bool {
    p.vaults.entry(vault).or_default().insert(action)
}

/// Revokes a vault action; a vault left with no action is dropped from the
/// record. Returns whether the record changed.
pub fn unset_vault_action(p: &mut Permission, vault: VaultId, action: VaultAction) -> bool {
    let Some(actions) = p.vaults.get_mut(&vault) else {
        return false;
    };
    let changed = actions.remove(&action);
    if actions.is_empty() {
        p.vaults.remove(&vault);
    }
    changed
}

/// Removes every action on `vault` (the vault was deleted). Returns whether the
/// record changed.
pub fn purge_vault(p: &mut Permission, vault: VaultId) -> bool {
    p.vaults.remove(&vault).is_some()
}

/// What happens to a record when one of its members is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFate {
    /// Other members still hold it.
    Keep,
    /// Nobody holds it any more: delete it.
    Delete,
}

/// Removing a member: the record stays while `remaining_holders` is non-zero.
pub fn remove_member(remaining_holders: usize) -> RecordFate {
    if remaining_holders == 0 {
        RecordFate::Delete
    } else {
        RecordFate::Keep
    }
}

/// The rows to write to turn the stored record `old` into `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// The new gestalt actions, if they changed.
    pub gestalt: Option<BTreeSet<GestaltAction>>,
    /// Vaults whose actions changed to this non-empty set.
    pub put_vaults: Vec<(VaultId, BTreeSet<VaultAction>)>,
    /// Vaults no longer in the record.
    pub delete_vaults: Vec<VaultId>,
}

impl Diff {
    /// True if nothing changes.
    pub fn is_empty(&self) -> bool {
        self.gestalt.is_none() && self.put_vaults.is_empty() && self.delete_vaults.is_empty()
    }
}

/// The changes from `old` to `new`.
pub fn diff(old: &Permission, new: &Permission) -> Diff {
    let gestalt = (old.gestalt != new.gestalt).then(|| new.gestalt.clone());
    let put_vaults = new
        .vaults
        .iter()
        .filter(|(v, a)| !a.is_empty() && old.vaults.get(v) != Some(a))
        .map(|(v, a)| (*v, a.clone()))
        .collect();
    let delete_vaults = old
        .vaults
        .keys()
        .filter(|v| new.vaults.get(v).is_none_or(|a| a.is_empty()))
        .copied()
        .collect();
    Diff {
        gestalt,
        put_vaults,
        delete_vaults,
    }
}

/// Applies a diff to a record (the in-memory twin of what the store writes).
pub fn apply(p: &mut Permission, d: &Diff) {
    if let Some(g) = &d.gestalt {
        p.gestalt = g.clone();
    }
    for (v, a) in &d.put_vaults {
        p.vaults.insert(*v, a.clone());
    }
    for v in &d.delete_vaults {
        p.vaults.remove(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vault(i: u8) -> VaultId {
        VaultId::from_bytes([i; 16]).unwrap()
    }

    fn permission() -> impl Strategy<Value = Permission> {
        (
            proptest::collection::btree_set(proptest::sample::select(GestaltAction::ALL), 0..3),
            proptest::collection::btree_map(
                (0u8..6).prop_map(vault),
                proptest::collection::btree_set(proptest::sample::select(VaultAction::ALL), 1..3),
                0..5,
            ),
        )
            .prop_map(|(gestalt, vaults)| Permission { gestalt, vaults })
    }

    fn holds(p: &Permission, sub: &Permission) -> bool {
        sub.gestalt.is_subset(&p.gestalt)
            && sub
                .vaults
                .iter()
                .all(|(v, a)| p.vaults.get(v).is_some_and(|b| a.is_subset(b)))
    }

    #[test]
    fn unset_drops_empty_vaults_and_purge_removes_all() {
        let mut p = Permission::default();
        assert!(set_vault_action(&mut p, vault(1), VaultAction::Pull));
        assert!(!set_vault_action(&mut p, vault(1), VaultAction::Pull));
        assert!(set_vault_action(&mut p, vault(1), VaultAction::Clone));
        assert!(unset_vault_action(&mut p, vault(1), VaultAction::Pull));
        assert!(unset_vault_action(&mut p, vault(1), VaultAction::Clone));
        assert!(p.vaults.is_empty());
        assert!(!unset_vault_action(&mut p, vault(1), VaultAction::Clone));
        set_vault_action(&mut p, vault(2), VaultAction::Clone);
        assert!(purge_vault(&mut p, vault(2)));
        assert!(p.is_empty());
        assert_eq!(remove_member(0), RecordFate::Delete);
        assert_eq!(remove_member(3), RecordFate::Keep);
    }

    proptest! {
        #[test]
        fn merge_is_the_least_union(a in permission(), b in permission(), c in permission()) {
            let ab = merge([&a, &b]);
            prop_assert!(holds(&ab, &a) && holds(&ab, &b));
            prop_assert_eq!(&ab, &merge([&b, &a]));
            prop_assert_eq!(merge([&ab, &c]), merge([&a, &merge([&b, &c])]));
            prop_assert_eq!(merge([&a, &a]), a.clone());
            // Nothing beyond the two records.
            for g in &ab.gestalt { prop_assert!(a.gestalt.contains(g) || b.gestalt.contains(g)); }
            for (v, acts) in &ab.vaults {
                for x in acts {
                    prop_assert!(a.vaults.get(v).is_some_and(|s| s.contains(x)) || b.vaults.get(v).is_some_and(|s| s.contains(x)));
                }
            }
        }

        #[test]
        fn split_copies(a in permission()) {
            let (l, r) = split(&a);
            prop_assert_eq!(&l, &a);
            prop_assert_eq!(&r, &a);
        }

        #[test]
        fn diff_applies(a in permission(), b in permission()) {
            let d = diff(&a, &b);
            let mut x = a.clone();
            apply(&mut x, &d);
            prop_assert_eq!(&x, &b);
            prop_assert_eq!(d.is_empty(), a == b);
        }

        #[test]
        fn set_then_unset_restores(a in permission(), v in 0u8..6, act in proptest::sample::select(VaultAction::ALL), g in proptest::sample::select(GestaltAction::ALL)) {
            let mut x = a.clone();
            let had_v = a.vaults.get(&vault(v)).is_some_and(|s| s.contains(&act));
            let had_g = a.gestalt.contains(&g);
            prop_assert_eq!(set_vault_action(&mut x, vault(v), act), !had_v);
            prop_assert_eq!(set_gestalt_action(&mut x, g), !had_g);
            if !had_v { prop_assert!(unset_vault_action(&mut x, vault(v), act)); }
            if !had_g { prop_assert!(unset_gestalt_action(&mut x, g)); }
            prop_assert_eq!(x, a);
        }
    }
}

#[cfg(test)]
mod share_tests {
    use super::*;

    #[test]
    fn share_grants_clone_pull_scan_and_unshare_keeps_scan_while_needed() {
        let (v1, v2) = (VaultId::generate(), VaultId::generate());
        let mut p = Permission::default();
        p.gestalt.insert(GestaltAction::Notify);
        assert!(share_vault(&mut p, v1));
        assert!(!share_vault(&mut p, v1), "sharing twice changes nothing");
        assert!(share_vault(&mut p, v2));
        assert!(p.gestalt.contains(&GestaltAction::Scan));
        assert_eq!(p.vaults[&v1].len(), 2);
        assert!(unshare_vault(&mut p, v1));
        assert!(
            p.gestalt.contains(&GestaltAction::Scan),
            "v2 is still shared"
        );
        assert!(!p.vaults.contains_key(&v1));
        assert!(unshare_vault(&mut p, v2));
        assert!(!p.gestalt.contains(&GestaltAction::Scan));
        assert!(
            p.gestalt.contains(&GestaltAction::Notify),
            "other actions stay"
        );
        assert!(!unshare_vault(&mut p, v2));
    }
}

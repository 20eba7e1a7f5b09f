//! Behaviour of `AclStore` and `AclManager` through the public API.

use std::collections::BTreeSet;
use std::sync::Arc;

use keynode_acl::{AclManager, AclStore, Env, GestaltAction, Permission, VaultAction, messages};
use keynode_core::datakey::DataKey;
use keynode_core::{GestaltId, Keypair, NodeId, VaultId};
use tempfile::TempDir;

fn open_env(dir: &std::path::Path) -> Env {
    let key = DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 28, 16).unwrap()
}

fn store() -> (TempDir, AclStore) {
    let tmp = tempfile::tempdir().unwrap();
    let acl = AclStore::open(open_env(tmp.path())).unwrap();
    (tmp, acl)
}

fn node() -> NodeId {
    Keypair::generate().node_id()
}

fn id(n: NodeId) -> GestaltId {
    GestaltId::Node(n)
}

fn set<T: Ord + Copy>(xs: &[T]) -> BTreeSet<T> {
    xs.iter().copied().collect()
}

#[test]
fn grants_to_one_member_reach_all_and_merge_is_a_union_on_both_sides() {
    let (_t, acl) = store();
    let (a, b, c) = (node(), node(), node());
    let ident: GestaltId = "offline:alice".parse().unwrap();
    let (v1, v2) = (VaultId::generate(), VaultId::generate());

    // Setting an action on an unknown member adds it.
    assert!(
        acl.set_gestalt_action(&id(a), GestaltAction::Notify)
            .unwrap()
    );
    assert!(
        !acl.set_gestalt_action(&id(a), GestaltAction::Notify)
            .unwrap()
    );
    acl.set_vault_action(&id(a), v1, VaultAction::Pull).unwrap();
    acl.set_vault_action(&id(b), v2, VaultAction::Clone)
        .unwrap();
    acl.add_member(&ident).unwrap();
    acl.set_gestalt_action(&ident, GestaltAction::Scan).unwrap();
    assert!(!acl.may_vault(&b, v1, VaultAction::Pull).unwrap());

    acl.merge(&[id(a)], &[id(b), ident.clone()]).unwrap();
    let want = Permission {
        gestalt: set(&[GestaltAction::Notify, GestaltAction::Scan]),
        vaults: [
            (v1, set(&[VaultAction::Pull])),
            (v2, set(&[VaultAction::Clone])),
        ]
        .into_iter()
        .collect(),
    };
    for m in [id(a), id(b), ident.clone()] {
        assert_eq!(acl.permission(&m).unwrap().as_ref(), Some(&want), "{m}");
    }
    assert!(acl.may_vault(&b, v1, VaultAction::Pull).unwrap());
    assert!(acl.may_vault(&a, v2, VaultAction::Clone).unwrap());
    assert!(!acl.may_vault(&a, v2, VaultAction::Pull).unwrap());
    assert!(acl.has_gestalt_action(&b, GestaltAction::Notify).unwrap());
    assert!(!acl.has_gestalt_action(&c, GestaltAction::Notify).unwrap());
    assert!(!acl.may_vault(&c, v1, VaultAction::Pull).unwrap());

    // One shared record: a grant to one member is a grant to all.
    acl.set_gestalt_action(&ident, GestaltAction::Claim)
        .unwrap();
    assert!(acl.has_gestalt_action(&a, GestaltAction::Claim).unwrap());
    let all = acl.all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0.len(), 3);
    assert_eq!(acl.members().unwrap().len(), 3);
}

#[test]
fn split_copies_and_the_halves_diverge() {
    let (_t, acl) = store();
    let (a, b, c) = (node(), node(), node());
    let v = VaultId::generate();
    acl.join(&[id(a), id(b), id(c)]).unwrap();
    acl.set_vault_action(&id(a), v, VaultAction::Pull).unwrap();
    acl.split(&[id(a)], &[id(b), id(c)]).unwrap();
    let before = acl.permission(&id(a)).unwrap().unwrap();
    assert_eq!(acl.permission(&id(b)).unwrap().unwrap(), before);
    assert_eq!(acl.all().unwrap().len(), 2);

    acl.unset_vault_action(&id(b), v, VaultAction::Pull)
        .unwrap();
    assert!(acl.may_vault(&a, v, VaultAction::Pull).unwrap());
    assert!(!acl.may_vault(&b, v, VaultAction::Pull).unwrap());
    assert!(!acl.may_vault(&c, v, VaultAction::Pull).unwrap());
    assert_eq!(
        acl.permission(&id(c)).unwrap().unwrap(),
        Permission::default()
    );
}

#[test]
fn remove_member_purge_and_vault_listing() {
    let (_t, acl) = store();
    let (a, b) = (node(), node());
    let (v, w) = (VaultId::generate(), VaultId::generate());
    acl.join(&[id(a), id(b)]).unwrap();
    acl.set_vault_action(&id(a), v, VaultAction::Pull).unwrap();
    acl.set_vault_action(&id(a), v, VaultAction::Clone).unwrap();
    acl.set_vault_action(&id(a), w, VaultAction::Clone).unwrap();
    let listed = acl.vault_permissions(v).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|(_, acts)| acts.len() == 2));

    assert_eq!(acl.purge_vault(v).unwrap(), 1);
    assert!(acl.vault_permissions(v).unwrap().is_empty());
    assert!(!acl.may_vault(&a, v, VaultAction::Pull).unwrap());
    assert!(acl.may_vault(&b, w, VaultAction::Clone).unwrap());

    assert!(acl.remove_member(&id(a)).unwrap());
    assert!(!acl.remove_member(&id(a)).unwrap());
    assert_eq!(acl.permission(&id(a)).unwrap(), None);
    assert!(!acl.may_vault(&a, w, VaultAction::Clone).unwrap());
    assert!(acl.may_vault(&b, w, VaultAction::Clone).unwrap());
    assert!(acl.remove_member(&id(b)).unwrap());
    assert!(acl.all().unwrap().is_empty());
    assert!(acl.members().unwrap().is_empty());
}

#[test]
fn state_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let env = open_env(tmp.path());
    let a = node();
    let v = VaultId::generate();
    {
        let acl = AclStore::open(env.clone()).unwrap();
        acl.set_vault_action(&id(a), v, VaultAction::Pull).unwrap();
    }
    // Close the environment (every clone gone) and open the directory again.
    assert!(
        env.prepare_for_closing()
            .expect("every clone of the env is gone")
            .wait_timeout(std::time::Duration::from_secs(10))
    );
    let acl = AclStore::open(open_env(tmp.path())).unwrap();
    assert!(acl.may_vault(&a, v, VaultAction::Pull).unwrap());
    assert!(!acl.may_vault(&a, v, VaultAction::Clone).unwrap());
}

#[actix_rt::test]
async fn the_actor_runs_store_calls() {
    use actix::Actor;
    let (_t, acl) = store();
    let addr = AclManager::new(Arc::new(acl)).start();
    let (a, b) = (node(), node());
    let v = VaultId::generate();
    addr.send(messages::SetVaultAction {
        member: id(a),
        vault: v,
        action: VaultAction::Pull,
    })
    .await
    .unwrap()
    .unwrap();
    addr.send(messages::Join {
        members: vec![id(a), id(b)],
    })
    .await
    .unwrap()
    .unwrap();
    let ok = addr
        .send(messages::MayVault {
            node: b,
            vault: v,
            action: VaultAction::Pull,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(ok);
    let members = addr.send(messages::Members {}).await.unwrap().unwrap();
    assert_eq!(members.len(), 2);
}

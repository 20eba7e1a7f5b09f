//! The ACL alone, without the agent: permissions shared by a gestalt, a
//! merge that unites two gestalts' records, a split that gives each side
//! its own copy.
//!
//! ```sh
//! cargo run -p keynode-acl --example merge_and_split
//! ```

use keynode_acl::{AclStore, GestaltAction, VaultAction};
use keynode_core::datakey::DataKey;
use keynode_core::{GestaltId, Keypair, VaultId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // One encrypted LMDB environment; the ACL owns its named databases in it.
    let key = DataKey::from_bytes([7; 32]);
    let env = keynode_core::store::open_env(dir.path(), &key, 1 << 28, 16)?;
    let acl = AclStore::open(env)?;

    let (laptop_id, phone_id) = (Keypair::generate().node_id(), Keypair::generate().node_id());
    let (laptop, phone) = (GestaltId::Node(laptop_id), GestaltId::Node(phone_id));
    let vault = VaultId::generate();

    // Alice's laptop may pull the vault; her phone may be notified.
    acl.set_vault_action(&laptop, vault, VaultAction::Pull)?;
    acl.set_gestalt_action(&phone, GestaltAction::Notify)?;
    println!(
        "before: phone may pull: {}",
        acl.may_vault(&phone_id, vault, VaultAction::Pull)?
    );

    // A claim links the two nodes into one gestalt: one record, the union.
    acl.merge(std::slice::from_ref(&laptop), std::slice::from_ref(&phone))?;
    let phone_pulls = acl.may_vault(&phone_id, vault, VaultAction::Pull)?;
    let laptop_notified = acl.has_gestalt_action(&laptop_id, GestaltAction::Notify)?;
    println!("merged: phone may pull: {phone_pulls}, laptop notified: {laptop_notified}");
    assert!(phone_pulls && laptop_notified);

    // The link is revoked: each side keeps a copy, and from now on they differ.
    acl.split(std::slice::from_ref(&laptop), std::slice::from_ref(&phone))?;
    acl.unset_vault_action(&phone, vault, VaultAction::Pull)?;
    let laptop_pulls = acl.may_vault(&laptop_id, vault, VaultAction::Pull)?;
    let phone_pulls = acl.may_vault(&phone_id, vault, VaultAction::Pull)?;
    println!("split: laptop may pull: {laptop_pulls}, phone may pull: {phone_pulls}");
    assert!(laptop_pulls && !phone_pulls);
    Ok(())
}

#[test]
fn runs() {
    main().expect("the example runs");
}

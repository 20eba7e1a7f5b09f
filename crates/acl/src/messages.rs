//! The messages [`AclManager`] answers, one per [`AclStore`] method, each
//! replying `Result<_, AclError>` once the blocking call is done.
//!
//! [`AclStore`]: crate::AclStore

use std::collections::BTreeSet;

use keynode_core::{GestaltId, NodeId, VaultId};

use crate::{AclError, AclManager, GestaltAction, Permission, VaultAction};

/// Declares a message and its `AclManager` handler (see `keynode_core::store_message!`).
macro_rules! store_message {
    ($($t:tt)*) => {
        keynode_core::store_message!(AclManager, AclError; $($t)*);
    };
}

store_message! {
    /// Adds a member with its own empty record; replies whether it was new.
    #[derive(Debug, Clone)]
    pub struct AddMember {
        /// The member.
        pub member: GestaltId,
    } -> bool;
    |store, msg| store.add_member(&msg.member)
}

store_message! {
    /// Removes a member; replies whether it was one.
    #[derive(Debug, Clone)]
    pub struct RemoveMember {
        /// The member.
        pub member: GestaltId,
    } -> bool;
    |store, msg| store.remove_member(&msg.member)
}

store_message! {
    /// Makes these members share the union of their records.
    #[derive(Debug, Clone)]
    pub struct Join {
        /// The members of the merged gestalt.
        pub members: Vec<GestaltId>,
    } -> ();
    |store, msg| store.join(&msg.members)
}

store_message! {
    /// Merges two gestalts: both sides hold the union of their records.
    #[derive(Debug, Clone)]
    pub struct Merge {
        /// One side.
        pub a: Vec<GestaltId>,
        /// The other side.
        pub b: Vec<GestaltId>,
    } -> ();
    |store, msg| store.merge(&msg.a, &msg.b)
}

store_message! {
    /// Splits a gestalt: each half keeps a copy of the record.
    #[derive(Debug, Clone)]
    pub struct Split {
        /// One half.
        pub left: Vec<GestaltId>,
        /// The other half.
        pub right: Vec<GestaltId>,
    } -> ();
    |store, msg| store.split(&msg.left, &msg.right)
}

store_message! {
    /// Grants a gestalt action; replies whether anything changed.
    #[derive(Debug, Clone)]
    pub struct SetGestaltAction {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The action.
        pub action: GestaltAction,
    } -> bool;
    |store, msg| store.set_gestalt_action(&msg.member, msg.action)
}

store_message! {
    /// Revokes a gestalt action; replies whether anything changed.
    #[derive(Debug, Clone)]
    pub struct UnsetGestaltAction {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The action.
        pub action: GestaltAction,
    } -> bool;
    |store, msg| store.unset_gestalt_action(&msg.member, msg.action)
}

store_message! {
    /// Grants a vault action; replies whether anything changed.
    #[derive(Debug, Clone)]
    pub struct SetVaultAction {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The vault.
        pub vault: VaultId,
        /// The action.
        pub action: VaultAction,
    } -> bool;
    |store, msg| store.set_vault_action(&msg.member, msg.vault, msg.action)
}

store_message! {
    /// Revokes a vault action; replies whether anything changed.
    #[derive(Debug, Clone)]
    pub struct UnsetVaultAction {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The vault.
        pub vault: VaultId,
        /// The action.
        pub action: VaultAction,
    } -> bool;
    |store, msg| store.unset_vault_action(&msg.member, msg.vault, msg.action)
}

store_message! {
    /// Shares a vault with a member's gestalt (clone, pull, scan) in one transaction.
    #[derive(Debug, Clone)]
    pub struct ShareVault {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The vault.
        pub vault: VaultId,
    } -> bool;
    |store, msg| store.share_vault(&msg.member, msg.vault)
}

store_message! {
    /// Unshares a vault from a member's gestalt in one transaction.
    #[derive(Debug, Clone)]
    pub struct UnshareVault {
        /// A member of the gestalt.
        pub member: GestaltId,
        /// The vault.
        pub vault: VaultId,
    } -> bool;
    |store, msg| store.unshare_vault(&msg.member, msg.vault)
}

store_message! {
    /// Removes every grant on a vault; replies how many records changed.
    #[derive(Debug, Clone)]
    pub struct PurgeVault {
        /// The vault.
        pub vault: VaultId,
    } -> usize;
    |store, msg| store.purge_vault(msg.vault)
}

store_message! {
    /// The record a member holds.
    #[derive(Debug, Clone)]
    pub struct GetPermission {
        /// The member.
        pub member: GestaltId,
    } -> Option<Permission>;
    |store, msg| store.permission(&msg.member)
}

store_message! {
    /// Who holds which actions on a vault.
    #[derive(Debug, Clone)]
    pub struct VaultPermissions {
        /// The vault.
        pub vault: VaultId,
    } -> Vec<(GestaltId, BTreeSet<VaultAction>)>;
    |store, msg| store.vault_permissions(msg.vault)
}

store_message! {
    /// Every record with the members that share it.
    #[derive(Debug, Clone)]
    pub struct AllPermissions {} -> Vec<(Vec<GestaltId>, Permission)>;
    |store, _msg| store.all()
}

store_message! {
    /// Every member.
    #[derive(Debug, Clone)]
    pub struct Members {} -> Vec<GestaltId>;
    |store, _msg| store.members()
}

store_message! {
    /// Whether a node's gestalt holds a gestalt action.
    #[derive(Debug, Clone)]
    pub struct HasGestaltAction {
        /// The node (as proven by the handshake).
        pub node: NodeId,
        /// The action.
        pub action: GestaltAction,
    } -> bool;
    |store, msg| store.has_gestalt_action(&msg.node, msg.action)
}

store_message! {
    /// Whether a node's gestalt may do an action on a vault.
    #[derive(Debug, Clone)]
    pub struct MayVault {
        /// The node (as proven by the handshake).
        pub node: NodeId,
        /// The vault.
        pub vault: VaultId,
        /// The action.
        pub action: VaultAction,
    } -> bool;
    |store, msg| store.may_vault(&msg.node, msg.vault, msg.action)
}

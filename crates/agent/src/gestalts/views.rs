//! The text forms of gestalts and permission records that the client API shows.

use keynode_acl::Permission;
use keynode_core::{IdentityId, ProviderId};
use keynode_gestalt::Gestalt;

use crate::api::{GestaltView, PermissionView};

/// `provider:identity`.
pub(crate) fn identity_text((p, i): &(ProviderId, IdentityId)) -> String {
    format!("{}:{}", p.as_str(), i.as_str())
}

/// The text form of a permission record.
pub fn permission_view(p: &Permission) -> PermissionView {
    PermissionView {
        gestalt: p.gestalt.iter().map(ToString::to_string).collect(),
        vaults: p
            .vaults
            .iter()
            .map(|(v, a)| (v.to_string(), a.iter().map(ToString::to_string).collect()))
            .collect(),
    }
}

pub(crate) fn gestalt_view(g: &Gestalt, p: &Permission) -> GestaltView {
    GestaltView {
        nodes: g.nodes.iter().copied().collect(),
        identities: g.identities.iter().map(identity_text).collect(),
        permissions: permission_view(p),
    }
}

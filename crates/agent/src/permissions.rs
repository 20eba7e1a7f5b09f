//! Permission propagation: the gestalt graph's events applied to the ACL.
//!
//! Permissions belong to gestalts (SPEC §4), and gestalts are the graph's
//! connected components, so every graph mutation's [`GestaltEvent`]s go through
//! [`apply`]: a new vertex gets its own empty record, a link makes the merged
//! gestalt share the union of its records (on both sides), a split gives each half
//! a copy, and a removed vertex loses its record. With every mutation routed this
//! way, the ACL's members are exactly the graph's vertices.

use keynode_acl::{AclError, AclStore};
use keynode_core::GestaltId;
use keynode_gestalt::{GestaltEvent, GestaltGraph, GraphError};

/// Keeping the graph and the ACL in step failed.
#[derive(Debug, thiserror::Error)]
pub enum PermissionsError {
    /// The graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The ACL failed.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// Applies one graph event to the ACL.
pub fn apply(acl: &AclStore, event: &GestaltEvent) -> Result<(), AclError> {
    match event {
        GestaltEvent::VertexAdded(id) => {
            acl.add_member(id)?;
        }
        GestaltEvent::VertexRemoved(id) => {
            acl.remove_member(id)?;
        }
        GestaltEvent::Linked { members, .. } => acl.join(members)?,
        GestaltEvent::Unlinked { left, right, .. } => {
            if !right.is_empty() {
                acl.split(left, right)?;
            }
        }
    }
    Ok(())
}

/// Applies a mutation's events, in order.
pub fn apply_all(acl: &AclStore, events: &[GestaltEvent]) -> Result<(), AclError> {
    events.iter().try_for_each(|e| apply(acl, e))
}

/// Makes `id` a vertex of the graph (and so a member of the ACL) if it is not
/// one yet: call before granting to a gestalt that may be unknown
/// (`identities trust`, `vaults share`), so the ACL never holds a member the
/// graph lacks.
pub fn ensure_vertex(
    graph: &GestaltGraph,
    acl: &AclStore,
    id: &GestaltId,
) -> Result<(), PermissionsError> {
    let events = graph.add_vertex(id)?;
    apply_all(acl, &events)?;
    Ok(())
}

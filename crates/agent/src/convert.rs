//! The vault store's values in the client API's own types.

use crate::api;

impl From<keynode_vaults::Remote> for api::Remote {
    fn from(r: keynode_vaults::Remote) -> Self {
        api::Remote {
            node: r.node,
            vault: r.vault,
        }
    }
}

impl From<keynode_vaults::VaultMeta> for api::VaultMeta {
    fn from(m: keynode_vaults::VaultMeta) -> Self {
        api::VaultMeta {
            id: m.id,
            name: m.name,
            created_ms: m.created_ms,
            remote: m.remote.map(Into::into),
            follow: None,
        }
    }
}

impl From<keynode_vaults::CommitInfo> for api::CommitInfo {
    fn from(c: keynode_vaults::CommitInfo) -> Self {
        api::CommitInfo {
            oid: c.oid,
            author: c.author,
            time_ms: c.time_ms,
            message: c.message,
        }
    }
}

impl From<keynode_vaults::EntryKind> for api::EntryKind {
    fn from(k: keynode_vaults::EntryKind) -> Self {
        match k {
            keynode_vaults::EntryKind::File => api::EntryKind::File,
            keynode_vaults::EntryKind::Dir => api::EntryKind::Dir,
        }
    }
}

impl From<keynode_vaults::Entry> for api::Entry {
    fn from(e: keynode_vaults::Entry) -> Self {
        api::Entry {
            name: e.name,
            kind: e.kind.into(),
            size: e.size,
        }
    }
}

impl From<keynode_vaults::SecretStat> for api::SecretStat {
    fn from(s: keynode_vaults::SecretStat) -> Self {
        api::SecretStat {
            path: s.path,
            kind: s.kind.into(),
            size: s.size,
            blob: s.blob,
            mode: s.mode,
            last_commit: s.last_commit.map(Into::into),
        }
    }
}

/// A mutation's outcome: its commit, if one was made.
pub(crate) fn committed(o: keynode_vaults::CommitOutcome) -> api::Response {
    api::Response::Committed(o.commit().cloned().map(Into::into))
}

/// Every item converted.
pub(crate) fn all<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(Into::into).collect()
}

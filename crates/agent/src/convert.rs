//! The vault store's values in the client API's own types. The API lives in
//! `keynode-client`, which knows nothing of the store, so the conversions
//! are this crate's own trait rather than `From`.

use crate::api;

/// `self` as the client API's type `T`.
pub(crate) trait IntoApi<T> {
    fn into_api(self) -> T;
}

impl<A: IntoApi<B>, B> IntoApi<Option<B>> for Option<A> {
    fn into_api(self) -> Option<B> {
        self.map(IntoApi::into_api)
    }
}

impl<A: IntoApi<B>, B> IntoApi<Vec<B>> for Vec<A> {
    fn into_api(self) -> Vec<B> {
        self.into_iter().map(IntoApi::into_api).collect()
    }
}

impl IntoApi<api::Remote> for keynode_vaults::Remote {
    fn into_api(self) -> api::Remote {
        let r = self;
        api::Remote {
            node: r.node,
            vault: r.vault,
        }
    }
}

impl IntoApi<api::VaultMeta> for keynode_vaults::VaultMeta {
    fn into_api(self) -> api::VaultMeta {
        let m = self;
        api::VaultMeta {
            id: m.id,
            name: m.name,
            created_ms: m.created_ms,
            remote: m.remote.into_api(),
            follow: None,
        }
    }
}

impl IntoApi<api::CommitInfo> for keynode_vaults::CommitInfo {
    fn into_api(self) -> api::CommitInfo {
        let c = self;
        api::CommitInfo {
            oid: c.oid,
            author: c.author,
            time_ms: c.time_ms,
            message: c.message,
        }
    }
}

impl IntoApi<api::EntryKind> for keynode_vaults::EntryKind {
    fn into_api(self) -> api::EntryKind {
        match self {
            keynode_vaults::EntryKind::File => api::EntryKind::File,
            keynode_vaults::EntryKind::Dir => api::EntryKind::Dir,
        }
    }
}

impl IntoApi<api::Entry> for keynode_vaults::Entry {
    fn into_api(self) -> api::Entry {
        let e = self;
        api::Entry {
            name: e.name,
            kind: e.kind.into_api(),
            size: e.size,
        }
    }
}

impl IntoApi<api::SecretStat> for keynode_vaults::SecretStat {
    fn into_api(self) -> api::SecretStat {
        let s = self;
        api::SecretStat {
            path: s.path,
            kind: s.kind.into_api(),
            size: s.size,
            blob: s.blob,
            mode: s.mode,
            last_commit: s.last_commit.into_api(),
        }
    }
}

/// A mutation's outcome: its commit, if one was made.
pub(crate) fn committed(o: keynode_vaults::CommitOutcome) -> api::Response {
    api::Response::Committed(o.commit().cloned().into_api())
}

/// Every item converted.
pub(crate) fn all<T: IntoApi<U>, U>(items: Vec<T>) -> Vec<U> {
    items.into_api()
}

//! [`VaultManager`]: the actor face of [`VaultStore`].

use std::sync::Arc;

use actix::{Actor, Context};

use crate::{VaultError, VaultStore};

/// An actor that runs every [`VaultStore`] call on tokio's blocking pool, so git
/// and LMDB never block its event loop. It holds no state of its own: its
/// messages (in [`messages`](crate::messages)) map one to one onto the store's
/// methods, and the concurrency rules are the store's.
#[derive(Debug, Clone)]
pub struct VaultManager {
    store: Arc<VaultStore>,
}

impl VaultManager {
    /// Wraps `store`.
    pub fn new(store: Arc<VaultStore>) -> Self {
        VaultManager { store }
    }

    /// The store, for callers that want to call it directly.
    pub fn store(&self) -> &Arc<VaultStore> {
        &self.store
    }

    /// Runs `f` with the store on the blocking pool.
    pub(crate) fn blocking<T, F>(&self, f: F) -> actix::ResponseFuture<Result<T, VaultError>>
    where
        T: Send + 'static,
        F: FnOnce(&VaultStore) -> Result<T, VaultError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            keynode_core::sim::blocking(move || f(&store))
                .await
                .map_err(|e| std::io::Error::other(format!("vault task failed: {e}")))?
        })
    }
}

impl Actor for VaultManager {
    type Context = Context<Self>;
}

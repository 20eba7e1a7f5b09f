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
    exec: keynode_core::exec::Exec,
}

impl VaultManager {
    /// Wraps `store`.
    pub fn new(store: Arc<VaultStore>) -> Self {
        VaultManager {
            store,
            exec: keynode_core::exec::threads(),
        }
    }

    /// Runs store calls through `exec` instead of tokio's blocking pool (e.g.
    /// [`Inline`](keynode_core::exec::Inline) in a deterministic simulation).
    pub fn with_executor(mut self, exec: keynode_core::exec::Exec) -> Self {
        self.exec = exec;
        self
    }

    /// The store, for callers that want to call it directly.
    pub fn store(&self) -> &Arc<VaultStore> {
        &self.store
    }

    /// Runs `f` with the store as a short job (see `keynode_core::exec`).
    pub(crate) fn blocking<T, F>(&self, f: F) -> actix::ResponseFuture<Result<T, VaultError>>
    where
        T: Send + 'static,
        F: FnOnce(&VaultStore) -> Result<T, VaultError> + Send + 'static,
    {
        self.job(false, f)
    }

    /// Runs `f`, which may wait on the other end of a pipe (a peer, a
    /// client), with the store as a waiting job, outside the short jobs'
    /// threads.
    pub(crate) fn blocking_waiting<T, F>(
        &self,
        f: F,
    ) -> actix::ResponseFuture<Result<T, VaultError>>
    where
        T: Send + 'static,
        F: FnOnce(&VaultStore) -> Result<T, VaultError> + Send + 'static,
    {
        self.job(true, f)
    }

    fn job<T, F>(&self, waits: bool, f: F) -> actix::ResponseFuture<Result<T, VaultError>>
    where
        T: Send + 'static,
        F: FnOnce(&VaultStore) -> Result<T, VaultError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let exec = self.exec.clone();
        Box::pin(async move {
            let run = move || f(&store);
            let done = if waits {
                keynode_core::exec::blocking_waiting(exec.as_ref(), run).await
            } else {
                keynode_core::exec::blocking(exec.as_ref(), run).await
            };
            done.map_err(|e| std::io::Error::other(format!("vault task failed: {e}")))?
        })
    }
}

impl Actor for VaultManager {
    type Context = Context<Self>;
}

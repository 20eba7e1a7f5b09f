//! [`AuditManager`]: the actor face of [`AuditStore`].

use std::sync::Arc;

use actix::{Actor, Context};

use crate::{AuditError, AuditStore};

/// An actor that runs every [`AuditStore`] call on tokio's blocking pool. It
/// holds no state of its own: its [`messages`](crate::messages) map one to one
/// onto the store's methods.
#[derive(Debug, Clone)]
pub struct AuditManager {
    store: Arc<AuditStore>,
    exec: keynode_core::exec::Exec,
}

impl AuditManager {
    /// Wraps `store`.
    pub fn new(store: Arc<AuditStore>) -> Self {
        AuditManager {
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

    /// The store.
    pub fn store(&self) -> &Arc<AuditStore> {
        &self.store
    }

    /// Runs `f` with the store on the blocking pool.
    pub(crate) fn blocking<T, F>(&self, f: F) -> actix::ResponseFuture<Result<T, AuditError>>
    where
        T: Send + 'static,
        F: FnOnce(&AuditStore) -> Result<T, AuditError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let exec = self.exec.clone();
        Box::pin(async move {
            keynode_core::exec::blocking(exec.as_ref(), move || f(&store))
                .await
                .map_err(|e| AuditError::Task(e.to_string()))?
        })
    }
}

impl Actor for AuditManager {
    type Context = Context<Self>;
}

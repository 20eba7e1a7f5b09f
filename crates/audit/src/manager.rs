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
}

impl AuditManager {
    /// Wraps `store`.
    pub fn new(store: Arc<AuditStore>) -> Self {
        AuditManager { store }
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
        Box::pin(async move {
            keynode_core::sim::blocking(move || f(&store))
                .await
                .map_err(|e| AuditError::Task(e.to_string()))?
        })
    }
}

impl Actor for AuditManager {
    type Context = Context<Self>;
}

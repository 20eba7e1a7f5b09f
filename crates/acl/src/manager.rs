//! [`AclManager`]: the actor face of [`AclStore`].

use std::sync::Arc;

use actix::{Actor, Context};

use crate::{AclError, AclStore};

/// An actor that runs every [`AclStore`] call on tokio's blocking pool. It holds
/// no state of its own: its [`messages`](crate::messages) map one to one onto
/// the store's methods.
#[derive(Debug, Clone)]
pub struct AclManager {
    store: Arc<AclStore>,
    exec: keynode_core::exec::Exec,
}

impl AclManager {
    /// Wraps `store`.
    pub fn new(store: Arc<AclStore>) -> Self {
        AclManager {
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

    /// The store, for callers that want to call it directly (e.g. the fast
    /// checks on a serving path).
    pub fn store(&self) -> &Arc<AclStore> {
        &self.store
    }

    /// Runs `f` with the store on the blocking pool.
    pub(crate) fn blocking<T, F>(&self, f: F) -> actix::ResponseFuture<Result<T, AclError>>
    where
        T: Send + 'static,
        F: FnOnce(&AclStore) -> Result<T, AclError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let exec = self.exec.clone();
        Box::pin(async move {
            keynode_core::exec::blocking(exec.as_ref(), move || f(&store))
                .await
                .map_err(|e| AclError::Task(e.to_string()))?
        })
    }
}

impl Actor for AclManager {
    type Context = Context<Self>;
}

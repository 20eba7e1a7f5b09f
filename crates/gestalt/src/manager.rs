//! [`GestaltManager`]: the actor face of [`GestaltGraph`].

use std::sync::Arc;

use actix::{Actor, Context};

use crate::{GestaltGraph, GraphError};

/// An actor that runs every [`GestaltGraph`] call on tokio's blocking pool. It
/// holds no state of its own: its [`messages`](crate::messages) map one to one
/// onto the graph's methods, and mutations reply with the
/// [`GestaltEvent`](crate::GestaltEvent)s to route to the ACL.
#[derive(Debug, Clone)]
pub struct GestaltManager {
    graph: Arc<GestaltGraph>,
    exec: keynode_core::exec::Exec,
}

impl GestaltManager {
    /// Wraps `graph`.
    pub fn new(graph: Arc<GestaltGraph>) -> Self {
        GestaltManager {
            graph,
            exec: keynode_core::exec::threads(),
        }
    }

    /// Runs store calls through `exec` instead of tokio's blocking pool (e.g.
    /// [`Inline`](keynode_core::exec::Inline) in a deterministic simulation).
    pub fn with_executor(mut self, exec: keynode_core::exec::Exec) -> Self {
        self.exec = exec;
        self
    }

    /// The graph, for callers that want to call it directly.
    pub fn graph(&self) -> &Arc<GestaltGraph> {
        &self.graph
    }

    /// Runs `f` with the graph on the blocking pool.
    pub(crate) fn blocking<T, F>(&self, f: F) -> actix::ResponseFuture<Result<T, GraphError>>
    where
        T: Send + 'static,
        F: FnOnce(&GestaltGraph) -> Result<T, GraphError> + Send + 'static,
    {
        let graph = Arc::clone(&self.graph);
        let exec = self.exec.clone();
        Box::pin(async move {
            keynode_core::exec::blocking(exec.as_ref(), move || f(&graph))
                .await
                .map_err(|e| GraphError::Task(e.to_string()))?
        })
    }
}

impl Actor for GestaltManager {
    type Context = Context<Self>;
}

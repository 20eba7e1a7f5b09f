//! The seam between the manager and the network.

use futures_util::future::BoxFuture;
use keynode_core::NodeId;

use crate::SignedNotification;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The peer could not be reached (or did not answer in time, or could not
    /// store it now): the outbox retries later.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer refused the notification: final, the outbox drops it.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Carries a signed notification to its addressee, which answers with
/// [`Receive`](crate::messages::Receive). The agent implements it over the network
/// (dialling `to` if needed); tests implement it in memory.
///
/// An implementation maps the recipient's answer: accepted (or already held) →
/// `Ok`, [`ReceiveError::Refused`](crate::ReceiveError::Refused) →
/// [`DeliveryError::Rejected`], anything else (no route, connection lost,
/// timeout, [`ReceiveError::Store`](crate::ReceiveError::Store)) →
/// [`DeliveryError::Unreachable`].
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `n` to `to`.
    fn deliver(
        &self,
        to: NodeId,
        n: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>>;

    /// Whether `to` can be reached at once (a live connection): the manager
    /// then tries a new notification straight away and writes it to the
    /// outbox only if that fails. `false` (the default) always queues first.
    fn connected(&self, to: NodeId) -> bool {
        let _ = to;
        false
    }
}

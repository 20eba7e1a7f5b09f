//! What the agent counts for an operator's monitoring, through the `metrics`
//! facade: nothing is kept unless the process installed a recorder (as
//! `keynode agent start --metrics HOST:PORT` does, serving Prometheus text).
//!
//! Labels are closed sets of words: a request's kind, an outcome, a
//! direction, an operation. Never a vault or secret name, a path, a node id or
//! a value.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `keynode_connections_total` | counter | `direction` (inbound, outbound) |
//! | `keynode_handshakes_total` | counter | `direction`, `outcome` (ok, failed, timeout) |
//! | `keynode_connections_open` | gauge | — |
//! | `keynode_client_requests_total` | counter | `kind` (`vaults_clone`…), `outcome` (ok or the error kind) |
//! | `keynode_peer_requests_total` | counter | `kind` (`vault_open`…), `outcome` |
//! | `keynode_transfers_total` | counter | `kind` (clone, pull, serve), `outcome` |
//! | `keynode_transfer_bytes_total` | counter | `direction` (sent, received) |
//! | `keynode_refusals_total` | counter | `op` (clone, pull, scan, notification…) |
//! | `keynode_outbox_depth`, `keynode_inbox_size` | gauge | — |
//! | `keynode_state_bytes`, `keynode_state_limit_bytes`, `keynode_vaults` | gauge | — |

use std::time::Duration;

use crate::api::ApiError;

/// How often [`Node::sample_metrics`](crate::Node::sample_metrics) callers
/// are expected to refresh the gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A client request of `kind` ended.
pub(crate) fn client_request<T>(kind: &'static str, result: &Result<T, ApiError>) {
    let outcome: &'static str = match result {
        Ok(_) => "ok",
        Err(e) => e.kind.into(),
    };
    metrics::counter!("keynode_client_requests_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// A peer request of `kind` was served.
pub(crate) fn peer_request<T>(kind: &'static str, result: &Result<T, keynode_net::WireError>) {
    let outcome: &'static str = match result {
        Ok(_) => "ok",
        Err(e) => wire_kind(e.kind),
    };
    metrics::counter!("keynode_peer_requests_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

fn wire_kind(kind: keynode_net::WireErrorKind) -> &'static str {
    use keynode_net::WireErrorKind as K;
    match kind {
        K::BadRequest => "bad_request",
        K::PermissionDenied => "permission_denied",
        K::NotFound => "not_found",
        K::AlreadyExists => "already_exists",
        K::Unavailable => "unavailable",
        K::Unsupported => "unsupported",
        K::Timeout => "timeout",
        K::Internal => "internal",
    }
}

/// A refusal of `op` (a fixed word of this crate's) was recorded.
pub(crate) fn refusal(op: &str) {
    metrics::counter!("keynode_refusals_total", "op" => op.to_owned()).increment(1);
}

/// A transfer of `kind` (clone, pull, serve) ended, having moved `bytes` in
/// `direction` (sent, received).
pub(crate) fn transfer(kind: &'static str, ok: bool, direction: &'static str, bytes: u64) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("keynode_transfers_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::counter!("keynode_transfer_bytes_total", "direction" => direction).increment(bytes);
}

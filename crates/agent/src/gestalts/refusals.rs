//! Refusals, summarised: a flood of refused requests (from one peer, or from
//! throwaway keys) must not turn into a flood of signed, fsynced audit entries.
//!
//! Per window ([`REFUSAL_WINDOW`]) the first refusal of each (peer, op, reason)
//! is recorded as it happens; the ones after it are counted and recorded once,
//! as `RefusedRepeatedly`, when the window closes. At most
//! [`MAX_REFUSING_PEERS`] peers are told apart per window; refusals of any
//! further peer are counted together (peer unknown) by op and reason. So a
//! window writes at most `2 × MAX_REFUSING_PEERS` entries plus one per
//! (op, reason) — about 140 entries a minute under any flood.

use std::collections::HashMap;
use std::time::Duration;

use keynode_audit::AuditEvent;
use keynode_core::NodeId;

/// How long refusals of one kind are gathered before their count is recorded.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Peers told apart per window.
pub const MAX_REFUSING_PEERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    peer: Option<NodeId>,
    op: String,
    reason: String,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    first_ms: u64,
    last_ms: u64,
    /// Refusals after the one recorded as it happened.
    more: u64,
}

/// The open windows. Plain data: the agent holds it under a lock and records
/// what it returns.
#[derive(Debug, Default)]
pub struct Refusals {
    open: HashMap<Key, Tally>,
    peers: usize,
}

impl Refusals {
    /// Notes a refusal at `now_ms`; returns the event to record now, if any
    /// (the first of its kind in a window, or, for a new window, nothing but
    /// what closed).
    pub fn note(&mut self, event: AuditEvent, now_ms: u64) -> Vec<AuditEvent> {
        let AuditEvent::Refused { peer, op, reason } = event else {
            return vec![event];
        };
        let mut out = self.due(now_ms);
        let known = self.open.keys().any(|k| k.peer == Some(peer));
        let key_peer = if known || self.peers < MAX_REFUSING_PEERS {
            Some(peer)
        } else {
            None
        };
        let key = Key {
            peer: key_peer,
            op: op.clone(),
            reason: reason.clone(),
        };
        match self.open.get_mut(&key) {
            Some(t) => {
                t.more += 1;
                t.last_ms = now_ms;
            }
            None => {
                if key_peer.is_some() && !known {
                    self.peers += 1;
                }
                self.open.insert(
                    key,
                    Tally {
                        first_ms: now_ms,
                        last_ms: now_ms,
                        // A refusal of an untold peer is only ever counted.
                        more: u64::from(key_peer.is_none()),
                    },
                );
                if key_peer.is_some() {
                    out.push(AuditEvent::Refused { peer, op, reason });
                }
            }
        }
        out
    }

    /// Closes the windows older than [`REFUSAL_WINDOW`] at `now_ms` and
    /// returns their summaries.
    pub fn due(&mut self, now_ms: u64) -> Vec<AuditEvent> {
        let window = REFUSAL_WINDOW.as_millis() as u64;
        let closed: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(t.first_ms) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        self.close(closed)
    }

    /// Closes every window (at stop).
    pub fn flush(&mut self) -> Vec<AuditEvent> {
        let all: Vec<Key> = self.open.keys().cloned().collect();
        self.close(all)
    }

    fn close(&mut self, keys: Vec<Key>) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for key in keys {
            let Some(t) = self.open.remove(&key) else {
                continue;
            };
            if t.more > 0 {
                out.push(AuditEvent::RefusedRepeatedly {
                    peer: key.peer,
                    op: key.op,
                    reason: key.reason,
                    count: t.more,
                    first_ms: t.first_ms,
                    last_ms: t.last_ms,
                });
            }
        }
        out.sort_by_key(|e| {
            e.fields()
                .iter()
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        });
        self.peers = self
            .open
            .keys()
            .filter_map(|k| k.peer)
            .collect::<std::collections::HashSet<_>>()
            .len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keynode_core::Keypair;

    fn refused(peer: NodeId) -> AuditEvent {
        AuditEvent::Refused {
            peer,
            op: "scan".into(),
            reason: "no permission".into(),
        }
    }

    #[test]
    fn the_first_is_recorded_the_rest_counted_until_the_window_closes() {
        let mut r = Refusals::default();
        let p = Keypair::generate().node_id();
        assert_eq!(r.note(refused(p), 0).len(), 1);
        for t in 1..1000 {
            assert!(r.note(refused(p), t).is_empty());
        }
        let closed = r.due(60_000);
        assert_eq!(closed.len(), 1);
        match &closed[0] {
            AuditEvent::RefusedRepeatedly {
                peer,
                count,
                first_ms,
                last_ms,
                ..
            } => {
                assert_eq!((*peer, *count, *first_ms, *last_ms), (Some(p), 999, 0, 999));
            }
            other => panic!("{other:?}"),
        }
        // A new window starts with a recorded refusal again.
        assert_eq!(r.note(refused(p), 60_001).len(), 1);
    }

    #[test]
    fn a_flood_of_throwaway_keys_writes_a_bounded_number_of_entries() {
        let mut r = Refusals::default();
        let mut written = 0;
        for t in 0..10_000u64 {
            written += r
                .note(refused(Keypair::generate().node_id()), t / 200)
                .len();
        }
        written += r.flush().len();
        // Each told-apart peer: one entry; everyone else: one summary.
        assert_eq!(written, MAX_REFUSING_PEERS + 1);
    }

    #[test]
    fn other_events_pass_through() {
        let mut r = Refusals::default();
        let e = AuditEvent::PasswordChanged;
        assert_eq!(r.note(e.clone(), 0), vec![e]);
    }
}

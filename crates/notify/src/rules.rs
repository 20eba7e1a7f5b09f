//! The decisions, as plain functions with no I/O: what to do with a received
//! notification ([`verdict`]; [`accept`] for the sender's answer), how much of
//! the quarantine to evict before holding one more ([`quarantine_eviction`]),
//! and when to retry a delivery ([`Backoff`]).

use std::time::Duration;

use keynode_core::NodeId;
use rand::Rng;

use crate::{Notification, SignedNotification};

/// The one answer a refused sender gets, whatever the reason: it cannot tell an
/// untrusted sender from an unknown one, a bad signature or a wrong address
/// (beyond the reference, which answers unknown and untrusted senders
/// differently and so leaks whether we hold a record of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("notification refused")]
pub struct Rejection;

/// Why a notification was refused: logged locally, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    /// The message or the encoding is over its limit.
    #[error("notification over its size limits")]
    TooLarge,
    /// `from` is not the node the connection proved.
    #[error("claims to be from another node than the connection's")]
    SenderMismatch,
    /// `to` is not us.
    #[error("addressed to another node")]
    WrongAddressee,
    /// The signature is not `from`'s.
    #[error("bad signature")]
    BadSignature,
    /// We do not trust the sender (no `notify` permission, or unknown).
    #[error("sender is not trusted")]
    Untrusted,
}

/// What to do with a received notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic, addressed to us, from a trusted sender: store it in the inbox.
    Accept(Notification),
    /// Authentic and addressed to us, but the sender is not trusted: hold it in
    /// the quarantine (unless the sender is blocked) and answer the sender the
    /// uniform [`Rejection`], as for any refusal.
    Quarantine(Notification),
    /// Refused for `0` (logged locally); never stored. The sender gets the
    /// uniform [`Rejection`].
    Refuse(RejectReason),
}

impl Verdict {
    /// What the sender is told: `Ok` only for [`Verdict::Accept`]; the one
    /// [`Rejection`] for a quarantined and a refused notification alike.
    pub fn answer(&self) -> Result<(), Rejection> {
        match self {
            Verdict::Accept(_) => Ok(()),
            Verdict::Quarantine(_) | Verdict::Refuse(_) => Err(Rejection),
        }
    }
}

/// Decides what `me` does with `signed`, received over a connection that
/// proved `authenticated_sender`, from a sender we trust (`notify`) iff
/// `sender_trusted`: [`authenticate`] it, then accept it if the sender is
/// trusted and quarantine it if not.
pub fn verdict(
    signed: &SignedNotification,
    me: NodeId,
    authenticated_sender: NodeId,
    sender_trusted: bool,
) -> Verdict {
    match authenticate(signed, me, authenticated_sender) {
        Ok(n) if sender_trusted => Verdict::Accept(n),
        Ok(n) => Verdict::Quarantine(n),
        Err(reason) => Verdict::Refuse(reason),
    }
}

/// Every rule but trust: within the limits, `from` is the authenticated
/// sender, `to` is `me`, and the signature is `from`'s. A notification that
/// passes is authentic and ours, whoever sent it.
pub fn authenticate(
    signed: &SignedNotification,
    me: NodeId,
    authenticated_sender: NodeId,
) -> Result<Notification, RejectReason> {
    let n = &signed.notification;
    let bytes = n.signing_bytes().map_err(|_| RejectReason::TooLarge)?;
    if n.from != authenticated_sender {
        return Err(RejectReason::SenderMismatch);
    }
    if n.to != me {
        return Err(RejectReason::WrongAddressee);
    }
    if n.from.verify(&bytes, &signed.signature).is_err() {
        return Err(RejectReason::BadSignature);
    }
    Ok(n.clone())
}

/// Decides whether `me` accepts `signed`, received over a connection that proved
/// `authenticated_sender`, from a sender we trust (`notify`) iff
/// `sender_trusted`. The rules: within the limits, `from` is the authenticated
/// sender, `to` is `me`, the signature is `from`'s, and the sender is trusted.
/// [`RejectReason::Untrusted`] means only trust failed (see [`verdict`]). See
/// [`accept`] for the answer to give the sender.
pub fn check(
    signed: &SignedNotification,
    me: NodeId,
    authenticated_sender: NodeId,
    sender_trusted: bool,
) -> Result<Notification, RejectReason> {
    match verdict(signed, me, authenticated_sender, sender_trusted) {
        Verdict::Accept(n) => Ok(n),
        Verdict::Quarantine(_) => Err(RejectReason::Untrusted),
        Verdict::Refuse(reason) => Err(reason),
    }
}

/// [`check`], with every reason folded into the one uniform [`Rejection`] (the
/// reason is logged at debug level).
pub fn accept(
    signed: &SignedNotification,
    me: NodeId,
    authenticated_sender: NodeId,
    sender_trusted: bool,
) -> Result<Notification, Rejection> {
    check(signed, me, authenticated_sender, sender_trusted).map_err(|reason| {
        tracing::debug!(
            from = %authenticated_sender,
            id = %signed.notification.id,
            %reason,
            "notification refused"
        );
        Rejection
    })
}

/// How many quarantined entries to evict before holding one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eviction {
    /// First, this many of the sender's oldest entries (the per-sender cap).
    pub sender_oldest: usize,
    /// Then, this many of the oldest entries overall (the total cap).
    pub oldest: usize,
}

/// Makes room for one more quarantined entry from a sender that holds
/// `sender_held` of the `held` entries, under `per_sender_cap` and `cap` (each
/// at least 1): the sender's own oldest go first, and only then, if the total
/// is still at its cap, the oldest overall. So one sender can never push
/// another out while it is at its own cap.
pub fn quarantine_eviction(
    sender_held: usize,
    held: usize,
    per_sender_cap: usize,
    cap: usize,
) -> Eviction {
    let sender_held = sender_held.min(held);
    let sender_oldest = (sender_held + 1).saturating_sub(per_sender_cap.max(1));
    let oldest = (held - sender_oldest + 1).saturating_sub(cap.max(1));
    Eviction {
        sender_oldest,
        oldest,
    }
}

/// Default first retry delay.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay (SPEC §7: a queued notification reaches a peer
/// within a minute of it coming back).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Exponential backoff for outbox retries: `initial` after the first failure,
/// doubling after each further one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    /// The delay after `failures` failed attempts (0 failures: no delay), in
    /// milliseconds: `min(initial · 2^(failures-1), max)`.
    pub fn delay_ms(&self, failures: u32) -> u64 {
        let max = duration_ms(self.max);
        if failures == 0 {
            return 0;
        }
        let initial = duration_ms(self.initial);
        let factor = 1u64.checked_shl(failures - 1).unwrap_or(u64::MAX);
        initial.saturating_mul(factor).min(max)
    }

    /// [`delay_ms`](Self::delay_ms) with "equal jitter": a uniform draw from
    /// `[delay/2, delay]`, so peers that failed together spread out, and the cap
    /// still holds.
    pub fn jittered_ms<R: Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> u64 {
        let d = self.delay_ms(failures);
        let half = d / 2;
        half + rng.gen_range(0..=d - half)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NotificationData, SIGNING_DOMAIN};
    use keynode_core::{Keypair, Signature, Tid};
    use rand::SeedableRng;

    fn signed(from: &Keypair, to: NodeId) -> SignedNotification {
        Notification {
            id: Tid::from_bytes([1; 16]).unwrap(),
            from: from.node_id(),
            to,
            sent_ms: 5,
            data: NotificationData::general("hi").unwrap(),
        }
        .sign(from)
        .unwrap()
    }

    #[test]
    fn accepts_a_signed_notification_from_a_trusted_authenticated_sender() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let s = signed(&a, b.node_id());
        assert_eq!(
            accept(&s, b.node_id(), a.node_id(), true),
            Ok(s.notification.clone())
        );
    }

    #[test]
    fn every_refusal_looks_the_same_to_the_sender() {
        let (a, b, c) = (
            Keypair::generate(),
            Keypair::generate(),
            Keypair::generate(),
        );
        let (me, from) = (b.node_id(), a.node_id());
        let good = signed(&a, me);

        let mut bad_sig = good.clone();
        bad_sig.signature = Signature::from_bytes([3; 64]);
        // Signed by c, claiming to be a.
        let mut forged = good.clone();
        forged.signature = c.sign(&good.notification.signing_bytes().unwrap());
        let mut oversized = good.clone();
        oversized.notification.data = NotificationData::General {
            message: "x".repeat(crate::MAX_MESSAGE + 1),
        };
        let to_other = signed(&a, c.node_id());

        let cases = [
            (bad_sig.clone(), from, true, RejectReason::BadSignature),
            (forged, from, true, RejectReason::BadSignature),
            (to_other, from, true, RejectReason::WrongAddressee),
            // The connection proved c, the notification says a.
            (
                good.clone(),
                c.node_id(),
                true,
                RejectReason::SenderMismatch,
            ),
            (good.clone(), from, false, RejectReason::Untrusted),
            (oversized, from, true, RejectReason::TooLarge),
        ];
        let mut shown = Vec::new();
        for (s, sender, trusted, reason) in cases {
            assert_eq!(check(&s, me, sender, trusted), Err(reason));
            let r = accept(&s, me, sender, trusted).unwrap_err();
            shown.push((r, r.to_string()));
        }
        assert!(
            shown
                .iter()
                .all(|x| *x == (Rejection, "notification refused".to_string()))
        );
        // The domain is part of what is signed.
        assert!(
            good.notification
                .signing_bytes()
                .unwrap()
                .starts_with(SIGNING_DOMAIN)
        );
    }

    #[test]
    fn only_an_untrusted_but_authentic_notification_is_quarantined() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let (me, from) = (b.node_id(), a.node_id());
        let good = signed(&a, me);
        let n = good.notification.clone();
        assert_eq!(verdict(&good, me, from, true), Verdict::Accept(n.clone()));
        assert_eq!(verdict(&good, me, from, false), Verdict::Quarantine(n));
        let mut bad_sig = good.clone();
        bad_sig.signature = Signature::from_bytes([3; 64]);
        let refused = [
            (bad_sig, from, RejectReason::BadSignature),
            (signed(&a, from), from, RejectReason::WrongAddressee),
            (good.clone(), me, RejectReason::SenderMismatch),
        ];
        for (s, sender, reason) in refused {
            // Trust changes nothing for a notification that is not authentic.
            for trusted in [true, false] {
                assert_eq!(verdict(&s, me, sender, trusted), Verdict::Refuse(reason));
                assert_eq!(check(&s, me, sender, trusted), Err(reason));
            }
        }
        // The sender hears the same for a quarantined and a refused one.
        assert_eq!(verdict(&good, me, from, false).answer(), Err(Rejection));
        assert_eq!(verdict(&good, me, me, false).answer(), Err(Rejection));
        assert_eq!(verdict(&good, me, from, true).answer(), Ok(()));
    }

    #[test]
    fn quarantine_eviction_keeps_both_caps_and_spares_others_first() {
        assert_eq!(quarantine_eviction(0, 0, 16, 256), Eviction::default());
        // At its own cap: the sender's oldest goes, which also frees a total slot.
        assert_eq!(
            quarantine_eviction(16, 256, 16, 256),
            Eviction {
                sender_oldest: 1,
                oldest: 0
            }
        );
        // Under its own cap, the total full: the oldest overall goes.
        assert_eq!(
            quarantine_eviction(3, 256, 16, 256),
            Eviction {
                sender_oldest: 0,
                oldest: 1
            }
        );
        // Caps lowered since the entries were stored: back within both.
        assert_eq!(
            quarantine_eviction(10, 20, 4, 8),
            Eviction {
                sender_oldest: 7,
                oldest: 6
            }
        );
        // Exhaustively, on small numbers: after evicting and adding one, both
        // caps hold, and nothing more than needed was evicted.
        for per in 0..6 {
            for cap in 0..8 {
                for held in 0..10 {
                    for mine in 0..=held {
                        let e = quarantine_eviction(mine, held, per, cap);
                        let (per, cap) = (per.max(1), cap.max(1));
                        assert!(e.sender_oldest <= mine);
                        assert!(e.sender_oldest + e.oldest <= held);
                        assert!(mine - e.sender_oldest < per);
                        let after = held - e.sender_oldest - e.oldest + 1;
                        assert!(after <= cap);
                        assert!(after == cap || e.oldest == 0);
                        assert!(mine - e.sender_oldest + 1 == per || e.sender_oldest == 0);
                    }
                }
            }
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_a_minute() {
        let b = Backoff::default();
        let seq: Vec<u64> = (0..10).map(|f| b.delay_ms(f)).collect();
        assert_eq!(
            seq,
            [
                0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(b.delay_ms(64), 60_000);
        assert_eq!(b.delay_ms(u32::MAX), 60_000);
        let small = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(35),
        };
        assert_eq!(
            (1..5).map(|f| small.delay_ms(f)).collect::<Vec<_>>(),
            [10, 20, 35, 35]
        );
    }

    #[test]
    fn jitter_stays_within_half_the_delay_and_the_cap_and_is_seeded() {
        let b = Backoff::default();
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (1..40)
                .map(|f| b.jittered_ms(f, &mut rng))
                .collect::<Vec<_>>()
        };
        let xs = draw(7);
        assert_eq!(xs, draw(7));
        assert_ne!(xs, draw(8));
        for (f, x) in (1..40).zip(&xs) {
            let d = b.delay_ms(f);
            assert!(d / 2 <= *x && *x <= d && *x <= 60_000, "{f}: {x} vs {d}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(b.jittered_ms(0, &mut rng), 0);
    }
}

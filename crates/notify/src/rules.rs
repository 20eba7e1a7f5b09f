//! The decisions, as plain functions with no I/O: whether to accept a
//! notification ([`accept`]) and when to retry a delivery ([`Backoff`]).

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

/// Decides whether `me` accepts `signed`, received over a connection that proved
/// `authenticated_sender`, from a sender we trust (`notify`) iff
/// `sender_trusted`. The rules: within the limits, `from` is the authenticated
/// sender, `to` is `me`, the signature is `from`'s, and the sender is trusted.
/// See [`accept`] for the answer to give the sender.
pub fn check(
    signed: &SignedNotification,
    me: NodeId,
    authenticated_sender: NodeId,
    sender_trusted: bool,
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
    if !sender_trusted {
        return Err(RejectReason::Untrusted);
    }
    Ok(n.clone())
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

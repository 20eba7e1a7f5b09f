//! A switch for deterministic simulation: run "blocking" work inline.
//!
//! Store calls (LMDB, git) normally run on tokio's blocking pool so they never
//! stall an actor's event loop. Real threads finish in real time, though, which a
//! deterministic simulator (turmoil) cannot order. A simulated host thread calls
//! [`set_inline_blocking`]`(true)`; from then on [`blocking`] runs its closure
//! right away on the calling thread, so every step happens in one reproducible
//! order. The switch is per thread and off by default.
//!
//! Ids need the same care: [`set_seed`] makes [`fill_random`] (the source of
//! vault ids, permission ids and the random bits of [`Tid`](crate::Tid)s) draw
//! from a ChaCha RNG seeded per thread instead of the operating system's RNG.
//! Keys, key-file salts and Noise entropy never come from here.

use std::cell::{Cell, RefCell};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
    static RNG: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Makes [`fill_random`] on this thread deterministic: `Some(seed)` starts a
/// ChaCha8 stream from `seed`, `None` (the default) returns to the operating
/// system's RNG. For simulations only: ids made after it are predictable.
pub fn set_seed(seed: Option<u64>) {
    RNG.with(|r| *r.borrow_mut() = seed.map(ChaCha8Rng::seed_from_u64));
}

/// Fills `dest` with random bytes: from this thread's seeded RNG if
/// [`set_seed`] set one, else from the operating system's RNG. For ids, not
/// for secrets.
pub fn fill_random(dest: &mut [u8]) {
    RNG.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => rng.fill_bytes(dest),
        None => rand::rngs::OsRng.fill_bytes(dest),
    });
}

/// Makes [`blocking`] run closures inline on this thread (`true`) or on tokio's
/// blocking pool (`false`, the default).
pub fn set_inline_blocking(inline: bool) {
    INLINE.with(|c| c.set(inline));
}

/// Whether [`blocking`] runs closures inline on this thread.
pub fn inline_blocking() -> bool {
    INLINE.with(Cell::get)
}

/// Runs `f` on tokio's blocking pool, or inline when this thread asked for it
/// (see [`set_inline_blocking`]). Must be called inside a tokio runtime.
pub async fn blocking<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if inline_blocking() {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_runs_on_the_calling_thread() {
        let me = std::thread::current().id();
        assert_ne!(
            blocking(move || std::thread::current().id()).await.unwrap(),
            me
        );
        set_inline_blocking(true);
        assert_eq!(
            blocking(move || std::thread::current().id()).await.unwrap(),
            me
        );
        set_inline_blocking(false);
        assert!(!inline_blocking());
    }

    #[test]
    fn a_seed_makes_random_bytes_repeat() {
        let draw = || {
            let mut b = [0u8; 32];
            fill_random(&mut b);
            b
        };
        set_seed(Some(7));
        let a = (draw(), draw());
        set_seed(Some(7));
        assert_eq!((draw(), draw()), a);
        assert_ne!(a.0, a.1);
        set_seed(None);
        assert_ne!(draw(), draw());
        // Other threads are untouched.
        set_seed(Some(7));
        let elsewhere = std::thread::spawn(draw).join().unwrap();
        assert_ne!(elsewhere, a.0);
        set_seed(None);
    }
}

//! Seeded ids for deterministic simulation.
//!
//! (Where blocking work runs is not decided here: the node is handed an
//! [`Executor`](crate::exec::Executor) at start.)
//!
//! A simulation must make the same ids from one seed: [`set_seed`] makes [`fill_random`] (the source of
//! vault ids, permission ids and the random bits of [`Tid`](crate::Tid)s) draw
//! from a ChaCha RNG seeded per thread instead of the operating system's RNG.
//! Keys, key-file salts and Noise entropy never come from here.

use std::cell::RefCell;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
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

#[cfg(test)]
mod tests {
    use super::*;

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

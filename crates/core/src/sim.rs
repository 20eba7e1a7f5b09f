//! A switch for deterministic simulation: run "blocking" work inline.
//!
//! Store calls (LMDB, git) normally run on tokio's blocking pool so they never
//! stall an actor's event loop. Real threads finish in real time, though, which a
//! deterministic simulator (turmoil) cannot order. A simulated host thread calls
//! [`set_inline_blocking`]`(true)`; from then on [`blocking`] runs its closure
//! right away on the calling thread, so every step happens in one reproducible
//! order. The switch is per thread and off by default.

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
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
}

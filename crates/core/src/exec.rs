//! Where blocking work runs.
//!
//! Store calls (LMDB, git, Argon2) never run on an actor's event loop. Each actor
//! and the agent are handed an [`Executor`] at start and send such work through
//! it: [`Threads`] (tokio's blocking pool) in production, [`Inline`] in a
//! deterministic simulation, where a simulator (turmoil) cannot order real
//! threads and every step must happen on the one simulated thread, in order.
//!
//! Code that pipes data between a job and its caller (a pack streamed into the
//! store, an upload written as it arrives) sizes its pipe with
//! [`Executor::pipe_depth`] and reads it with [`recv_blocking`] or writes it
//! with [`send_blocking`], which work under both: with threads the two sides
//! run at once; inline, the side that runs first finds room for everything.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A unit of blocking work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;
/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A blocking job panicked, or its executor dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a blocking job panicked or was dropped")]
pub struct JobFailed;

/// Runs blocking work away from async workers (or, in a simulation, inline).
pub trait Executor: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `job` where it may block; resolves once it has run.
    fn spawn_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>>;
    /// Drives `fut`, which makes short blocking calls between its awaits, where
    /// blocking is allowed; resolves once it is done.
    fn spawn_blocking_future(&self, fut: BoxFuture<()>) -> BoxFuture<Result<(), JobFailed>>;
    /// How many items a pipe between a job and its caller must hold: `wanted`
    /// when both sides run at once, everything when a job runs to its end
    /// before its caller goes on.
    fn pipe_depth(&self, wanted: usize) -> usize;
}

/// A shared executor, as actors and the agent hold it.
pub type Exec = Arc<dyn Executor>;

/// Production: jobs run on tokio's blocking pool. Needs a tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

impl Executor for Threads {
    fn spawn_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>> {
        let handle = tokio::task::spawn_blocking(job);
        Box::pin(async move { handle.await.map_err(|_| JobFailed) })
    }

    fn spawn_blocking_future(&self, fut: BoxFuture<()>) -> BoxFuture<Result<(), JobFailed>> {
        let rt = tokio::runtime::Handle::current();
        self.spawn_job(Box::new(move || rt.block_on(fut)))
    }

    fn pipe_depth(&self, wanted: usize) -> usize {
        wanted
    }
}

/// Deterministic simulation: every job runs on the calling thread when its
/// future is first polled, so the order of events is the program's order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

/// What [`Inline`] lets a pipe hold: as good as everything a transfer sends.
const INLINE_PIPE: usize = 1 << 20;

impl Executor for Inline {
    fn spawn_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>> {
        Box::pin(async move {
            job();
            Ok(())
        })
    }

    fn spawn_blocking_future(&self, fut: BoxFuture<()>) -> BoxFuture<Result<(), JobFailed>> {
        Box::pin(async move {
            fut.await;
            Ok(())
        })
    }

    fn pipe_depth(&self, _wanted: usize) -> usize {
        INLINE_PIPE
    }
}

/// The production executor.
pub fn threads() -> Exec {
    Arc::new(Threads)
}

/// Runs `f` through `exec` and returns what it returned.
pub async fn blocking<T, F>(exec: &dyn Executor, f: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    exec.spawn_job(Box::new(move || {
        let value = f();
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }))
    .await?;
    let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    value.ok_or(JobFailed)
}

/// Drives `fut` through `exec` (see [`Executor::spawn_blocking_future`]) and
/// returns its output.
pub async fn blocking_future<T, F>(exec: &dyn Executor, fut: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    exec.spawn_blocking_future(Box::pin(async move {
        let value = fut.await;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }))
    .await?;
    let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    value.ok_or(JobFailed)
}

/// Receives from `rx` inside a job: waits (with threads) or finds what was
/// queued before the job ran (inline). `None` once the channel is closed and
/// empty.
///
/// Unconstrained by tokio's cooperative budget: inline, the job runs inside a
/// task that does not yield while it loops, and a budgeted channel would
/// answer "not yet" for ever once the budget is spent.
pub fn recv_blocking<T>(rx: &mut tokio::sync::mpsc::Receiver<T>) -> Option<T> {
    futures::executor::block_on(tokio::task::unconstrained(rx.recv()))
}

/// Sends into `tx` inside a job: waits for room (with threads; an inline pipe
/// sized by [`Executor::pipe_depth`] always has room). `Err` when the receiver
/// is gone.
/// Unconstrained by tokio's budget, as [`recv_blocking`].
pub fn send_blocking<T>(tx: &tokio::sync::mpsc::Sender<T>, item: T) -> Result<(), T> {
    futures::executor::block_on(tokio::task::unconstrained(tx.send(item))).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn threads_run_elsewhere_and_inline_here() {
        let me = std::thread::current().id();
        let there = blocking(&Threads, move || std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(there, me);
        let here = blocking(&Inline, move || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(here, me);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error() {
        let r = blocking(&Threads, || -> u8 { panic!("boom") }).await;
        assert_eq!(r, Err(JobFailed));
    }

    #[tokio::test]
    async fn pipes_work_under_both_executors() {
        for exec in [threads(), Arc::new(Inline) as Exec] {
            let (tx, mut rx) = tokio::sync::mpsc::channel(exec.pipe_depth(2));
            let producer = blocking(exec.as_ref(), move || {
                // More than tokio's budget of 128 operations per task.
                for i in 0..1000u32 {
                    send_blocking(&tx, i).unwrap();
                }
            });
            let consumer = blocking(exec.as_ref(), move || {
                let mut got = Vec::new();
                while let Some(i) = recv_blocking(&mut rx) {
                    got.push(i);
                }
                got
            });
            let (p, got) = tokio::join!(producer, consumer);
            p.unwrap();
            assert_eq!(got.unwrap(), (0..1000).collect::<Vec<_>>(), "{exec:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_future_runs_to_its_end() {
        let v = blocking_future(&Threads, async { 40 + 2 }).await.unwrap();
        assert_eq!(v, 42);
        let v = blocking_future(&Inline, async { 7 }).await.unwrap();
        assert_eq!(v, 7);
    }
}

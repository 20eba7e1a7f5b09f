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
//!
//! Two kinds of job. A *short* job ([`Executor::spawn_job`]) needs only the
//! CPU and the disk to finish: a store call, however long. A *waiting* job
//! ([`Executor::spawn_waiting_job`]) may wait on something outside it: the
//! other end of a pipe (a pack arriving from a peer, a secret streamed to a
//! client) or the network. [`Threads`] runs short jobs on a fixed, small set
//! of threads (the rest queue), and never bounds waiting jobs: a bound on
//! those would let jobs that wait on each other across nodes (node A's pull
//! waiting on node B's pack, B's pull on A's) take every thread and stop
//! both (the harness's load stalled for 60 s with two threads for all jobs).
//! The fixed set is what keeps a busy node's threads few: every thread that
//! ever ran a job keeps its own malloc arena, and under the harness's load
//! tokio's unbounded pool held 14 to 20 threads and about 36 MiB per agent.

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
    /// Runs the short `job` where it may block; resolves once it has run.
    fn spawn_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>>;
    /// Runs `job`, which may wait on something outside it (a pipe's other
    /// end, the network), where it may block; resolves once it has run.
    fn spawn_waiting_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>> {
        self.spawn_job(job)
    }
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

/// Production: short jobs run on a fixed set of `short_jobs` threads of
/// their own (queued in order when all are busy); waiting jobs and blocking
/// futures on tokio's blocking pool. A fixed set rather than a bound on
/// tokio's pool: tokio starts a new thread for a job whenever none is idle
/// at that instant, so under many short jobs its pool grew past the jobs
/// running at once (14 to 20 threads per agent under the harness's load with
/// at most 8 jobs running). Under a single-threaded runtime short jobs go to
/// tokio's pool too (see `spawn_job`). Waiting jobs need a tokio runtime.
#[derive(Debug, Clone)]
pub struct Threads {
    queue: Arc<ShortJobs>,
}

#[derive(Debug)]
struct ShortJobs {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Threads {
    /// An executor with `short_jobs` threads (at least one) for short jobs.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub fn new(short_jobs: usize) -> Threads {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..short_jobs.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name("keynode-job".into())
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            Ok(job) => job(),
                            // Every `Threads` is gone.
                            Err(_) => break,
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("cannot start a job thread: {e}"));
        }
        Threads {
            queue: Arc::new(ShortJobs { tx }),
        }
    }

    /// Short-job threads by default: as many as the CPUs, at least two (so
    /// one job waiting for the disk leaves another running). Under the
    /// harness's load on two CPUs, 2, 3, 4, 6 and 8 threads gave the same
    /// throughput within the runs' spread, and memory grew with each thread
    /// (each keeps a malloc arena): see `docs/PERFORMANCE.md`.
    pub fn default_short_jobs() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    }
}

impl Default for Threads {
    fn default() -> Self {
        Threads::new(Threads::default_short_jobs())
    }
}

impl Executor for Threads {
    fn spawn_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>> {
        // Under a single-threaded runtime (tests, an embedder driving one
        // thread) short jobs go to tokio's pool like waiting ones: it is what
        // holds a paused test clock still while a job runs, where a job on a
        // thread tokio does not know of would see ten virtual minutes pass.
        let runtime = tokio::runtime::Handle::try_current().ok();
        if runtime
            .as_ref()
            .is_some_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
        {
            return self.spawn_waiting_job(job);
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // The job sees the caller's runtime, as on tokio's own pool.
        let wrapped: Job = Box::new(move || {
            let _inside = runtime.as_ref().map(tokio::runtime::Handle::enter);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_ok();
            let _ = done_tx.send(ran);
        });
        let queued = self.queue.tx.send(wrapped).is_ok();
        Box::pin(async move {
            match (queued, done_rx.await) {
                (true, Ok(true)) => Ok(()),
                _ => Err(JobFailed),
            }
        })
    }

    fn spawn_waiting_job(&self, job: Job) -> BoxFuture<Result<(), JobFailed>> {
        let handle = tokio::task::spawn_blocking(job);
        Box::pin(async move { handle.await.map_err(|_| JobFailed) })
    }

    fn spawn_blocking_future(&self, fut: BoxFuture<()>) -> BoxFuture<Result<(), JobFailed>> {
        let rt = tokio::runtime::Handle::current();
        self.spawn_waiting_job(Box::new(move || rt.block_on(fut)))
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

/// The production executor, one for the whole process (so its bound on short
/// jobs is the process's, whichever actor sends them).
pub fn threads() -> Exec {
    static SHARED: std::sync::OnceLock<Exec> = std::sync::OnceLock::new();
    Arc::clone(SHARED.get_or_init(|| Arc::new(Threads::default())))
}

/// Runs `f` through `exec` and returns what it returned.
pub async fn blocking<T, F>(exec: &dyn Executor, f: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_job(exec, false, f).await
}

/// Runs `f`, which may wait on something outside it (see
/// [`Executor::spawn_waiting_job`]), through `exec` and returns what it
/// returned.
pub async fn blocking_waiting<T, F>(exec: &dyn Executor, f: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_job(exec, true, f).await
}

/// Runs `f` as a short job, or a waiting one, and returns what it returned.
async fn run_job<T, F>(exec: &dyn Executor, waits: bool, f: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let job: Job = Box::new(move || {
        let value = f();
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    });
    if waits {
        exec.spawn_waiting_job(job).await?;
    } else {
        exec.spawn_job(job).await?;
    }
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

/// Malloc arenas [`limit_malloc_arenas`] leaves an agent process.
pub const AGENT_MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas for this process at `arenas`. glibc makes up
/// to 8 per CPU, a new one whenever a thread allocates while the others are
/// taken, and each keeps what is freed into it: with tokio's blocking threads
/// coming and going, a busy agent's anonymous memory grew with each new
/// arena. Measured with `keynode-harness load --nodes 4 --duration 60s`: 32.3
/// MiB per agent at the end with glibc's default, 28.6 MiB with 2 arenas, at
/// the same throughput.
///
/// A process-wide setting, so the binaries call it first thing; a library
/// never does. Does nothing outside glibc, or when `MALLOC_ARENA_MAX` is set
/// (the operator's choice wins).
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter (M_ARENA_MAX takes
        // any positive count) and takes the allocator's own lock.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas.max(1));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn threads_run_elsewhere_and_inline_here() {
        let me = std::thread::current().id();
        let there = blocking(&Threads::default(), move || std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(there, me);
        let here = blocking(&Inline, move || std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(here, me);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_jobs_share_a_fixed_set_of_threads_and_waiting_jobs_do_not() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let exec = Threads::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            blocking(&exec, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for r in futures::future::join_all(jobs).await {
            r.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "two threads, both used");

        // Waiting jobs that wait on each other all run at once, even with
        // one thread for short jobs and that thread taken.
        let exec = Threads::new(1);
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let held = blocking(&exec, move || hold_rx.recv().ok());
        let (a_tx, mut a_rx) = tokio::sync::mpsc::channel::<u8>(1);
        let (b_tx, mut b_rx) = tokio::sync::mpsc::channel::<u8>(1);
        let a = blocking_waiting(&exec, move || {
            send_blocking(&a_tx, 1).unwrap();
            recv_blocking(&mut b_rx)
        });
        let b = blocking_waiting(&exec, move || {
            send_blocking(&b_tx, 2).unwrap();
            recv_blocking(&mut a_rx)
        });
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a.unwrap(), b.unwrap()), (Some(2), Some(1)));
        hold_tx.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Some(()));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error() {
        let r = blocking(&Threads::default(), || -> u8 { panic!("boom") }).await;
        assert_eq!(r, Err(JobFailed));
    }

    #[tokio::test]
    async fn pipes_work_under_both_executors() {
        for exec in [threads(), Arc::new(Inline) as Exec] {
            let (tx, mut rx) = tokio::sync::mpsc::channel(exec.pipe_depth(2));
            let producer = blocking_waiting(exec.as_ref(), move || {
                // More than tokio's budget of 128 operations per task.
                for i in 0..1000u32 {
                    send_blocking(&tx, i).unwrap();
                }
            });
            let consumer = blocking_waiting(exec.as_ref(), move || {
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
        let v = blocking_future(&Threads::default(), async { 40 + 2 })
            .await
            .unwrap();
        assert_eq!(v, 42);
        let v = blocking_future(&Inline, async { 7 }).await.unwrap();
        assert_eq!(v, 7);
    }
}

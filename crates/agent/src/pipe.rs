//! Byte pipes between an async task and a blocking job (an upload written into
//! the vault store as it arrives, a pack streamed into or out of it).

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// `Read` over chunks arriving from an async task. An `Err` item aborts the
/// reader (the store discards what it wrote); a closed channel is the end.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    /// Reads what `rx` receives. Size its channel with
    /// [`Executor::pipe_depth`](keynode_core::exec::Executor::pipe_depth).
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match keynode_core::exec::recv_blocking(&mut self.rx) {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A store sink sending each chunk into `tx` (waiting for room; see
/// [`send_blocking`](keynode_core::exec::send_blocking)). Fails once the
/// receiving side is gone.
pub(crate) fn channel_sink(tx: mpsc::Sender<Vec<u8>>) -> keynode_vaults::messages::Sink {
    Box::new(move |chunk: &[u8]| {
        keynode_core::exec::send_blocking(&tx, chunk.to_vec())
            .map_err(|_| io::Error::other("the receiving side went away"))
    })
}

/// A store sink that keeps what it is given in memory, up to `limit` bytes in
/// all: past that it fails (the store call stops) and [`MemorySink::take`]
/// gives `None`. For store calls run as short jobs, which must not wait on a
/// pipe.
pub(crate) struct MemorySink {
    held: Arc<Mutex<Option<Vec<Vec<u8>>>>>,
}

impl MemorySink {
    /// A sink of at most `limit` bytes, and the handle to take them from.
    pub(crate) fn new(limit: usize) -> (keynode_vaults::messages::Sink, MemorySink) {
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let into = Arc::clone(&held);
        let mut bytes = 0usize;
        let sink = Box::new(move |chunk: &[u8]| {
            let mut slot = into.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_mut() {
                Some(chunks) if bytes + chunk.len() <= limit => {
                    bytes += chunk.len();
                    chunks.push(chunk.to_vec());
                    Ok(())
                }
                _ => {
                    *slot = None;
                    Err(io::Error::other("more than fits in memory"))
                }
            }
        });
        (sink, MemorySink { held })
    }

    /// The chunks given, in order; `None` if they outgrew the limit.
    pub(crate) fn take(self) -> Option<Vec<Vec<u8>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The writing end of a pipe into a store job (see [`feed_store`]).
pub(crate) struct Feeder {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    start: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Feeder {
    /// Sends one chunk (or an error that aborts the reader). `Err` when the
    /// store stopped reading; its own result says why.
    pub(crate) async fn send(&mut self, item: io::Result<Vec<u8>>) -> Result<(), ()> {
        if self.tx.capacity() == 0 {
            // Full: the store must read now.
            self.started();
        }
        self.tx.send(item).await.map_err(drop)
    }

    fn started(&mut self) {
        if let Some(start) = self.start.take() {
            let _ = start.send(());
        }
    }
}

/// Runs `store` (a store call reading a [`ChannelReader`]) while `feed`
/// fills its pipe of `depth` chunks. The store call starts once the pipe is
/// full or `feed` has ended, which works wherever the store's job runs: on
/// its own thread it drains the pipe as `feed` fills it; inline (a
/// simulation, where `depth` holds everything) it finds the whole stream
/// queued.
///
/// `store` is also told whether its reader may wait: `false` when `feed`
/// ended before the pipe filled (everything is queued, as for most secrets
/// and pulls), so the call can run as a short job.
pub(crate) async fn feed_store<S, F, T, U>(
    depth: usize,
    store: impl FnOnce(keynode_vaults::messages::Source, bool) -> S,
    feed: impl FnOnce(Feeder) -> F,
) -> (T, U)
where
    S: std::future::Future<Output = T>,
    F: std::future::Future<Output = U>,
{
    let (tx, rx) = mpsc::channel(depth);
    let (start_tx, start_rx) = tokio::sync::oneshot::channel();
    let source = Box::new(ChannelReader::new(rx));
    let storing = async move {
        // A dropped feeder (the feed ended) starts the store too, with
        // everything queued.
        let waits = start_rx.await.is_ok();
        store(source, waits).await
    };
    let feeding = feed(Feeder {
        tx,
        start: Some(start_tx),
    });
    tokio::join!(storing, feeding)
}

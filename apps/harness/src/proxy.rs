//! A fault-injecting TCP proxy: one listener per ordered pair of nodes (node
//! `i`'s address book points at the listener of `(i, j)` for node `j`), so
//! faults can be per pair. A link passes bytes, delays them, swallows them
//! (black hole) or refuses connections; existing connections can be cut.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link does to traffic. Ordered by severity: when faults overlap, the
/// most severe wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Bytes pass.
    Pass,
    /// Bytes pass after this many milliseconds.
    Delay(u64),
    /// Bytes are read and dropped; connections stay open.
    Blackhole,
    /// New connections are closed at once; existing ones are cut.
    Refuse,
}

struct Link {
    port: u16,
    /// Active faults by id; the effective mode is the most severe.
    faults: Mutex<BTreeMap<u64, Mode>>,
    mode: watch::Sender<Mode>,
    /// Bumped to cut every connection open on the link.
    cuts: watch::Sender<u64>,
}

impl Link {
    fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    fn update(&self) {
        let faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let new = faults.values().copied().max().unwrap_or(Mode::Pass);
        let old = self.mode();
        if new != old {
            self.mode.send_replace(new);
            // A black hole corrupts the streams it swallowed from; refusing
            // means no connection at all.
            if matches!(new, Mode::Refuse) || matches!(old, Mode::Blackhole) {
                self.cut();
            }
        }
    }

    fn cut(&self) {
        self.cuts.send_modify(|g| *g += 1);
    }
}

/// The proxy: every link's listener, in this process.
pub struct Proxy {
    links: HashMap<(usize, usize), Arc<Link>>,
}

impl Proxy {
    /// Starts one listener per `(from, to)` pair, forwarding to `targets[to]`.
    pub async fn start(
        pairs: impl IntoIterator<Item = (usize, usize)>,
        targets: &[SocketAddr],
    ) -> Result<Proxy, String> {
        let mut links = HashMap::new();
        for (from, to) in pairs {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("proxy listener: {e}"))?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let link = Arc::new(Link {
                port,
                faults: Mutex::new(BTreeMap::new()),
                mode: watch::channel(Mode::Pass).0,
                cuts: watch::channel(0).0,
            });
            tokio::spawn(serve(listener, targets[to], link.clone()));
            links.insert((from, to), link);
        }
        Ok(Proxy { links })
    }

    /// The listener port node `from` uses to reach node `to`.
    pub fn port(&self, from: usize, to: usize) -> Option<u16> {
        self.links.get(&(from, to)).map(|l| l.port)
    }

    /// Starts fault `id` with `mode` on the given links.
    pub fn start_fault(&self, id: u64, links: &[(usize, usize)], mode: Mode) {
        for l in links {
            if let Some(link) = self.links.get(l) {
                link.faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, mode);
                link.update();
            }
        }
    }

    /// Ends fault `id` wherever it is active.
    pub fn end_fault(&self, id: u64) {
        for link in self.links.values() {
            let had = link
                .faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
                .is_some();
            if had {
                link.update();
            }
        }
    }

    /// Cuts the connections open on the given links (new ones may follow).
    pub fn cut(&self, links: &[(usize, usize)]) {
        for l in links {
            if let Some(link) = self.links.get(l) {
                link.cut();
            }
        }
    }

    /// Ends every fault.
    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            link.update();
        }
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, link: Arc<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if link.mode() == Mode::Refuse {
            drop(inbound);
            continue;
        }
        let link = link.clone();
        tokio::spawn(async move {
            let Ok(Ok(outbound)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
            else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let mut cuts = link.cuts.subscribe();
            let gen_at_start = *cuts.borrow_and_update();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let cut = async {
                let _ = cuts.wait_for(|g| *g != gen_at_start).await;
            };
            tokio::select! {
                _ = cut => {}
                _ = pump(ri, wo, link.mode.subscribe()) => {}
                _ = pump(ro, wi, link.mode.subscribe()) => {}
            }
            // Dropping the halves closes both connections.
        });
    }
}

/// Copies one direction, applying the link's mode to each chunk read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let m = *mode.borrow();
            let at = match m {
                Mode::Pass => Instant::now(),
                Mode::Delay(ms) => Instant::now() + Duration::from_millis(ms),
                Mode::Blackhole | Mode::Refuse => continue,
            };
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what was queued (delayed bytes) after the reader ends.
    tokio::join!(reader, writer);
}

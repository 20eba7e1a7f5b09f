//! One connection: its shared state, the task that drives its yamux session,
//! keepalive, and serving the streams a peer opens on it.

use super::*;

pub(super) type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// The shared state of one connection; its driver task owns the yamux side.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) peer: NodeId,
    pub(super) dialer: NodeId,
    pub(super) remote_addr: SocketAddr,
    pub(super) direction: Direction,
    /// The relay the connection runs through, if any.
    pub(super) relay: Option<NodeId>,
    pub(super) established_ms: u64,
    pub(super) opener: mpsc::Sender<OpenReply>,
    pub(super) streams: AtomicUsize,
    /// How many of `streams` are quiet subscriptions ([`RpcStream::quiet`]).
    pub(super) quiet: AtomicUsize,
    pub(super) last_active: Mutex<Instant>,
    pub(super) closed: CancellationToken,
    /// Whether the peer was known when last asked: a stranger's inbound
    /// streams take a slot of `stranger_slots` while served, a known peer's
    /// do not. A stranger becomes known when the service says so (asked again
    /// with each of its streams); never the other way on one connection.
    pub(super) known: std::sync::atomic::AtomicBool,
    /// Set (before `closed`) when the connection is given up as dead: it is
    /// dropped without a graceful close, which on a connection that carries
    /// nothing would wait out its timeout and leave its streams hanging
    /// (yamux wakes a connection's streams when it is dropped while active,
    /// not while closing).
    pub(super) dead: std::sync::atomic::AtomicBool,
    /// When bytes last arrived, in ms after `born` (see [`Activity`]).
    pub(super) heard: Arc<AtomicU64>,
    pub(super) born: Instant,
    pub(super) stranger_slots: Arc<Semaphore>,
}

impl Conn {
    pub(super) fn touch(&self) {
        *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.last_active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed(),
        )
    }

    pub(super) async fn open_raw(&self) -> Result<yamux::Stream, NetError> {
        let closed = || NetError::ConnectionClosed(self.peer);
        if self.closed.is_cancelled() {
            return Err(closed());
        }
        let (tx, rx) = oneshot::channel();
        self.opener.send(tx).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(|e| {
            debug!(peer = %self.peer, error = %e, "cannot open a stream");
            closed()
        })
    }
}

impl Conn {
    /// Gives the connection up as dead: its driver drops it at once, and every
    /// stream on it fails.
    pub(super) fn abandon(&self) {
        self.dead.store(true, Ordering::Release);
        self.closed.cancel();
    }

    /// How long since bytes last arrived on the connection.
    pub(super) fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard.load(Ordering::Acquire));
        self.born.elapsed().saturating_sub(heard)
    }
}

/// A connection's byte stream under yamux, noting when bytes last arrived.
pub(super) struct Activity<S> {
    inner: S,
    heard: Arc<AtomicU64>,
    born: Instant,
}

impl<S> Activity<S> {
    pub(super) fn new(inner: S, heard: Arc<AtomicU64>, born: Instant) -> Self {
        Self { inner, heard, born }
    }
}

impl<S: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for Activity<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let read = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            let ms = this.born.elapsed().as_millis() as u64;
            this.heard.store(ms, Ordering::Release);
        }
        read
    }
}

impl<S: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Counts a stream as open on its connection while alive.
pub(super) struct StreamGuard {
    conn: Arc<Conn>,
    quiet: std::sync::atomic::AtomicBool,
}

impl StreamGuard {
    pub(super) fn new(conn: Arc<Conn>) -> Self {
        conn.streams.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        Self {
            conn,
            quiet: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl crate::rpc::StreamHold for StreamGuard {
    fn quiet(&self) {
        if !self.quiet.swap(true, Ordering::AcqRel) {
            self.conn.quiet.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.conn.touch();
        if self.quiet.load(Ordering::Acquire) {
            self.conn.quiet.fetch_sub(1, Ordering::AcqRel);
        }
        self.conn.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn ping_stream(raw: yamux::Stream, peer: NodeId) -> Result<(), NetError> {
    let header = StreamHeader {
        version: PROTOCOL_VERSION,
        kind: StreamKind::Ping,
    };
    let mut stream = RpcStream::new(raw, peer)
        .with_header(&header)
        .map_err(|e| NetError::rpc(peer, e))?;
    match stream.recv::<Pong>().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(NetError::NoResponse(peer)),
        Err(e) => Err(NetError::rpc(peer, e)),
    }
}

pub(super) async fn accept_loop<T: Transport>(inner: Arc<Inner<T>>, mut listener: T::Listener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, addr)) => {
                let Ok(permit) = inner.inbound.clone().try_acquire_owned() else {
                    debug!(%addr, "inbound connection limit reached; closing socket");
                    drop(io);
                    continue;
                };
                let inner = inner.clone();
                // Each handshake runs apart, bounded by its own timeout, so a slow
                // peer delays nobody else.
                tokio::spawn(async move {
                    let timeout = inner.config.handshake_timeout;
                    let shaken = tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        r = noise::handshake(io, &inner.identity, Role::Responder, timeout) => r,
                    };
                    match shaken {
                        Ok((stream, peer)) => inner.admit(stream, peer, addr, permit, None).await,
                        Err(e) => info!(%addr, error = %e, "inbound handshake failed"),
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(node = %inner.node_id, "listener closed");
}

impl<T: Transport> Inner<T> {
    /// Installs an inbound connection whose handshake proved `peer`, if a
    /// stranger's seat is free for it (a known peer always has one).
    pub(super) async fn admit<S: crate::transport::Io>(
        self: &Arc<Self>,
        stream: NoiseStream<S>,
        peer: NodeId,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
        relay: Option<NodeId>,
    ) {
        let class = self.classify(peer).await;
        let mut permits = vec![permit];
        if class == PeerClass::Stranger {
            match self.strangers.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    debug!(%addr, "inbound limit for strangers reached; closing");
                    return;
                }
            }
        }
        self.install(
            stream,
            peer,
            addr,
            Direction::Inbound,
            permits,
            class,
            relay,
        );
    }
}

enum Step {
    Inbound(yamux::Stream),
    Failed(yamux::ConnectionError),
    Eof,
}

type Yamux<S> = yamux::Connection<Activity<Compat<NoiseStream<S>>>>;

/// Makes progress on a connection: hands out requested outbound streams and
/// returns the next inbound stream or the end.
fn step<S: crate::transport::Io>(
    cx: &mut Context<'_>,
    connection: &mut Yamux<S>,
    opens: &mut mpsc::Receiver<OpenReply>,
    queue: &mut VecDeque<OpenReply>,
) -> Poll<Step> {
    while let Poll::Ready(Some(reply)) = opens.poll_recv(cx) {
        queue.push_back(reply);
    }
    while let Some(front) = queue.front() {
        if front.is_closed() {
            queue.pop_front();
            continue;
        }
        match connection.poll_new_outbound(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(reply) = queue.pop_front() {
                    let _ = reply.send(Ok(stream));
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(e)),
            Poll::Pending => break,
        }
    }
    match connection.poll_next_inbound(cx) {
        Poll::Ready(Some(Ok(stream))) => Poll::Ready(Step::Inbound(stream)),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Step::Failed(e)),
        Poll::Ready(None) => Poll::Ready(Step::Eof),
        Poll::Pending => Poll::Pending,
    }
}

/// The task that owns one connection until it ends.
pub(super) async fn drive<T: Transport, S: crate::transport::Io>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    mut connection: Yamux<S>,
    mut opens: mpsc::Receiver<OpenReply>,
    _permits: Vec<OwnedSemaphorePermit>,
) {
    let cfg = &inner.config;
    let tick = cfg
        .keepalive_interval
        .min(cfg.idle_timeout)
        .min(DUPLICATE_GRACE)
        .min(cfg.silence_probe)
        .max(Duration::from_millis(20))
        / 2;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut queue = VecDeque::new();
    let peer = conn.peer;
    let (graceful, reason) = loop {
        tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => break (true, "shutting down"),
            _ = conn.closed.cancelled() => break if conn.dead.load(Ordering::Acquire) {
                (false, "given up: no answer")
            } else {
                (true, "closed locally")
            },
            step = poll_fn(|cx| step(cx, &mut connection, &mut opens, &mut queue)) => match step {
                Step::Inbound(stream) => {
                    let slot = if conn.known.load(Ordering::Acquire) {
                        None
                    } else {
                        match conn.stranger_slots.clone().try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => {
                                // Dropped at once: yamux resets it and frees
                                // its state; the connection lives on.
                                debug!(%peer, "a stranger's stream over its limit; reset");
                                drop(stream);
                                continue;
                            }
                        }
                    };
                    let inner = inner.clone();
                    let conn = conn.clone();
                    tokio::spawn(serve_stream(inner, conn, stream, slot));
                }
                Step::Failed(e) => {
                    warn!(%peer, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string), "connection failed");
                    break (false, "failed");
                }
                Step::Eof => break (false, "closed by peer"),
            },
            _ = ticker.tick() => {
                if let Some(idle) = conn.idle_for() {
                    if idle >= cfg.idle_timeout {
                        break (true, "idle");
                    }
                    if idle >= DUPLICATE_GRACE
                        && inner.primary(peer).is_some_and(|p| p.id != conn.id)
                    {
                        break (true, "duplicate");
                    }
                }
                if last_ping.elapsed() >= cfg.keepalive_interval {
                    last_ping = Instant::now();
                    tokio::spawn(keepalive(conn.clone(), cfg.request_timeout));
                } else if conn.streams.load(Ordering::Acquire) > conn.quiet.load(Ordering::Acquire)
                    && conn.silent_for() >= cfg.silence_probe
                    && last_ping.elapsed() >= cfg.silence_probe
                {
                    // Someone waits on a connection that has gone quiet: is
                    // anyone there?
                    last_ping = Instant::now();
                    tokio::spawn(keepalive(conn.clone(), cfg.silence_probe * 2));
                }
            }
        }
    };
    conn.closed.cancel();
    inner.remove(&conn);
    drop(queue);
    opens.close();
    if graceful {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| connection.poll_close(cx))).await;
    }
    debug!(%peer, reason, "connection closed");
}

pub(super) async fn keepalive(conn: Arc<Conn>, timeout: Duration) {
    let peer = conn.peer;
    let alive = tokio::time::timeout(timeout, async {
        let raw = conn.open_raw().await?;
        ping_stream(raw, peer).await
    })
    .await;
    if !matches!(alive, Ok(Ok(()))) && !conn.closed.is_cancelled() {
        info!(%peer, "keep-alive ping unanswered; closing connection");
        conn.abandon();
    }
}

/// Reads an inbound stream's header and answers a ping or hands the stream to
/// the service.
pub(super) async fn serve_stream<T: Transport>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    raw: yamux::Stream,
    mut slot: Option<OwnedSemaphorePermit>,
) {
    let peer = conn.peer;
    if slot.is_some() && inner.classify(peer).await == PeerClass::Known {
        // Known since the connection began (added, trusted, shared with):
        // from now on its streams take no stranger's slot.
        conn.known.store(true, Ordering::Release);
        slot = None;
    }
    let mut stream = RpcStream::new(raw, peer).with_budget(inner.budget.clone());
    let header =
        tokio::time::timeout(inner.config.request_timeout, stream.recv::<StreamHeader>()).await;
    let header = match header {
        Ok(Ok(Some(header))) => header,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "bad stream header");
            let _ = stream
                .send_error(&WireError::new(
                    WireErrorKind::BadRequest,
                    "bad stream header",
                ))
                .await;
            return;
        }
        Err(_) => {
            debug!(%peer, "no stream header in time");
            return;
        }
    };
    if header.version != PROTOCOL_VERSION {
        let msg = format!("protocol version {} is not supported", header.version);
        let _ = stream
            .send_error(&WireError::new(WireErrorKind::Unsupported, msg))
            .await;
        let _ = stream.finish().await;
        return;
    }
    match header.kind {
        StreamKind::Ping => {
            let _ = stream
                .send(&Pong {
                    version: PROTOCOL_VERSION,
                })
                .await;
            let _ = stream.finish().await;
        }
        StreamKind::Service => {
            let stream = stream.with_guard(StreamGuard::new(conn));
            inner.service.serve(peer, stream).await;
        }
        StreamKind::Relay => {
            // A stranger's circuit or reservation keeps its stream slot
            // while it lasts, as any stream does.
            let stream = stream.with_guard(StreamGuard::new(conn.clone()));
            relay::serve(inner, conn, stream).await;
        }
    }
    drop(slot);
}

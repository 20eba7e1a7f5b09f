//! Relays: a node that cannot be dialed (behind a NAT, `--no-listen`) keeps
//! a reservation at a relay it can reach; a dialer asks the relay for a
//! circuit to it, and the two run an ordinary Noise handshake and yamux
//! session through the circuit. The relay splices bytes: it sees the two
//! NodeIds (each proved to it by its own handshake) and ciphertext, nothing
//! else. Wire format in `docs/PROTOCOL.md` ("Relays").

use futures::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncWriteCompatExt;

use super::*;
use crate::discovery::RelayAddress;

/// What a relay allows, each bound on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Nodes holding a reservation at once.
    pub max_reservations: usize,
    /// Circuits open at once, over everyone.
    pub max_circuits: usize,
    /// Circuits open at once to one node, and from one node.
    pub max_circuits_per_node: usize,
    /// Bytes one circuit carries in each direction before it is cut.
    pub max_circuit_bytes: u64,
    /// How long one circuit may last before it is cut.
    pub max_circuit_duration: Duration,
    /// How long a reservation lasts before its holder must make it again.
    pub reservation_duration: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_circuits: 64,
            max_circuits_per_node: 8,
            max_circuit_bytes: 1 << 30,
            max_circuit_duration: Duration::from_secs(3600),
            reservation_duration: Duration::from_secs(3600),
        }
    }
}

/// The first frame of a [`StreamKind::Relay`] stream.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) enum RelayRequest {
    /// To a relay: keep me reachable while this stream stays open.
    Reserve,
    /// To a relay: splice this stream to `target`'s reservation.
    Connect {
        /// The node to reach.
        target: NodeId,
    },
    /// From a relay to a node holding a reservation there: `from` asks for
    /// a circuit; the Noise handshake follows on this stream once accepted.
    Incoming {
        /// The dialer, as its handshake with the relay proved it.
        from: NodeId,
    },
}

/// The answer to a [`RelayRequest`] (refusals are error frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) enum RelayResponse {
    /// The reservation holds for this many seconds.
    Reserved {
        /// Seconds.
        seconds: u32,
    },
    /// The circuit is up: the Noise handshake with the target starts now.
    Connected,
    /// The node takes the circuit: the dialer's handshake comes next.
    Accepted,
}

/// A relay's bookkeeping.
pub(super) struct RelayState {
    limits: RelayLimits,
    reservations: Mutex<HashMap<NodeId, usize>>,
    circuits: Arc<Semaphore>,
    per_node: Mutex<HashMap<NodeId, usize>>,
}

impl RelayState {
    pub(super) fn new(limits: RelayLimits) -> Self {
        Self {
            circuits: Arc::new(Semaphore::new(limits.max_circuits)),
            limits,
            reservations: Mutex::new(HashMap::new()),
            per_node: Mutex::new(HashMap::new()),
        }
    }

    fn reserved(&self, node: NodeId) -> bool {
        lock(&self.reservations).contains_key(&node)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes one from a per-node count while alive.
struct Count<'a> {
    map: &'a Mutex<HashMap<NodeId, usize>>,
    node: NodeId,
}

impl<'a> Count<'a> {
    fn take(map: &'a Mutex<HashMap<NodeId, usize>>, node: NodeId, max: usize) -> Option<Self> {
        let mut m = lock(map);
        let n = m.entry(node).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self { map, node })
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.map);
        if let Some(n) = m.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

/// Opens a [`StreamKind::Relay`] stream on `conn` (to `conn.peer`), which
/// keeps `conn` counted as busy while it lives.
async fn relay_stream(conn: &Arc<Conn>) -> Result<RpcStream, NetError> {
    let raw = conn.open_raw().await?;
    let header = StreamHeader {
        version: PROTOCOL_VERSION,
        kind: StreamKind::Relay,
    };
    Ok(RpcStream::new(raw, conn.peer)
        .with_header(&header)
        .map_err(|e| NetError::rpc(conn.peer, e))?
        .with_guard(StreamGuard::new(conn.clone())))
}

fn refuse(kind: WireErrorKind, message: &str) -> WireError {
    WireError::new(kind, message)
}

/// Serves a [`StreamKind::Relay`] stream a peer opened.
pub(super) async fn serve<T: Transport>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    mut stream: RpcStream,
) {
    let peer = conn.peer;
    let req =
        tokio::time::timeout(inner.config.request_timeout, stream.recv::<RelayRequest>()).await;
    let req = match req {
        Ok(Ok(Some(req))) => req,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "bad relay request");
            let _ = stream
                .send_error(&refuse(WireErrorKind::BadRequest, "bad relay request"))
                .await;
            return;
        }
        _ => return,
    };
    let result: Result<(), WireError> = match req {
        RelayRequest::Incoming { from } => return accept_incoming(inner, conn, stream, from).await,
        _ if inner.relay.is_none() => Err(refuse(
            WireErrorKind::PermissionDenied,
            "this node does not relay",
        )),
        RelayRequest::Reserve => return reserve(inner, conn, stream).await,
        RelayRequest::Connect { target } => return connect(inner, conn, stream, target).await,
    };
    if let Err(e) = result {
        let _ = stream.send_error(&e).await;
        let _ = stream.finish().await;
    }
}

async fn reserve<T: Transport>(inner: Arc<Inner<T>>, conn: Arc<Conn>, mut stream: RpcStream) {
    let Some(state) = inner.relay.as_ref() else {
        return;
    };
    let peer = conn.peer;
    let holder = {
        let mut r = lock(&state.reservations);
        let held = r.get(&peer).copied().unwrap_or(0);
        if held >= 2 || (held == 0 && r.len() >= state.limits.max_reservations) {
            None
        } else {
            *r.entry(peer).or_default() += 1;
            Some(Count {
                map: &state.reservations,
                node: peer,
            })
        }
    };
    let Some(_holder) = holder else {
        let e = refuse(
            WireErrorKind::Unavailable,
            "relay full: reservation limit reached",
        );
        let _ = stream.send_error(&e).await;
        let _ = stream.finish().await;
        return;
    };
    let seconds = state
        .limits
        .reservation_duration
        .as_secs()
        .min(u32::MAX as u64) as u32;
    if stream
        .send(&RelayResponse::Reserved { seconds })
        .await
        .is_err()
    {
        return;
    }
    debug!(%peer, "relay reservation made");
    tokio::select! {
        _ = stream.recv::<()>() => {}
        _ = tokio::time::sleep(state.limits.reservation_duration) => {}
        _ = conn.closed.cancelled() => {}
        _ = inner.shutdown.cancelled() => {}
    }
    let _ = stream.finish().await;
    debug!(%peer, "relay reservation ended");
}

async fn connect<T: Transport>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    mut stream: RpcStream,
    target: NodeId,
) {
    let Some(state) = inner.relay.as_ref() else {
        return;
    };
    let from = conn.peer;
    let limits = state.limits;
    let refused = |kind, msg: &str| refuse(kind, msg);
    let prepared = async {
        if target == from || target == inner.node_id {
            return Err(refused(
                WireErrorKind::BadRequest,
                "a circuit to that node makes no sense",
            ));
        }
        if !state.reserved(target) {
            return Err(refused(
                WireErrorKind::NotFound,
                "no reservation for that node here",
            ));
        }
        let circuit = state.circuits.clone().try_acquire_owned().map_err(|_| {
            refused(
                WireErrorKind::Unavailable,
                "relay busy: circuit limit reached",
            )
        })?;
        let per_node = limits.max_circuits_per_node;
        let to = Count::take(&state.per_node, target, per_node).ok_or_else(|| {
            refused(
                WireErrorKind::Unavailable,
                "relay busy: circuit limit for that node reached",
            )
        })?;
        let by = Count::take(&state.per_node, from, per_node).ok_or_else(|| {
            refused(
                WireErrorKind::Unavailable,
                "relay busy: circuit limit for this node reached",
            )
        })?;
        let unreachable = || refused(WireErrorKind::Unavailable, "the node does not answer");
        let tconn = inner.primary(target).ok_or_else(unreachable)?;
        let mut onward = relay_stream(&tconn).await.map_err(|_| unreachable())?;
        let asked = async {
            onward.send(&RelayRequest::Incoming { from }).await?;
            onward.recv::<RelayResponse>().await
        };
        match tokio::time::timeout(inner.config.handshake_timeout, asked).await {
            Ok(Ok(Some(RelayResponse::Accepted))) => Ok((onward, circuit, to, by)),
            Ok(Err(RpcError::Remote(e))) => Err(e),
            _ => Err(unreachable()),
        }
    };
    let (onward, _circuit, _to, _by) = match prepared.await {
        Ok(up) => up,
        Err(e) => {
            debug!(%from, %target, error = %e, "relay circuit refused");
            let _ = stream.send_error(&e).await;
            let _ = stream.finish().await;
            return;
        }
    };
    if stream.send(&RelayResponse::Connected).await.is_err() {
        return;
    }
    let (Ok(a), Ok(b)) = (stream.into_io().await, onward.into_io().await) else {
        return;
    };
    debug!(%from, %target, "relay circuit up");
    splice(
        a,
        b,
        limits.max_circuit_bytes,
        limits.max_circuit_duration,
        &inner.shutdown,
    )
    .await;
    debug!(%from, %target, "relay circuit closed");
}

/// Copies each way until each side finishes, a direction's byte limit, the
/// time limit or shutdown.
async fn splice(
    a: crate::rpc::Guarded,
    b: crate::rpc::Guarded,
    max_bytes: u64,
    max_time: Duration,
    shutdown: &CancellationToken,
) {
    let (ar, mut aw) = a.split();
    let (br, mut bw) = b.split();
    let ab = async {
        let _ = futures::io::copy(ar.take(max_bytes), &mut bw).await;
        let _ = bw.close().await;
    };
    let ba = async {
        let _ = futures::io::copy(br.take(max_bytes), &mut aw).await;
        let _ = aw.close().await;
    };
    tokio::select! {
        _ = futures::future::join(ab, ba) => {}
        _ = tokio::time::sleep(max_time) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// A relay we hold a reservation at offers us a circuit from `from`.
async fn accept_incoming<T: Transport>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    mut stream: RpcStream,
    from: NodeId,
) {
    let relay = conn.peer;
    if !lock(&inner.reserved_at).contains(&relay) {
        let e = refuse(
            WireErrorKind::PermissionDenied,
            "no reservation of mine at this node",
        );
        let _ = stream.send_error(&e).await;
        let _ = stream.finish().await;
        return;
    }
    let Ok(permit) = inner.inbound.clone().try_acquire_owned() else {
        let e = refuse(
            WireErrorKind::Unavailable,
            "inbound connection limit reached",
        );
        let _ = stream.send_error(&e).await;
        let _ = stream.finish().await;
        return;
    };
    if stream.send(&RelayResponse::Accepted).await.is_err() {
        return;
    }
    let Ok(io) = stream.into_io().await else {
        return;
    };
    let timeout = inner.config.handshake_timeout;
    let shaken = tokio::select! {
        _ = inner.shutdown.cancelled() => return,
        r = noise::handshake(io.compat_write(), &inner.identity, Role::Responder, timeout) => r,
    };
    match shaken {
        Ok((stream, peer)) => {
            if peer != from {
                debug!(%relay, %from, %peer, "a relayed dialer is not who the relay said");
            }
            inner
                .admit(stream, peer, conn.remote_addr, permit, Some(relay))
                .await;
        }
        Err(e) => info!(%relay, %from, error = %e, "relayed inbound handshake failed"),
    }
}

impl<T: Transport> Inner<T> {
    /// A connection to `target` through `relay`.
    pub(super) async fn dial_via(
        self: &Arc<Self>,
        relay: &RelayAddress,
        target: NodeId,
    ) -> Result<Arc<Conn>, NetError> {
        let rconn =
            Box::pin(self.connection_with(relay.node, vec![relay.address.clone()], false)).await?;
        let rpc = |e| NetError::rpc(relay.node, e);
        let mut stream = relay_stream(&rconn).await?;
        let asked = async {
            stream.send(&RelayRequest::Connect { target }).await?;
            stream.recv::<RelayResponse>().await
        };
        let timeout = self.config.handshake_timeout;
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(Some(RelayResponse::Connected))) => {}
            Ok(Ok(_)) => return Err(NetError::NoResponse(relay.node)),
            Ok(Err(e)) => return Err(rpc(e)),
            Err(_) => {
                return Err(NetError::Timeout {
                    node: relay.node,
                    after: timeout,
                });
            }
        }
        let io = stream.into_io().await.map_err(rpc)?;
        let (noise, _) = noise::handshake(
            io.compat_write(),
            &self.identity,
            Role::Initiator(Some(target)),
            timeout,
        )
        .await
        .map_err(|source| match source {
            HandshakeError::UnexpectedPeer { expected, got } => {
                NetError::UnexpectedPeer { expected, got }
            }
            source => NetError::Handshake {
                node: target,
                source,
            },
        })?;
        debug!(%target, relay = %relay.node, "relayed connection established");
        Ok(self.install(
            noise,
            target,
            rconn.remote_addr,
            Direction::Outbound,
            Vec::new(),
            PeerClass::Known,
            Some(relay.node),
        ))
    }
}

/// Retry pauses of a lost reservation: from the first to the last, doubling.
const RESERVE_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

/// Keeps a reservation at `relay` for as long as the network runs.
pub(super) async fn keep_reservation<T: Transport>(inner: Arc<Inner<T>>, relay: RelayAddress) {
    let mut pause = RESERVE_RETRY.0;
    let mut warned = false;
    loop {
        let held = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            held = hold_reservation(&inner, &relay) => held,
        };
        lock(&inner.reserved_at).remove(&relay.node);
        match held {
            Ok(()) => {
                pause = RESERVE_RETRY.0;
                warned = false;
            }
            Err(e) if !warned => {
                warn!(relay = %relay, error = %e, "cannot keep a reservation at a relay; retrying");
                warned = true;
            }
            Err(e) => debug!(relay = %relay, error = %e, "relay reservation failed again"),
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RESERVE_RETRY.1);
    }
}

/// Makes a reservation and holds it until it ends; `Ok` once it was held.
async fn hold_reservation<T: Transport>(
    inner: &Arc<Inner<T>>,
    relay: &RelayAddress,
) -> Result<(), NetError> {
    let conn = inner
        .connection_with(relay.node, vec![relay.address.clone()], false)
        .await?;
    let rpc = |e| NetError::rpc(relay.node, e);
    let mut stream = relay_stream(&conn).await?;
    stream.send(&RelayRequest::Reserve).await.map_err(rpc)?;
    let answer = tokio::time::timeout(inner.config.request_timeout, stream.recv::<RelayResponse>())
        .await
        .map_err(|_| NetError::Timeout {
            node: relay.node,
            after: inner.config.request_timeout,
        })?;
    let seconds = match answer.map_err(rpc)? {
        Some(RelayResponse::Reserved { seconds }) => seconds,
        _ => return Err(NetError::NoResponse(relay.node)),
    };
    lock(&inner.reserved_at).insert(relay.node);
    info!(relay = %relay, seconds, "relay reservation held");
    // Made again a little before it runs out.
    let renew = Duration::from_secs(u64::from(seconds)).mul_f64(0.9);
    tokio::select! {
        _ = stream.recv::<RelayResponse>() => {}
        _ = tokio::time::sleep(renew) => {}
        _ = conn.closed.cancelled() => {}
    }
    Ok(())
}

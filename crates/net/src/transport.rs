//! The transport seam: how a node binds, accepts and dials byte streams.
//!
//! Everything above this module (Noise, yamux, RPC) only needs a reliable, ordered
//! byte stream. [`TcpTransport`] is the real one; [`MemoryTransport`] connects
//! nodes of one process through in-memory pipes, for tests and simulations. A
//! deterministic network simulator (turmoil, for instance) plugs in by implementing
//! [`Transport`] and [`Listener`] for its own socket types.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Backlog of a TCP listening socket, in connections.
pub const TCP_BACKLOG: u32 = 1024;

/// Buffer of one direction of a [`MemoryTransport`] pipe, in bytes.
pub const MEMORY_PIPE_BUFFER: usize = 256 * 1024;

/// A byte stream a transport hands out.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for S {}

/// Binds listeners and dials addresses.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The byte stream of one connection.
    type Stream: Io;
    /// A bound listener.
    type Listener: Listener<Stream = Self::Stream>;

    /// Binds a listener on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Opens a stream to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Resolves `host` (a name or an IP literal) to socket addresses.
    ///
    /// The default asks the system resolver through `tokio::net::lookup_host`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let target = format!("{host}:{port}");
        async move { Ok(tokio::net::lookup_host(target).await?.collect()) }
    }
}

/// Accepts inbound streams.
pub trait Listener: Send + 'static {
    /// The byte stream of one accepted connection.
    type Stream: Io;

    /// The address this listener is bound to (with the real port).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Waits for the next inbound stream and the address it came from.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

/// Plain TCP with `TCP_NODELAY` (RPCs are latency-bound; Noise already batches).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    type Stream = TcpStream;
    type Listener = TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // A restarted node can take its port back while old sockets linger in
        // TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(TCP_BACKLOG)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }
}

/// A stream of a [`BoxTransport`]: any transport's stream, boxed.
pub type BoxStream = Box<dyn Io>;

type BoxFut<'a, T> = std::pin::Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// The object-safe face of a [`Transport`], behind [`BoxTransport`].
trait DynTransport: Send + Sync + 'static {
    fn dyn_bind(&self, addr: SocketAddr) -> BoxFut<'static, BoxListener>;
    fn dyn_connect(&self, addr: SocketAddr) -> BoxFut<'static, BoxStream>;
    fn dyn_resolve(&self, host: String, port: u16) -> BoxFut<'static, Vec<SocketAddr>>;
}

impl<T: Transport> DynTransport for T {
    fn dyn_bind(&self, addr: SocketAddr) -> BoxFut<'static, BoxListener> {
        let t = self.clone();
        Box::pin(async move {
            let l = Transport::bind(&t, addr).await?;
            Ok(BoxListener(Box::new(l)))
        })
    }

    fn dyn_connect(&self, addr: SocketAddr) -> BoxFut<'static, BoxStream> {
        let t = self.clone();
        Box::pin(async move { Ok(Box::new(Transport::connect(&t, addr).await?) as BoxStream) })
    }

    fn dyn_resolve(&self, host: String, port: u16) -> BoxFut<'static, Vec<SocketAddr>> {
        let t = self.clone();
        Box::pin(async move { Transport::resolve(&t, &host, port).await })
    }
}

/// Any [`Transport`], type-erased: lets a program pick its transport at run
/// time (TCP in production, a simulator's sockets in tests) without making
/// every type that holds a `Network` generic.
#[derive(Clone)]
pub struct BoxTransport(Arc<dyn DynTransport>);

impl BoxTransport {
    /// Wraps `transport`.
    pub fn new<T: Transport>(transport: T) -> Self {
        BoxTransport(Arc::new(transport))
    }
}

impl Default for BoxTransport {
    /// Plain TCP.
    fn default() -> Self {
        Self::new(TcpTransport)
    }
}

impl std::fmt::Debug for BoxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxTransport").finish_non_exhaustive()
    }
}

impl Transport for BoxTransport {
    type Stream = BoxStream;
    type Listener = BoxListener;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<BoxListener>> + Send {
        self.0.dyn_bind(addr)
    }

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<BoxStream>> + Send {
        self.0.dyn_connect(addr)
    }

    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        self.0.dyn_resolve(host.to_owned(), port)
    }
}

/// The object-safe face of a [`Listener`].
trait DynListener: Send + 'static {
    fn dyn_local_addr(&self) -> io::Result<SocketAddr>;
    fn dyn_accept(&mut self) -> BoxFut<'_, (BoxStream, SocketAddr)>;
}

impl<L: Listener> DynListener for L {
    fn dyn_local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(self)
    }

    fn dyn_accept(&mut self) -> BoxFut<'_, (BoxStream, SocketAddr)> {
        Box::pin(async move {
            let (s, a) = Listener::accept(self).await?;
            Ok((Box::new(s) as BoxStream, a))
        })
    }
}

/// A listener of a [`BoxTransport`].
pub struct BoxListener(Box<dyn DynListener>);

impl std::fmt::Debug for BoxListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxListener").finish_non_exhaustive()
    }
}

impl Listener for BoxListener {
    type Stream = BoxStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.dyn_local_addr()
    }

    fn accept(&mut self) -> impl Future<Output = io::Result<(BoxStream, SocketAddr)>> + Send {
        self.0.dyn_accept()
    }
}

type Pending = (DuplexStream, SocketAddr);

#[derive(Debug, Default)]
struct Registry {
    listeners: HashMap<SocketAddr, mpsc::UnboundedSender<Pending>>,
    next_port: u16,
}

/// An in-process network: listeners register an address, dialers get one end of
/// a `tokio::io::duplex` pipe whose other end the listener accepts.
///
/// Clones share one address space; separate `MemoryTransport::new()` values are
/// separate networks.
#[derive(Debug, Clone, Default)]
pub struct MemoryTransport {
    registry: Arc<Mutex<Registry>>,
}

impl MemoryTransport {
    /// A new, empty in-memory network.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A listener of a [`MemoryTransport`]; dropping it frees its address.
#[derive(Debug)]
pub struct MemoryListener {
    addr: SocketAddr,
    incoming: mpsc::UnboundedReceiver<Pending>,
    transport: MemoryTransport,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.transport.registry().listeners.remove(&self.addr);
    }
}

impl Transport for MemoryTransport {
    type Stream = DuplexStream;
    type Listener = MemoryListener;

    async fn bind(&self, mut addr: SocketAddr) -> io::Result<MemoryListener> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut reg = self.registry();
        if addr.port() == 0 {
            loop {
                reg.next_port = reg.next_port.wrapping_add(1).max(1);
                addr.set_port(reg.next_port);
                if !reg.listeners.contains_key(&addr) {
                    break;
                }
            }
        }
        if reg.listeners.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        reg.listeners.insert(addr, tx);
        drop(reg);
        Ok(MemoryListener {
            addr,
            incoming: rx,
            transport: self.clone(),
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<DuplexStream> {
        let tx = self
            .registry()
            .listeners
            .get(&addr)
            .cloned()
            .ok_or(io::ErrorKind::ConnectionRefused)?;
        let (near, far) = tokio::io::duplex(MEMORY_PIPE_BUFFER);
        // The dialer's address is not observable in memory; report the unspecified one.
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        tx.send((far, from))
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(near)
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let ip: IpAddr = host
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an ip address"))?;
        Ok(vec![SocketAddr::new(ip, port)])
    }
}

impl Listener for MemoryListener {
    type Stream = DuplexStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// RPCs are latency-bound: both ends of a TCP connection turn Nagle off.
    #[tokio::test]
    async fn tcp_streams_have_nodelay_on_both_ends() {
        let t = TcpTransport;
        let mut listener = t.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = Listener::local_addr(&listener).unwrap();
        let (dialed, accepted) = tokio::join!(t.connect(addr), Listener::accept(&mut listener));
        assert!(dialed.unwrap().nodelay().unwrap());
        assert!(accepted.unwrap().0.nodelay().unwrap());
    }

    #[tokio::test]
    async fn memory_transport_connects_and_frees_its_address() {
        let net = MemoryTransport::new();
        let addr: SocketAddr = "10.0.0.1:0".parse().unwrap();
        let mut listener = net.bind(addr).await.unwrap();
        let bound = listener.local_addr().unwrap();
        assert_ne!(bound.port(), 0);
        let mut a = net.connect(bound).await.unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        a.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(net.bind(bound).await.is_err());
        drop(listener);
        assert!(net.connect(bound).await.is_err());
        assert!(net.bind(bound).await.is_ok());
    }

    #[tokio::test]
    async fn box_transport_forwards_to_the_wrapped_one() {
        let net = BoxTransport::new(MemoryTransport::new());
        let mut listener = net.bind("10.0.0.2:7".parse().unwrap()).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().port(), 7);
        let mut a = net.connect("10.0.0.2:7".parse().unwrap()).await.unwrap();
        let (mut b, _) = listener.accept().await.unwrap();
        a.write_all(b"yo").await.unwrap();
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"yo");
        let addrs = net.resolve("10.0.0.2", 9).await.unwrap();
        assert_eq!(addrs, vec!["10.0.0.2:9".parse().unwrap()]);
    }
}

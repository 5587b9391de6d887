//! How bytes get between nodes. A [`Transport`] binds a listener, accepts and dials, and hands
//! back each [`Connection`] split into a read half and a write half, so that the node's reader
//! and writer tasks own one half each without a lock. TCP is the default ([`Tcp`]); mutual TLS
//! over TCP is [`Tls`] (module `tls`), whose connections also carry the certificate the peer
//! proved, for the handshake to check against the name the peer claims; the in-memory network
//! ([`MemoryNetwork`]) joins nodes of one process for tests that delay, cut and heal links in
//! paused time. The layers above see only connections.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

mod memory;
mod tls;

pub use memory::{MemoryNetwork, MemoryTransport};
pub use tls::{PeerCertificate, Tls, TlsError, TlsFiles};

/// The receiving half of a connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The sending half of a connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open connection to a peer.
pub struct Connection {
    /// What the peer sends.
    pub read: ReadHalf,
    /// What this node sends.
    pub write: WriteHalf,
    /// The certificate the peer proved it holds, when the transport authenticates peers (TLS):
    /// the handshake refuses a peer whose claimed name it does not certify.
    pub certificate: Option<PeerCertificate>,
}

impl Connection {
    /// A connection whose peer the transport did not authenticate.
    pub fn new(read: ReadHalf, write: WriteHalf) -> Self {
        Self {
            read,
            write,
            certificate: None,
        }
    }
}

/// A way to carry bytes between nodes.
pub trait Transport: Send + Sync + 'static {
    /// A bound listener.
    type Listener: Send + 'static;
    /// A connection made, accepted or dialed, not yet ready to carry the handshake (for TLS:
    /// before the TLS handshake).
    type Stream: Send + 'static;

    /// Binds a listener on `addr`; returns it and the address it actually listens on (the port
    /// chosen when `addr` asks for port 0).
    fn bind(&self, addr: &str)
    -> impl Future<Output = io::Result<(Self::Listener, String)>> + Send;

    /// Waits for the next incoming connection; returns it and the peer's address. Quick: the
    /// listener waits on nothing else, so the work a peer can stall is left to [`open`].
    ///
    /// [`open`]: Transport::open
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;

    /// Looks `addr` up once: the addresses to dial for it, in the order to try them, none of
    /// which needs looking up again. The default takes `addr` as it is, for transports whose
    /// addresses name no host to look up.
    fn resolve(&self, addr: &str) -> impl Future<Output = io::Result<Vec<String>>> + Send {
        std::future::ready(Ok(vec![addr.to_owned()]))
    }

    /// Dials `addr` (one that [`resolve`](Transport::resolve) gave); [`open`] follows, on the
    /// one dial kept when several race. The caller bounds the wait.
    ///
    /// [`open`]: Transport::open
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Makes a connection ready to carry the handshake (for TLS: runs the TLS handshake, as
    /// `side` says). Run in the connection's own task; the caller bounds the wait.
    fn open(
        &self,
        stream: Self::Stream,
        side: Side,
    ) -> impl Future<Output = io::Result<Connection>> + Send;
}

/// Which end of a connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It accepted the connection.
    Accepted,
    /// It dialed.
    Dialed,
}

/// Plain TCP, with Nagle's algorithm off (every frame is written as soon as the writer has it)
/// and, on Linux, at most 128 KiB not yet sent held in the kernel's send buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    type Listener = TcpListener;
    type Stream = TcpStream;

    async fn bind(&self, addr: &str) -> io::Result<(TcpListener, String)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?.to_string();
        Ok((listener, local))
    }

    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(TcpStream, String)> {
        let (stream, peer) = listener.accept().await?;
        Ok((stream, peer.to_string()))
    }

    async fn open(&self, stream: TcpStream, _: Side) -> io::Result<Connection> {
        tune(&stream)?;
        let (read, write) = stream.into_split();
        Ok(Connection::new(Box::new(read), Box::new(write)))
    }

    /// An IP address and port as it is; a host name and port through `host_addresses`: its
    /// IPv4 and IPv6 addresses, in the resolver's order.
    async fn resolve(&self, addr: &str) -> io::Result<Vec<String>> {
        if let Ok(socket) = addr.parse::<SocketAddr>() {
            return Ok(vec![socket.to_string()]);
        }
        let not_host_port = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr:?} is not HOST:PORT"),
            )
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(not_host_port)?;
        let port: u16 = port.parse().map_err(|_| not_host_port())?;
        let found: Vec<String> = host_addresses(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port).to_string())
            .collect();
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} has no address"),
            ));
        }
        Ok(found)
    }

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

/// The addresses of a host name, looked up by hickory with the system's configuration
/// (`/etc/hosts`, then the name servers of `/etc/resolv.conf`), read for each lookup (a dial, at
/// most one per backoff step, so a changed configuration is taken at once). Never the C library's
/// resolver, which a static binary in an image without one cannot load. No cache: a name that
/// moved (a container restarted at a new address) is dialed where it is now. The resolver ends
/// with the lookup, and the tasks it started with it.
async fn host_addresses(host: &str) -> io::Result<Vec<IpAddr>> {
    let mut builder = TokioResolver::builder_tokio().map_err(|e| {
        io::Error::other(format!(
            "cannot read the system's DNS configuration (/etc/resolv.conf): {e}"
        ))
    })?;
    let options = builder.options_mut();
    options.cache_size = 0;
    // Both families, IPv4 first: the dialer tries them in order, and an IPv6 address without a
    // route would otherwise hold up a reachable IPv4 one.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    let resolver = builder.build().map_err(io::Error::other)?;
    let found = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{host}: {e}")))?;
    Ok(found.iter().collect())
}

/// How many bytes written but not yet sent the kernel may hold for one connection
/// (`TCP_NOTSENT_LOWAT`). Beyond it the socket is not writable, so what waits stays in the
/// link's own queue, where a small frame can pass the fragments of a large message, instead of
/// behind megabytes in a kernel buffer that a slow link drains in seconds. Two fragments keep a
/// fast link busy.
pub(crate) const UNSENT_BYTES: u32 = 128 * 1024;

/// Nagle off and the kernel's unsent bytes bounded, for plain TCP and TLS alike.
fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_BYTES)?;
    Ok(())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

/// A dialed connection's opening (for TLS, its TLS handshake), not yet started.
pub(crate) type Opening = BoxFuture<Connection>;

/// The dialing side of a transport, with its type erased so that the node is not generic.
pub(crate) trait Dialer: Send + Sync + 'static {
    fn resolve(&self, addr: String) -> BoxFuture<Vec<String>>;
    /// Dials `addr`; what opens the connection once this dial is the one kept.
    fn dial(&self, addr: String) -> BoxFuture<Opening>;
}

impl<T: Transport> Dialer for Arc<T> {
    fn resolve(&self, addr: String) -> BoxFuture<Vec<String>> {
        let transport = Arc::clone(self);
        Box::pin(async move { Transport::resolve(&*transport, &addr).await })
    }

    fn dial(&self, addr: String) -> BoxFuture<Opening> {
        let transport = Arc::clone(self);
        Box::pin(async move {
            let stream = transport.connect(&addr).await?;
            let opening: Opening =
                Box::pin(async move { transport.open(stream, Side::Dialed).await });
            Ok(opening)
        })
    }
}

//! An in-memory network for tests: nodes of one process joined by byte pipes instead of sockets,
//! whose links can be delayed, cut, healed and reset — on tokio's clock, so that a test under
//! `tokio::time::pause` runs a ten-second failure detector deadline in microseconds.
//!
//! Each connection is two pipes, one per direction, each with a bounded buffer (a full buffer
//! holds its writer back, as a full socket buffer does). A **cut** between two hosts stops bytes
//! without losing them, as a partition stalls TCP: readers wait, writers fill the buffer and then
//! wait, new connections wait; **heal** delivers what was held. A **delay** holds every byte
//! written from then on for that long. A **reset** fails the connections between two hosts at once,
//! as a TCP reset does. Addresses are `host:port`; a node binds on its transport's host whatever
//! host its configuration names.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, Sleep};

use super::{Connection, Side, Transport};
use crate::lock;

/// The bytes one direction of a connection holds before its writer waits.
const PIPE_CAPACITY: usize = 256 * 1024;

/// An in-memory network of named hosts. Cheap to clone: clones are the same network.
#[derive(Clone, Debug, Default)]
pub struct MemoryNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<Net>,
    /// Woken when a cut is healed, for connects waiting on it.
    healed: Notify,
}

#[derive(Debug, Default)]
struct Net {
    listeners: HashMap<String, mpsc::UnboundedSender<Accepted>>,
    next_port: HashMap<String, u16>,
    /// Delays and cuts between two hosts (the pair in name order).
    links: HashMap<(String, String), LinkCondition>,
    isolated: HashSet<String>,
    pipes: Vec<Weak<Pipe>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct LinkCondition {
    delay: Duration,
    cut: bool,
    /// Bytes per second each way; `None`: as fast as they are read.
    rate: Option<u64>,
}

type Accepted = (Connection, String);

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport of the host `host` on this network: give it to
    /// [`Node::start_with`](crate::Node::start_with).
    pub fn host(&self, host: &str) -> MemoryTransport {
        MemoryTransport {
            network: self.clone(),
            host: host.to_string(),
        }
    }

    /// Holds every byte written between `a` and `b` (both ways) for `delay` from now on.
    pub fn delay(&self, a: &str, b: &str, delay: Duration) {
        lock(&self.shared.state)
            .links
            .entry(pair(a, b))
            .or_default()
            .delay = delay;
    }

    /// Carries at most `bytes_per_second` each way between `a` and `b` from now on, as a slow
    /// link does: bytes queue behind the ones before them.
    pub fn limit(&self, a: &str, b: &str, bytes_per_second: u64) {
        let rate = (bytes_per_second > 0).then_some(bytes_per_second);
        lock(&self.shared.state)
            .links
            .entry(pair(a, b))
            .or_default()
            .rate = rate;
    }

    /// Cuts `a` from `b`, both ways: bytes in flight and bytes written from now on are held
    /// until [`heal`](Self::heal), and new connections between them wait.
    pub fn cut(&self, a: &str, b: &str) {
        lock(&self.shared.state)
            .links
            .entry(pair(a, b))
            .or_default()
            .cut = true;
    }

    /// Cuts `host` from every other host, present and future.
    pub fn isolate(&self, host: &str) {
        lock(&self.shared.state).isolated.insert(host.to_string());
    }

    /// Ends the cut between `a` and `b` (and the isolation of either): what was held flows.
    pub fn heal(&self, a: &str, b: &str) {
        {
            let mut net = lock(&self.shared.state);
            net.links.entry(pair(a, b)).or_default().cut = false;
            net.isolated.remove(a);
            net.isolated.remove(b);
        }
        self.wake_all();
    }

    /// Ends every cut and isolation.
    pub fn heal_all(&self) {
        {
            let mut net = lock(&self.shared.state);
            net.isolated.clear();
            for condition in net.links.values_mut() {
                condition.cut = false;
            }
        }
        self.wake_all();
    }

    /// Fails every connection between `a` and `b` at once, as a TCP reset: both ends get an
    /// error on their next read or write. New connections are not affected.
    pub fn reset(&self, a: &str, b: &str) {
        let pipes = self.live_pipes();
        for pipe in pipes
            .iter()
            .filter(|pipe| pair(&pipe.from, &pipe.to) == pair(a, b))
        {
            let mut state = lock(&pipe.state);
            state.reset = true;
            state.wake_both();
        }
    }

    fn condition(&self, from: &str, to: &str) -> LinkCondition {
        let net = lock(&self.shared.state);
        let mut condition = net.links.get(&pair(from, to)).copied().unwrap_or_default();
        condition.cut |= net.isolated.contains(from) || net.isolated.contains(to);
        condition
    }

    fn live_pipes(&self) -> Vec<Arc<Pipe>> {
        let mut net = lock(&self.shared.state);
        net.pipes.retain(|pipe| pipe.strong_count() > 0);
        net.pipes.iter().filter_map(Weak::upgrade).collect()
    }

    fn wake_all(&self) {
        self.shared.healed.notify_waiters();
        for pipe in self.live_pipes() {
            lock(&pipe.state).wake_both();
        }
    }
}

/// One host's way onto a [`MemoryNetwork`].
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    network: MemoryNetwork,
    host: String,
}

/// A bound address on a [`MemoryNetwork`]; unbound when dropped.
#[derive(Debug)]
pub struct MemoryListener {
    network: MemoryNetwork,
    addr: String,
    incoming: mpsc::UnboundedReceiver<Accepted>,
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        lock(&self.network.shared.state)
            .listeners
            .remove(&self.addr);
    }
}

impl Transport for MemoryTransport {
    type Listener = MemoryListener;
    type Stream = Connection;

    async fn bind(&self, addr: &str) -> io::Result<(MemoryListener, String)> {
        let port = match addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>()) {
            Some(Ok(port)) => port,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected host:port",
                ));
            }
        };
        let mut net = lock(&self.network.shared.state);
        let port = match port {
            0 => {
                let next = net.next_port.entry(self.host.clone()).or_insert(1);
                *next += 1;
                *next
            }
            port => port,
        };
        let addr = format!("{}:{port}", self.host);
        if net.listeners.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, addr));
        }
        let (accept, incoming) = mpsc::unbounded_channel();
        net.listeners.insert(addr.clone(), accept);
        drop(net);
        let listener = MemoryListener {
            network: self.network.clone(),
            addr: addr.clone(),
            incoming,
        };
        Ok((listener, addr))
    }

    async fn accept(&self, listener: &mut MemoryListener) -> io::Result<Accepted> {
        match listener.incoming.recv().await {
            Some(accepted) => Ok(accepted),
            None => std::future::pending().await,
        }
    }

    async fn open(&self, stream: Connection, _: Side) -> io::Result<Connection> {
        Ok(stream)
    }

    async fn connect(&self, addr: &str) -> io::Result<Connection> {
        let to = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        loop {
            let healed = self.network.shared.healed.notified();
            if !self.network.condition(&self.host, to).cut {
                break;
            }
            healed.await;
        }
        let mut net = lock(&self.network.shared.state);
        let accept =
            net.listeners.get(addr).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionRefused, addr.to_string())
            })?;
        let outbound = Arc::new(Pipe::new(&self.host, to));
        let inbound = Arc::new(Pipe::new(to, &self.host));
        net.pipes.retain(|pipe| pipe.strong_count() > 0);
        net.pipes.push(Arc::downgrade(&outbound));
        net.pipes.push(Arc::downgrade(&inbound));
        let port = net.next_port.entry(self.host.clone()).or_insert(1);
        *port += 1;
        let remote = format!("{}:{port}", self.host);
        drop(net);
        let server = Connection::new(
            Box::new(PipeReader::new(self.network.clone(), Arc::clone(&outbound))),
            Box::new(PipeWriter::new(self.network.clone(), Arc::clone(&inbound))),
        );
        accept
            .send((server, remote))
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, addr.to_string()))?;
        Ok(Connection::new(
            Box::new(PipeReader::new(self.network.clone(), inbound)),
            Box::new(PipeWriter::new(self.network.clone(), outbound)),
        ))
    }
}

/// One direction of a connection.
#[derive(Debug)]
struct Pipe {
    from: String,
    to: String,
    state: Mutex<PipeState>,
}

#[derive(Debug, Default)]
struct PipeState {
    /// Written bytes and when each chunk may be read.
    chunks: VecDeque<(Instant, Bytes)>,
    buffered: usize,
    /// The writer closed: the reader gets end-of-file after the held bytes.
    closed: bool,
    /// The reader is gone: the writer gets a broken pipe.
    abandoned: bool,
    /// Reset: both ends get an error.
    reset: bool,
    /// When the bytes written so far have all crossed a rate-limited link.
    free_at: Option<Instant>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn new(from: &str, to: &str) -> Self {
        Self {
            from: from.to_string(),
            to: to.to_string(),
            state: Mutex::default(),
        }
    }
}

impl PipeState {
    fn wake_both(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

struct PipeReader {
    network: MemoryNetwork,
    pipe: Arc<Pipe>,
    /// Wakes the reader when the next chunk's delay is over.
    timer: Option<Pin<Box<Sleep>>>,
}

impl PipeReader {
    fn new(network: MemoryNetwork, pipe: Arc<Pipe>) -> Self {
        Self {
            network,
            pipe,
            timer: None,
        }
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cut = self.network.condition(&self.pipe.from, &self.pipe.to).cut;
        let pipe = Arc::clone(&self.pipe);
        let mut state = lock(&pipe.state);
        if state.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if cut {
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(&(due, _)) = state.chunks.front() else {
            if state.closed {
                return Poll::Ready(Ok(()));
            }
            state.reader = Some(cx.waker().clone());
            return Poll::Pending;
        };
        if due > Instant::now() {
            state.reader = Some(cx.waker().clone());
            drop(state);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let mut taken = 0;
        while let Some((due, chunk)) = state.chunks.front_mut() {
            if *due > Instant::now() || buf.remaining() == 0 {
                break;
            }
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk.split_to(n));
            taken += n;
            if chunk.is_empty() {
                state.chunks.pop_front();
            }
        }
        state.buffered -= taken;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut state = lock(&self.pipe.state);
        state.abandoned = true;
        state.wake_both();
    }
}

struct PipeWriter {
    network: MemoryNetwork,
    pipe: Arc<Pipe>,
}

impl PipeWriter {
    fn new(network: MemoryNetwork, pipe: Arc<Pipe>) -> Self {
        Self { network, pipe }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let condition = self.network.condition(&self.pipe.from, &self.pipe.to);
        let mut state = lock(&self.pipe.state);
        if state.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if state.abandoned || state.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_CAPACITY - state.buffered;
        if room == 0 {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = bytes.len().min(room);
        let mut crossed = Instant::now();
        if let Some(rate) = condition.rate {
            let start = state.free_at.map_or(crossed, |free| free.max(crossed));
            crossed = start + Duration::from_secs_f64(n as f64 / rate as f64);
            state.free_at = Some(crossed);
        }
        let due = crossed + condition.delay;
        state
            .chunks
            .push_back((due, Bytes::copy_from_slice(&bytes[..n])));
        state.buffered += n;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.pipe.state);
        state.closed = true;
        state.wake_both();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let mut state = lock(&self.pipe.state);
        state.closed = true;
        state.wake_both();
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connected(net: &MemoryNetwork) -> (Connection, Accepted) {
        let (a, b) = (net.host("a"), net.host("b"));
        let (mut listener, addr) = b.bind("b:0").await.unwrap();
        let client = a.connect(&addr).await.unwrap();
        let server = b.accept(&mut listener).await.unwrap();
        (client, server)
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_flow_in_order_and_end_with_the_writer() {
        let net = MemoryNetwork::new();
        let (Connection { mut write, .. }, (Connection { mut read, .. }, remote)) =
            connected(&net).await;
        assert!(remote.starts_with("a:"));
        write.write_all(b"hello ").await.unwrap();
        write.write_all(b"world").await.unwrap();
        drop(write);
        let mut got = String::new();
        read.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_bytes_for_that_long() {
        let net = MemoryNetwork::new();
        let (Connection { mut write, .. }, (Connection { mut read, .. }, _)) =
            connected(&net).await;
        net.delay("a", "b", Duration::from_millis(300));
        let start = Instant::now();
        write.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        read.read_exact(&mut byte).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_link_carries_its_rate() {
        let net = MemoryNetwork::new();
        let (Connection { mut write, .. }, (Connection { mut read, .. }, _)) =
            connected(&net).await;
        net.limit("a", "b", 100_000);
        let start = Instant::now();
        let sending = async {
            write.write_all(&[1u8; 50_000]).await.unwrap();
            write.write_all(&[2u8; 50_000]).await.unwrap();
        };
        let mut got = vec![0u8; 100_000];
        let ((), read) = tokio::join!(sending, read.read_exact(&mut got));
        read.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_holds_bytes_until_healed_and_a_full_buffer_holds_the_writer() {
        let net = MemoryNetwork::new();
        let (Connection { mut write, .. }, (Connection { mut read, .. }, _)) =
            connected(&net).await;
        net.cut("b", "a");
        write.write_all(b"held").await.unwrap();
        let mut four = [0u8; 4];
        let waited =
            tokio::time::timeout(Duration::from_secs(10), read.read_exact(&mut four)).await;
        assert!(waited.is_err(), "nothing crosses a cut");
        let big = vec![0u8; PIPE_CAPACITY];
        let filled = tokio::time::timeout(Duration::from_secs(10), write.write_all(&big)).await;
        assert!(filled.is_err(), "the writer waits once the buffer is full");
        net.heal("a", "b");
        read.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"held");
    }

    #[tokio::test(start_paused = true)]
    async fn connects_across_a_cut_wait_and_to_nobody_are_refused() {
        let net = MemoryNetwork::new();
        let (a, b) = (net.host("a"), net.host("b"));
        let (_listener, addr) = b.bind("127.0.0.1:0").await.unwrap();
        assert!(addr.starts_with("b:"), "{addr}");
        net.isolate("b");
        assert!(
            tokio::time::timeout(Duration::from_secs(5), a.connect(&addr))
                .await
                .is_err()
        );
        net.heal_all();
        assert!(a.connect(&addr).await.is_ok());
        let refused = a.connect("b:999").await.err().unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            b.bind(&addr).await.err().unwrap().kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_fails_both_ends() {
        let net = MemoryNetwork::new();
        let (
            Connection {
                read: mut client_read,
                ..
            },
            (
                Connection {
                    write: mut server_write,
                    ..
                },
                _,
            ),
        ) = connected(&net).await;
        net.reset("a", "b");
        let mut byte = [0u8; 1];
        assert_eq!(
            client_read.read(&mut byte).await.err().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert!(server_write.write_all(b"x").await.is_err());
    }
}

//! Helpers shared by the integration tests: nodes on loopback TCP or on the in-memory network,
//! raw connections for tests that misbehave on purpose, and event waits with generous bounds
//! that only catch hangs.

#![allow(clippy::unwrap_used, dead_code, unused_macros)] // test code; not every file uses every helper

use std::time::Duration;

use gen_cluster::{
    LivenessConfig, MemoryNetwork, Node, NodeConfig, NodeEvent, NodeName, ReadHalf, Side,
    Transport, WriteHalf,
};
use gen_cluster_proto::Incarnation;
use gen_cluster_proto::handshake::{self, HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

/// Runs each named scenario (an `async fn(Net)`) twice: over TCP on loopback in real time, as
/// `tcp::<name>`, and over the in-memory network in paused time, as `memory::<name>`.
macro_rules! on_both_transports {
    ($($scenario:ident),* $(,)?) => {
        mod tcp {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(crate::common::Net::Tcp).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $scenario() {
                    super::$scenario(crate::common::Net::memory()).await
                }
            )*
        }
    };
}

/// Where a test's nodes run.
#[derive(Clone, Debug)]
pub enum Net {
    /// Real TCP on loopback, real time.
    Tcp,
    /// The in-memory network (each node a host named after it); meant for paused time.
    Memory(MemoryNetwork),
}

impl Net {
    /// A fresh in-memory network.
    pub fn memory() -> Self {
        Net::Memory(MemoryNetwork::new())
    }

    /// Starts a node with `config` on this network.
    pub async fn start(&self, config: NodeConfig) -> Node {
        match self {
            Net::Tcp => Node::start(config).await.unwrap(),
            Net::Memory(net) => {
                let host = net.host(config.name.as_str());
                Node::start_with(config, host).await.unwrap()
            }
        }
    }

    /// A node named `name` with the tests' settings.
    pub async fn node(&self, name: &str) -> Node {
        self.start(config(name)).await
    }

    /// Two connected nodes, `a` and `b`, in one group.
    pub async fn pair(&self) -> (Node, Node) {
        let a = self.node("a").await;
        let b = self.node("b").await;
        connect(&a, &b).await;
        one_group(&[&a, &b]).await;
        (a, b)
    }

    /// Nodes `names`, all connected to each other, in one group.
    pub async fn mesh(&self, names: &[&str]) -> Vec<Node> {
        self.mesh_with(names, config).await
    }

    /// Nodes `names` with [`loner_config`], all connected to each other, in one group: for
    /// partitions made with `disconnect`, which no node undoes.
    pub async fn loner_mesh(&self, names: &[&str]) -> Vec<Node> {
        self.mesh_with(names, loner_config).await
    }

    async fn mesh_with(&self, names: &[&str], config: fn(&str) -> NodeConfig) -> Vec<Node> {
        let mut nodes = Vec::new();
        for name in names {
            nodes.push(self.start(config(name)).await);
        }
        for (i, from) in nodes.iter().enumerate() {
            for to in &nodes[i + 1..] {
                connect(from, to).await;
            }
        }
        one_group(&nodes.iter().collect::<Vec<_>>()).await;
        nodes
    }

    /// A raw connection to `addr`, for a test that speaks the protocol itself.
    pub async fn raw(&self, addr: &str) -> Raw {
        let (read, write): (ReadHalf, WriteHalf) = match self {
            Net::Tcp => {
                let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
                (Box::new(read), Box::new(write))
            }
            Net::Memory(net) => {
                let connection = net.host("raw").connect(addr).await.unwrap();
                (connection.read, connection.write)
            }
        };
        Raw { read, write }
    }

    /// A raw connection named `name` that passes the real handshake with a node of [`config`],
    /// for tests that then misbehave on purpose.
    pub async fn authenticated(&self, addr: &str, name: &str) -> Raw {
        self.authenticated_speaking(addr, name, SUPPORTED_VERSIONS)
            .await
    }

    /// The same, offering only the protocol `versions` (a peer of an earlier build).
    pub async fn authenticated_speaking(
        &self,
        addr: &str,
        name: &str,
        versions: handshake::VersionRange,
    ) -> Raw {
        let mut raw = self.raw(addr).await;
        let config = HandshakeConfig {
            cluster: "default".into(),
            secret: b"test-cookie".to_vec(),
            local: Identity {
                name: NodeName::new(name).unwrap(),
                incarnation: Incarnation(1),
                listen: "127.0.0.1:1".into(),
                hidden: false,
            },
            versions,
        };
        let (machine, hello) = handshake::initiate(config, [7; 32]);
        raw.write_frame(&hello).await;
        let challenge = raw.read_frame().await;
        let (machine, response) = machine.handle(&challenge).unwrap();
        raw.write_frame(&response).await;
        let verified = machine.handle(&raw.read_frame().await).unwrap();
        let (_, ready) = verified.ready();
        raw.write_frame(&ready).await;
        raw
    }
}

/// A listener for tests that play a peer by hand (a fake listener among the seeds).
pub struct RawListener {
    /// Where it listens.
    pub addr: String,
    accept: RawAccept,
}

enum RawAccept {
    Tcp(tokio::net::TcpListener),
    Memory(
        gen_cluster::MemoryTransport,
        <gen_cluster::MemoryTransport as Transport>::Listener,
    ),
}

impl Net {
    /// A raw listener on the host `host` (loopback for TCP).
    pub async fn listen(&self, host: &str) -> RawListener {
        match self {
            Net::Tcp => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                RawListener {
                    addr,
                    accept: RawAccept::Tcp(listener),
                }
            }
            Net::Memory(net) => {
                let transport = net.host(host);
                let (listener, addr) = transport.bind("any:0").await.unwrap();
                RawListener {
                    addr,
                    accept: RawAccept::Memory(transport, listener),
                }
            }
        }
    }
}

impl RawListener {
    /// The next connection.
    pub async fn accept(&mut self) -> Raw {
        let (read, write): (ReadHalf, WriteHalf) = match &mut self.accept {
            RawAccept::Tcp(listener) => {
                let (stream, _) = listener.accept().await.unwrap();
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            RawAccept::Memory(transport, listener) => {
                let (stream, _) = transport.accept(listener).await.unwrap();
                let connection = transport.open(stream, Side::Accepted).await.unwrap();
                (connection.read, connection.write)
            }
        };
        Raw { read, write }
    }
}

/// The handshake settings of someone who claims to be `name` in its life `incarnation` but
/// does not hold the tests' cookie.
pub fn impostor(name: &str, incarnation: u64) -> HandshakeConfig {
    HandshakeConfig {
        cluster: "default".into(),
        secret: b"not-the-cookie".to_vec(),
        local: Identity {
            name: NodeName::new(name).unwrap(),
            incarnation: Incarnation(incarnation),
            listen: "127.0.0.1:9".into(),
            hidden: false,
        },
        versions: SUPPORTED_VERSIONS,
    }
}

/// Connects `from` to `to` and waits until both see the other up.
pub async fn connect(from: &Node, to: &Node) {
    let mut events = to.subscribe();
    from.connect(to.listen_addr()).await.unwrap();
    let name = from.name().clone();
    if !to.is_connected(&name) {
        next_event(&mut events, |e| {
            matches!(e, NodeEvent::NodeUp { peer, .. } if *peer == name).then_some(())
        })
        .await;
    }
}

/// Waits until every node of `nodes` has all of them in its group of the view: the election and
/// the global names count a connected peer only from then on.
pub async fn one_group(nodes: &[&Node]) {
    let all: std::collections::BTreeSet<NodeName> =
        nodes.iter().map(|node| node.name().clone()).collect();
    for node in nodes {
        let mut views = node.view_changes();
        tokio::time::timeout(HANG, views.wait_for(|view| view.group == all))
            .await
            .expect("one group not formed before the hang bound")
            .expect("the node runs");
    }
}

/// A connection that speaks the protocol's bytes directly.
pub struct Raw {
    read: ReadHalf,
    write: WriteHalf,
}

impl Raw {
    /// Writes bytes as they are (errors ignored: the peer may already have hung up).
    pub async fn write_all(&mut self, bytes: &[u8]) {
        let _ = self.write.write_all(bytes).await;
    }

    /// Writes one length-prefixed frame (errors ignored).
    pub async fn write_frame(&mut self, body: &[u8]) {
        self.write_all(&(body.len() as u32).to_be_bytes()).await;
        self.write_all(body).await;
    }

    /// Reads one length-prefixed frame.
    pub async fn read_frame(&mut self) -> Vec<u8> {
        let len = self.read.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len];
        self.read.read_exact(&mut body).await.unwrap();
        body
    }

    /// Reads until the peer closes, at most `within`; returns what it sent. Panics if it has not
    /// closed by then.
    pub async fn read_until_closed(&mut self, within: Duration) -> Vec<u8> {
        let mut seen = Vec::new();
        tokio::time::timeout(within, self.read.read_to_end(&mut seen))
            .await
            .expect("the node closes the connection in time")
            .ok();
        seen
    }
}

/// A bound that only catches hangs; the speeds belong in `gen-cluster bench`.
pub const HANG: Duration = Duration::from_secs(20);

pub fn config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(NodeName::new(name).unwrap(), "test-cookie");
    config.liveness = LivenessConfig {
        heartbeat_interval: Duration::from_millis(100),
        down_after: Duration::from_millis(500),
        ..LivenessConfig::default()
    };
    config
}

pub async fn node(name: &str) -> Node {
    Node::start(config(name)).await.unwrap()
}

/// The tests' settings for a node that dials only what it is told to (no full mesh): for tests
/// of the discovery loop, of clients, and of partitions made with `disconnect`.
pub fn loner_config(name: &str) -> NodeConfig {
    let mut config = config(name);
    config.connect_all = false;
    config
}

/// A node with [`loner_config`] on loopback TCP.
pub async fn loner(name: &str) -> Node {
    Node::start(loner_config(name)).await.unwrap()
}

/// Two connected nodes on loopback TCP.
pub async fn pair() -> (Node, Node) {
    Net::Tcp.pair().await
}

pub async fn wait_until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(HANG, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached before the hang bound");
}

/// The next event matching `pick`.
pub async fn next_event<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(HANG, async {
        loop {
            let event = events.recv().await.expect("event stream open");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("event not seen before the hang bound")
}

/// Nodes `names` on loopback TCP, all connected to each other.
pub async fn mesh(names: &[&str]) -> Vec<Node> {
    Net::Tcp.mesh(names).await
}

/// Set to skip, rather than fail, the tests against real peers (dnsmasq, epmd, erl) where one is
/// not installed; a skipped test still passes, so it is opted into, never the default.
pub const SKIP_REAL_PEERS: &str = "GEN_CLUSTER_SKIP_REAL_PEERS";

/// The path of `program` on `PATH`, for tests against programs no one here wrote. Absent, the
/// test fails saying what to install, or is skipped with a notice when `GEN_CLUSTER_SKIP_REAL_PEERS`
/// is set.
pub fn real_peer(program: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os(SKIP_REAL_PEERS).is_some(),
            "{program} is not installed: install it (apt-get install erlang-base dnsmasq-base) \
             or set {SKIP_REAL_PEERS}=1 to skip the tests that need it"
        );
        eprintln!("{program} is not installed: test skipped");
    }
    found
}

/// A directory under the system's temporary directory, removed with what it holds when dropped.
pub struct ScratchDir(std::path::PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new empty directory under the system's temporary directory, for as long as it is held.
pub fn scratch_dir(purpose: &str) -> ScratchDir {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("gen-cluster-{purpose}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

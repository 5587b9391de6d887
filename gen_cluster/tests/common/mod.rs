//! Helpers shared by the integration tests: nodes on loopback, event waits with generous
//! bounds that only catch hangs.

#![allow(clippy::unwrap_used, dead_code)] // test code; not every test file uses every helper

use std::time::Duration;

use gen_cluster::{LivenessConfig, Node, NodeConfig, NodeEvent, NodeName};
use gen_cluster_proto::Incarnation;
use gen_cluster_proto::handshake::{self, HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

/// A bound that only catches hangs; the speeds belong in `gen-cluster bench`.
pub const HANG: Duration = Duration::from_secs(20);

pub fn config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(NodeName::new(name).unwrap(), "test-cookie");
    config.liveness = LivenessConfig {
        heartbeat_interval: Duration::from_millis(100),
        down_after: Duration::from_millis(500),
    };
    config
}

pub async fn node(name: &str) -> Node {
    Node::start(config(name)).await.unwrap()
}

/// Two connected nodes.
pub async fn pair() -> (Node, Node) {
    let a = node("a").await;
    let b = node("b").await;
    a.connect(b.listen_addr()).await.unwrap();
    wait_until(|| b.is_connected(a.name())).await;
    (a, b)
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

/// A raw TCP peer named `name` that passes the real handshake with a node of [`config`], for
/// tests that then misbehave on purpose.
pub async fn authenticated_stream(addr: &str, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let config = HandshakeConfig {
        cluster: "default".into(),
        secret: b"test-cookie".to_vec(),
        local: Identity {
            name: NodeName::new(name).unwrap(),
            incarnation: Incarnation(1),
            listen: "127.0.0.1:1".into(),
        },
        versions: SUPPORTED_VERSIONS,
    };
    let (machine, hello) = handshake::initiate(config, [7; 32]);
    write_frame(&mut stream, &hello).await;
    let challenge = read_frame(&mut stream).await;
    let (machine, response) = machine.handle(&challenge).unwrap().proceed();
    write_frame(&mut stream, &response).await;
    machine.handle(&read_frame(&mut stream).await).unwrap();
    stream
}

/// Writes one length-prefixed frame (errors ignored: the peer may already have hung up).
pub async fn write_frame(stream: &mut TcpStream, body: &[u8]) {
    let _ = stream.write_all(&(body.len() as u32).to_be_bytes()).await;
    let _ = stream.write_all(body).await;
}

/// Reads one length-prefixed frame.
pub async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    body
}

/// Nodes `names`, all connected to each other.
pub async fn mesh(names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(node(name).await);
    }
    for (i, from) in nodes.iter().enumerate() {
        for to in &nodes[i + 1..] {
            from.connect(to.listen_addr()).await.unwrap();
        }
    }
    for node in &nodes {
        wait_until(|| node.peers().len() == names.len() - 1).await;
    }
    nodes
}

/// Set in `.ci/run`, where the real peers (dnsmasq, epmd, erl) are installed: a missing one
/// fails the test there instead of skipping it.
const REQUIRE_REAL_PEERS: &str = "GEN_CLUSTER_REQUIRE_REAL_PEERS";

/// The path of `program` on `PATH`, for tests against programs no one here wrote. Absent, the
/// test is skipped with a notice, unless `GEN_CLUSTER_REQUIRE_REAL_PEERS` is set.
pub fn real_peer(program: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os(REQUIRE_REAL_PEERS).is_none(),
            "{program} is not installed, and {REQUIRE_REAL_PEERS} requires it"
        );
        eprintln!("{program} is not installed: test skipped");
    }
    found
}

/// A new empty directory under the system's temporary directory.
pub fn scratch_dir(purpose: &str) -> std::path::PathBuf {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("gen-cluster-{purpose}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

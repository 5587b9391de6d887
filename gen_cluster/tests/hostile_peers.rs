//! Connections that must be refused or dropped without harming the node: wrong cookie, another
//! cluster, garbage, an oversized length prefix, a silent dialer, a peer that goes silent after
//! its handshake. After each, the node still serves a good peer. Each scenario runs over loopback
//! TCP and over the in-memory network in paused time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::time::Duration;

use common::{HANG, Net, config, connect, impostor, next_event};
use gen_cluster::services::echo::{Echo, EchoCall, EchoReply};
use gen_cluster::{ConnectError, DownReason, HandshakeFailed, Node, NodeConfig, NodeEvent};
use gen_cluster_proto::handshake::{self, HandshakeError, Refusal};
use tokio::sync::broadcast;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);

/// A node whose handshake deadline is far beyond the bounds these tests wait: a connection it
/// closes within them was closed by the check under test, not by the deadline.
fn patient(name: &str) -> NodeConfig {
    let mut config = config(name);
    config.handshake_timeout = HANG * 3;
    config
}

/// The node still serves calls from a well-behaved peer.
async fn still_serves(net: &Net, node: &Node) {
    let good = net.node("good").await;
    connect(&good, node).await;
    let echo = node.spawn(Echo::default()).await.unwrap();
    assert_eq!(
        good.call(&echo, EchoCall::Echo(vec![1]), T).await.unwrap(),
        EchoReply::Echo(vec![1])
    );
    good.shutdown().await;
}

async fn a_wrong_cookie_is_refused_on_both_sides(net: Net) {
    let a = net.node("a").await;
    let mut intruder_config = config("intruder");
    intruder_config.cookie = b"wrong".to_vec();
    let intruder = net.start(intruder_config).await;
    let error = intruder.connect(a.listen_addr()).await.unwrap_err();
    assert!(
        matches!(
            error,
            ConnectError::Handshake {
                source: HandshakeFailed::Protocol(HandshakeError::RefusedByPeer(Refusal::BadProof)),
                ..
            }
        ),
        "{error}"
    );
    assert!(a.peers().is_empty() && intruder.peers().is_empty());
    still_serves(&net, &a).await;
}

async fn another_clusters_node_is_refused_even_with_the_same_cookie(net: Net) {
    let a = net.node("a").await;
    let mut other_config = config("other");
    other_config.cluster = "elsewhere".into();
    let other = net.start(other_config).await;
    let error = other.connect(a.listen_addr()).await.unwrap_err();
    assert!(
        matches!(
            error,
            ConnectError::Handshake {
                source: HandshakeFailed::Protocol(HandshakeError::RefusedByPeer(
                    Refusal::WrongCluster { .. }
                )),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(a.peers().is_empty());
    still_serves(&net, &a).await;
}

async fn garbage_bytes_are_dropped(net: Net) {
    let a = net.start(patient("a")).await;
    let mut raw = net.raw(a.listen_addr()).await;
    raw.write_all(&[0, 0, 0, 12]).await;
    raw.write_all(b"GET / HTTP/1").await;
    let reply = raw.read_until_closed(T).await;
    assert!(
        reply.is_empty(),
        "nothing but a close for garbage: {reply:?}"
    );
    assert!(a.peers().is_empty());
    still_serves(&net, &a).await;
}

async fn an_oversized_length_prefix_is_dropped_before_reading_it(net: Net) {
    let a = net.start(patient("a")).await;
    let mut raw = net.raw(a.listen_addr()).await;
    raw.write_all(&u32::MAX.to_be_bytes()).await;
    raw.read_until_closed(T).await;
    still_serves(&net, &a).await;
}

async fn a_silent_dialer_is_dropped_at_the_handshake_deadline_without_blocking_others(net: Net) {
    let mut short = config("a");
    short.handshake_timeout = Duration::from_millis(300);
    let a = net.start(short).await;
    let started = Instant::now();
    let mut silent = net.raw(a.listen_addr()).await;
    // Another peer connects and is served while the silent one hangs.
    still_serves(&net, &a).await;
    silent.read_until_closed(HANG).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed at the deadline, not before: {:?}",
        started.elapsed()
    );
}

async fn a_peer_that_goes_silent_is_declared_down_at_the_deadline(net: Net) {
    let a = net.node("a").await;
    let mut events = a.subscribe();
    // A peer that completes a real handshake, then never sends another byte.
    let _silent = net.authenticated(a.listen_addr(), "silent").await;
    next_event(&mut events, |e| {
        matches!(e, NodeEvent::NodeUp { .. }).then_some(())
    })
    .await;
    let reason = next_event(&mut events, |e| match e {
        NodeEvent::NodeDown { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    let DownReason::Unresponsive { silent_for } = reason else {
        panic!("expected unresponsive, got {reason:?}");
    };
    assert!(silent_for >= a.config().liveness.down_after);
    still_serves(&net, &a).await;
}

async fn dialing_each_other_at_once_ends_in_exactly_one_connection(net: Net) {
    for round in 0..20 {
        let a = net.node(&format!("x{round}")).await;
        let b = net.node(&format!("y{round}")).await;
        let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
        let (ra, rb) = tokio::join!(a.connect(b.listen_addr()), b.connect(a.listen_addr()));
        assert_eq!(ra.unwrap(), *b.name());
        assert_eq!(rb.unwrap(), *a.name());
        for (node, events) in [(&a, &mut a_events), (&b, &mut b_events)] {
            if node.peers().is_empty() {
                next_event(events, |e| {
                    matches!(e, NodeEvent::NodeUp { .. }).then_some(())
                })
                .await;
            }
        }
        let echo = b.spawn(Echo::default()).await.unwrap();
        assert_eq!(
            a.call(&echo, EchoCall::Echo(vec![]), T).await.unwrap(),
            EchoReply::Echo(vec![])
        );
        // Both sides hold the same single connection: no spurious down after the dust settles
        // (an absence, so it needs a window of time to be seen in).
        let mut events = a.subscribe();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            events.try_recv().is_err(),
            "no event after the connection settled"
        );
        assert_eq!(a.peers().len(), 1);
        assert_eq!(b.peers().len(), 1);
    }
}

async fn connecting_twice_keeps_one_connection(net: Net) {
    let (a, b) = net.pair().await;
    assert_eq!(a.connect(b.listen_addr()).await.unwrap(), *b.name());
    assert_eq!(b.connect(a.listen_addr()).await.unwrap(), *a.name());
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
}

/// Asserts that no event reached `events` (after a window in which any would have).
async fn nothing_happened(events: &mut [broadcast::Receiver<NodeEvent>]) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    for events in events {
        let event = events.try_recv();
        assert!(event.is_err(), "no event: {event:?}");
    }
}

async fn a_dialer_without_the_cookie_changes_nothing(net: Net) {
    let nodes = net.mesh(&["a", "b", "c"]).await;
    let mut events: Vec<_> = nodes.iter().map(Node::subscribe).collect();
    let mut held_open = Vec::new();
    for target in &nodes {
        for claimed in &nodes {
            let lives = [0, 1, claimed.incarnation().0 + 1, u64::MAX];
            for incarnation in lives {
                let name = claimed.name().as_str();
                // One stays silent after the Challenge; one answers it with a forged proof.
                for forge in [false, true] {
                    let mut raw = net.raw(target.listen_addr()).await;
                    let (machine, hello) =
                        handshake::initiate(impostor(name, incarnation), [9; 32]);
                    raw.write_frame(&hello).await;
                    let challenge = raw.read_frame().await;
                    let Ok((_, response)) = machine.handle(&challenge) else {
                        continue; // refused at the Hello (a node's own name): fine
                    };
                    if forge {
                        raw.write_frame(&response).await;
                        raw.read_until_closed(T).await;
                    } else {
                        held_open.push(raw);
                    }
                }
            }
        }
    }
    nothing_happened(&mut events).await;
    for node in &nodes {
        assert_eq!(node.peers().len(), 2, "{}'s links are all up", node.name());
    }
    // While forged handshakes claiming b's later lives are pending, b itself reconnects to a.
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a_events = a.subscribe();
    assert!(b.disconnect(a.name()));
    next_event(&mut a_events, |e| {
        matches!(e, NodeEvent::NodeDown { .. }).then_some(())
    })
    .await;
    connect(b, a).await;
    still_serves(&net, a).await;
    drop(held_open);
}

async fn a_fake_listener_among_the_seeds_keeps_no_one_out(net: Net) {
    let (a, c) = net.pair().await;
    let mut events = [a.subscribe(), c.subscribe()];
    let mut fake = net.listen("fake").await;
    // c dials the fake, which answers as a (in a later life), then never proves anything.
    let dialer = c.clone();
    let addr = fake.addr.clone();
    let dial = tokio::spawn(async move { dialer.connect(&addr).await });
    let mut conn = fake.accept().await;
    let hello = conn.read_frame().await;
    let answer = handshake::accept(impostor("a", u64::MAX), [8; 32]).handle(&hello);
    let (_, challenge) = answer.unwrap().admit();
    conn.write_frame(&challenge).await;
    let _response = conn.read_frame().await;
    nothing_happened(&mut events).await;
    assert!(c.is_connected(a.name()), "the real a stays connected");
    // A node that c does not know yet joins while the fake's handshake hangs.
    let d = net.node("d").await;
    connect(&d, &c).await;
    assert!(
        tokio::time::timeout(HANG, dial)
            .await
            .unwrap()
            .unwrap()
            .is_err(),
        "the fake's handshake fails"
    );
    drop(conn);
}

async fn a_restart_that_replaces_a_link_is_one_down_and_one_up(net: Net) {
    let mut config_a = config("a");
    config_a.liveness.down_after = Duration::from_secs(2);
    let a = net.start(config_a).await;
    let mut events = a.subscribe();
    // b's earlier life: connected, then silent (hung, or its machine gone), not yet declared
    // down; silent for more than half the failure detector's deadline, it no longer counts as
    // alive.
    let _earlier = net.authenticated(a.listen_addr(), "b").await;
    let earlier = next_event(&mut events, |e| match e {
        NodeEvent::NodeUp { incarnation, .. } => Some(*incarnation),
        _ => None,
    })
    .await;
    tokio::time::sleep(a.config().liveness.down_after * 2 / 3).await;
    let mut config = config("b");
    config.listen = "127.0.0.1:0".into();
    let b2 = match &net {
        Net::Tcp => Node::start(config).await.unwrap(),
        Net::Memory(memory) => Node::start_with(config, memory.host("b-again"))
            .await
            .unwrap(),
    };
    connect(&b2, &a).await;
    let first = next_event(&mut events, |e| Some(e.clone())).await;
    let second = next_event(&mut events, |e| Some(e.clone())).await;
    assert!(
        matches!(&first, NodeEvent::NodeDown { incarnation, reason: DownReason::Restarted, .. } if *incarnation == earlier),
        "{first:?}"
    );
    assert!(
        matches!(&second, NodeEvent::NodeUp { incarnation, .. } if *incarnation == b2.incarnation()),
        "{second:?}"
    );
    nothing_happened(std::slice::from_mut(&mut events)).await;
    assert_eq!(a.peers()[0].incarnation, b2.incarnation());
}

/// A second process started with the name of a live member is refused, and says so: the member
/// keeps its link, and nothing happens on the node it dialed.
async fn a_second_live_process_with_a_members_name_is_refused_as_a_clash(net: Net) {
    let (a, b) = net.pair().await;
    let mut events = a.subscribe();
    let mut config = config("b");
    config.listen = "127.0.0.1:0".into();
    let second = match &net {
        Net::Tcp => Node::start(config).await.unwrap(),
        Net::Memory(memory) => Node::start_with(config, memory.host("b-again"))
            .await
            .unwrap(),
    };
    let refused = second.connect(a.listen_addr()).await;
    assert!(
        matches!(
            &refused,
            Err(ConnectError::Handshake {
                source: HandshakeFailed::Protocol(HandshakeError::RefusedByPeer(
                    Refusal::NameClash { node }
                )),
                ..
            }) if node == b.name()
        ),
        "{refused:?}"
    );
    nothing_happened(std::slice::from_mut(&mut events)).await;
    assert_eq!(a.peers()[0].incarnation, b.incarnation());
}

/// Log lines written while it is held, for tests that count them.
struct CapturedLogs {
    lines: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    /// Captures this thread's warnings and errors.
    fn start() -> Self {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        Self { lines, _guard }
    }

    /// How many lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.lines.lock().unwrap()).to_string();
        text.lines().filter(|line| line.contains(needle)).count()
    }
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn silent_sockets_cannot_keep_a_real_peer_out(net: Net) {
    let logs = CapturedLogs::start();
    let a = net.node("a").await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(net.raw(a.listen_addr()).await);
    }
    // And a loop that keeps opening more, throughout.
    let (flood_net, addr) = (net.clone(), a.listen_addr().to_string());
    let flood = tokio::spawn(async move {
        let mut opened = Vec::new();
        loop {
            opened.push(flood_net.raw(&addr).await);
            if opened.len() > 400 {
                opened.drain(..200);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    for round in 0..5 {
        let peer = net.node(&format!("peer{round}")).await;
        let joined = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), connect(&peer, &a))
            .await
            .unwrap_or_else(|_| panic!("round {round}: a real peer joins within 2 s"));
        assert!(joined.elapsed() < Duration::from_secs(2));
        still_serves(&net, &a).await;
        peer.shutdown().await;
    }
    flood.abort();
    let seconds = started.elapsed().as_secs_f64().max(1.0);
    // The lines about the attack; peers that join and leave at once may log their own.
    let lines = logs.count("pending handshakes") + logs.count("to make room");
    assert!(
        lines as f64 <= 2.0 * seconds + 2.0,
        "{lines} warning lines in {seconds:.1} s:\n{}",
        String::from_utf8_lossy(&logs.lines.lock().unwrap())
    );
    drop(silent);
}

on_both_transports!(
    silent_sockets_cannot_keep_a_real_peer_out,
    a_dialer_without_the_cookie_changes_nothing,
    a_fake_listener_among_the_seeds_keeps_no_one_out,
    a_restart_that_replaces_a_link_is_one_down_and_one_up,
    a_second_live_process_with_a_members_name_is_refused_as_a_clash,
    a_wrong_cookie_is_refused_on_both_sides,
    another_clusters_node_is_refused_even_with_the_same_cookie,
    garbage_bytes_are_dropped,
    an_oversized_length_prefix_is_dropped_before_reading_it,
    a_silent_dialer_is_dropped_at_the_handshake_deadline_without_blocking_others,
    a_peer_that_goes_silent_is_declared_down_at_the_deadline,
    dialing_each_other_at_once_ends_in_exactly_one_connection,
    connecting_twice_keeps_one_connection,
);

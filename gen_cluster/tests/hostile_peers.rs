//! Connections that must be refused or dropped without harming the node: wrong cookie, another
//! cluster, garbage, an oversized length prefix, a silent dialer, a peer that goes silent after
//! its handshake. After each, the node still serves a good peer.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{HANG, config, next_event, node, pair, wait_until};
use gen_cluster::services::echo::{Echo, EchoCall, EchoReply};
use gen_cluster::{ConnectError, DownReason, HandshakeFailed, Node, NodeEvent};
use gen_cluster_proto::handshake::{HandshakeError, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(5);

/// The node still serves calls from a well-behaved peer.
async fn still_serves(node: &Node) {
    let good = common::node("good").await;
    good.connect(node.listen_addr()).await.unwrap();
    let echo = node.spawn(Echo::default()).await.unwrap();
    assert_eq!(
        good.call(&echo, EchoCall::Echo(vec![1]), T).await.unwrap(),
        EchoReply::Echo(vec![1])
    );
}

/// Reads until the peer closes; returns what it sent. Panics if it does not close in time.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut seen))
        .await
        .expect("the node closes the connection")
        .ok();
    seen
}

#[tokio::test]
async fn a_wrong_cookie_is_refused_on_both_sides() {
    let a = node("a").await;
    let mut intruder_config = config("intruder");
    intruder_config.cookie = b"wrong".to_vec();
    let intruder = Node::start(intruder_config).await.unwrap();
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
    still_serves(&a).await;
}

#[tokio::test]
async fn another_clusters_node_is_refused_even_with_the_same_cookie() {
    let a = node("a").await;
    let mut other_config = config("other");
    other_config.cluster = "elsewhere".into();
    let other = Node::start(other_config).await.unwrap();
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
    still_serves(&a).await;
}

#[tokio::test]
async fn garbage_bytes_are_dropped() {
    let a = node("a").await;
    let mut stream = TcpStream::connect(a.listen_addr()).await.unwrap();
    stream.write_all(&[0, 0, 0, 12]).await.unwrap();
    stream.write_all(b"GET / HTTP/1").await.unwrap();
    let reply = read_until_closed(&mut stream).await;
    assert!(
        reply.is_empty(),
        "nothing but a close for garbage: {reply:?}"
    );
    assert!(a.peers().is_empty());
    still_serves(&a).await;
}

#[tokio::test]
async fn an_oversized_length_prefix_is_dropped_before_reading_it() {
    let a = node("a").await;
    let mut stream = TcpStream::connect(a.listen_addr()).await.unwrap();
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    read_until_closed(&mut stream).await;
    still_serves(&a).await;
}

#[tokio::test]
async fn a_silent_dialer_is_dropped_at_the_handshake_deadline_without_blocking_others() {
    let mut short = config("a");
    short.handshake_timeout = Duration::from_millis(300);
    let a = Node::start(short).await.unwrap();
    let mut silent = TcpStream::connect(a.listen_addr()).await.unwrap();
    // Another peer connects and is served while the silent one hangs.
    still_serves(&a).await;
    let started = Instant::now();
    read_until_closed(&mut silent).await;
    assert!(started.elapsed() < HANG);
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_declared_down_at_the_deadline() {
    let a = node("a").await;
    let mut events = a.subscribe();
    // A peer that completes a real handshake, then never sends another byte.
    let _silent = common::authenticated_stream(a.listen_addr(), "silent").await;
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
    still_serves(&a).await;
}

#[tokio::test]
async fn dialing_each_other_at_once_ends_in_exactly_one_connection() {
    for round in 0..20 {
        let a = node(&format!("x{round}")).await;
        let b = node(&format!("y{round}")).await;
        let (ra, rb) = tokio::join!(a.connect(b.listen_addr()), b.connect(a.listen_addr()));
        assert_eq!(ra.unwrap(), *b.name());
        assert_eq!(rb.unwrap(), *a.name());
        wait_until(|| a.is_connected(b.name()) && b.is_connected(a.name())).await;
        let echo = b.spawn(Echo::default()).await.unwrap();
        assert_eq!(
            a.call(&echo, EchoCall::Echo(vec![]), T).await.unwrap(),
            EchoReply::Echo(vec![])
        );
        // Both sides hold the same single connection: no spurious down after the dust settles.
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

#[tokio::test]
async fn connecting_twice_keeps_one_connection() {
    let (a, b) = pair().await;
    assert_eq!(a.connect(b.listen_addr()).await.unwrap(), *b.name());
    assert_eq!(b.connect(a.listen_addr()).await.unwrap(), *a.name());
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
}

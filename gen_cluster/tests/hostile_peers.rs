//! Connections that must be refused or dropped without harming the node: wrong cookie, another
//! cluster, garbage, an oversized length prefix, a silent dialer, a peer that goes silent after
//! its handshake. After each, the node still serves a good peer. Each scenario runs over loopback
//! TCP and over the in-memory network in paused time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::time::Duration;

use common::{HANG, Net, config, connect, next_event};
use gen_cluster::services::echo::{Echo, EchoCall, EchoReply};
use gen_cluster::{ConnectError, DownReason, HandshakeFailed, Node, NodeConfig, NodeEvent};
use gen_cluster_proto::handshake::{HandshakeError, Refusal};
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

on_both_transports!(
    a_wrong_cookie_is_refused_on_both_sides,
    another_clusters_node_is_refused_even_with_the_same_cookie,
    garbage_bytes_are_dropped,
    an_oversized_length_prefix_is_dropped_before_reading_it,
    a_silent_dialer_is_dropped_at_the_handshake_deadline_without_blocking_others,
    a_peer_that_goes_silent_is_declared_down_at_the_deadline,
    dialing_each_other_at_once_ends_in_exactly_one_connection,
    connecting_twice_keeps_one_connection,
);

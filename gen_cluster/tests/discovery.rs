//! Discovery and reconnection: static peers, reconnect on drop without waiting for the refresh,
//! discovery once, errors that keep the last good answer, a loop that nothing stops.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{loner, loner_config, next_event, wait_until};
use gen_cluster::{
    Discover, DiscoverError, Discovery, DiscoveryEvent, Node, NodeEvent, ReconcileConfig,
    StaticPeers,
};

const HOUR: Duration = Duration::from_secs(3600);

/// Counts its rounds; answers with `peers` the first `good_rounds` times, then fails.
struct Counting {
    peers: Vec<String>,
    rounds: Arc<AtomicUsize>,
    good_rounds: usize,
}

impl Discover for Counting {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        let round = self.rounds.fetch_add(1, Ordering::SeqCst);
        if round < self.good_rounds {
            Ok(self.peers.clone())
        } else {
            Err(DiscoverError("resolver unreachable".into()))
        }
    }
}

/// Starts discovery on `a` with a [`Counting`] discoverer that finds `b`, and waits until `a`
/// is connected to `b`; returns the round counter.
async fn discover_counting(
    a: &Node,
    b: &Node,
    good_rounds: usize,
    refresh: Option<Duration>,
) -> Arc<AtomicUsize> {
    let rounds = Arc::new(AtomicUsize::new(0));
    let discover = Counting {
        peers: vec![b.listen_addr().to_string()],
        rounds: rounds.clone(),
        good_rounds,
    };
    Discovery::start(a, discover, every(refresh));
    wait_until(|| a.is_connected(b.name())).await;
    rounds
}

/// Drops the connection from `b`'s side and waits for `a` to see it go and come back.
async fn dropped_then_reconnected(a: &Node, b: &Node) {
    let mut events = a.subscribe();
    assert!(b.disconnect(a.name()));
    next_event(&mut events, |e| {
        matches!(e, NodeEvent::NodeDown { peer, .. } if peer == b.name()).then_some(())
    })
    .await;
    next_event(&mut events, |e| {
        matches!(e, NodeEvent::NodeUp { peer, .. } if peer == b.name()).then_some(())
    })
    .await;
}

fn every(refresh: Option<Duration>) -> ReconcileConfig {
    ReconcileConfig {
        refresh_interval: refresh,
        ..ReconcileConfig::default()
    }
}

#[tokio::test]
async fn static_peers_are_connected_and_a_restarted_peer_is_reconnected_before_the_refresh() {
    let (b, c) = (loner("b").await, loner("c").await);
    let a = loner("a").await;
    // Its own address in the list is recognized and skipped.
    let list = vec![
        b.listen_addr().to_string(),
        c.listen_addr().to_string(),
        a.listen_addr().to_string(),
    ];
    Discovery::start(&a, StaticPeers(list), every(Some(HOUR)));
    wait_until(|| a.is_connected(b.name()) && a.is_connected(c.name())).await;
    let addr = b.listen_addr().to_string();
    b.shutdown().await;
    wait_until(|| !a.is_connected(b.name())).await;
    let mut restarted = loner_config("b");
    restarted.listen = addr;
    let b2 = Node::start(restarted).await.unwrap();
    wait_until(|| a.is_connected(b2.name())).await;
    assert_eq!(a.peers().len(), 2);
}

#[tokio::test]
async fn with_no_refresh_discovery_runs_once_and_a_drop_still_reconnects() {
    let b = loner("b").await;
    let a = loner("a").await;
    let rounds = discover_counting(&a, &b, usize::MAX, None).await;
    dropped_then_reconnected(&a, &b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rounds.load(Ordering::SeqCst),
        1,
        "discovered once, never re-queried"
    );
}

#[tokio::test]
async fn a_failing_discoverer_keeps_the_last_good_answer() {
    let b = loner("b").await;
    let a = loner("a").await;
    let rounds = discover_counting(&a, &b, 1, Some(Duration::from_millis(20))).await;
    wait_until(|| rounds.load(Ordering::SeqCst) >= 5).await;
    dropped_then_reconnected(&a, &b).await;
}

#[tokio::test]
async fn unrelated_events_do_not_stop_the_loop() {
    let b = loner("b").await;
    let a = loner("a").await;
    let rounds = discover_counting(&a, &b, usize::MAX, Some(Duration::from_millis(20))).await;
    // 200 node events that have nothing to do with the discovered peers.
    let others = [loner("x").await, loner("y").await];
    for i in 0..100 {
        let other = &others[i % 2];
        a.connect(other.listen_addr()).await.unwrap();
        a.disconnect(other.name());
        wait_until(|| !other.is_connected(a.name())).await;
    }
    let before = rounds.load(Ordering::SeqCst);
    wait_until(|| rounds.load(Ordering::SeqCst) >= before + 3).await;
    assert!(a.is_connected(b.name()));
}

/// Finds what the test says, as it says it now.
struct Switchable(Arc<std::sync::Mutex<Vec<String>>>);

impl Discover for Switchable {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn a_member_discovery_no_longer_finds_is_not_redialed_when_its_link_drops() {
    // `a` keeps connected to the members it knows (connect_all); `b` dials no one.
    let b = loner("b").await;
    let a = Node::start(common::config("a")).await.unwrap();
    let found = Arc::new(std::sync::Mutex::new(vec![b.listen_addr().to_string()]));
    let discovery = Discovery::start(
        &a,
        Switchable(found.clone()),
        every(Some(Duration::from_millis(20))),
    );
    let mut events = discovery.subscribe();
    // Both ends: `b` drops the link from its side below.
    let linked = || a.is_connected(b.name()) && b.is_connected(a.name());
    wait_until(linked).await;
    found.lock().unwrap().clear();
    loop {
        if let DiscoveryEvent::Removed(_) = events.recv().await.unwrap() {
            break;
        }
    }
    assert!(b.disconnect(a.name()));
    wait_until(|| !a.is_connected(b.name())).await;
    // The view would dial a lost member again at once: a quiet while shows it does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !a.is_connected(b.name()),
        "a member gone from discovery was redialed"
    );
    found.lock().unwrap().push(b.listen_addr().to_string());
    wait_until(linked).await;
    // Connected again, it is dialed again when its link drops, as any member.
    dropped_then_reconnected(&a, &b).await;
}

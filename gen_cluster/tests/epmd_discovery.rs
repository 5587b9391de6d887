//! EPMD discovery against Erlang's own `epmd` (Debian's erlang-base): our nodes register in it
//! and find each other through it; an Erlang node registered in the same epmd, with another
//! cookie, is refused both ways and never becomes a member. Where epmd or erl are not installed
//! it fails saying so, or is skipped when `GEN_CLUSTER_SKIP_REAL_PEERS` is set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{HANG, free_port, node, real_peer, wait_until};
use gen_cluster::{Discover, Discovery, DiscoveryEvent, Epmd, Node, ReconcileConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Erlang's epmd on its own loopback port, stopped when dropped.
async fn start_epmd(program: &std::path::Path) -> (Child, String) {
    let port = free_port();
    let child = Command::new(program)
        .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let probe = Epmd::new([addr.as_str()]);
    tokio::time::timeout(HANG, async {
        while probe.peers().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("epmd answers");
    (child, addr)
}

async fn registered(epmd: &str, count: usize) {
    let probe = Epmd::new([epmd]);
    tokio::time::timeout(HANG, async {
        while probe.peers().await.map(|p| p.len()).unwrap_or(0) < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every node registered");
}

fn every(ms: u64) -> ReconcileConfig {
    ReconcileConfig {
        refresh_interval: Some(Duration::from_millis(ms)),
        ..Default::default()
    }
}

#[tokio::test]
async fn our_nodes_find_each_other_in_a_real_epmd_and_an_erlang_node_is_refused() {
    let (Some(epmd), Some(erl)) = (real_peer("epmd"), real_peer("erl")) else {
        return;
    };
    let (_epmd, at) = start_epmd(&epmd).await;

    // An Erlang node with another cookie, registered in the same epmd; it pings our node "a".
    let port = at.rsplit_once(':').unwrap().1;
    let mut erlang = Command::new(erl)
        .env("ERL_EPMD_PORT", port)
        .args(["-name", "erlang@127.0.0.1", "-setcookie", "another-cookie", "-noshell"])
        .args([
            "-eval",
            "timer:sleep(1500), io:format(\"ping ~p~n\", [net_adm:ping('a@127.0.0.1')]), timer:sleep(60000)",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    registered(&at, 1).await;

    let nodes: Vec<Node> = futures::future::join_all(["a", "b", "c"].map(node)).await;
    let mut events = Vec::new();
    for n in &nodes {
        Epmd::register(n, &at);
        events.push(Discovery::start(n, Epmd::new([at.as_str()]), every(100)).into_events());
    }
    registered(&at, 4).await;
    wait_until(|| nodes.iter().all(|n| n.peers().len() == 2)).await;

    // Each node dialed the Erlang node and was refused at the handshake.
    for events in &mut events {
        tokio::time::timeout(HANG, async {
            loop {
                if let DiscoveryEvent::ConnectFailed { error, .. } = events.recv().await.unwrap() {
                    break error;
                }
            }
        })
        .await
        .expect("the Erlang node was dialed and refused");
    }
    // And the Erlang node's own attempt to reach "a" failed.
    let mut lines = BufReader::new(erlang.stdout.take().unwrap()).lines();
    let ping = tokio::time::timeout(HANG, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ping.as_deref(), Some("ping pang"));
    for n in &nodes {
        let peers: Vec<String> = n.peers().iter().map(|p| p.name.to_string()).collect();
        assert_eq!(peers.len(), 2, "{}: {peers:?}", n.name());
        assert!(!peers.iter().any(|p| p.contains("erlang")));
    }
}

#[tokio::test]
async fn a_registration_comes_back_after_epmd_restarts() {
    let Some(program) = real_peer("epmd") else {
        return;
    };
    let (first, at) = start_epmd(&program).await;
    let a = node("a").await;
    Epmd::register(&a, &at);
    registered(&at, 1).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = at.rsplit_once(':').unwrap().1;
    let _second = Command::new(&program)
        .args(["-port", port, "-address", "127.0.0.1"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    registered(&at, 1).await;
}

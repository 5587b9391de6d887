//! The cluster view through the runtime: nodes seeded with one node come to know and connect to
//! every other; a node that shuts down is `left` and out of the group; a hidden client is
//! no member anywhere; a hung node is declared down by its few watchers and closed out by
//! everyone, and a restarted one is not, for the loss of its earlier life; a peer is sent what changed in a node's record, or the whole record if its link
//! speaks an earlier protocol. Waits follow the published view and the events, bounded by a hang
//! timeout.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{HANG, Net, config};
use gen_cluster::{
    ClusterView, DownReason, LivenessConfig, MemoryNetwork, Node, NodeEvent, NodeName, NodeState,
};
use gen_cluster_proto::handshake::{SUPPORTED_VERSIONS, VersionRange};
use gen_cluster_proto::view::ViewMessage;
use gen_cluster_proto::wire::{self, Dest, Header};
use tokio::sync::broadcast::error::TryRecvError;

/// Waits until `node`'s view satisfies `done`.
async fn view_until(node: &Node, what: &str, done: impl Fn(&ClusterView) -> bool) {
    let mut changes = node.view_changes();
    tokio::time::timeout(HANG, async {
        while !done(&changes.borrow_and_update()) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{}: {what}; its view: {:?}", node.name(), node.view()));
}

fn names(nodes: &[Node]) -> BTreeSet<NodeName> {
    nodes.iter().map(|node| node.name().clone()).collect()
}

async fn twenty_nodes_seeded_with_one_come_to_a_full_mesh(net: Net) {
    // Over loopback every dial comes from 127.0.0.1: room for all of them among the handshakes
    // a node takes from one address before it proves the secret (hosts of their own need not).
    // 380 links of a debug build on two cores: a failure-detector deadline that starved tasks
    // cannot miss (the test is about the mesh, not the detector).
    let start = |name: String| {
        let mut config = config(&name);
        config.max_pending_per_source = config.max_pending_handshakes;
        config.liveness = LivenessConfig {
            heartbeat_interval: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            ..LivenessConfig::default()
        };
        net.start(config)
    };
    let seed = start("n00".into()).await;
    let mut nodes = vec![seed.clone()];
    for i in 1..20 {
        let node = start(format!("n{i:02}")).await;
        node.connect(seed.listen_addr()).await.unwrap();
        nodes.push(node);
    }
    let everyone = names(&nodes);
    for node in &nodes {
        view_until(node, "connected to all 19 others in one group", |view| {
            view.group == everyone && view.nodes.iter().all(|known| known.state == NodeState::Up)
        })
        .await;
        assert_eq!(node.peers().len(), 19, "{}", node.name());
    }
}

/// Reads `raw`'s frames until a view message to it satisfies `wanted`.
async fn view_message_until(raw: &mut common::Raw, wanted: impl Fn(&ViewMessage) -> bool) {
    tokio::time::timeout(HANG, async {
        loop {
            let frame = raw.read_frame().await;
            let (header, payload) = wire::decode(&frame).unwrap();
            let Header::Send {
                to: Dest::Name("gen_cluster.view"),
                ..
            } = header
            else {
                continue;
            };
            if wanted(&postcard::from_bytes(payload).unwrap()) {
                return;
            }
        }
    })
    .await
    .expect("the view message comes");
}

async fn a_peer_is_sent_what_changed_and_one_of_an_earlier_protocol_whole_records(net: Net) {
    let earlier = VersionRange { min: 4, max: 6 };
    for (versions, changes) in [(SUPPORTED_VERSIONS, true), (earlier, false)] {
        let v = versions.max;
        let (a, b) = (
            net.node(&format!("a{v}")).await,
            net.node(&format!("b{v}")).await,
        );
        let mut raw = net
            .authenticated_speaking(a.listen_addr(), &format!("r{v}"), versions)
            .await;
        // r is sent a's whole record first, as every new link is.
        let a_name = a.name().clone();
        view_message_until(&mut raw, |message| {
            matches!(message, ViewMessage::Records(records)
                if records.iter().any(|record| record.name == a_name))
        })
        .await;
        b.connect(a.listen_addr()).await.unwrap();
        let b_name = b.name().clone();
        view_message_until(&mut raw, |message| match message {
            ViewMessage::Changes(sent) => {
                assert!(changes, "a change sent over version {v}");
                sent.iter()
                    .any(|change| change.name == a_name && change.linked.contains(&b_name))
            }
            ViewMessage::Records(records) => {
                let listed = records
                    .iter()
                    .any(|record| record.name == a_name && record.links.contains(&b_name));
                assert!(!(listed && changes), "a whole record sent over version {v}");
                listed
            }
            _ => false,
        })
        .await;
        for node in [a, b] {
            node.shutdown().await;
        }
    }
}

async fn a_node_that_shuts_down_is_left_out(net: Net) {
    let nodes = [
        net.node("a").await,
        net.node("b").await,
        net.node("c").await,
    ];
    for node in &nodes[1..] {
        node.connect(nodes[0].listen_addr()).await.unwrap();
    }
    let everyone = names(&nodes);
    view_until(&nodes[1], "in one group with a and c", |view| {
        view.group == everyone
    })
    .await;
    nodes[2].shutdown().await;
    view_until(&nodes[0], "c left", |view| {
        view.state(nodes[2].name()) == Some(NodeState::Left)
    })
    .await;
    assert!(!nodes[0].view().group.contains(nodes[2].name()));
}

async fn a_hidden_client_is_no_member_and_no_event(net: Net) {
    let (a, b) = net.pair().await;
    view_until(&b, "a up", |view| {
        view.state(a.name()) == Some(NodeState::Up)
    })
    .await;
    let mut events = [a.subscribe(), b.subscribe()];
    let mut hidden = config("client");
    hidden.hidden = true;
    for _ in 0..5 {
        let client = net.start(hidden.clone()).await;
        client.connect(a.listen_addr()).await.unwrap();
        assert_eq!(
            client.view().nodes.len(),
            1,
            "a hidden node's view holds itself"
        );
        client.shutdown().await;
    }
    // One more change of the view that crosses every link, to be sure nothing else is on its
    // way: a third node joins, and every view holds exactly the three members.
    let c = net.node("c").await;
    c.connect(a.listen_addr()).await.unwrap();
    let members = names(&[a.clone(), b.clone(), c.clone()]);
    for node in [&a, &b, &c] {
        view_until(node, "the three members", |view| {
            view.nodes
                .iter()
                .map(|known| &known.name)
                .eq(members.iter())
                && view.group == members
        })
        .await;
    }
    for events in &mut events {
        loop {
            match events.try_recv() {
                Ok(NodeEvent::NodeUp { peer, .. } | NodeEvent::NodeDown { peer, .. }) => {
                    assert_eq!(peer.as_str(), "c", "only members are reported")
                }
                Ok(_) => {}
                Err(TryRecvError::Empty) => break,
                Err(error) => panic!("{error:?}"),
            }
        }
    }
}

/// Four nodes; d leaves, and a later life of d is seeded with a alone. b and c still say they
/// lost d (its earlier life) when a meets the new one: that must not make d unreachable, which
/// would disconnect it everywhere for a moment.
async fn a_restarted_node_is_not_closed_out_for_the_loss_of_its_earlier_life(net: Net) {
    let mut nodes = net.mesh(&["a", "b", "c", "d"]).await;
    let everyone = names(&nodes);
    let gone = nodes.pop().unwrap();
    gone.shutdown().await;
    for node in &nodes {
        view_until(node, "d left", |view| {
            view.state(gone.name()) == Some(NodeState::Left)
        })
        .await;
    }
    let mut events: Vec<_> = nodes.iter().map(Node::subscribe).collect();
    let back = net.node("d").await;
    back.connect(nodes[0].listen_addr()).await.unwrap();
    nodes.push(back);
    for node in &nodes {
        view_until(node, "all four in one group again", |view| {
            view.group == everyone
        })
        .await;
    }
    for (node, events) in nodes.iter().zip(&mut events) {
        loop {
            match events.try_recv() {
                Ok(NodeEvent::NodeDown { peer, reason, .. }) => {
                    panic!("{}: {peer} down ({reason}) after its restart", node.name())
                }
                Ok(_) => {}
                Err(TryRecvError::Empty) => break,
                Err(error) => panic!("{error:?}"),
            }
        }
    }
}

on_both_transports!(
    twenty_nodes_seeded_with_one_come_to_a_full_mesh,
    a_node_that_shuts_down_is_left_out,
    a_restarted_node_is_not_closed_out_for_the_loss_of_its_earlier_life,
    a_hidden_client_is_no_member_and_no_event,
    a_peer_is_sent_what_changed_and_one_of_an_earlier_protocol_whole_records,
);

/// Eight nodes, each watched by two others: a node that hangs (the in-memory network holds every
/// byte to and from it, its connections stay open) is found silent by its two watchers alone —
/// the other links to it carry no heartbeats — and every other node then closes its link to it
/// as unreachable and holds it down. Let go, it is back in everyone's group.
#[tokio::test(start_paused = true)]
async fn a_hung_node_is_found_by_its_watchers_and_closed_out_by_everyone() {
    let memory = MemoryNetwork::new();
    let net = Net::Memory(memory.clone());
    let mut nodes = Vec::new();
    for i in 0..8 {
        let mut config = config(&format!("w{i}"));
        config.liveness.monitors = 2;
        nodes.push(net.start(config).await);
    }
    for node in &nodes[1..] {
        node.connect(nodes[0].listen_addr()).await.unwrap();
    }
    let everyone = names(&nodes);
    for node in &nodes {
        view_until(node, "all eight in one group", |view| {
            view.group == everyone
        })
        .await;
    }
    let hung = nodes[3].name().clone();
    let others: Vec<&Node> = nodes.iter().filter(|n| *n.name() != hung).collect();
    let mut events: Vec<_> = others.iter().map(|node| node.subscribe()).collect();
    memory.isolate(hung.as_str());
    let mut reasons = Vec::new();
    for (node, events) in others.iter().zip(&mut events) {
        let reason = tokio::time::timeout(HANG, async {
            loop {
                if let NodeEvent::NodeDown { peer, reason, .. } = events.recv().await.unwrap()
                    && peer == hung
                {
                    return reason;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} never closed its link to {hung}", node.name()));
        reasons.push(reason);
    }
    // The in-memory network holds the bytes of an isolated host but not the end of its
    // connections: the two peers the hung node watches may see it drop their links (its own
    // detector found them silent) before the verdict reaches them.
    let found = reasons
        .iter()
        .filter(|r| matches!(r, DownReason::Unresponsive { .. }))
        .count();
    let followed = reasons
        .iter()
        .filter(|r| matches!(r, DownReason::Unreachable))
        .count();
    let dropped = reasons
        .iter()
        .filter(|r| matches!(r, DownReason::ConnectionLost(_)))
        .count();
    assert!(
        found == 2 && followed >= 3 && followed + dropped == 5,
        "its two watchers find it silent, the five others follow them: {reasons:?}"
    );
    for node in &others {
        view_until(node, "the hung node down", |view| {
            view.state(&hung) == Some(NodeState::Down) && !view.group.contains(&hung)
        })
        .await;
    }
    memory.heal_all();
    for node in &nodes {
        view_until(node, "all eight in one group again", |view| {
            view.group == everyone
        })
        .await;
    }
}

/// A node gone for the others (here cut off: it hangs for them) for `forget_gone_after` is
/// forgotten by them — out of their views — and not before; when it comes
/// back (it dials one of them), it is taken again and all are one group.
#[tokio::test(start_paused = true)]
async fn a_node_gone_for_a_while_is_forgotten_and_taken_again_when_it_comes_back() {
    let forget_after = Duration::from_secs(10);
    let memory = MemoryNetwork::new();
    let net = Net::Memory(memory.clone());
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let mut config = config(name);
        config.forget_gone_after = forget_after;
        nodes.push(net.start(config).await);
    }
    for node in &nodes[1..] {
        node.connect(nodes[0].listen_addr()).await.unwrap();
    }
    let everyone = names(&nodes);
    for node in &nodes {
        view_until(node, "all three in one group", |view| {
            view.group == everyone
        })
        .await;
    }
    let gone = nodes[2].name().clone();
    memory.isolate(gone.as_str());
    for node in &nodes[..2] {
        view_until(node, "c down", |view| {
            view.state(&gone) == Some(NodeState::Down)
        })
        .await;
    }
    let down_at = tokio::time::Instant::now();
    for node in &nodes[..2] {
        view_until(node, "c forgotten", |view| view.state(&gone).is_none()).await;
    }
    let forgotten_after = down_at.elapsed();
    assert!(
        forgotten_after >= forget_after - Duration::from_secs(1),
        "forgotten {forgotten_after:?} after it was down for both, before {forget_after:?}"
    );
    memory.heal_all();
    nodes[2].connect(nodes[0].listen_addr()).await.unwrap();
    for node in &nodes {
        view_until(node, "all three in one group again", |view| {
            view.group == everyone
        })
        .await;
    }
}

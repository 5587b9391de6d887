//! The gen_leader behaviour over real nodes in one process: one leader agreed at start, with
//! `elected` once on it and `surrendered` once on every other candidate; leader calls routed to
//! it and failing fast when it is lost; a restarted leader back as a follower with the state;
//! workers; partitions whose two sides both wrote, merged after the heal; a disconnect and
//! reconnect leaving exactly one leader; a node with another candidate list refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HANG, mesh, node, wait_until};
use gen_cluster::services::dict::{Dict, Read, ReadReply, Write};
use gen_cluster::{
    ElectionId, Leader, LeaderCallError, LeaderConfig, LeaderFlow, LeaderReplyTo, LeaderServer,
    LeaderStatus, Node, NodeName,
};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Elected(Option<NodeName>),
    Surrendered(NodeName),
    FromLeader(u64),
    Down(NodeName),
}

/// A counter that records every callback.
#[derive(Default)]
struct Probe {
    total: u64,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Probe {
    fn new() -> (Self, Arc<Mutex<Vec<Seen>>>) {
        let probe = Self::default();
        let seen = probe.seen.clone();
        (probe, seen)
    }

    fn saw(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }
}

impl LeaderServer for Probe {
    type State = u64;
    type Call = u64;
    type Reply = u64;
    type Cast = u64;
    type Broadcast = u64;
    type LocalCall = ();
    type LocalReply = u64;
    type LocalCast = u64;

    fn elected(&mut self, _: &ElectionId, joined: Option<&NodeName>) -> u64 {
        self.saw(Seen::Elected(joined.cloned()));
        self.total
    }

    fn surrendered(&mut self, state: u64, election: &ElectionId) {
        self.saw(Seen::Surrendered(election.leader.clone()));
        self.total = state;
    }

    fn handle_leader_call(
        &mut self,
        add: u64,
        from: LeaderReplyTo<Self>,
        _: &ElectionId,
    ) -> LeaderFlow<u64> {
        self.total += add;
        from.reply(self.total);
        LeaderFlow::Broadcast(self.total)
    }

    fn from_leader(&mut self, total: u64, _: &ElectionId) {
        self.saw(Seen::FromLeader(total));
        self.total = total;
    }

    fn handle_down(&mut self, node: &NodeName, _: &ElectionId) -> LeaderFlow<u64> {
        self.saw(Seen::Down(node.clone()));
        LeaderFlow::Continue
    }

    fn stepping_down(&mut self, _: &NodeName) -> u64 {
        self.total
    }

    fn merge(&mut self, theirs: u64, _: &NodeName, _: &ElectionId) -> LeaderFlow<u64> {
        self.total += theirs;
        LeaderFlow::Broadcast(self.total)
    }

    fn handle_call(&mut self, _: (), _: &LeaderStatus) -> u64 {
        self.total
    }

    /// A local cast sets the node's own copy, nobody else's.
    fn handle_cast(&mut self, total: u64, _: &LeaderStatus) {
        self.total = total;
    }
}

const T: Duration = Duration::from_secs(5);

fn names(nodes: &[Node]) -> Vec<NodeName> {
    nodes.iter().map(|n| n.name().clone()).collect()
}

fn leader_config(candidates: Vec<NodeName>) -> LeaderConfig {
    let mut config = LeaderConfig::new("test", candidates);
    config.start_grace = Duration::from_millis(300);
    config
}

/// A `Probe` instance of the election among `candidates` on each node.
async fn start_probes(nodes: &[Node], candidates: &[NodeName]) -> Vec<Leader<Probe>> {
    let mut instances = Vec::new();
    for node in nodes {
        let config = leader_config(candidates.to_vec());
        instances.push(Leader::start(node, config, Probe::default()).await.unwrap());
    }
    instances
}

async fn leader_of<B: LeaderServer>(leader: &Leader<B>) -> Option<NodeName> {
    leader.status(T).await.unwrap().leader
}

/// Waits until every instance names `expected` as leader.
async fn agreed<B: LeaderServer>(instances: &[Leader<B>], expected: &NodeName) {
    tokio::time::timeout(HANG, async {
        loop {
            let mut all = true;
            for instance in instances {
                all &= leader_of(instance).await.as_ref() == Some(expected);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every instance follows the expected leader");
}

#[tokio::test]
async fn candidates_started_together_agree_on_one_leader_elected_once_surrendered_once() {
    for count in 2..=5usize {
        let all = ["a", "b", "c", "d", "e"];
        let nodes = mesh(&all[..count]).await;
        let candidates = names(&nodes);
        let mut instances = Vec::new();
        let mut logs = Vec::new();
        for node in &nodes {
            let (probe, seen) = Probe::new();
            instances.push(
                Leader::start(node, leader_config(candidates.clone()), probe)
                    .await
                    .unwrap(),
            );
            logs.push(seen);
        }
        agreed(&instances, &candidates[0]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = logs[0].lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![Seen::Elected(None)],
            "{count} nodes: the leader's callbacks"
        );
        for (i, log) in logs.iter().enumerate().skip(1) {
            let seen = log.lock().unwrap().clone();
            assert_eq!(
                seen,
                vec![Seen::Surrendered(candidates[0].clone())],
                "{count} nodes: node {i}"
            );
        }
        for node in &nodes {
            node.shutdown().await;
        }
    }
}

#[tokio::test]
async fn leader_calls_reach_the_leader_from_every_node_and_fail_fast_when_it_is_lost() {
    let nodes = mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let instances = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    assert_eq!(instances[2].leader_call(5, T).await.unwrap(), 5);
    assert_eq!(instances[0].leader_call(1, T).await.unwrap(), 6);
    wait_until_value(&instances[1], 6).await;

    // Calls racing the leader's loss: each one succeeds or fails with LeaderDied, at once.
    let racing: Vec<_> = (0..50)
        .map(|_| {
            let instance = instances[2].clone();
            tokio::spawn(async move { instance.leader_call(1, T).await })
        })
        .collect();
    let dying = nodes[0].clone();
    tokio::spawn(async move { dying.shutdown().await });
    for call in racing {
        match tokio::time::timeout(T / 2, call)
            .await
            .expect("no call hangs")
            .unwrap()
        {
            Ok(_) | Err(LeaderCallError::LeaderDied) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    agreed(&instances[1..], &candidates[1]).await;
    assert!(
        instances[2].leader_call(1, T).await.unwrap() >= 7,
        "the new leader has the state"
    );
    let changes = instances[2].leader_changes().expect("a local handle");
    let followed = changes.borrow().as_ref().map(|e| e.leader.clone());
    assert_eq!(
        followed.as_ref(),
        Some(&candidates[1]),
        "the watch names the new leader"
    );
    let remote = Leader::<Probe>::at(&nodes[1], nodes[2].name(), "test");
    assert!(remote.leader_changes().is_none());
}

async fn wait_until_value(instance: &Leader<Probe>, value: u64) {
    tokio::time::timeout(HANG, async {
        while instance.call((), T).await.unwrap() != value {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the broadcast arrives");
}

#[tokio::test]
async fn a_restarted_leader_comes_back_as_a_follower_and_gets_the_state() {
    let nodes = mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let instances = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    instances[1].leader_call(10, T).await.unwrap();
    nodes[0].shutdown().await;
    agreed(&instances[1..], &candidates[1]).await;
    instances[2].leader_call(1, T).await.unwrap();

    let a = node("a").await;
    a.connect(nodes[1].listen_addr()).await.unwrap();
    a.connect(nodes[2].listen_addr()).await.unwrap();
    let (probe, seen) = Probe::new();
    let back = Leader::start(&a, leader_config(candidates.clone()), probe)
        .await
        .unwrap();
    agreed(
        &[back.clone(), instances[1].clone(), instances[2].clone()],
        &candidates[1],
    )
    .await;
    assert_eq!(
        back.call((), T).await.unwrap(),
        11,
        "the follower got the leader's state"
    );
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, Seen::Elected(_))),
        "never led"
    );
}

#[tokio::test]
async fn workers_follow_never_lead_and_a_late_worker_is_taken_in() {
    let nodes = mesh(&["a", "b", "w1"]).await;
    let candidates = vec![nodes[0].name().clone(), nodes[1].name().clone()];
    let mut instances = Vec::new();
    let mut logs = Vec::new();
    for node in &nodes {
        let (probe, seen) = Probe::new();
        instances.push(
            Leader::start(node, leader_config(candidates.clone()), probe)
                .await
                .unwrap(),
        );
        logs.push(seen);
    }
    agreed(&instances, &candidates[0]).await;
    instances[2].leader_call(3, T).await.unwrap();

    let late = node("w2").await;
    for n in &nodes {
        late.connect(n.listen_addr()).await.unwrap();
    }
    let (probe, late_seen) = Probe::new();
    let late = Leader::start(&late, leader_config(candidates.clone()), probe)
        .await
        .unwrap();
    agreed(std::slice::from_ref(&late), &candidates[0]).await;
    assert_eq!(
        late.call((), T).await.unwrap(),
        3,
        "the late worker got the state"
    );
    instances[1].leader_call(1, T).await.unwrap();
    wait_until_value(&late, 4).await;

    // Both candidates gone: the workers never lead.
    nodes[0].shutdown().await;
    nodes[1].shutdown().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(leader_of(&instances[2]).await, None);
    assert_eq!(leader_of(&late).await, None);
    for log in [&logs[2], &late_seen] {
        let seen = log.lock().unwrap().clone();
        assert!(
            seen.iter().any(|s| matches!(s, Seen::Surrendered(_))),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|s| matches!(s, Seen::FromLeader(_))),
            "{seen:?}"
        );
        assert!(
            !seen.iter().any(|s| matches!(s, Seen::Elected(_))),
            "{seen:?}"
        );
    }
    let status = instances[2].status(T).await.unwrap();
    assert_eq!(status.down, candidates, "both candidates are down");
}

/// Cuts `side` off from every other node.
fn partition(side: &[&Node], rest: &[&Node]) {
    for a in side {
        for b in rest {
            a.disconnect(b.name());
        }
    }
}

async fn heal(nodes: &[&Node]) {
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if !a.is_connected(b.name()) {
                a.connect(b.listen_addr()).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn both_sides_of_a_partition_write_and_after_the_heal_one_leader_holds_both_keys() {
    let nodes = mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let mut dicts = Vec::new();
    for node in &nodes {
        let mut config = leader_config(candidates.clone());
        config.name = "dict".into();
        dicts.push(Leader::start(node, config, Dict::default()).await.unwrap());
    }
    agreed(&dicts, &candidates[0]).await;
    dicts[1]
        .leader_call(Write::Put("before".into(), "0".into()), T)
        .await
        .unwrap();

    partition(&[&nodes[0]], &[&nodes[1], &nodes[2]]);
    agreed(&dicts[1..], &candidates[1]).await;
    dicts[0]
        .leader_call(Write::Put("island-a".into(), "1".into()), T)
        .await
        .unwrap();
    dicts[2]
        .leader_call(Write::Put("island-bc".into(), "2".into()), T)
        .await
        .unwrap();
    dicts[2]
        .leader_call(Write::Delete("before".into()), T)
        .await
        .unwrap();

    let healed = std::time::Instant::now();
    heal(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    agreed(&dicts, &candidates[0]).await;
    let expected = ReadReply::All(vec![
        ("island-a".into(), "1".into()),
        ("island-bc".into(), "2".into()),
    ]);
    for dict in &dicts {
        tokio::time::timeout(HANG, async {
            while dict.call(Read::List, T).await.unwrap() != expected {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("both sides' writes on every node");
    }
    assert!(
        healed.elapsed() < Duration::from_secs(1),
        "merged in {:?}",
        healed.elapsed()
    );
}

#[tokio::test]
async fn connect_disconnect_reconnect_leaves_exactly_one_leader() {
    let nodes = mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let instances = start_probes(&nodes, &candidates).await;
    for round in 0..5 {
        agreed(&instances, &candidates[0]).await;
        nodes[0].disconnect(nodes[1].name());
        wait_until(|| !nodes[1].is_connected(nodes[0].name())).await;
        agreed(&instances[1..], &candidates[1]).await;
        nodes[1].connect(nodes[0].listen_addr()).await.unwrap();
        agreed(&instances, &candidates[0]).await;
        let leaders = [
            leader_of(&instances[0]).await,
            leader_of(&instances[1]).await,
        ];
        assert_eq!(
            leaders,
            [Some(candidates[0].clone()), Some(candidates[0].clone())],
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_node_with_another_candidate_list_is_refused() {
    let nodes = mesh(&["a", "b"]).await;
    let ours = names(&nodes);
    let theirs = vec![ours[1].clone(), ours[0].clone()];
    let a = Leader::start(&nodes[0], leader_config(ours.clone()), Probe::default())
        .await
        .unwrap();
    let b = Leader::start(&nodes[1], leader_config(theirs), Probe::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = a.status(T).await.unwrap();
    assert_eq!(status.alive, vec![ours[0].clone()], "b is not taken in");
    assert_eq!(status.refused, vec![ours[1].clone()], "and it says why");
    assert_eq!(b.status(T).await.unwrap().alive, vec![ours[1].clone()]);
}

#[tokio::test]
async fn a_candidate_added_later_goes_at_the_end_of_the_order() {
    let nodes = mesh(&["a", "b", "c"]).await;
    let first_two = vec![nodes[0].name().clone(), nodes[1].name().clone()];
    let all = names(&nodes);
    let mut instances = Vec::new();
    for node in &nodes[..2] {
        instances.push(
            Leader::start(node, leader_config(first_two.clone()), Probe::default())
                .await
                .unwrap(),
        );
    }
    agreed(&instances, &all[0]).await;
    instances.push(
        Leader::start(&nodes[2], leader_config(all.clone()), Probe::default())
            .await
            .unwrap(),
    );
    agreed(&instances, &all[0]).await;
    for instance in &instances {
        tokio::time::timeout(HANG, async {
            while instance.status(T).await.unwrap().candidates != all {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every node adopts the longer list");
    }
    // The newcomer leads only once both earlier candidates are gone.
    nodes[0].shutdown().await;
    agreed(&instances[1..], &all[1]).await;
    nodes[1].shutdown().await;
    agreed(&instances[2..], &all[2]).await;
}

#[tokio::test]
async fn local_calls_and_casts_reach_this_nodes_instance_only() {
    let nodes = mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let a = Leader::start(
        &nodes[0],
        leader_config(candidates.clone()),
        Probe::default(),
    )
    .await
    .unwrap();
    let b = Leader::start(
        &nodes[1],
        leader_config(candidates.clone()),
        Probe::default(),
    )
    .await
    .unwrap();
    agreed(&[a.clone(), b.clone()], &candidates[0]).await;
    b.cast(42).unwrap();
    wait_until_value(&b, 42).await;
    assert_eq!(a.call((), T).await.unwrap(), 0);
    assert_eq!(
        b.leader_call_retried(1, T).await.unwrap(),
        1,
        "the leader's own total"
    );
}

//! The gen_leader behaviour over real nodes in one process: one leader agreed at start, with
//! `elected` once on it and `surrendered` once on every other candidate; leader calls routed to
//! it and failing fast when it is lost, or at once when they cannot be sent; a handle on another
//! node's instance; a restarted leader back as a follower with the state; workers; partitions
//! whose two sides both wrote, merged after the heal; a disconnect and reconnect leaving exactly
//! one leader; a node with another candidate list refused. Each scenario runs over loopback TCP
//! and over the in-memory network in paused time; waits follow the election's own watch and the
//! probes' totals.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HANG, Net, connect, loner_config, next_event};
use gen_cluster::services::dict::{Dict, Read, ReadReply, Request, Write};
use gen_cluster::{
    ElectionId, Leader, LeaderCallError, LeaderConfig, LeaderFlow, LeaderReplyTo, LeaderServer,
    LeaderStatus, Node, NodeEvent, NodeName,
};
use gen_cluster_proto::wire::WireError;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Elected(Option<NodeName>),
    Surrendered(NodeName),
    FromLeader(u64),
    Down(NodeName),
}

/// A counter that records every callback, and publishes its total.
struct Probe {
    total: u64,
    seen: Arc<Mutex<Vec<Seen>>>,
    published: watch::Sender<u64>,
}

/// What a test sees of a probe: its callbacks and its total.
#[derive(Clone)]
struct Log {
    seen: Arc<Mutex<Vec<Seen>>>,
    total: watch::Receiver<u64>,
}

impl Log {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the probe's total is `value` (a broadcast or a cast arrived).
    async fn reaches(&self, value: u64) {
        let mut total = self.total.clone();
        tokio::time::timeout(HANG, total.wait_for(|t| *t == value))
            .await
            .expect("the total arrives")
            .unwrap();
    }
}

impl Probe {
    fn new() -> (Self, Log) {
        let (published, total) = watch::channel(0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = Self {
            total: 0,
            seen: Arc::clone(&seen),
            published,
        };
        (probe, Log { seen, total })
    }

    fn saw(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn set(&mut self, total: u64) {
        self.total = total;
        self.published.send_replace(total);
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
        self.set(state);
    }

    fn handle_leader_call(
        &mut self,
        add: u64,
        from: LeaderReplyTo<Self>,
        _: &ElectionId,
    ) -> LeaderFlow<u64> {
        self.set(self.total + add);
        from.reply(self.total);
        LeaderFlow::Broadcast(self.total)
    }

    fn handle_leader_cast(&mut self, add: u64, _: &ElectionId) -> LeaderFlow<u64> {
        self.set(self.total + add);
        LeaderFlow::Broadcast(self.total)
    }

    fn from_leader(&mut self, total: u64, _: &ElectionId) {
        self.saw(Seen::FromLeader(total));
        self.set(total);
    }

    fn handle_down(&mut self, node: &NodeName, _: &ElectionId) -> LeaderFlow<u64> {
        self.saw(Seen::Down(node.clone()));
        LeaderFlow::Continue
    }

    fn stepping_down(&mut self, _: &NodeName) -> u64 {
        self.total
    }

    fn merge(&mut self, theirs: u64, _: &NodeName, _: &ElectionId) -> LeaderFlow<u64> {
        self.set(self.total + theirs);
        LeaderFlow::Broadcast(self.total)
    }

    fn handle_call(&mut self, _: (), _: &LeaderStatus) -> u64 {
        self.total
    }

    /// A local cast sets the node's own copy, nobody else's.
    fn handle_cast(&mut self, total: u64, _: &LeaderStatus) {
        self.set(total);
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

/// A `Probe` instance of the election among `candidates` on each node, and their logs.
async fn start_probes(nodes: &[Node], candidates: &[NodeName]) -> (Vec<Leader<Probe>>, Vec<Log>) {
    let mut instances = Vec::new();
    let mut logs = Vec::new();
    for node in nodes {
        let (probe, log) = Probe::new();
        let config = leader_config(candidates.to_vec());
        instances.push(Leader::start(node, config, probe).await.unwrap());
        logs.push(log);
    }
    (instances, logs)
}

/// The global dictionary among `candidates` on each node.
async fn start_dicts(nodes: &[Node], candidates: &[NodeName]) -> Vec<Leader<Dict>> {
    let mut dicts = Vec::new();
    for node in nodes {
        let mut config = leader_config(candidates.to_vec());
        config.name = "dict".into();
        dicts.push(Leader::start(node, config, Dict::default()).await.unwrap());
    }
    dicts
}

async fn leader_of<B: LeaderServer>(leader: &Leader<B>) -> Option<NodeName> {
    leader.status(T).await.unwrap().leader
}

/// The leader `instance`'s node follows, as its watch says.
fn followed<B: LeaderServer>(instance: &Leader<B>) -> Option<NodeName> {
    let changes = instance.leader_changes().expect("a local handle");
    changes.borrow().as_ref().map(|e| e.leader.clone())
}

/// Waits until every instance follows `expected` (`None`: no leader), on the election's watch.
async fn following<B: LeaderServer>(instances: &[Leader<B>], expected: Option<&NodeName>) {
    let all = async {
        while instances.iter().any(|i| followed(i).as_ref() != expected) {
            for instance in instances {
                let mut changes = instance.leader_changes().expect("a local handle");
                let there = changes.wait_for(|e| e.as_ref().map(|e| &e.leader) == expected);
                there.await.unwrap();
            }
        }
    };
    tokio::time::timeout(HANG, all)
        .await
        .expect("every instance follows the expected leader");
}

async fn agreed<B: LeaderServer>(instances: &[Leader<B>], expected: &NodeName) {
    following(instances, Some(expected)).await
}

/// Polls `condition` for state that has no event to wait on (a value replicated by broadcast),
/// bounded by the hang bound.
async fn eventually<F: Future<Output = bool>>(mut condition: impl FnMut() -> F) {
    tokio::time::timeout(HANG, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the condition holds before the hang bound");
}

async fn candidates_started_together_agree_on_one_leader_elected_once_surrendered_once(net: Net) {
    for count in 2..=5usize {
        let all = ["a", "b", "c", "d", "e"];
        let nodes = net.mesh(&all[..count]).await;
        let candidates = names(&nodes);
        let (instances, logs) = start_probes(&nodes, &candidates).await;
        agreed(&instances, &candidates[0]).await;
        // Frames on a link are ordered: once every member has answered a leader call, the
        // leader's `elected` state has reached them all.
        for instance in &instances {
            instance.leader_call(0, T).await.unwrap();
        }
        assert_eq!(
            logs[0].seen(),
            vec![Seen::Elected(None)],
            "{count} nodes: the leader's callbacks"
        );
        for (i, log) in logs.iter().enumerate().skip(1) {
            let seen: Vec<Seen> = log
                .seen()
                .into_iter()
                .filter(|s| !matches!(s, Seen::FromLeader(_)))
                .collect();
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

async fn leader_calls_reach_the_leader_from_every_node_and_fail_fast_when_it_is_lost(net: Net) {
    let nodes = net.mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let (instances, logs) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    assert_eq!(instances[2].leader_call(5, T).await.unwrap(), 5);
    assert_eq!(instances[0].leader_call(1, T).await.unwrap(), 6);
    logs[1].reaches(6).await;

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
    assert_eq!(
        followed(&instances[2]).as_ref(),
        Some(&candidates[1]),
        "the watch names the new leader"
    );
    let remote = Leader::<Probe>::at(&nodes[1], nodes[2].name(), "test");
    assert!(remote.leader_changes().is_none());
}

async fn a_handle_on_another_nodes_instance_reaches_the_leader_through_it(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let (instances, logs) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    // A client that runs no instance, connected to the follower only.
    let mut hidden = loner_config("client");
    hidden.hidden = true;
    let client = net.start(hidden).await;
    client.connect(nodes[1].listen_addr()).await.unwrap();
    let through_follower = Leader::<Probe>::at(&client, nodes[1].name(), "test");
    assert_eq!(through_follower.leader_call(4, T).await.unwrap(), 4);
    logs[1].reaches(4).await;
    let through_leader = Leader::<Probe>::at(&client, nodes[0].name(), "test");
    assert_eq!(
        through_leader.leader_call(1, T).await,
        Err(LeaderCallError::NotRunning),
        "not connected to the leader's node"
    );
    client.connect(nodes[0].listen_addr()).await.unwrap();
    assert_eq!(through_leader.leader_call(1, T).await.unwrap(), 5);
    let unknown = Leader::<Probe>::at(&client, nodes[0].name(), "no-such-election");
    assert_eq!(
        unknown.leader_call(1, T).await,
        Err(LeaderCallError::NotRunning)
    );
    // The leader is lost while the follower holds a forwarded call: LeaderDied, at once.
    let mut events = nodes[1].subscribe();
    let slow_leader = nodes[0].clone();
    let (call, ()) = tokio::join!(through_follower.leader_call(1, T), async {
        slow_leader.shutdown().await;
    });
    assert!(
        matches!(call, Ok(6) | Err(LeaderCallError::LeaderDied)),
        "{call:?}"
    );
    next_event(&mut events, |e| {
        matches!(e, NodeEvent::NodeDown { .. }).then_some(())
    })
    .await;
    agreed(&instances[1..], &candidates[1]).await;
    assert!(through_follower.leader_call(1, T).await.unwrap() >= 6);
}

async fn a_handles_leader_cast_is_applied_before_its_next_leader_call(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let (instances, _) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    for round in 1..=20u64 {
        instances[1].leader_cast(10).await.unwrap();
        assert_eq!(
            instances[1].leader_call(0, T).await.unwrap(),
            round * 10,
            "round {round}: the leader had the cast before the call that followed it"
        );
    }
}

async fn a_call_forwarded_to_a_leader_instance_that_ended_fails_at_once(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let (instances, _) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    let client = net.node("client").await;
    connect(&client, &nodes[1]).await;
    let through_follower = Leader::<Probe>::at(&client, nodes[1].name(), "test");
    assert_eq!(through_follower.leader_call(1, T).await.unwrap(), 1);
    // The leader's instance ends while its node stays up; the follower may still forward to it.
    let leader_instance = nodes[0]
        .whereis(&gen_cluster::instance_name("test"))
        .unwrap();
    let mut watcher = nodes[0].mailbox::<()>();
    watcher.monitor(leader_instance);
    assert!(nodes[0].stop_process(leader_instance, gen_cluster::ExitReason::Shutdown));
    tokio::time::timeout(HANG, watcher.recv()).await.unwrap();
    let started = Instant::now();
    let outcome = through_follower.leader_call(1, HANG).await;
    assert!(
        matches!(outcome, Ok(_) | Err(LeaderCallError::LeaderDied)),
        "{outcome:?}"
    );
    assert!(started.elapsed() < T, "answered, not left to the timeout");
}

async fn a_request_that_cannot_be_sent_is_reported_as_such_and_never_retried(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let dicts = start_dicts(&nodes, &candidates).await;
    agreed(&dicts, &candidates[0]).await;
    let limit = nodes[1].config().max_frame;
    let huge = Request::from(Write::Put("k".into(), "x".repeat(limit + 1)));
    let started = Instant::now();
    let error = dicts[1].leader_call_retried(huge, T).await.unwrap_err();
    assert!(
        matches!(error, LeaderCallError::Encode(WireError::TooLarge { .. })),
        "{error:?}"
    );
    assert!(
        started.elapsed() < T,
        "returned at once, not retried until the timeout"
    );
    assert_eq!(
        dicts[1].call(Read::List, T).await.unwrap(),
        ReadReply::All(vec![]),
        "nothing was written"
    );
}

async fn a_restarted_leader_comes_back_as_a_follower_and_gets_the_state(net: Net) {
    let nodes = net.mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let (instances, _) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    instances[1].leader_call(10, T).await.unwrap();
    nodes[0].shutdown().await;
    agreed(&instances[1..], &candidates[1]).await;
    instances[2].leader_call(1, T).await.unwrap();

    let a = net.node("a").await;
    connect(&a, &nodes[1]).await;
    connect(&a, &nodes[2]).await;
    let (probe, log) = Probe::new();
    let back = Leader::start(&a, leader_config(candidates.clone()), probe)
        .await
        .unwrap();
    agreed(
        &[back.clone(), instances[1].clone(), instances[2].clone()],
        &candidates[1],
    )
    .await;
    log.reaches(11).await;
    assert_eq!(
        back.call((), T).await.unwrap(),
        11,
        "the follower got the leader's state"
    );
    assert!(
        !log.seen().iter().any(|s| matches!(s, Seen::Elected(_))),
        "never led"
    );
}

async fn workers_follow_never_lead_and_a_late_worker_is_taken_in(net: Net) {
    let nodes = net.mesh(&["a", "b", "w1"]).await;
    let candidates = vec![nodes[0].name().clone(), nodes[1].name().clone()];
    let (instances, logs) = start_probes(&nodes, &candidates).await;
    agreed(&instances, &candidates[0]).await;
    instances[2].leader_call(3, T).await.unwrap();

    let late = net.node("w2").await;
    for n in &nodes {
        connect(&late, n).await;
    }
    let (probe, late_log) = Probe::new();
    let late = Leader::start(&late, leader_config(candidates.clone()), probe)
        .await
        .unwrap();
    agreed(std::slice::from_ref(&late), &candidates[0]).await;
    late_log.reaches(3).await;
    assert_eq!(
        late.call((), T).await.unwrap(),
        3,
        "the late worker got the state"
    );
    instances[1].leader_call(1, T).await.unwrap();
    late_log.reaches(4).await;

    // Both candidates gone: the workers never lead.
    nodes[0].shutdown().await;
    nodes[1].shutdown().await;
    following(&[instances[2].clone(), late.clone()], None).await;
    assert_eq!(leader_of(&instances[2]).await, None);
    assert_eq!(leader_of(&late).await, None);
    for log in [&logs[2], &late_log] {
        let seen = log.seen();
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
    assert_eq!(status.absent, candidates, "both candidates are down");
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
                connect(a, b).await;
            }
        }
    }
}

async fn both_sides_of_a_partition_write_and_after_the_heal_one_leader_holds_both_keys(net: Net) {
    let nodes = net.loner_mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let dicts = start_dicts(&nodes, &candidates).await;
    agreed(&dicts, &candidates[0]).await;
    dicts[1]
        .leader_call(Write::Put("before".into(), "0".into()).into(), T)
        .await
        .unwrap();

    partition(&[&nodes[0]], &[&nodes[1], &nodes[2]]);
    agreed(&dicts[1..], &candidates[1]).await;
    dicts[0]
        .leader_call(Write::Put("island-a".into(), "1".into()).into(), T)
        .await
        .unwrap();
    dicts[2]
        .leader_call(Write::Put("island-bc".into(), "2".into()).into(), T)
        .await
        .unwrap();
    dicts[2]
        .leader_call(Write::Delete("before".into()).into(), T)
        .await
        .unwrap();

    let healed = Instant::now();
    heal(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    agreed(&dicts, &candidates[0]).await;
    let expected = ReadReply::All(vec![
        ("island-a".into(), "1".into()),
        ("island-bc".into(), "2".into()),
    ]);
    for dict in &dicts {
        eventually(|| async { dict.call(Read::List, T).await.unwrap() == expected }).await;
    }
    assert!(
        healed.elapsed() < Duration::from_secs(1),
        "merged in {:?}",
        healed.elapsed()
    );
}

async fn connect_disconnect_reconnect_leaves_exactly_one_leader(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let (instances, _) = start_probes(&nodes, &candidates).await;
    for round in 0..5 {
        agreed(&instances, &candidates[0]).await;
        let mut events = nodes[1].subscribe();
        nodes[0].disconnect(nodes[1].name());
        if nodes[1].is_connected(nodes[0].name()) {
            next_event(&mut events, |e| {
                matches!(e, NodeEvent::NodeDown { .. }).then_some(())
            })
            .await;
        }
        agreed(&instances[1..], &candidates[1]).await;
        connect(&nodes[1], &nodes[0]).await;
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

async fn a_node_with_another_candidate_list_is_refused(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let ours = names(&nodes);
    let theirs = vec![ours[1].clone(), ours[0].clone()];
    let (probe_a, _) = Probe::new();
    let (probe_b, _) = Probe::new();
    let a = Leader::start(&nodes[0], leader_config(ours.clone()), probe_a)
        .await
        .unwrap();
    let b = Leader::start(&nodes[1], leader_config(theirs), probe_b)
        .await
        .unwrap();
    // Each leads alone once its start grace is over, having refused the other's greeting.
    agreed(std::slice::from_ref(&a), &ours[0]).await;
    agreed(std::slice::from_ref(&b), &ours[1]).await;
    let status = a.status(T).await.unwrap();
    assert_eq!(status.alive, vec![ours[0].clone()], "b is not taken in");
    assert_eq!(status.refused, vec![ours[1].clone()], "and it says why");
    assert_eq!(b.status(T).await.unwrap().alive, vec![ours[1].clone()]);
}

async fn a_candidate_added_later_goes_at_the_end_of_the_order(net: Net) {
    let nodes = net.mesh(&["a", "b", "c"]).await;
    let first_two = vec![nodes[0].name().clone(), nodes[1].name().clone()];
    let all = names(&nodes);
    let (mut instances, _) = start_probes(&nodes[..2], &first_two).await;
    agreed(&instances, &all[0]).await;
    let (probe, _) = Probe::new();
    instances.push(
        Leader::start(&nodes[2], leader_config(all.clone()), probe)
            .await
            .unwrap(),
    );
    agreed(&instances, &all[0]).await;
    for instance in &instances {
        eventually(|| async { instance.status(T).await.unwrap().candidates == all }).await;
    }
    // The newcomer leads only once both earlier candidates are gone.
    nodes[0].shutdown().await;
    agreed(&instances[1..], &all[1]).await;
    nodes[1].shutdown().await;
    agreed(&instances[2..], &all[2]).await;
}

async fn local_calls_and_casts_reach_this_nodes_instance_only(net: Net) {
    let nodes = net.mesh(&["a", "b"]).await;
    let candidates = names(&nodes);
    let (instances, logs) = start_probes(&nodes, &candidates).await;
    let (a, b) = (&instances[0], &instances[1]);
    agreed(&instances, &candidates[0]).await;
    b.cast(42).await.unwrap();
    logs[1].reaches(42).await;
    assert_eq!(a.call((), T).await.unwrap(), 0);
    assert_eq!(
        b.leader_call_retried(1, T).await.unwrap(),
        1,
        "the leader's own total"
    );
}

on_both_transports!(
    a_handles_leader_cast_is_applied_before_its_next_leader_call,
    a_call_forwarded_to_a_leader_instance_that_ended_fails_at_once,
    candidates_started_together_agree_on_one_leader_elected_once_surrendered_once,
    leader_calls_reach_the_leader_from_every_node_and_fail_fast_when_it_is_lost,
    a_handle_on_another_nodes_instance_reaches_the_leader_through_it,
    a_request_that_cannot_be_sent_is_reported_as_such_and_never_retried,
    a_restarted_leader_comes_back_as_a_follower_and_gets_the_state,
    workers_follow_never_lead_and_a_late_worker_is_taken_in,
    both_sides_of_a_partition_write_and_after_the_heal_one_leader_holds_both_keys,
    connect_disconnect_reconnect_leaves_exactly_one_leader,
    a_node_with_another_candidate_list_is_refused,
    a_candidate_added_later_goes_at_the_end_of_the_order,
    local_calls_and_casts_reach_this_nodes_instance_only,
);

/// A triangle with one edge cut (in-memory network, paused time): a–b silent, both reaching c.
/// Once the cut is detected the view splits the three into fully connected groups, {a, c} and
/// {b}, computed alike on every node, and the election acts on them: c follows a alone, b leads
/// only itself, and no two leaders count a node in common. After the heal, one leader.
#[tokio::test(start_paused = true)]
async fn a_triangle_with_one_edge_cut_elects_one_leader_per_fully_connected_group() {
    let memory = gen_cluster::MemoryNetwork::new();
    let net = Net::Memory(memory.clone());
    let nodes = net.mesh(&["a", "b", "c"]).await;
    let candidates = names(&nodes);
    let dicts = start_dicts(&nodes, &candidates).await;
    agreed(&dicts, &candidates[0]).await;

    memory.cut("a", "b");
    let (a, b) = (&candidates[0], &candidates[1]);
    common::wait_until(|| {
        nodes
            .iter()
            .all(|n| n.view().group.len() == if n.name() == b { 1 } else { 2 })
    })
    .await;
    agreed(&dicts[..1], a).await;
    agreed(&dicts[2..], a).await;
    agreed(&dicts[1..2], b).await;
    let status_a = dicts[0].status(T).await.unwrap();
    let status_b = dicts[1].status(T).await.unwrap();
    assert_eq!(status_a.alive, vec![a.clone(), candidates[2].clone()]);
    assert_eq!(
        status_b.alive,
        vec![b.clone()],
        "b counts no one it shares with a"
    );
    // Calls through c reach a, the leader of c's group.
    dicts[2]
        .leader_call(Write::Put("via-c".into(), "1".into()).into(), T)
        .await
        .unwrap();
    let read = dicts[0].call(Read::Get("via-c".into()), T).await.unwrap();
    assert_eq!(read, ReadReply::Value(Some("1".into())));

    memory.heal("a", "b");
    agreed(&dicts, a).await;
}

/// The README's dictionary tour over the in-memory network (paused time): b and c are seeded
/// with a only and meet through the view. a crashes (cut off from everyone, never heard again):
/// within 1 s b leads and c follows it, and a write through c is read on b. a comes back at the
/// same address: it follows b, and every acknowledged write is on all three.
#[tokio::test(start_paused = true)]
async fn the_readme_tour_over_the_in_memory_network() {
    let memory = gen_cluster::MemoryNetwork::new();
    let net = Net::Memory(memory.clone());
    let a = net.node("a").await;
    let (b, c) = (net.node("b").await, net.node("c").await);
    connect(&b, &a).await;
    connect(&c, &a).await;
    let mut nodes = vec![a, b, c];
    let candidates = names(&nodes);
    let mut dicts = start_dicts(&nodes, &candidates).await;
    agreed(&dicts, &candidates[0]).await;
    let put = |key: &str, value: &str| Request::from(Write::Put(key.into(), value.into()));
    dicts[2].leader_call(put("before", "1"), T).await.unwrap();

    memory.isolate("a");
    let crashed = Instant::now();
    agreed(&dicts[1..], &candidates[1]).await;
    assert!(
        crashed.elapsed() < Duration::from_secs(1),
        "b leads {:?} after a's crash",
        crashed.elapsed()
    );
    dicts[2].leader_call(put("color", "blue"), T).await.unwrap();
    let read = dicts[1].call(Read::Get("color".into()), T).await.unwrap();
    assert_eq!(read, ReadReply::Value(Some("blue".into())));

    // a comes back at its address, as the README restarts it.
    let address = nodes[0].listen_addr().to_string();
    nodes[0].shutdown().await;
    memory.heal_all();
    let mut config = common::config("a");
    config.listen = address;
    nodes[0] = net.start(config).await;
    let mut dict_config = leader_config(candidates.clone());
    dict_config.name = "dict".into();
    dicts[0] = Leader::start(&nodes[0], dict_config, Dict::default())
        .await
        .unwrap();
    agreed(&dicts, &candidates[1]).await;
    let expected = ReadReply::All(vec![
        ("before".into(), "1".into()),
        ("color".into(), "blue".into()),
    ]);
    for dict in &dicts {
        eventually(|| async { dict.call(Read::List, T).await.unwrap() == expected }).await;
    }
}

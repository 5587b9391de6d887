//! The gen_cluster behaviour over three nodes in one OS process, porting the original's suite:
//! joins through a seed, stops, crashes and lost nodes, the rally name, member kinds. Waits are
//! bounded generously, only to catch hangs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HANG, mesh, wait_until};
use gen_cluster::rally_name;
use gen_cluster::{
    ClusterContext, ClusterServer, Clustered, ExitReason, Flow, Member, MemberConfig, Membership,
    Node, Pid, ReplyTo, Seed, ServerRef,
};
use serde::{Deserialize, Serialize};

const CLUSTER: &str = "test";
const T: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
enum Callback {
    Join(Pid, Vec<Pid>),
    NodeJoined(Pid, Vec<Pid>),
    Leave(Pid, Vec<Pid>, ExitReason),
}

/// A member that records its callbacks and answers questions about its list.
struct Recorder {
    log: Arc<Mutex<Vec<Callback>>>,
}

#[derive(Serialize, Deserialize)]
enum Ask {
    Members,
    ByKind,
    Stop,
    Crash,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Answer {
    Members(Vec<Pid>),
    ByKind(BTreeMap<String, Vec<Pid>>),
    Ok,
}

fn pids(members: &Membership) -> Vec<Pid> {
    members.members().map(|m| m.pid).collect()
}

impl ClusterServer for Recorder {
    type Call = Ask;
    type Reply = Answer;
    type Cast = ();
    type Info = ();

    async fn handle_join(
        &mut self,
        joining: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.log
            .lock()
            .unwrap()
            .push(Callback::Join(joining.pid, pids(members)));
        Flow::Continue
    }

    async fn handle_node_joined(
        &mut self,
        joined: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.log
            .lock()
            .unwrap()
            .push(Callback::NodeJoined(joined.pid, pids(members)));
        Flow::Continue
    }

    async fn handle_leave(
        &mut self,
        left: &Member,
        members: &Membership,
        reason: &ExitReason,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.log
            .lock()
            .unwrap()
            .push(Callback::Leave(left.pid, pids(members), reason.clone()));
        Flow::Continue
    }

    async fn handle_call(
        &mut self,
        ask: Ask,
        from: ReplyTo<Answer>,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        match ask {
            Ask::Members => from.reply(Answer::Members(pids(members))),
            Ask::ByKind => from.reply(Answer::ByKind(
                members
                    .by_kind()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )),
            Ask::Stop => {
                from.reply(Answer::Ok);
                return Flow::Stop(ExitReason::Normal);
            }
            Ask::Crash => panic!("crash requested"),
        }
        Flow::Continue
    }
}

struct Started {
    node: Node,
    member: ServerRef<Clustered<Recorder>>,
    log: Arc<Mutex<Vec<Callback>>>,
}

impl Started {
    fn pid(&self) -> Pid {
        self.member.pid().unwrap()
    }

    fn callbacks(&self) -> Vec<Callback> {
        self.log.lock().unwrap().clone()
    }

    async fn members(&self) -> Vec<Pid> {
        match self.node.call(&self.member, Ask::Members, T).await.unwrap() {
            Answer::Members(pids) => pids,
            other => panic!("{other:?}"),
        }
    }
}

async fn start(node: &Node, kind: &str, seed: Seed) -> Started {
    let log = Arc::new(Mutex::new(Vec::new()));
    let member = Clustered::start(
        node,
        MemberConfig::new(CLUSTER, kind, seed),
        Recorder { log: log.clone() },
    )
    .await
    .unwrap();
    Started {
        node: node.clone(),
        member,
        log,
    }
}

/// Waits until every member holds exactly `expected` (asking them every 20 ms).
async fn converged(members: &[&Started], mut expected: Vec<Pid>) {
    expected.sort();
    tokio::time::timeout(HANG, async {
        loop {
            let mut agree = true;
            for m in members {
                agree &= m.members().await == expected;
            }
            if agree {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("member lists converge before the hang bound");
}

/// Three members on three nodes: the first, then two joining through it one after the other.
async fn three() -> (Vec<Node>, [Started; 3]) {
    let nodes = mesh(&["a", "b", "c"]).await;
    let m1 = start(&nodes[0], "web", Seed::First).await;
    let m2 = start(&nodes[1], "web", Seed::Member(m1.pid())).await;
    converged(&[&m1, &m2], vec![m1.pid(), m2.pid()]).await;
    let m3 = start(&nodes[2], "db", Seed::Member(m1.pid())).await;
    converged(&[&m1, &m2, &m3], vec![m1.pid(), m2.pid(), m3.pid()]).await;
    (nodes, [m1, m2, m3])
}

fn sorted(mut pids: Vec<Pid>) -> Vec<Pid> {
    pids.sort();
    pids
}

#[tokio::test]
async fn members_joining_through_a_seed_hold_the_same_list_and_each_join_is_seen_once() {
    let (_nodes, [m1, m2, m3]) = three().await;
    let all = sorted(vec![m1.pid(), m2.pid(), m3.pid()]);
    assert_eq!(
        m1.callbacks(),
        vec![
            Callback::Join(m2.pid(), sorted(vec![m1.pid(), m2.pid()])),
            Callback::Join(m3.pid(), all.clone()),
        ],
        "handle_join on the contacted member, once per newcomer, with the list after the join"
    );
    assert_eq!(
        m2.callbacks(),
        vec![Callback::NodeJoined(m3.pid(), all.clone())],
        "handle_node_joined once on the others"
    );
    assert!(
        m3.callbacks().is_empty(),
        "the newcomer gets no callback for the members it found"
    );
}

#[tokio::test]
async fn a_stopped_member_is_one_leave_with_its_reason_on_every_survivor() {
    let (_nodes, [m1, m2, m3]) = three().await;
    m1.log.lock().unwrap().clear();
    m2.log.lock().unwrap().clear();
    m3.node.call(&m3.member, Ask::Stop, T).await.unwrap();
    converged(&[&m1, &m2], vec![m1.pid(), m2.pid()]).await;
    let survivors = sorted(vec![m1.pid(), m2.pid()]);
    for m in [&m1, &m2] {
        assert_eq!(
            m.callbacks(),
            vec![Callback::Leave(
                m3.pid(),
                survivors.clone(),
                ExitReason::Normal
            )]
        );
    }
}

#[tokio::test]
async fn a_crash_is_a_leave_with_its_reason_and_a_lost_node_a_leave_until_it_is_back() {
    let (nodes, [m1, m2, m3]) = three().await;
    m1.log.lock().unwrap().clear();
    m2.log.lock().unwrap().clear();
    m3.log.lock().unwrap().clear();
    let _ = m2.node.call(&m2.member, Ask::Crash, T).await;
    converged(&[&m1, &m3], vec![m1.pid(), m3.pid()]).await;
    for m in [&m1, &m3] {
        let callbacks = m.callbacks();
        assert_eq!(callbacks.len(), 1, "{callbacks:?}");
        let Callback::Leave(left, _, ExitReason::Error(why)) = &callbacks[0] else {
            panic!("{callbacks:?}")
        };
        assert_eq!(*left, m2.pid());
        assert!(why.contains("crash requested"), "{why}");
    }
    m1.log.lock().unwrap().clear();
    m3.log.lock().unwrap().clear();
    // Node c is cut off from a (as after a crash of c): neither can tell, each reports a leave.
    nodes[0].disconnect(nodes[2].name());
    wait_until(|| !m1.callbacks().is_empty() && !m3.callbacks().is_empty()).await;
    for (m, other) in [(&m1, &m3), (&m3, &m1)] {
        assert_eq!(
            m.callbacks()[0],
            Callback::Leave(other.pid(), vec![m.pid()], ExitReason::NoConnection)
        );
    }
    // The link comes back (the nodes redial each other): the member lost with it is heard
    // from again and let back in, reported joined once, on both sides.
    converged(&[&m1, &m3], vec![m1.pid(), m3.pid()]).await;
    for (m, other) in [(&m1, &m3), (&m3, &m1)] {
        assert_eq!(
            m.callbacks(),
            vec![
                Callback::Leave(other.pid(), vec![m.pid()], ExitReason::NoConnection),
                Callback::NodeJoined(other.pid(), sorted(vec![m1.pid(), m3.pid()])),
            ]
        );
    }
}

#[tokio::test]
async fn the_rally_name_moves_to_a_live_member_and_a_newcomer_joins_through_it() {
    let (nodes, [m1, m2, m3]) = three().await;
    let rally = rally_name(CLUSTER);
    wait_until(|| {
        nodes
            .iter()
            .all(|n| n.globals().whereis(&rally) == Some(m1.pid()))
    })
    .await;
    m1.node.call(&m1.member, Ask::Stop, T).await.unwrap();
    wait_until(|| {
        let holder = nodes[1].globals().whereis(&rally);
        holder.is_some_and(|h| h == m2.pid() || h == m3.pid())
            && nodes.iter().all(|n| n.globals().whereis(&rally) == holder)
    })
    .await;
    let m4 = start(&nodes[0], "web", Seed::Rally).await;
    converged(&[&m2, &m3, &m4], vec![m2.pid(), m3.pid(), m4.pid()]).await;
}

#[tokio::test]
async fn a_newcomer_joins_through_a_node_address() {
    let (nodes, [m1, m2, m3]) = three().await;
    // A node that discovery has connected to the cluster's nodes; the member joins through an
    // address (not the rally holder's node).
    let d = common::node("d").await;
    for n in &nodes {
        d.connect(n.listen_addr()).await.unwrap();
    }
    let m4 = start(&d, "db", Seed::Address(nodes[1].listen_addr().to_string())).await;
    converged(
        &[&m1, &m2, &m3, &m4],
        vec![m1.pid(), m2.pid(), m3.pid(), m4.pid()],
    )
    .await;
}

#[tokio::test]
async fn members_of_two_kinds_are_grouped_alike_on_every_member() {
    let (_nodes, [m1, m2, m3]) = three().await;
    let expected = Answer::ByKind(BTreeMap::from([
        ("db".to_string(), vec![m3.pid()]),
        ("web".to_string(), sorted(vec![m1.pid(), m2.pid()])),
    ]));
    for m in [&m1, &m2, &m3] {
        assert_eq!(
            m.node.call(&m.member, Ask::ByKind, T).await.unwrap(),
            expected
        );
    }
    m2.node.call(&m2.member, Ask::Stop, T).await.unwrap();
    converged(&[&m1, &m3], vec![m1.pid(), m3.pid()]).await;
    let expected = Answer::ByKind(BTreeMap::from([
        ("db".to_string(), vec![m3.pid()]),
        ("web".to_string(), vec![m1.pid()]),
    ]));
    for m in [&m1, &m3] {
        assert_eq!(
            m.node.call(&m.member, Ask::ByKind, T).await.unwrap(),
            expected
        );
    }
}

#[tokio::test]
async fn a_plain_server_added_as_a_child_is_a_member_everywhere_and_its_end_a_leave() {
    use gen_cluster::services::echo::{Echo, EchoCall};
    let (nodes, [m1, m2, m3]) = three().await;
    for m in [&m1, &m2, &m3] {
        m.log.lock().unwrap().clear();
    }
    let worker = nodes[0].spawn(Echo::default()).await.unwrap();
    let worker_pid = worker.pid().unwrap();
    Clustered::add_child(&nodes[0], &m1.member, worker_pid, "worker")
        .await
        .unwrap();
    converged(
        &[&m1, &m2, &m3],
        vec![m1.pid(), m2.pid(), m3.pid(), worker_pid],
    )
    .await;
    let all = sorted(vec![m1.pid(), m2.pid(), m3.pid(), worker_pid]);
    assert_eq!(
        m1.callbacks(),
        vec![Callback::Join(worker_pid, all.clone())],
        "handle_join on the member it was added through"
    );
    for m in [&m2, &m3] {
        assert_eq!(
            m.callbacks(),
            vec![Callback::NodeJoined(worker_pid, all.clone())]
        );
        let Answer::ByKind(kinds) = m.node.call(&m.member, Ask::ByKind, T).await.unwrap() else {
            panic!()
        };
        assert_eq!(kinds["worker"], vec![worker_pid]);
    }
    nodes[0].call(&worker, EchoCall::Stop, T).await.unwrap();
    converged(&[&m1, &m2, &m3], vec![m1.pid(), m2.pid(), m3.pid()]).await;
    let survivors = sorted(vec![m1.pid(), m2.pid(), m3.pid()]);
    for m in [&m1, &m2, &m3] {
        assert_eq!(
            m.callbacks().last(),
            Some(&Callback::Leave(
                worker_pid,
                survivors.clone(),
                ExitReason::Normal
            ))
        );
    }
}

/// A hundred rounds among four members on four nodes of the in-memory network (paused time):
/// the rally's holder stops (a goodbye) or is cut off from every node for good, from one
/// survivor after another (a crash, seen only by the failure detectors, at different times).
/// Within the detection deadline and the registry's release a live member holds the rally name
/// on every live node, every round; and a newcomer seeded at a survivor's address joins the
/// survivors' cluster, never a second one. (After a crash the newcomer may still be told of the
/// crashed member by a survivor whose link to it has not timed out yet, and lists it until its
/// own connection attempt to that node times out: the rally moves with the view's group, the
/// member lists with each node's links.)
#[tokio::test(start_paused = true)]
async fn the_rally_name_is_taken_over_in_every_one_of_a_hundred_stops_and_crashes_of_its_holder() {
    const ROUNDS: usize = 100;
    let memory = gen_cluster::MemoryNetwork::new();
    let net = common::Net::Memory(memory.clone());
    let rally = rally_name(CLUSTER);
    let first = net.node("n0").await;
    let mut live = vec![start(&first, "web", Seed::First).await];
    for i in 1..4 {
        let node = net.node(&format!("n{i}")).await;
        let seed = Seed::Address(first.listen_addr().to_string());
        live.push(start(&node, "web", seed).await);
    }
    let all: Vec<Pid> = live.iter().map(Started::pid).collect();
    converged(&live.iter().collect::<Vec<_>>(), all).await;
    // The detector's deadline, then the registry's release and the takeover, with room.
    let deadline = common::config("n").liveness.down_after * 4;
    let held_by_a_live_member = |live: &[Started]| {
        let pids: Vec<Pid> = live.iter().map(Started::pid).collect();
        let holder = live[0].node.globals().whereis(&rally);
        holder.filter(|holder| {
            pids.contains(holder)
                && live
                    .iter()
                    .all(|m| m.node.globals().whereis(&rally) == Some(*holder))
        })
    };
    for round in 0..ROUNDS {
        let holder = held_by_a_live_member(&live).expect("a live member holds the rally name");
        let gone = live.remove(live.iter().position(|m| m.pid() == holder).unwrap());
        let crash = round % 2 == 1;
        if crash {
            // The survivors lose it one after another, so that their registries let go of the
            // name at different times and early attempts meet registries that still hold it.
            let down_after = common::config("n").liveness.down_after;
            for survivor in &live {
                memory.cut(gone.node.name().as_str(), survivor.node.name().as_str());
                tokio::time::sleep(down_after / 2).await;
            }
            memory.isolate(gone.node.name().as_str());
        } else {
            gone.node.shutdown().await;
        }
        tokio::time::timeout(deadline, async {
            while held_by_a_live_member(&live).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("round {round} (crash: {crash}): no live member holds the rally name")
        });
        let node = net.node(&format!("n{}", 4 + round)).await;
        let survivor = &live[round % live.len()];
        let seed = Seed::Address(survivor.node.listen_addr().to_string());
        live.push(start(&node, "web", seed).await);
        let pids: Vec<Pid> = live.iter().map(Started::pid).collect();
        converged(&live.iter().collect::<Vec<_>>(), pids).await;
        if crash {
            gone.node.shutdown().await;
        }
    }
}

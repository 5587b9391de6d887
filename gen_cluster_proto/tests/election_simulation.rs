//! Deterministic simulation of the election machine over 3 to 7 nodes (2 or more candidates,
//! the rest workers): random crashes, restarts (a new incarnation), partitions into islands,
//! heals, time passing, and messages delivered in random order over per-pair FIFO links that
//! lose what is in flight when they drop, as connections do. Node up and down events come as
//! the runtime's failure detector gives them.
//!
//! Checked after every step: no node follows a leader of another island or an old incarnation.
//! Checked once each island has settled (every message delivered, the start grace over):
//! exactly one leader in every island that holds a live candidate, none in one that holds
//! none, every live node of the island following it, and a state handed over by a leader that
//! stepped down merged exactly once. A failing case prints its input; proptest replays it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use gen_cluster_proto::NodeName;
use gen_cluster_proto::election::{
    Election, ElectionAction, ElectionConfig, ElectionId, ElectionMessage,
};
use proptest::prelude::*;

const GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
enum Op {
    Crash(usize),
    Restart(usize),
    /// Moves a node to another island (0–2): a partition or a heal.
    Move(usize, u8),
    HealAll,
    Deliver(usize, usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<usize>().prop_map(Op::Crash),
        1 => any::<usize>().prop_map(Op::Restart),
        2 => (any::<usize>(), 0u8..3).prop_map(|(n, i)| Op::Move(n, i)),
        1 => Just(Op::HealAll),
        12 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Deliver(a, b)),
        2 => Just(Op::Tick),
    ]
}

fn name(i: usize) -> NodeName {
    NodeName::new(format!("n{i}")).unwrap()
}

fn index(name: &NodeName) -> usize {
    name.as_str()[1..].parse().unwrap()
}

/// The state a node's behaviour would hold: which nodes' leads it has merged.
type State = u64;

struct Sim {
    now: Instant,
    config: ElectionConfig,
    nodes: Vec<Option<Election<State>>>,
    incarnations: Vec<u64>,
    island: Vec<u8>,
    /// Which links are up, as the nodes were told.
    up: BTreeMap<(usize, usize), bool>,
    links: BTreeMap<(usize, usize), VecDeque<ElectionMessage<State>>>,
    /// How often the state of each (node, incarnation, round) was merged.
    merged: BTreeMap<State, u32>,
    handed: Vec<State>,
    /// Fresh wins and surrenders per node.
    wins: Vec<u32>,
    surrenders: Vec<u32>,
}

impl Sim {
    fn new(count: usize, candidates: usize) -> Self {
        Self::with_failback(count, candidates, false)
    }

    fn with_failback(count: usize, candidates: usize, failback: bool) -> Self {
        let start = Instant::now();
        let config = ElectionConfig {
            candidates: (0..candidates).map(name).collect(),
            workers: (candidates..count).map(name).collect(),
            failback,
            start_grace: GRACE,
        };
        let mut sim = Self {
            now: start,
            config,
            nodes: (0..count).map(|_| None).collect(),
            incarnations: vec![0; count],
            island: vec![0; count],
            up: BTreeMap::new(),
            links: BTreeMap::new(),
            merged: BTreeMap::new(),
            handed: Vec::new(),
            wins: vec![0; count],
            surrenders: vec![0; count],
        };
        for i in 0..count {
            sim.restart(i);
        }
        sim
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].is_some() {
            return;
        }
        self.incarnations[i] += 1;
        self.nodes[i] = Some(Election::new(
            name(i),
            self.incarnations[i],
            self.config.clone(),
            self.now,
        ));
        self.flush(i);
        self.relink();
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.relink();
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        a != b
            && self.nodes[a].is_some()
            && self.nodes[b].is_some()
            && self.island[a] == self.island[b]
    }

    /// Tells the nodes of every link that came up or went down, as the failure detector would.
    fn relink(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let now_up = self.connected(a, b);
                let was_up = self.up.get(&(a, b)).copied().unwrap_or(false);
                if now_up == was_up {
                    continue;
                }
                self.up.insert((a, b), now_up);
                self.links.remove(&(b, a));
                if let Some(node) = self.nodes[a].as_mut() {
                    if now_up {
                        node.handle_node_up(name(b));
                    } else {
                        node.handle_node_down(&name(b));
                    }
                }
                self.flush(a);
            }
        }
    }

    fn flush(&mut self, i: usize) {
        loop {
            let Some(action) = self.nodes[i].as_mut().and_then(|n| n.poll_action()) else {
                return;
            };
            match action {
                ElectionAction::Send { to, message } => self.send(i, index(&to), message),
                ElectionAction::Elected { election, joined } => {
                    if joined.is_none() {
                        self.wins[i] += 1;
                    }
                    let members: Vec<usize> = match joined {
                        Some(joined) => vec![index(&joined)],
                        None => self.nodes[i]
                            .as_ref()
                            .unwrap()
                            .members()
                            .map(index)
                            .collect(),
                    };
                    for to in members {
                        let state = 0;
                        self.send(
                            i,
                            to,
                            ElectionMessage::Elected {
                                election: election.clone(),
                                state,
                            },
                        );
                    }
                }
                ElectionAction::SteppedDown { to } => {
                    let state = self.state_id(i);
                    self.handed.push(state);
                    self.send(
                        i,
                        index(&to),
                        ElectionMessage::Merge {
                            from: name(i),
                            state,
                        },
                    );
                }
                ElectionAction::Merge { state, .. } => *self.merged.entry(state).or_default() += 1,
                ElectionAction::Surrendered { .. } => self.surrenders[i] += 1,
                ElectionAction::MemberDown(_)
                | ElectionAction::LeaderLost(_)
                | ElectionAction::Refused { .. } => {}
            }
        }
    }

    /// A state unique to this hand-over: node, incarnation, and a counter.
    fn state_id(&self, i: usize) -> State {
        (i as u64) << 48 | self.incarnations[i] << 24 | self.handed.len() as u64
    }

    fn send(&mut self, from: usize, to: usize, message: ElectionMessage<State>) {
        if self.up.get(&(from, to)).copied().unwrap_or(false) {
            self.links.entry((from, to)).or_default().push_back(message);
        }
    }

    fn deliver(&mut self, from: usize, to: usize) -> bool {
        let Some(message) = self
            .links
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        if let Some(node) = self.nodes[to].as_mut() {
            node.handle_message(name(from), message);
        }
        self.flush(to);
        true
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].as_mut() {
                node.handle_timeout(self.now);
            }
            self.flush(i);
        }
    }

    /// Delivers every message, then lets the start grace pass, then delivers what follows.
    fn settle(&mut self) {
        self.deliver_all();
        self.tick(GRACE);
        self.deliver_all();
    }

    fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let pending: Vec<(usize, usize)> = self
                .links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, _)| *k)
                .collect();
            if pending.is_empty() {
                return;
            }
            for (from, to) in pending {
                self.deliver(from, to);
            }
        }
        panic!("messages still flowing after 100000 rounds: the machines never settle");
    }

    /// Nobody follows a leader it is not connected to, or an old incarnation of it.
    fn check_always(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if let Some(ElectionId {
                leader,
                incarnation,
                ..
            }) = node.current()
            {
                let l = index(leader);
                assert!(
                    l == i || self.connected(i, l),
                    "n{i} follows n{l}, not connected"
                );
                assert_eq!(
                    *incarnation, self.incarnations[l],
                    "n{i} follows an old n{l}"
                );
            }
        }
    }

    fn check_settled(&self) {
        for island in 0..3u8 {
            let live: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].is_some() && self.island[i] == island)
                .collect();
            let leaders: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].as_ref().unwrap().is_leader())
                .collect();
            let has_candidate = live.iter().any(|&i| i < self.config.candidates.len());
            assert_eq!(
                leaders.len(),
                usize::from(has_candidate),
                "island {island}: leaders {leaders:?} among {live:?}"
            );
            if let Some(&leader) = leaders.first() {
                for &i in &live {
                    let current = self.nodes[i]
                        .as_ref()
                        .unwrap()
                        .current()
                        .map(|e| index(&e.leader));
                    assert_eq!(
                        current,
                        Some(leader),
                        "n{i} of island {island} follows {current:?}, not n{leader}"
                    );
                }
            }
        }
        for (state, count) in &self.merged {
            assert_eq!(*count, 1, "state {state:x} merged {count} times");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(500, |n: u32| n / 20)
    ))]

    #[test]
    fn one_leader_per_island_once_settled(
        count in 3usize..=7,
        candidates in 2usize..=7,
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let candidates = candidates.min(count);
        let mut sim = Sim::new(count, candidates);
        for op in ops {
            match op {
                Op::Crash(i) => sim.crash(i % count),
                Op::Restart(i) => sim.restart(i % count),
                Op::Move(i, island) => {
                    sim.island[i % count] = island;
                    sim.relink();
                }
                Op::HealAll => {
                    sim.island = vec![0; count];
                    sim.relink();
                }
                Op::Deliver(a, b) => {
                    sim.deliver(a % count, b % count);
                }
                Op::Tick => sim.tick(GRACE / 4),
            }
            sim.check_always();
        }
        sim.settle();
        sim.check_always();
        sim.check_settled();
        // Then heal everything: one leader for all.
        sim.island = vec![0; count];
        sim.relink();
        sim.settle();
        sim.check_settled();
    }
}

fn leader_of_all(sim: &Sim) -> usize {
    let leaders: Vec<usize> = (0..sim.nodes.len())
        .filter(|&i| sim.nodes[i].as_ref().is_some_and(|n| n.is_leader()))
        .collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    leaders[0]
}

#[test]
fn started_together_the_top_candidate_wins_once_and_every_other_node_surrenders_once() {
    for count in 2..=5 {
        let mut sim = Sim::new(count, count);
        sim.settle();
        assert_eq!(leader_of_all(&sim), 0);
        assert_eq!(sim.wins[0], 1, "{count} candidates");
        assert_eq!(sim.surrenders[0], 0);
        assert!(sim.wins[1..].iter().all(|w| *w == 0), "{:?}", sim.wins);
        assert!(
            sim.surrenders[1..].iter().all(|s| *s == 1),
            "{:?}",
            sim.surrenders
        );
    }
}

#[test]
fn a_restarted_leader_follows_the_new_one_unless_failback_is_set() {
    for failback in [false, true] {
        let mut sim = Sim::with_failback(3, 3, failback);
        sim.settle();
        sim.crash(0);
        sim.settle();
        assert_eq!(leader_of_all(&sim), 1);
        sim.restart(0);
        sim.settle();
        assert_eq!(
            leader_of_all(&sim),
            if failback { 0 } else { 1 },
            "failback {failback}"
        );
        sim.check_settled();
    }
}

#[test]
fn workers_follow_and_never_lead_and_a_late_worker_is_taken_in() {
    let mut sim = Sim::new(4, 2);
    sim.crash(3);
    sim.settle();
    assert_eq!(leader_of_all(&sim), 0);
    sim.crash(0);
    sim.crash(1);
    sim.settle();
    assert!(
        sim.nodes.iter().flatten().all(|n| !n.is_leader()),
        "workers alone: no leader"
    );
    sim.restart(1);
    sim.restart(3);
    sim.settle();
    assert_eq!(leader_of_all(&sim), 1);
    sim.check_settled();
    assert!(
        sim.surrenders[3] >= 1,
        "the late worker got the leader's state"
    );
}

#[test]
fn a_leader_lost_during_the_start_grace_is_replaced_at_once() {
    let mut sim = Sim::new(3, 3);
    sim.deliver_all();
    assert_eq!(
        leader_of_all(&sim),
        0,
        "all candidates met: no need to wait"
    );
    sim.crash(0);
    sim.deliver_all();
    assert_eq!(
        leader_of_all(&sim),
        1,
        "without waiting for the grace to end"
    );
}

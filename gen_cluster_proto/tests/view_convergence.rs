//! Deterministic simulation of the cluster view: nodes start seeded with one node only, crash,
//! restart under the same name in a later life, leave, lose links and get them back, cuts
//! included that leave A–B apart while both reach C; messages arrive in random order over
//! per-pair FIFO links and are lost with the link that carried them; each node flushes its
//! changes at random moments. Then the faults stop, every
//! node dials what its view asks it to, and every message is delivered:
//!
//! - with every cut healed, the live nodes form a full mesh and every live node's view holds
//!   the same records, calls every live node `up` and puts all of them in its group;
//! - two live nodes of a set of connected nodes that both know of a node, ended or not, know
//!   the same life of it at the same address, and agree on whether it left;
//! - with one pair of live nodes kept apart, every live node computes the same groups, each group
//!   is fully connected, and the pair is in two groups.
//!
//! At every step, a node's group holds only nodes it is linked to. A failing case prints its
//! input; proptest replays it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gen_cluster_proto::handshake::Identity;
use gen_cluster_proto::view::{NodeState, Presence, View, ViewAction, ViewMessage};
use gen_cluster_proto::{Incarnation, NodeName};
use proptest::prelude::*;

const MAX_NODES: usize = 7;

#[derive(Debug, Clone)]
enum Op {
    Start { seed: usize },
    Crash { node: usize },
    Restart { node: usize, seed: usize },
    Leave { node: usize },
    Cut { a: usize, b: usize },
    Heal { a: usize, b: usize },
    Dial { node: usize, pick: usize },
    Deliver { from: usize, to: usize },
    Flush { node: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<usize>().prop_map(|seed| Op::Start { seed }),
        1 => any::<usize>().prop_map(|node| Op::Crash { node }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(node, seed)| Op::Restart { node, seed }),
        1 => any::<usize>().prop_map(|node| Op::Leave { node }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Cut { a, b }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Heal { a, b }),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(node, pick)| Op::Dial { node, pick }),
        12 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Deliver { from, to }),
        4 => any::<usize>().prop_map(|node| Op::Flush { node }),
    ]
}

fn name(i: usize) -> NodeName {
    NodeName::new(format!("n{i}")).unwrap()
}

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:4370")
}

#[derive(Default)]
struct Sim {
    views: Vec<View>,
    alive: Vec<bool>,
    lives: Vec<u64>,
    /// The node each node was seeded with (its discovery, retried as the runtime does).
    seeds: Vec<Option<usize>>,
    connected: BTreeSet<(usize, usize)>,
    blocked: BTreeSet<(usize, usize)>,
    queues: BTreeMap<(usize, usize), VecDeque<ViewMessage>>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    fn index(&self, name: &NodeName) -> usize {
        name.as_str()[1..].parse().unwrap()
    }

    fn send_out(&mut self, i: usize) {
        while let Some(action) = self.views[i].poll_action() {
            if let ViewAction::Send { to, message } = action {
                let to = self.index(&to);
                assert!(
                    self.connected.contains(&pair(i, to)),
                    "n{i} sends only over its links"
                );
                self.queues.entry((i, to)).or_default().push_back(message);
            }
        }
    }

    fn start(&mut self, i: usize) {
        let life = self.lives[i];
        self.views[i] = View::new(name(i), addr(i), Incarnation(life));
        self.alive[i] = true;
    }

    fn identity(&self, i: usize) -> Identity {
        Identity {
            name: name(i),
            incarnation: Incarnation(self.lives[i]),
            listen: addr(i),
            hidden: false,
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let ends = pair(a, b);
        if a == b
            || !self.alive[a]
            || !self.alive[b]
            || self.blocked.contains(&ends)
            || !self.connected.insert(ends)
        {
            return;
        }
        let (ia, ib) = (self.identity(a), self.identity(b));
        self.views[a].handle_up(&ib);
        self.views[b].handle_up(&ia);
        self.send_out(a);
        self.send_out(b);
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        if !self.connected.remove(&pair(a, b)) {
            return;
        }
        self.queues.remove(&(a, b));
        self.queues.remove(&(b, a));
        for (me, peer) in [(a, b), (b, a)] {
            if self.alive[me] {
                self.views[me].handle_down(&name(peer));
                self.send_out(me);
            }
        }
    }

    fn end(&mut self, i: usize) {
        self.alive[i] = false;
        let links: Vec<usize> = (0..self.views.len())
            .filter(|&j| self.connected.contains(&pair(i, j)))
            .collect();
        for j in links {
            self.disconnect(i, j);
        }
    }

    fn deliver(&mut self, from: usize, to: usize) -> bool {
        let Some(message) = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        self.views[to].handle_message(&name(from), message);
        self.send_out(to);
        true
    }

    fn dial(&mut self, i: usize, pick: usize) {
        if !self.alive[i] {
            return;
        }
        let targets: Vec<usize> = self.views[i]
            .to_dial()
            .map(|(target, _)| self.index(target))
            .collect();
        if !targets.is_empty() {
            self.connect(i, targets[pick % targets.len()]);
        }
    }

    fn apply(&mut self, op: Op) {
        let n = self.views.len();
        match op {
            Op::Start { seed } if n < MAX_NODES => {
                self.views
                    .push(View::new(name(n), String::new(), Incarnation(1)));
                self.alive.push(false);
                self.lives.push(1);
                self.seeds.push(self.live_seed(seed));
                self.start(n);
                self.join(n);
            }
            Op::Start { .. } => {}
            Op::Crash { node } if n > 0 => self.end(node % n),
            Op::Restart { node, seed } if n > 0 => {
                let node = node % n;
                if !self.alive[node] {
                    self.lives[node] += 1;
                    self.seeds[node] = self.live_seed(seed);
                    self.start(node);
                    self.join(node);
                }
            }
            Op::Leave { node } if n > 0 => {
                let node = node % n;
                if self.alive[node] {
                    self.views[node].leave();
                    self.send_out(node);
                    // The goodbye goes out before the links close.
                    for peer in 0..n {
                        while self.deliver(node, peer) {}
                    }
                    self.end(node);
                }
            }
            Op::Cut { a, b } if n > 0 => {
                let (a, b) = (a % n, b % n);
                if a != b {
                    self.blocked.insert(pair(a, b));
                    self.disconnect(a, b);
                }
            }
            Op::Heal { a, b } if n > 0 => {
                self.blocked.remove(&pair(a % n, b % n));
            }
            Op::Dial { node, pick } if n > 0 => self.dial(node % n, pick),
            Op::Deliver { from, to } if n > 0 => {
                self.deliver(from % n, to % n);
            }
            Op::Flush { node } if n > 0 && self.alive[node % n] => {
                self.views[node % n].flush();
                self.send_out(node % n);
            }
            _ => {}
        }
    }

    /// A live node to seed a newcomer with, if there is one.
    fn live_seed(&self, pick: usize) -> Option<usize> {
        let live = self.live();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    /// Dials the node's seed.
    fn join(&mut self, i: usize) {
        if let Some(seed) = self.seeds[i] {
            self.connect(i, seed);
        }
    }

    /// Delivers everything and dials what the views ask for, until nothing changes.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for i in self.live() {
                self.views[i].flush();
                self.send_out(i);
            }
            let queued: Vec<(usize, usize)> = self.queues.keys().copied().collect();
            for (from, to) in queued {
                while self.deliver(from, to) {
                    progressed = true;
                }
            }
            for i in 0..self.views.len() {
                let before = self.connected.len();
                self.join(i);
                let targets = self.views[i].to_dial().count();
                for pick in 0..targets {
                    self.dial(i, pick);
                }
                progressed |= self.connected.len() != before;
            }
            if !progressed {
                return;
            }
        }
    }

    /// The live nodes in sets joined by links.
    fn components(&self) -> Vec<Vec<usize>> {
        let mut placed = BTreeSet::new();
        let mut components = Vec::new();
        for start in self.live() {
            if !placed.insert(start) {
                continue;
            }
            let (mut component, mut next) = (vec![start], vec![start]);
            while let Some(i) = next.pop() {
                for j in self.live() {
                    if self.connected.contains(&pair(i, j)) && placed.insert(j) {
                        component.push(j);
                        next.push(j);
                    }
                }
            }
            components.push(component);
        }
        components
    }

    fn live(&self) -> Vec<usize> {
        (0..self.views.len()).filter(|&i| self.alive[i]).collect()
    }
}

fn run(ops: Vec<Op>, keep_apart: Option<(usize, usize)>) -> Result<(), TestCaseError> {
    let mut sim = Sim::default();
    for op in ops {
        sim.apply(op);
        // At every step, not only at the end: a node's group holds only nodes it is linked to.
        for i in sim.live() {
            for member in sim.views[i].group() {
                let j = sim.index(&member);
                prop_assert!(
                    i == j || sim.connected.contains(&pair(i, j)),
                    "n{}'s group holds n{}, which it has no link to",
                    i,
                    j
                );
            }
        }
    }
    sim.blocked.clear();
    let live = sim.live();
    let apart = keep_apart
        .filter(|_| live.len() >= 3)
        .map(|(a, b)| (live[a % live.len()], live[b % live.len()]))
        .filter(|(a, b)| a != b);
    if let Some((a, b)) = apart {
        sim.blocked.insert(pair(a, b));
        sim.disconnect(a, b);
    }
    sim.settle();
    // Nodes that never heard of each other (their only go-between ended before passing on what
    // it knew, or a cut lost it) stay apart, as in any system: each set of connected live nodes
    // is checked on its own, and must know nothing of the live nodes outside it.
    for component in sim.components() {
        let reference = sim.views[component[0]].groups();
        let first = &sim.views[component[0]];
        for &i in &component {
            let view = &sim.views[i];
            prop_assert_eq!(&view.groups(), &reference, "n{} computes other groups", i);
            // Two nodes that both know of a node, ended or not, know the same life of it, the
            // same address, and whether it left (a goodbye must reach everyone who knows of
            // the node, or they keep dialing it).
            for (theirs, _) in view.nodes() {
                if let Some(reference) = first.record(&theirs.name) {
                    prop_assert_eq!(
                        (theirs.incarnation, theirs.presence, &theirs.addr),
                        (reference.incarnation, reference.presence, &reference.addr),
                        "n{} and n{} disagree on {}",
                        i,
                        component[0],
                        theirs.name
                    );
                }
            }
            for group in view.groups() {
                for a in &group {
                    for b in &group {
                        let (a, b) = (sim.index(a), sim.index(b));
                        prop_assert!(
                            a == b || sim.connected.contains(&pair(a, b)),
                            "n{} and n{} share a group without a link",
                            a,
                            b
                        );
                    }
                }
            }
            for j in sim.live() {
                let kept_apart = apart.is_some_and(|(a, b)| pair(a, b) == pair(i, j));
                if !component.contains(&j) && !kept_apart {
                    let record = view.record(&name(j));
                    prop_assert!(
                        record.is_none_or(|r| r.presence == Presence::Left),
                        "n{} knows of n{} and is not connected to it",
                        i,
                        j
                    );
                    continue;
                }
                if !component.contains(&j) {
                    continue;
                }
                let expected = match apart {
                    Some((a, b)) if pair(i, j) == pair(a, b) => NodeState::Unreachable,
                    _ => NodeState::Up,
                };
                prop_assert_eq!(view.state(&name(j)), Some(expected), "n{} sees n{}", i, j);
            }
            let group: BTreeSet<usize> = view.group().iter().map(|n| sim.index(n)).collect();
            match apart {
                Some((a, b)) => prop_assert!(
                    !(group.contains(&a) && group.contains(&b)),
                    "n{a} and n{b} share n{i}'s group"
                ),
                None => prop_assert_eq!(
                    group,
                    component.iter().copied().collect::<BTreeSet<_>>(),
                    "n{}'s group",
                    i
                ),
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(500)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn every_live_node_comes_to_the_same_full_mesh(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, None)?;
    }

    #[test]
    fn a_pair_kept_apart_splits_the_live_nodes_into_the_same_fully_connected_groups_everywhere(
        ops in prop::collection::vec(op(), 1..120),
        apart in (any::<usize>(), any::<usize>()),
    ) {
        run(ops, Some(apart))?;
    }
}

//! Deterministic simulation of the membership machine: members join through random members
//! (concurrently too), die at random, links between two members drop (what was in flight is
//! lost, each side's monitor of the other fires with `noconnection`) and come back, members
//! tick (anti-entropy), and messages arrive in random order over per-pair FIFO links. A monitor
//! set on a process that already ended fires at once with `noproc`, and one across a dropped link
//! with `noconnection`, as in the runtime; a newcomer whose seed ended joins again through a
//! live member, as the runtime does through the rally name. After the faults stop (every link
//! back) and members have ticked and delivered everything, every live member that was let in
//! holds the same list (exactly the live members that were let in); no member reported a join
//! or a leave twice in a row, nor anything about a member after its final leave. A failing case
//! prints its input; proptest replays it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gen_cluster_proto::membership::{
    Member, Membership, MembershipAction, MembershipEvent, MembershipMessage,
};
use gen_cluster_proto::{ExitReason, Incarnation, NodeId, Pid};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Join { seed: usize },
    Die { member: usize },
    Deliver { from: usize, to: usize },
    Cut { a: usize, b: usize },
    Heal { a: usize, b: usize },
    Tick { member: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<usize>().prop_map(|seed| Op::Join { seed }),
        1 => any::<usize>().prop_map(|member| Op::Die { member }),
        8 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Deliver { from, to }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Heal { a, b }),
        2 => any::<usize>().prop_map(|member| Op::Tick { member }),
    ]
}

/// A pair of members, in order.
fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn pid(i: usize) -> Pid {
    Pid {
        node: NodeId(i as u64 % 3),
        incarnation: Incarnation(1),
        local: i as u64 + 1,
    }
}

#[derive(Default)]
struct Sim {
    members: Vec<Membership>,
    alive: Vec<bool>,
    links: BTreeMap<(usize, usize), VecDeque<MembershipMessage>>,
    /// Who monitors whom.
    watchers: BTreeMap<usize, BTreeSet<usize>>,
    /// The pairs whose link is down.
    cut: BTreeSet<(usize, usize)>,
    /// Newcomers whose seed was lost, to join again through the rally's holder.
    rejoining: BTreeSet<usize>,
    events: Vec<(usize, MembershipEvent)>,
}

impl Sim {
    fn add(&mut self, membership: Membership) {
        self.members.push(membership);
        self.alive.push(true);
        self.flush(self.members.len() - 1);
    }

    fn flush(&mut self, i: usize) {
        while let Some(action) = self.members[i].poll_action() {
            match action {
                // A send waits for the link; a probe goes only over a link that is up.
                MembershipAction::Send { to, message }
                | MembershipAction::Probe { to, message } => {
                    let to = (to.local - 1) as usize;
                    if self.alive[to] && !self.cut.contains(&pair(i, to)) {
                        self.links.entry((i, to)).or_default().push_back(message);
                    }
                }
                MembershipAction::Monitor(target) => {
                    let target = (target.local - 1) as usize;
                    if self.cut.contains(&pair(i, target)) {
                        self.members[i].handle_down(pid(target), ExitReason::NoConnection);
                    } else if self.alive[target] {
                        self.watchers.entry(target).or_default().insert(i);
                    } else {
                        self.members[i].handle_down(pid(target), ExitReason::NoProc);
                    }
                }
                MembershipAction::Event(MembershipEvent::SeedLost { .. }) => {
                    // Joined again through the rally name on the member's next tick, as the
                    // runtime does after `down_after`.
                    self.rejoining.insert(i);
                }
                MembershipAction::Event(event) => self.events.push((i, event)),
            }
        }
    }

    fn apply(&mut self, op: Op) {
        let n = self.members.len();
        match op {
            Op::Join { seed } => {
                let i = n;
                let member = Member {
                    pid: pid(i),
                    kind: format!("k{}", i % 2),
                    addr: String::new(),
                    child: false,
                };
                self.add(Membership::joining(member, pid(seed % n)));
            }
            Op::Die { member } => {
                let i = member % n;
                if !std::mem::replace(&mut self.alive[i], false) {
                    return;
                }
                self.links.retain(|&(from, to), _| from != i && to != i);
                for w in self.watchers.remove(&i).unwrap_or_default() {
                    if self.alive[w] {
                        self.members[w].handle_down(pid(i), ExitReason::Shutdown);
                        self.flush(w);
                    }
                }
            }
            Op::Cut { a, b } => {
                let (a, b) = (a % n, b % n);
                if a == b || !self.cut.insert(pair(a, b)) {
                    return;
                }
                self.links.remove(&(a, b));
                self.links.remove(&(b, a));
                for (watcher, watched) in [(a, b), (b, a)] {
                    let watching = self
                        .watchers
                        .get_mut(&watched)
                        .is_some_and(|w| w.remove(&watcher));
                    if watching && self.alive[watcher] {
                        self.members[watcher].handle_down(pid(watched), ExitReason::NoConnection);
                        self.flush(watcher);
                    }
                }
            }
            Op::Heal { a, b } => {
                self.cut.remove(&pair(a % n, b % n));
            }
            Op::Tick { member } => self.tick(member % n),
            Op::Deliver { from, to } => {
                let (from, to) = (from % n, to % n);
                if let Some(message) = self
                    .links
                    .get_mut(&(from, to))
                    .and_then(VecDeque::pop_front)
                {
                    self.members[to].handle_message(message);
                    self.flush(to);
                }
            }
        }
    }

    /// The rally name's holder: one live member that was let in (the registry keeps one holder
    /// per connected cluster; the lowest index stands in for it here).
    fn rally(&self) -> Option<usize> {
        (0..self.members.len()).find(|&j| self.alive[j] && self.members[j].is_welcomed())
    }

    /// A member's tick, as the runtime runs it: anti-entropy, an introduction to the rally's
    /// holder, and a join again through it for a newcomer whose seed was lost.
    fn tick(&mut self, i: usize) {
        if !self.alive[i] {
            return;
        }
        let rally = self.rally().filter(|&j| j != i);
        if let Some(rally) = rally
            && self.rejoining.remove(&i)
        {
            self.members[i].rejoin(pid(rally));
        }
        self.members[i].tick();
        if let Some(rally) = rally {
            self.members[i].introduce_to(pid(rally));
        }
        self.flush(i);
    }

    /// Heals every link, then delivers everything and has every live member tick and introduce
    /// itself to the rally's holder, as the runtime does, for as many rounds as there are
    /// members (each member's tick reaches every other within that many).
    fn settle(&mut self) {
        self.cut.clear();
        for _ in 0..=self.members.len() {
            while let Some((&(from, to), _)) = self.links.iter().find(|(_, q)| !q.is_empty()) {
                self.apply(Op::Deliver { from, to });
            }
            for i in 0..self.members.len() {
                self.tick(i);
            }
        }
        while let Some((&(from, to), _)) = self.links.iter().find(|(_, q)| !q.is_empty()) {
            self.apply(Op::Deliver { from, to });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(500, |n: u32| n / 20)
    ))]

    #[test]
    fn members_agree_once_the_faults_stop(ops in proptest::collection::vec(op(), 0..80)) {
        let mut sim = Sim::default();
        sim.add(Membership::first(Member { pid: pid(0), kind: "k0".into(), addr: String::new(), child: false }));
        for op in ops {
            sim.apply(op);
        }
        sim.settle();
        let inside: BTreeSet<Pid> = (0..sim.members.len())
            .filter(|&i| sim.alive[i] && sim.members[i].is_welcomed())
            .map(pid)
            .collect();
        for i in 0..sim.members.len() {
            if sim.alive[i] && sim.members[i].is_welcomed() {
                let view: BTreeSet<Pid> = sim.members[i].members().map(|m| m.pid).collect();
                prop_assert_eq!(&view, &inside, "member {} disagrees", i);
            }
        }
        // Per observer and member: joins and leaves alternate, and a leave other than a lost
        // link is the last word.
        let mut last: BTreeMap<(usize, Pid), &MembershipEvent> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (i, event) in &sim.events {
            let about = match event {
                MembershipEvent::Joined { member, .. } | MembershipEvent::Left { member, .. } => member.pid,
                MembershipEvent::Welcomed => {
                    prop_assert!(seen.insert(*i), "member {} was welcomed twice", i);
                    continue;
                }
                MembershipEvent::SeedLost { .. } => continue,
            };
            if let Some(before) = last.insert((*i, about), event) {
                let twice = matches!(
                    (before, event),
                    (MembershipEvent::Joined { .. }, MembershipEvent::Joined { .. })
                        | (MembershipEvent::Left { .. }, MembershipEvent::Left { .. })
                );
                prop_assert!(!twice, "member {} reported {:?} twice in a row", i, event);
                let after_final = matches!(
                    before,
                    MembershipEvent::Left { reason, .. } if *reason != ExitReason::NoConnection
                );
                prop_assert!(!after_final, "member {} reported {:?} after a final leave", i, event);
            }
        }
        for i in 0..sim.members.len() {
            let welcomed = seen.contains(&i);
            prop_assert_eq!(
                welcomed,
                sim.members[i].is_welcomed(),
                "member {} is in: told so once, and only then",
                i
            );
        }
    }
}

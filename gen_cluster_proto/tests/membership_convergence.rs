//! Deterministic simulation of the membership machine: members join through random members
//! (concurrently too), die at random, and messages arrive in random order over per-pair FIFO
//! links. A monitor set on a process that already ended fires at once with `noproc`, as in the
//! runtime; a newcomer whose seed ended joins again through a live member, as the runtime does
//! through the rally name, and members cut off from the rally's holder introduce themselves to
//! it. After the faults stop and every message is delivered, every live member that was let
//! in holds the same list (exactly the live members that were let in), and no member reported any
//! join or leave twice. A failing case prints its input; proptest replays it.

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<usize>().prop_map(|seed| Op::Join { seed }),
        1 => any::<usize>().prop_map(|member| Op::Die { member }),
        8 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Deliver { from, to }),
    ]
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
                MembershipAction::Send { to, message } => {
                    let to = (to.local - 1) as usize;
                    if self.alive[to] {
                        self.links.entry((i, to)).or_default().push_back(message);
                    }
                }
                MembershipAction::Monitor(target) => {
                    let target = (target.local - 1) as usize;
                    if self.alive[target] {
                        self.watchers.entry(target).or_default().insert(i);
                    } else {
                        self.members[i].handle_down(pid(target), ExitReason::NoProc);
                    }
                }
                MembershipAction::Event(MembershipEvent::SeedLost { .. }) => {
                    // As the runtime does through the rally name: join again through a live
                    // member that was let in.
                    if let Some(rally) = self.rally().filter(|&j| j != i) {
                        self.members[i].rejoin(pid(rally));
                    }
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

    /// Delivers everything; members that do not know the rally's holder introduce themselves to
    /// it, as the runtime does; until nothing changes.
    fn settle(&mut self) {
        loop {
            while let Some((&(from, to), _)) = self.links.iter().find(|(_, q)| !q.is_empty()) {
                self.apply(Op::Deliver { from, to });
            }
            let Some(rally) = self.rally() else { return };
            let mut introduced = false;
            for i in 0..self.members.len() {
                if self.alive[i]
                    && self.members[i].is_welcomed()
                    && !self.members[i].contains(pid(rally))
                    && i != rally
                {
                    self.members[i].introduce_to(pid(rally));
                    self.flush(i);
                    introduced = true;
                }
            }
            if !introduced {
                return;
            }
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
        let mut seen = BTreeSet::new();
        for (i, event) in &sim.events {
            let key = match event {
                MembershipEvent::Joined { member, .. } => (*i, member.pid, "joined"),
                MembershipEvent::Left { member, .. } => (*i, member.pid, "left"),
                MembershipEvent::Welcomed => (*i, pid(*i), "welcomed"),
                MembershipEvent::SeedLost { .. } => continue,
            };
            prop_assert!(seen.insert(key), "member {} reported {:?} twice", i, event);
        }
        for i in 0..sim.members.len() {
            let welcomed = seen.contains(&(i, pid(i), "welcomed"));
            prop_assert_eq!(
                welcomed,
                sim.members[i].is_welcomed(),
                "member {} is in: told so once, and only then",
                i
            );
        }
    }
}

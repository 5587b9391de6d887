//! Deterministic simulation of the membership machine: members join through random members
//! (concurrently too), plain processes are added as children, members and children die at
//! random, links between two of them drop (what was in flight is lost, each side's monitor of
//! the other fires with `noconnection`) and come back, members tick (anti-entropy), and
//! messages arrive in random order over per-pair FIFO links. A monitor set on a process that
//! already ended fires at once with `noproc`, and one across a dropped link with
//! `noconnection`, as in the runtime; a probe goes only over a link that is up and watches the
//! probed process, as the runtime's does; a newcomer whose seed ended joins again through a
//! live member on its next tick, as the runtime does through the rally name. After the faults
//! stop (every link back) and members have ticked and delivered everything (a bounded number of
//! messages), every live member that was let in holds the same list, with the same digest:
//! exactly the live members that were let in, and live children only. Along the way: no member
//! reported a join or a leave twice in a row, nor anything about a process after its final
//! leave; a member lost with its link is reported lost at most once per drop of that link;
//! nothing is ever sent to a child; and in the end no one probes a process that ended. A
//! failing case prints its input; proptest replays it.

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
    AddChild { through: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<usize>().prop_map(|seed| Op::Join { seed }),
        1 => any::<usize>().prop_map(|member| Op::Die { member }),
        8 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Deliver { from, to }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Heal { a, b }),
        2 => any::<usize>().prop_map(|member| Op::Tick { member }),
        1 => any::<usize>().prop_map(|through| Op::AddChild { through }),
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
    /// Which processes are children (they run no membership: their machine is never used).
    child: Vec<bool>,
    /// How many times the link of each pair dropped.
    drops: BTreeMap<(usize, usize), usize>,
    /// Messages delivered, to bound the settling.
    delivered: usize,
    /// Probes sent to processes that had ended.
    probes_to_the_dead: usize,
}

/// More messages than this while settling is an exchange that does not end.
const DELIVERY_BOUND: usize = 200_000;

impl Sim {
    fn add(&mut self, membership: Membership) {
        self.members.push(membership);
        self.alive.push(true);
        self.child.push(false);
        self.flush(self.members.len() - 1);
    }

    fn flush(&mut self, i: usize) {
        while let Some(action) = self.members[i].poll_action() {
            match action {
                // A send over a dropped link is lost (the runtime would dial, and might get
                // through: losing it is the harder case).
                MembershipAction::Send { to, message } => {
                    let to = (to.local - 1) as usize;
                    assert!(!self.child[to], "{i} sent {message:?} to the child {to}");
                    if self.alive[to] && !self.cut.contains(&pair(i, to)) {
                        self.links.entry((i, to)).or_default().push_back(message);
                    }
                }
                // A probe goes only over a link that is up, and watches the probed process.
                MembershipAction::Probe { to, message } => {
                    let to = (to.local - 1) as usize;
                    assert!(!self.child[to], "{i} probed the child {to}");
                    if self.cut.contains(&pair(i, to)) {
                        continue;
                    }
                    if self.alive[to] {
                        self.links.entry((i, to)).or_default().push_back(message);
                        self.watchers.entry(to).or_default().insert(i);
                    } else {
                        self.probes_to_the_dead += 1;
                        self.members[i].handle_down(pid(to), ExitReason::NoProc);
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
                // Through a member process (a child cannot let anyone in).
                let processes: Vec<usize> = (0..n).filter(|&j| !self.child[j]).collect();
                let seed = processes[seed % processes.len()];
                self.add(Membership::joining(member, pid(seed)));
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
                *self.drops.entry(pair(a, b)).or_default() += 1;
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
            Op::AddChild { through } => {
                let (i, through) = (n, through % n);
                let child = Member {
                    pid: pid(i),
                    kind: "child".into(),
                    addr: String::new(),
                    child: true,
                };
                // Its machine stands in the table only to keep indices aligned; it is never used.
                self.members.push(Membership::first(child.clone()));
                self.alive.push(true);
                self.child.push(true);
                if self.alive[through] && !self.child[through] {
                    self.members[through].add_child(child);
                    self.flush(through);
                }
            }
            Op::Deliver { from, to } => {
                let (from, to) = (from % n, to % n);
                if let Some(message) = self
                    .links
                    .get_mut(&(from, to))
                    .and_then(VecDeque::pop_front)
                {
                    self.delivered += 1;
                    assert!(
                        self.delivered < DELIVERY_BOUND,
                        "{DELIVERY_BOUND} messages: an exchange does not end"
                    );
                    self.members[to].handle_message(message);
                    self.flush(to);
                }
            }
        }
    }

    /// The rally name's holder: one live member that was let in (the registry keeps one holder
    /// per connected cluster; the lowest index stands in for it here).
    fn rally(&self) -> Option<usize> {
        (0..self.members.len()).find(|&j| self.speaks(j) && self.members[j].is_welcomed())
    }

    /// Whether `i` is a live member process (not a child).
    fn speaks(&self, i: usize) -> bool {
        self.alive[i] && !self.child[i]
    }

    /// A member's tick, as the runtime runs it: anti-entropy, an introduction to the rally's
    /// holder, and a join again through it for a newcomer whose seed was lost.
    fn tick(&mut self, i: usize) {
        if !self.speaks(i) {
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
        // One more round: by now every process that ended was probed once and forgotten.
        self.probes_to_the_dead = 0;
        for i in 0..self.members.len() {
            self.tick(i);
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
        let inside: Vec<usize> = (0..sim.members.len())
            .filter(|&i| sim.speaks(i) && sim.members[i].is_welcomed())
            .collect();
        let speaking: BTreeSet<Pid> = inside.iter().copied().map(pid).collect();
        if let Some(&first) = inside.first() {
            let first_view: BTreeSet<Pid> = sim.members[first].members().map(|m| m.pid).collect();
            for &i in &inside {
                let view: BTreeSet<Pid> = sim.members[i].members().map(|m| m.pid).collect();
                prop_assert_eq!(&view, &first_view, "member {} disagrees with member {}", i, first);
                prop_assert_eq!(sim.members[i].digest(), sim.members[first].digest());
                let (members, children): (BTreeSet<Pid>, BTreeSet<Pid>) = sim.members[i]
                    .members()
                    .map(|m| m.pid)
                    .partition(|p| !sim.child[(p.local - 1) as usize]);
                prop_assert_eq!(&members, &speaking, "member {} holds other members", i);
                prop_assert!(
                    children.iter().all(|p| sim.alive[(p.local - 1) as usize]),
                    "member {} holds a child that ended", i
                );
            }
        }
        prop_assert_eq!(sim.probes_to_the_dead, 0, "a process that ended is still probed");
        // Per observer and member: joins and leaves alternate, and a leave other than a lost
        // link is the last word.
        let mut last: BTreeMap<(usize, Pid), &MembershipEvent> = BTreeMap::new();
        let mut lost: BTreeMap<(usize, usize), usize> = BTreeMap::new();
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
            let other = (about.local - 1) as usize;
            if let MembershipEvent::Left { reason: ExitReason::NoConnection, .. } = event
                && !sim.child[other]
            {
                let count = lost.entry((*i, other)).or_default();
                *count += 1;
                prop_assert!(
                    *count <= sim.drops.get(&pair(*i, other)).copied().unwrap_or(0),
                    "{} reported {} lost more often than their link dropped",
                    i,
                    other
                );
            }
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
        for i in (0..sim.members.len()).filter(|&i| !sim.child[i]) {
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

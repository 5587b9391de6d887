//! A model check (stateright) of the `majority` election machine itself: three voters over
//! links that deliver in order (as the runtime's TCP connections do) and delay any message any
//! time relative to the other links, one link lost with what it carried and made again, each
//! voter's timers firing at any moment (five times in all), one crash (a minority of three: the
//! state in memory lost, the term and vote kept on disk) and its restart, and a write taken by
//! whichever node leads. It starts twice: from a cluster just met, and from one whose first
//! leader n0 has had a write acknowledged by n1 while n2 has not got it yet (so that the
//! failovers that must keep it are within reach). Every reachable state up to a bounded depth is explored, depth first.
//!
//! Always: at most one leader per term; a node's term on disk never goes back, nor its vote
//! within a term; a write acknowledged in a term (a quorum holds it) is in the state of every
//! node that wins a later term. Sometimes (reached): a leader, an acknowledged write, a leader
//! of a later term holding it. That a leader is eventually elected once faults stop is checked
//! by the simulation (`majority_simulation.rs`): timers that may fire before any message
//! arrives can delay it in a model for ever.
//!
//! `MODEL_DEPTH` sets the depth (default 10 in release builds, as `.ci/run` runs it, 8 in debug: about 1.6 million distinct
//! states in 15 s here; 12 explores 11 million in 100 s). At depth 10 it finds a broken
//! election restriction; a vote cast twice or a voter that forgot its memory is found by the
//! simulation, deeper than the model reaches.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use gen_cluster_proto::NodeName;
use gen_cluster_proto::majority::{
    Durable, Majority, MajorityAction, MajorityConfig, MajorityMessage,
};
use stateright::{Checker, Model, Property};

const VOTERS: usize = 3;
const WRITES: u8 = 1;
const CRASHES: u8 = 1;
/// Links that may be lost (with what they carry) and made again in one history.
const RECONNECTS: u8 = 1;
/// Timers that may fire in one history (each can start a round of messages).
const TIMEOUTS: u8 = 5;
const TIMEOUT: Duration = Duration::from_millis(100);

type State = Vec<u8>;
type Message = MajorityMessage<State, u8>;

fn name(i: usize) -> NodeName {
    NodeName::new(format!("n{i}")).unwrap()
}

fn index(name: &NodeName) -> usize {
    name.as_str()[1..].parse().unwrap()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    machine: Majority<State, u8>,
    state: State,
    /// This node's clock: it moves when one of its timers fires.
    now: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct System {
    nodes: Vec<Option<Node>>,
    disks: Vec<Durable>,
    /// Messages in flight on each link, oldest first.
    links: BTreeMap<(usize, usize), VecDeque<Message>>,
    leaders: BTreeMap<u64, usize>,
    /// Writes acknowledged, with their term.
    acknowledged: BTreeMap<u8, u64>,
    /// Writes taken by a leader, waiting for a quorum: (node, term, seq, write).
    pending: Vec<(usize, u64, u64, u8)>,
    writes: u8,
    crashes: u8,
    reconnects: u8,
    timeouts: u8,
    /// Set by a step that broke a rule, for the properties to see.
    two_leaders: bool,
    went_back: bool,
    lost_write: bool,
    /// A leader of a later term held an acknowledged write (the loss check was exercised).
    kept_write: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Deliver(usize, usize),
    Reconnect(usize, usize),
    Timeout(usize),
    Crash(usize),
    Restart(usize),
    Write(usize),
}

struct ElectionModel {
    base: Instant,
    config: MajorityConfig,
}

impl ElectionModel {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            config: MajorityConfig {
                voters: (0..VOTERS).map(name).collect(),
                election_timeout: TIMEOUT,
                heartbeat: TIMEOUT / 5,
                leases: false,
            },
        }
    }

    fn start(&self, system: &mut System, i: usize, now: Instant) {
        let machine = Majority::new(
            name(i),
            self.config.clone(),
            system.disks[i].clone(),
            now,
            1,
        );
        system.nodes[i] = Some(Node {
            machine,
            state: Vec::new(),
            now,
        });
        for peer in 0..VOTERS {
            if peer != i && system.nodes[peer].is_some() {
                system.nodes[i]
                    .as_mut()
                    .unwrap()
                    .machine
                    .handle_node_up(name(peer), now);
                let peer_node = system.nodes[peer].as_mut().unwrap();
                let peer_now = peer_node.now;
                peer_node.machine.handle_node_up(name(i), peer_now);
                drain(system, peer);
            }
        }
        drain(system, i);
    }
}

/// Carries out node `i`'s actions as the runtime would, noting any rule broken.
fn drain(system: &mut System, i: usize) {
    loop {
        let Some(node) = system.nodes[i].as_mut() else {
            return;
        };
        let Some(action) = node.machine.poll_action() else {
            return;
        };
        match action {
            MajorityAction::Persist(durable) => {
                let old = &system.disks[i];
                let vote_changed = durable.term == old.term
                    && old.voted_for.is_some()
                    && durable.voted_for != old.voted_for;
                if durable.term < old.term || vote_changed {
                    system.went_back = true;
                }
                system.disks[i] = durable;
            }
            MajorityAction::Send { to, message } => {
                system
                    .links
                    .entry((i, index(&to)))
                    .or_default()
                    .push_back(message);
            }
            MajorityAction::Elected { term, joined } => {
                let peers: Vec<NodeName> = match joined {
                    Some(peer) => vec![peer],
                    None => {
                        if system
                            .leaders
                            .insert(term, i)
                            .is_some_and(|earlier| earlier != i)
                        {
                            system.two_leaders = true;
                        }
                        for (write, acked_in) in &system.acknowledged {
                            if *acked_in < term {
                                if node.state.contains(write) {
                                    system.kept_write = true;
                                } else {
                                    system.lost_write = true;
                                }
                            }
                        }
                        node.machine.connected().cloned().collect()
                    }
                };
                for peer in peers {
                    let state = node.state.clone();
                    node.machine.send_state(peer, state).unwrap();
                }
            }
            MajorityAction::Follow { state, .. } => node.state = state,
            MajorityAction::Apply { broadcast, .. } => node.state.push(broadcast),
            MajorityAction::Progress {
                term, committed, ..
            } => {
                let done = |(n, t, seq, _): &(usize, u64, u64, u8)| {
                    *n == i && *t == term && *seq <= committed
                };
                for (_, _, _, write) in system.pending.iter().filter(|p| done(p)) {
                    system.acknowledged.insert(*write, term);
                }
                system.pending.retain(|p| !done(p));
            }
            MajorityAction::LeaderLost { leader, .. } => {
                if index(&leader) == i {
                    system.pending.retain(|(n, ..)| *n != i);
                }
            }
            MajorityAction::Refused { node, .. } => {
                panic!("{node} refused: every node has the same voters")
            }
        }
    }
}

impl ElectionModel {
    /// Delivers every message in flight, in link order, until none is left.
    fn deliver_all(&self, mut system: System) -> System {
        while let Some((&(from, to), _)) = system.links.iter().find(|(_, q)| !q.is_empty()) {
            system = self.next_state(&system, Action::Deliver(from, to)).unwrap();
        }
        system
    }
}

impl Model for ElectionModel {
    type State = System;
    type Action = Action;

    fn init_states(&self) -> Vec<System> {
        let mut system = System {
            nodes: vec![None; VOTERS],
            disks: vec![Durable::default(); VOTERS],
            links: BTreeMap::new(),
            leaders: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            pending: Vec::new(),
            writes: 0,
            crashes: 0,
            reconnects: 0,
            timeouts: 0,
            two_leaders: false,
            went_back: false,
            lost_write: false,
            kept_write: false,
        };
        for i in 0..VOTERS {
            self.start(&mut system, i, self.base);
        }
        // The greetings of the first meeting arrive before anything else happens.
        let fresh = self.deliver_all(system);
        // The second start: n0 elected, and a write it took acknowledged by a quorum, with
        // every fault still to come: the failovers that must keep the write.
        let mut led = self.next_state(&fresh, Action::Timeout(0)).unwrap();
        led = self.deliver_all(led);
        led = self.next_state(&led, Action::Write(0)).unwrap();
        // Acknowledged by n0 and n1; n2 has not got it yet.
        for link in [(0, 1), (1, 0)] {
            while let Some(next) = self.next_state(&led, Action::Deliver(link.0, link.1)) {
                led = next;
            }
        }
        assert!(
            !led.acknowledged.is_empty(),
            "the start with a write: {led:?}"
        );
        led.timeouts = 0;
        vec![fresh, led]
    }

    fn actions(&self, system: &System, actions: &mut Vec<Action>) {
        for (&(from, to), queue) in &system.links {
            if !queue.is_empty() {
                actions.push(Action::Deliver(from, to));
            }
        }
        if system.reconnects < RECONNECTS {
            for a in 0..VOTERS {
                for b in a + 1..VOTERS {
                    if system.nodes[a].is_some() && system.nodes[b].is_some() {
                        actions.push(Action::Reconnect(a, b));
                    }
                }
            }
        }
        for (i, node) in system.nodes.iter().enumerate() {
            match node {
                Some(node) => {
                    if node.machine.poll_timeout().is_some() && system.timeouts < TIMEOUTS {
                        actions.push(Action::Timeout(i));
                    }
                    if system.crashes < CRASHES {
                        actions.push(Action::Crash(i));
                    }
                    if node.machine.is_leader() && system.writes < WRITES {
                        actions.push(Action::Write(i));
                    }
                }
                None => actions.push(Action::Restart(i)),
            }
        }
    }

    fn next_state(&self, last: &System, action: Action) -> Option<System> {
        let mut system = last.clone();
        match action {
            Action::Deliver(from, to) => {
                let message = system.links.get_mut(&(from, to))?.pop_front()?;
                if let Some(node) = system.nodes[to].as_mut() {
                    let now = node.now;
                    node.machine.handle_message(name(from), message, now);
                    drain(&mut system, to);
                }
            }
            Action::Reconnect(a, b) => {
                system.reconnects += 1;
                system.links.remove(&(a, b));
                system.links.remove(&(b, a));
                for up in [false, true] {
                    for (me, peer) in [(a, b), (b, a)] {
                        let node = system.nodes[me].as_mut()?;
                        let now = node.now;
                        if up {
                            node.machine.handle_node_up(name(peer), now);
                        } else {
                            node.machine.handle_node_down(&name(peer), now);
                        }
                        drain(&mut system, me);
                    }
                }
            }
            Action::Timeout(i) => {
                let node = system.nodes[i].as_mut()?;
                let due = node.machine.poll_timeout()?;
                node.now = node.now.max(due);
                let now = node.now;
                node.machine.handle_timeout(now);
                system.timeouts += 1;
                drain(&mut system, i);
            }
            Action::Crash(i) => {
                system.nodes[i] = None;
                system.crashes += 1;
                system.links.retain(|(from, to), _| *from != i && *to != i);
                system.pending.retain(|(n, ..)| *n != i);
                for peer in 0..VOTERS {
                    if let Some(node) = system.nodes[peer].as_mut() {
                        let now = node.now;
                        node.machine.handle_node_down(&name(i), now);
                        drain(&mut system, peer);
                    }
                }
            }
            Action::Restart(i) => {
                let now = system
                    .nodes
                    .iter()
                    .flatten()
                    .map(|n| n.now)
                    .max()
                    .unwrap_or(self.base);
                self.start(&mut system, i, now);
            }
            Action::Write(i) => {
                let write = system.writes + 1;
                let node = system.nodes[i].as_mut()?;
                node.state.push(write);
                let seq = node.machine.broadcast(write, node.now).ok()?;
                let term = node.machine.term();
                system.writes = write;
                system.pending.push((i, term, seq, write));
                drain(&mut system, i);
            }
        }
        system.links.retain(|_, queue| !queue.is_empty());
        Some(system)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one leader per term", |_, s: &System| !s.two_leaders),
            Property::always("a term or vote never goes back", |_, s: &System| {
                !s.went_back
            }),
            Property::always("an acknowledged write is never lost", |_, s: &System| {
                !s.lost_write
            }),
            Property::sometimes("a leader is elected", |_, s: &System| !s.leaders.is_empty()),
            Property::sometimes("a write is acknowledged", |_, s: &System| {
                !s.acknowledged.is_empty()
            }),
            Property::sometimes(
                "a later leader holds an acknowledged write",
                |_, s: &System| s.kept_write,
            ),
        ]
    }
}

#[test]
fn the_majority_election_keeps_its_promises_in_every_reachable_state() {
    let depth = std::env::var("MODEL_DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
        // A debug build explores about ten times slower: a shallower default there.
        .unwrap_or(if cfg!(debug_assertions) { 8 } else { 10 });
    let checker = ElectionModel::new()
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_dfs()
        .join();
    eprintln!(
        "depth {depth}: {} states, {} unique",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
}

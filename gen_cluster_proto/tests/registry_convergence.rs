//! Deterministic simulation of the registry machine: 2 to 5 nodes, random registrations,
//! releases, holder deaths, partitions and heals, messages delivered in random order over
//! per-pair FIFO links (as TCP gives). As in the runtime, a node counts a connected peer only
//! while the two share a group of the cluster view, and the two sides come to count each other
//! at different times: a message from a peer the receiver does not count is dropped. After the
//! faults stop and every message is delivered, every node holds the same view, no dead holder is
//! named, and no process was told twice that it lost the same registration. A failing case
//! prints its seed; proptest replays it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gen_cluster_proto::registry::{Registry, RegistryAction, RegistryMessage};
use gen_cluster_proto::{Incarnation, NodeName, Pid};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register {
        node: usize,
        name: u8,
        local: u64,
    },
    Unregister {
        node: usize,
        name: u8,
    },
    ProcessDown {
        node: usize,
        local: u64,
    },
    Cut {
        a: usize,
        b: usize,
    },
    Heal {
        a: usize,
        b: usize,
    },
    /// `node` starts counting its connected `peer` (they came to share a group).
    Count {
        node: usize,
        peer: usize,
    },
    /// `node` stops counting its connected `peer` (they no longer share a group).
    Uncount {
        node: usize,
        peer: usize,
    },
    Deliver {
        from: usize,
        to: usize,
    },
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    let n = 0..nodes;
    prop_oneof![
        3 => (n.clone(), 0u8..3, 1u64..4).prop_map(|(node, name, local)| Op::Register { node, name, local }),
        1 => (n.clone(), 0u8..3).prop_map(|(node, name)| Op::Unregister { node, name }),
        1 => (n.clone(), 1u64..4).prop_map(|(node, local)| Op::ProcessDown { node, local }),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Heal { a, b }),
        2 => (n.clone(), n.clone()).prop_map(|(node, peer)| Op::Count { node, peer }),
        1 => (n.clone(), n.clone()).prop_map(|(node, peer)| Op::Uncount { node, peer }),
        6 => (n.clone(), n).prop_map(|(from, to)| Op::Deliver { from, to }),
    ]
}

struct Sim {
    names: Vec<NodeName>,
    registries: Vec<Registry>,
    connected: BTreeSet<(usize, usize)>,
    /// `(node, peer)`: `node` counts `peer`.
    counted: BTreeSet<(usize, usize)>,
    links: BTreeMap<(usize, usize), VecDeque<RegistryMessage>>,
    dead: BTreeSet<Pid>,
    notices: Vec<(Pid, String)>,
    /// Every distinct registration granted, to bound the notices: one per lost registration.
    granted: BTreeSet<(Pid, String, u64)>,
}

const INCARNATION: Incarnation = Incarnation(1);

impl Sim {
    fn new(n: usize) -> Self {
        let names: Vec<NodeName> = (0..n)
            .map(|i| NodeName::new(format!("n{i}")).unwrap())
            .collect();
        let mut sim = Self {
            registries: names
                .iter()
                .map(|name| Registry::new(name.clone(), INCARNATION))
                .collect(),
            names,
            connected: BTreeSet::new(),
            counted: BTreeSet::new(),
            links: BTreeMap::new(),
            dead: BTreeSet::new(),
            notices: Vec::new(),
            granted: BTreeSet::new(),
        };
        sim.connect_all();
        sim
    }

    fn pid(&self, node: usize, local: u64) -> Pid {
        Pid {
            node: self.names[node].id(),
            incarnation: INCARNATION,
            local,
        }
    }

    fn index_of(&self, id: gen_cluster_proto::NodeId) -> usize {
        self.names.iter().position(|n| n.id() == id).unwrap()
    }

    fn is_connected(&self, a: usize, b: usize) -> bool {
        self.connected.contains(&(a.min(b), a.max(b)))
    }

    /// Carries out what node `node`'s registry asks.
    fn flush(&mut self, node: usize) {
        while let Some(action) = self.registries[node].poll_action() {
            match action {
                RegistryAction::Broadcast(message) => {
                    for peer in self.counted_by(node) {
                        self.links
                            .entry((node, peer))
                            .or_default()
                            .push_back(message.clone());
                    }
                }
                RegistryAction::Send { to, message } => {
                    let peer = self.index_of(to);
                    if self.is_connected(node, peer) {
                        self.links
                            .entry((node, peer))
                            .or_default()
                            .push_back(message);
                    }
                }
                RegistryAction::NotifyLoser { loser, name, .. } => self.notices.push((loser, name)),
                RegistryAction::Monitor(_) | RegistryAction::Demonitor(_) => {}
            }
        }
    }

    /// The peers `node` counts.
    fn counted_by(&self, node: usize) -> Vec<usize> {
        self.counted
            .iter()
            .filter(|(counter, _)| *counter == node)
            .map(|&(_, peer)| peer)
            .collect()
    }

    fn cut(&mut self, a: usize, b: usize) {
        if a == b || !self.connected.remove(&(a.min(b), a.max(b))) {
            return;
        }
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        // A lost link is told whether or not the peer was counted.
        self.counted.remove(&(a, b));
        self.counted.remove(&(b, a));
        self.registries[a].handle_node_down(self.names[b].id(), INCARNATION);
        self.registries[b].handle_node_down(self.names[a].id(), INCARNATION);
        self.flush(a);
        self.flush(b);
    }

    fn heal(&mut self, a: usize, b: usize) {
        if a != b {
            self.connected.insert((a.min(b), a.max(b)));
        }
    }

    fn count(&mut self, node: usize, peer: usize) {
        if node == peer || !self.is_connected(node, peer) || !self.counted.insert((node, peer)) {
            return;
        }
        self.registries[node].handle_node_up(self.names[peer].id());
        self.flush(node);
    }

    fn uncount(&mut self, node: usize, peer: usize) {
        if !self.counted.remove(&(node, peer)) {
            return;
        }
        self.registries[node].handle_node_down(self.names[peer].id(), INCARNATION);
        self.flush(node);
    }

    /// Connects every pair, each side counting the other.
    fn connect_all(&mut self) {
        let n = self.names.len();
        for a in 0..n {
            for b in 0..n {
                self.heal(a, b);
                self.count(a, b);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize) {
        let Some(message) = self
            .links
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        else {
            return;
        };
        // What the receiver does not count is dropped.
        if self.counted.contains(&(to, from)) {
            self.registries[to].handle_message(self.names[from].id(), message);
            self.flush(to);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Register { node, name, local } => {
                let pid = self.pid(node, local);
                if self.dead.contains(&pid) {
                    return;
                }
                if let Ok(registration) =
                    self.registries[node].register(&format!("name{name}"), pid)
                {
                    self.granted
                        .insert((pid, registration.name.clone(), registration.stamp.clock));
                    self.flush(node);
                    // What the runtime does after a registration: announce it to every peer
                    // it counts.
                    let announce = RegistryMessage::Announce {
                        registrations: vec![registration],
                        ack: None,
                    };
                    for peer in self.counted_by(node) {
                        self.links
                            .entry((node, peer))
                            .or_default()
                            .push_back(announce.clone());
                    }
                }
            }
            Op::Unregister { node, name } => {
                let name = format!("name{name}");
                if let Some(holder) = self.registries[node].whereis(&name) {
                    self.registries[node].unregister(&name, holder);
                    self.flush(node);
                }
            }
            Op::ProcessDown { node, local } => {
                let pid = self.pid(node, local);
                self.dead.insert(pid);
                self.registries[node].handle_process_down(pid);
                self.flush(node);
            }
            Op::Cut { a, b } => self.cut(a, b),
            Op::Heal { a, b } => self.heal(a, b),
            Op::Count { node, peer } => self.count(node, peer),
            Op::Uncount { node, peer } => self.uncount(node, peer),
            Op::Deliver { from, to } => self.deliver(from, to),
        }
    }

    /// Heals every link, counts every peer, and delivers until nothing is in flight.
    fn settle(&mut self) {
        self.connect_all();
        while let Some((&(from, to), _)) = self.links.iter().find(|(_, queue)| !queue.is_empty()) {
            self.deliver(from, to);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(500, |n: u32| n / 20)
    ))]

    #[test]
    fn views_converge_once_the_faults_stop(
        (nodes, ops) in (2usize..6).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 0..60)))
    ) {
        let mut sim = Sim::new(nodes);
        for op in ops {
            sim.apply(op);
        }
        sim.settle();
        let views: Vec<Vec<(String, Pid)>> = sim
            .registries
            .iter()
            .map(|r| r.names().map(|(name, pid)| (name.to_string(), pid)).collect())
            .collect();
        for (i, view) in views.iter().enumerate() {
            prop_assert_eq!(view, &views[0], "node {} disagrees with node 0", i);
            for (name, pid) in view {
                prop_assert!(!sim.dead.contains(pid), "{} is held by a dead process", name);
            }
        }
        for (pid, name) in &sim.notices {
            let told = sim.notices.iter().filter(|n| (&n.0, &n.1) == (pid, name)).count();
            let granted = sim.granted.iter().filter(|g| (&g.0, &g.1) == (pid, name)).count();
            prop_assert!(told <= granted, "{} was told {} times it lost {}, but held it {} times", pid, told, name, granted);
        }
    }
}

//! The cluster view: every node of the cluster as this node knows it, learned transitively, and
//! the fully connected group that the services (election, registry, rally, status) act on.
//!
//! - Each node authors one [`NodeRecord`] about itself — the address it can be dialed at, its
//!   incarnation, whether it left, and the nodes it is connected to now — and bumps the record's
//!   version on every change. Records spread: when a link comes up both sides send a
//!   [`Digest`](ViewMessage::Digest) (name, incarnation, version per record), each answers with
//!   the records the other lacks or holds older, and asks for the ones it lacks; a node that
//!   learns something new passes it on to the nodes it is connected to that did not get it from
//!   its author directly. A later life of a node
//!   replaces the records of its earlier lives.
//! - A node is [`Up`](NodeState::Up) when connected to this node, [`Unreachable`](NodeState::Unreachable)
//!   when a node connected to this one says it is connected to it, [`Down`](NodeState::Down)
//!   when no one this node hears from is connected to it, and [`Left`](NodeState::Left) once it
//!   announced its goodbye. [`View::to_dial`] names the members this node should be connected to
//!   and is not (a full mesh, as Erlang's `connect_all`).
//! - Overlapping partitions (A–B cut while both reach C) are settled without disconnecting
//!   anyone: [`View::groups`] splits the live nodes (up or unreachable) into fully connected
//!   groups by one deterministic
//!   rule over the records (an edge is two nodes that each list the other; in name order, each
//!   node not yet placed starts a group and takes every later node linked to all of it), so the
//!   nodes that hold the same records compute the same groups, and a node acts only within its
//!   own ([`View::group`]). In the example the groups are {A, C} and {B}.
//!
//! Sans-IO: the runtime reports links that come up and go down and the messages that arrive,
//! and carries out what [`View::poll_action`] returns. Costs: a node holds one record per node of
//! the cluster, each listing up to n − 1 links; a change of one node's record goes from it to
//! each node it is connected to, and is passed on only to nodes it is not connected to (O(n)
//! record copies per change in a full mesh of n nodes, each O(n) bytes); [`View::groups`] is O(n³) in the worst case, computed when asked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::handshake::Identity;
use crate::{Incarnation, NodeName};

/// What a node says about itself.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub name: NodeName,
    /// Where it can be dialed.
    pub addr: String,
    /// Its life.
    pub incarnation: Incarnation,
    /// Bumped by the node on every change of this record.
    pub version: u64,
    /// Whether it announced that it leaves.
    pub presence: Presence,
    /// The nodes it is connected to.
    pub links: BTreeSet<NodeName>,
}

impl NodeRecord {
    fn freshness(&self) -> (Incarnation, u64) {
        (self.incarnation, self.version)
    }
}

/// Whether a node is still a member.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Presence {
    /// It is a member.
    Member,
    /// It said goodbye.
    Left,
}

/// A node's state as this node sees it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum NodeState {
    /// Connected to this node (or this node itself).
    Up,
    /// Not connected to this node, but a node connected to this one is connected to it.
    Unreachable,
    /// No node this node hears from is connected to it.
    Down,
    /// It announced its goodbye.
    Left,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Unreachable => "unreachable",
            NodeState::Down => "down",
            NodeState::Left => "left",
        })
    }
}

/// What nodes tell each other about the cluster.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ViewMessage {
    /// The freshness of every record the sender holds.
    Digest(Vec<(NodeName, Incarnation, u64)>),
    /// Records the receiver lacks, or holds older versions of.
    Records(Vec<NodeRecord>),
    /// The names whose records the sender asks for.
    Want(Vec<NodeName>),
}

/// What the runtime is asked to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ViewAction {
    /// Send `message` to the connected node `to`.
    Send {
        /// The connected node.
        to: NodeName,
        /// The message.
        message: ViewMessage,
    },
    /// The view changed: states, members or groups may differ.
    Changed,
}

/// One node's view of its cluster.
#[derive(Debug)]
pub struct View {
    me: NodeName,
    records: BTreeMap<NodeName, NodeRecord>,
    actions: VecDeque<ViewAction>,
}

impl View {
    /// The view of a node named `me`, dialable at `addr`, in its life `incarnation`, connected
    /// to no one yet.
    pub fn new(me: NodeName, addr: String, incarnation: Incarnation) -> Self {
        let record = NodeRecord {
            name: me.clone(),
            addr,
            incarnation,
            version: 0,
            presence: Presence::Member,
            links: BTreeSet::new(),
        };
        Self {
            records: BTreeMap::from([(me.clone(), record)]),
            me,
            actions: VecDeque::new(),
        }
    }

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// A link to `peer` came up (it proved the secret as the node named there, in that life,
    /// listening at that address): it is told what this node knows, and every connected node
    /// learns of the link — and of the peer, if this node is the first to know of this life of
    /// it, so that its address spreads even if this node ends before the peer speaks.
    pub fn handle_up(&mut self, peer: &Identity) {
        if peer.name == self.me {
            return;
        }
        let known = self
            .records
            .get(&peer.name)
            .is_some_and(|held| held.incarnation >= peer.incarnation);
        if !known {
            let first_sight = NodeRecord {
                name: peer.name.clone(),
                addr: peer.listen.clone(),
                incarnation: peer.incarnation,
                version: 0,
                presence: Presence::Member,
                links: BTreeSet::new(),
            };
            self.records.insert(peer.name.clone(), first_sight.clone());
            self.broadcast(vec![first_sight], Some(&peer.name));
        }
        self.change_mine(|mine| mine.links.insert(peer.name.clone()));
        let digest = self.digest();
        self.send(peer.name.clone(), ViewMessage::Digest(digest));
    }

    /// The link to `peer` is gone.
    pub fn handle_down(&mut self, peer: &NodeName) {
        self.change_mine(|mine| mine.links.remove(peer));
    }

    /// This node leaves the cluster: every connected node is told, before the links close.
    pub fn leave(&mut self) {
        self.change_mine(|mine| {
            let changed = mine.presence != Presence::Left;
            mine.presence = Presence::Left;
            changed
        });
    }

    /// A message from the connected node `from`.
    pub fn handle_message(&mut self, from: &NodeName, message: ViewMessage) {
        match message {
            ViewMessage::Digest(theirs) => {
                let mut known: BTreeMap<&NodeName, (Incarnation, u64)> = BTreeMap::new();
                let mut wanted = Vec::new();
                for (name, incarnation, version) in &theirs {
                    known.insert(name, (*incarnation, *version));
                    let mine = self.records.get(name).map(NodeRecord::freshness);
                    if mine.is_none_or(|mine| mine < (*incarnation, *version)) {
                        wanted.push(name.clone());
                    }
                }
                let fresher: Vec<NodeRecord> = self
                    .records
                    .values()
                    .filter(|r| known.get(&r.name).is_none_or(|&f| f < r.freshness()))
                    .cloned()
                    .collect();
                if !fresher.is_empty() {
                    self.send(from.clone(), ViewMessage::Records(fresher));
                }
                if !wanted.is_empty() {
                    self.send(from.clone(), ViewMessage::Want(wanted));
                }
            }
            ViewMessage::Want(names) => {
                let records: Vec<NodeRecord> = names
                    .iter()
                    .filter_map(|name| self.records.get(name).cloned())
                    .collect();
                if !records.is_empty() {
                    self.send(from.clone(), ViewMessage::Records(records));
                }
            }
            ViewMessage::Records(records) => {
                let learned: Vec<NodeRecord> = records
                    .into_iter()
                    .filter(|record| self.merge(record))
                    .collect();
                if !learned.is_empty() {
                    self.actions.push_back(ViewAction::Changed);
                    self.pass_on(learned, from);
                }
            }
        }
    }

    /// The next thing the runtime should do.
    pub fn poll_action(&mut self) -> Option<ViewAction> {
        self.actions.pop_front()
    }

    /// The state of `name`; `None` if this node has never heard of it.
    pub fn state(&self, name: &NodeName) -> Option<NodeState> {
        let record = self.records.get(name)?;
        let mine = &self.records[&self.me];
        Some(if record.presence == Presence::Left {
            NodeState::Left
        } else if *name == self.me || mine.links.contains(name) {
            NodeState::Up
        } else if mine
            .links
            .iter()
            .filter_map(|peer| self.records.get(peer))
            .any(|peer| peer.links.contains(name))
        {
            NodeState::Unreachable
        } else {
            NodeState::Down
        })
    }

    /// Every node this node knows of, its record and its state, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeRecord, NodeState)> {
        self.records.values().filter_map(|record| {
            let state = self.state(&record.name)?;
            Some((record, state))
        })
    }

    /// The record of `name`.
    pub fn record(&self, name: &NodeName) -> Option<&NodeRecord> {
        self.records.get(name)
    }

    /// The members this node should be connected to and is not, with their addresses: every
    /// node that has not left, whatever others say of it (a node down for everyone may be back).
    pub fn to_dial(&self) -> impl Iterator<Item = (&NodeName, &str)> {
        let mine = &self.records[&self.me];
        self.records.values().filter_map(move |record| {
            let wanted = record.name != self.me
                && record.presence == Presence::Member
                && !mine.links.contains(&record.name);
            wanted.then_some((&record.name, record.addr.as_str()))
        })
    }

    /// The fully connected groups of the nodes that are up or unreachable (see the module docs),
    /// each in name order; each of those nodes is in exactly one.
    pub fn groups(&self) -> Vec<BTreeSet<NodeName>> {
        let linked = |a: &NodeName, b: &NodeName| {
            let listed = |x: &NodeName, y: &NodeName| {
                self.records
                    .get(x)
                    .is_some_and(|record| record.links.contains(y))
            };
            listed(a, b) && listed(b, a)
        };
        let mut unplaced: Vec<&NodeName> = self
            .records
            .keys()
            .filter(|name| {
                matches!(
                    self.state(name),
                    Some(NodeState::Up | NodeState::Unreachable)
                )
            })
            .collect();
        let mut groups = Vec::new();
        while !unplaced.is_empty() {
            let mut group: Vec<&NodeName> = vec![unplaced.remove(0)];
            unplaced.retain(|&candidate| {
                let joins = group.iter().all(|member| linked(member, candidate));
                if joins {
                    group.push(candidate);
                }
                !joins
            });
            groups.push(group.into_iter().cloned().collect());
        }
        groups
    }

    /// The group this node is in: the nodes the services act with.
    pub fn group(&self) -> BTreeSet<NodeName> {
        self.groups()
            .into_iter()
            .find(|group| group.contains(&self.me))
            .unwrap_or_else(|| BTreeSet::from([self.me.clone()]))
    }

    fn digest(&self) -> Vec<(NodeName, Incarnation, u64)> {
        self.records
            .values()
            .map(|r| (r.name.clone(), r.incarnation, r.version))
            .collect()
    }

    /// Takes `record` if it is fresher than the one held; true if it was.
    fn merge(&mut self, record: &NodeRecord) -> bool {
        if record.name == self.me {
            return false;
        }
        match self.records.get(&record.name) {
            Some(held) if held.freshness() >= record.freshness() => false,
            _ => {
                self.records.insert(record.name.clone(), record.clone());
                true
            }
        }
    }

    /// Changes this node's own record; if `change` says it changed, bumps its version and tells
    /// every connected node.
    fn change_mine(&mut self, change: impl FnOnce(&mut NodeRecord) -> bool) {
        let Some(mine) = self.records.get_mut(&self.me) else {
            return;
        };
        if !change(mine) {
            return;
        }
        mine.version += 1;
        let mine = mine.clone();
        self.actions.push_back(ViewAction::Changed);
        self.broadcast(vec![mine], None);
    }

    /// Sends `records` to every connected node but `except`.
    fn broadcast(&mut self, records: Vec<NodeRecord>, except: Option<&NodeName>) {
        let links = self.records[&self.me].links.clone();
        for peer in links {
            if Some(&peer) != except {
                self.send(peer, ViewMessage::Records(records.clone()));
            }
        }
    }

    /// Passes records learned from `from` to the connected nodes that did not get them from
    /// their author: a node's own change goes straight to every node it is connected to (the
    /// links its record lists), so only the others need it passed on — in a full mesh, no one.
    fn pass_on(&mut self, records: Vec<NodeRecord>, from: &NodeName) {
        let links = self.records[&self.me].links.clone();
        for peer in links {
            if &peer == from {
                continue;
            }
            let missing: Vec<NodeRecord> = records
                .iter()
                .filter(|record| record.name != peer && !record.links.contains(&peer))
                .cloned()
                .collect();
            if !missing.is_empty() {
                self.send(peer, ViewMessage::Records(missing));
            }
        }
    }

    fn send(&mut self, to: NodeName, message: ViewMessage) {
        self.actions.push_back(ViewAction::Send { to, message });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn view(n: &str) -> View {
        View::new(name(n), format!("{n}:4370"), Incarnation(1))
    }

    /// Delivers every message between the views until none is left.
    fn settle(views: &mut [View]) {
        loop {
            let mut sent = Vec::new();
            for (i, view) in views.iter_mut().enumerate() {
                while let Some(action) = view.poll_action() {
                    if let ViewAction::Send { to, message } = action {
                        sent.push((i, to, message));
                    }
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, to, message) in sent {
                let from = views[from].me.clone();
                if let Some(to) = views.iter_mut().find(|v| v.me == to)
                    && to.records[&to.me].links.contains(&from)
                {
                    to.handle_message(&from, message);
                }
            }
        }
    }

    fn identity(view: &View) -> Identity {
        let mine = &view.records[&view.me];
        Identity {
            name: mine.name.clone(),
            incarnation: mine.incarnation,
            listen: mine.addr.clone(),
            hidden: false,
        }
    }

    fn connect(views: &mut [View], a: usize, b: usize) {
        let (ia, ib) = (identity(&views[a]), identity(&views[b]));
        views[a].handle_up(&ib);
        views[b].handle_up(&ia);
    }

    fn cut(views: &mut [View], a: usize, b: usize) {
        let (na, nb) = (views[a].me.clone(), views[b].me.clone());
        views[a].handle_down(&nb);
        views[b].handle_down(&na);
    }

    #[test]
    fn a_node_seeded_with_one_member_learns_of_all_and_dials_them() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        connect(&mut views, 0, 2);
        settle(&mut views);
        let to_dial: Vec<_> = views[1].to_dial().map(|(n, a)| (n.clone(), a)).collect();
        assert_eq!(to_dial, [(name("c"), "c:4370")]);
        assert_eq!(views[1].state(&name("c")), Some(NodeState::Unreachable));
        connect(&mut views, 1, 2);
        settle(&mut views);
        for view in &views {
            assert_eq!(view.to_dial().count(), 0);
            assert_eq!(view.group().len(), 3, "{:?}", view.groups());
        }
    }

    #[test]
    fn an_overlapping_partition_is_split_into_fully_connected_groups_everyone_agrees_on() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        connect(&mut views, 0, 2);
        connect(&mut views, 1, 2);
        settle(&mut views);
        cut(&mut views, 0, 1);
        settle(&mut views);
        let expected = vec![
            BTreeSet::from([name("a"), name("c")]),
            BTreeSet::from([name("b")]),
        ];
        for view in &views {
            assert_eq!(view.groups(), expected, "{}", view.me);
        }
        assert_eq!(views[1].group(), BTreeSet::from([name("b")]));
        assert_eq!(views[0].state(&name("b")), Some(NodeState::Unreachable));
    }

    #[test]
    fn a_lost_node_is_down_a_goodbye_is_left_and_a_later_life_replaces_the_earlier() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        connect(&mut views, 0, 2);
        connect(&mut views, 1, 2);
        settle(&mut views);
        cut(&mut views, 0, 2);
        cut(&mut views, 1, 2);
        settle(&mut views);
        assert_eq!(views[0].state(&name("c")), Some(NodeState::Down));
        views[1].leave();
        settle(&mut views);
        assert_eq!(views[0].state(&name("b")), Some(NodeState::Left));
        assert_eq!(views[0].to_dial().count(), 1, "c may be back; b left");
        views[2] = View::new(name("c"), "c2:4370".into(), Incarnation(2));
        connect(&mut views, 0, 2);
        settle(&mut views);
        assert_eq!(views[0].record(&name("c")).unwrap().addr, "c2:4370");
        assert_eq!(views[2].state(&name("b")), Some(NodeState::Left));
    }

    #[test]
    fn records_about_this_node_from_others_are_ignored() {
        let mut a = view("a");
        let mut forged = a.records[&name("a")].clone();
        forged.version = 99;
        forged.presence = Presence::Left;
        a.handle_up(&identity(&view("b")));
        a.handle_message(&name("b"), ViewMessage::Records(vec![forged]));
        assert_eq!(a.state(&name("a")), Some(NodeState::Up));
    }
}

//! Leader election among candidate nodes, in gen_leader's `priority` mode, as a state machine:
//! one leader in every connected group of nodes, the highest-priority candidate when there is a
//! choice. Workers follow and never lead. The runtime's `leader` module runs one machine per
//! node and per election name, feeds it node events and the peers' [`ElectionMessage`]s, and
//! carries out the [`ElectionAction`]s (callbacks, messages).
//!
//! The rules, for one node's view (its *alive* peers: connected, and their instance said hello
//! with a compatible candidate list):
//!
//! 1. If some alive node leads (or this one does), the highest-priority leader among them is
//!    the leader; any other leader steps down to it, handing over its state for a merge. A
//!    leader that is alive is kept even when a higher-priority candidate comes back (no
//!    failback) unless `failback` is set.
//! 2. If no alive node leads, the highest-priority alive candidate takes the lead — but a node
//!    just started waits for `start_grace`, or until every candidate is alive, so that it does
//!    not lead while the leader of the nodes it is about to meet is unknown to it.
//! 3. A node follows a leader once it receives that leader's `Elected` with its state, and only
//!    if that leader is the one rule 1 names; a leader sends `Elected` to every node that
//!    becomes alive to it, and to a node that asks (`Join`) because it sees that leader without
//!    following it (its own leader was lost, or its `Elected` crossed a hello).
//!
//! Candidate lists must agree: a list that extends this node's (candidates appended at runtime)
//! is adopted; one that conflicts is refused, and that node is ignored. Messages of an earlier
//! incarnation of a node, or of another election than the one followed, are ignored.
//!
//! The machine is generic over `S`, the behaviour's state as sent in `Elected` and `Merge`; it
//! never looks inside. Its one timer is the start grace; detecting lost nodes is the failure
//! detector's, below it. Costs per event: O(nodes) time; state O(nodes).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::NodeName;

/// One term of one leader. In the `priority` mode: who, in which life, the how-many-th time it
/// won in that life (`term` is 0). In the `majority` mode: who, and the term it won
/// ([`crate::majority`]; `incarnation` and `round` are 0), the fencing token of what it does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ElectionId {
    /// The leader.
    pub leader: NodeName,
    /// The leader's incarnation (`priority` mode).
    pub incarnation: u64,
    /// Its wins in that incarnation, from 1 (`priority` mode).
    pub round: u64,
    /// The term it leads (`majority` mode), from 1; only grows, one leader per term.
    pub term: u64,
}

impl ElectionId {
    /// The `majority` mode's election of `leader` in `term`.
    pub fn of_term(leader: NodeName, term: u64) -> Self {
        Self {
            leader,
            incarnation: 0,
            round: 0,
            term,
        }
    }
}

impl fmt::Display for ElectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.term {
            0 => write!(f, "{}/{}/{}", self.leader, self.incarnation, self.round),
            term => write!(f, "{} term {term}", self.leader),
        }
    }
}

/// Election settings, the same on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// The candidates, highest priority first.
    pub candidates: Vec<NodeName>,
    /// Workers known in advance (more may join).
    pub workers: Vec<NodeName>,
    /// Whether a higher-priority candidate that comes back takes the lead from a lower one.
    pub failback: bool,
    /// How long a node just started waits to meet a leader before it takes the lead itself,
    /// unless every candidate is alive sooner.
    pub start_grace: Duration,
}

/// Between the election instances of two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionMessage<S> {
    /// This instance exists; sent on connect, on start, and when it stops leading.
    Hello {
        /// The sender's incarnation.
        incarnation: u64,
        /// The sender's candidate list.
        candidates: Vec<NodeName>,
        /// The election the sender leads, if it leads.
        leading: Option<ElectionId>,
        /// Whether the receiver should say hello back.
        reply: bool,
    },
    /// The sender leads `election`; `state` is its behaviour's state for the receiver.
    Elected {
        /// The election.
        election: ElectionId,
        /// The state to surrender to.
        state: S,
    },
    /// The sender sees the receiver lead but has not its state: send `Elected`.
    Join,
    /// A leader that stepped down hands its state to the new leader, to be merged.
    Merge {
        /// The node that led.
        from: NodeName,
        /// Its state.
        state: S,
    },
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum ElectionAction<S> {
    /// Send `message` to the instance on `to`.
    Send {
        /// The node.
        to: NodeName,
        /// The message.
        message: ElectionMessage<S>,
    },
    /// This node leads `election`: call `elected(election, joined)` and send its state in an
    /// `Elected` to `joined`, or, on a fresh win (`joined` is `None`), to every member.
    Elected {
        /// The election.
        election: ElectionId,
        /// The member that just became alive, if that is the reason.
        joined: Option<NodeName>,
    },
    /// This node follows `election`'s leader: call `surrendered(state, election)`.
    Surrendered {
        /// The election.
        election: ElectionId,
        /// The leader's state.
        state: S,
    },
    /// This node stopped leading in favour of `to`: send it this node's state in a `Merge`.
    SteppedDown {
        /// The leader that won.
        to: NodeName,
    },
    /// On the leader: a state handed over by a leader that stepped down; call `merge`.
    Merge {
        /// The node that led.
        from: NodeName,
        /// Its state.
        state: S,
    },
    /// On the leader: a member was lost; call `handle_down`.
    MemberDown(NodeName),
    /// The leader this node followed (or led as) is gone: fail the leader calls in flight.
    LeaderLost(NodeName),
    /// `node`'s candidate list conflicts with this node's: it is ignored.
    Refused {
        /// The node.
        node: NodeName,
        /// Its list.
        candidates: Vec<NodeName>,
    },
}

#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    leading: Option<ElectionId>,
}

/// The most states handed over by peers not counted yet that a node holds; beyond it the oldest
/// is dropped.
pub const HELD_MERGES: usize = 16;

/// One node's election state.
#[derive(Debug)]
pub struct Election<S> {
    me: NodeName,
    incarnation: u64,
    config: ElectionConfig,
    connected: BTreeSet<NodeName>,
    alive: BTreeMap<NodeName, Peer>,
    refused: BTreeSet<NodeName>,
    /// The election this node takes part in: its own when leading.
    current: Option<ElectionId>,
    leading: bool,
    rounds: u64,
    /// The election whose state this node last asked for with `Join`.
    requested: Option<ElectionId>,
    /// Until when a node just started does not take the lead while a candidate is missing.
    grace_until: Option<Instant>,
    /// States handed over while no leader was known, for the next one.
    merges: Vec<(NodeName, S)>,
    /// States handed over by peers not counted yet, with their senders, oldest first: taken
    /// in when the sender is counted, dropped when its link goes (at most [`HELD_MERGES`]).
    held: VecDeque<(NodeName, NodeName, S)>,
    actions: VecDeque<ElectionAction<S>>,
}

impl<S: Clone> Election<S> {
    /// A node's machine, started at `now`; it takes part once told of its connected peers.
    pub fn new(me: NodeName, incarnation: u64, config: ElectionConfig, now: Instant) -> Self {
        let grace_until = Some(now + config.start_grace);
        let mut election = Self {
            me,
            incarnation,
            config,
            connected: BTreeSet::new(),
            alive: BTreeMap::new(),
            refused: BTreeSet::new(),
            current: None,
            leading: false,
            rounds: 0,
            requested: None,
            grace_until,
            merges: Vec::new(),
            held: VecDeque::new(),
            actions: VecDeque::new(),
        };
        election.reevaluate();
        election
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<ElectionAction<S>> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.grace_until
    }

    /// Time passed: the start grace may be over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.grace_until.is_some_and(|until| until <= now) {
            self.grace_until = None;
            self.reevaluate();
        }
    }

    /// The node `peer` is connected: greet its instance.
    pub fn handle_node_up(&mut self, peer: NodeName) {
        if peer == self.me {
            return;
        }
        // A Join sent on an earlier connection may have been lost with it: ask again if needed.
        if self.requested.as_ref().is_some_and(|e| e.leader == peer) {
            self.requested = None;
        }
        self.connected.insert(peer.clone());
        self.hello(peer.clone(), true);
        let (from_peer, others): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(sender, _, _)| *sender == peer);
        self.held = others;
        if !from_peer.is_empty() {
            self.merges
                .extend(from_peer.into_iter().map(|(_, from, state)| (from, state)));
            self.flush_merges();
        }
    }

    /// The nodes connected now, when the events that tell of each change were lost: the
    /// missing downs and ups are applied.
    pub fn handle_connected_now(&mut self, peers: &BTreeSet<NodeName>) {
        let gone: Vec<NodeName> = self.connected.difference(peers).cloned().collect();
        for peer in gone {
            self.handle_node_down(&peer);
        }
        let new: Vec<NodeName> = peers.difference(&self.connected).cloned().collect();
        for peer in new {
            self.handle_node_up(peer);
        }
    }

    /// The node `peer` is gone (down, or its instance ended).
    pub fn handle_node_down(&mut self, peer: &NodeName) {
        self.held.retain(|(sender, _, _)| sender != peer);
        self.connected.remove(peer);
        self.refused.remove(peer);
        if self.alive.remove(peer).is_none() {
            return;
        }
        if self.leading {
            self.actions
                .push_back(ElectionAction::MemberDown(peer.clone()));
        } else if self.current.as_ref().is_some_and(|e| &e.leader == peer) {
            self.current = None;
            self.requested = None;
            self.actions
                .push_back(ElectionAction::LeaderLost(peer.clone()));
        }
        self.reevaluate();
    }

    /// A message from `from`'s instance. Only a peer this node counts (told up, not down since)
    /// is heard — except that a state handed over ([`ElectionMessage::Merge`]) by a peer not
    /// counted yet is held until it is: the two may come to count each other at different
    /// moments (the runtime counts a peer once the cluster view puts both in one group), and a
    /// state dropped here would be lost for good, while a lost hello or `Elected` is sent again
    /// when the peer is counted.
    pub fn handle_message(&mut self, from: NodeName, message: ElectionMessage<S>) {
        if from == self.me {
            return;
        }
        if !self.connected.contains(&from) {
            if let ElectionMessage::Merge { from: led, state } = message {
                if self.held.len() == HELD_MERGES {
                    self.held.pop_front();
                }
                self.held.push_back((from, led, state));
            }
            return;
        }
        match message {
            ElectionMessage::Hello {
                incarnation,
                candidates,
                leading,
                reply,
            } => self.handle_hello(from, incarnation, candidates, leading, reply),
            ElectionMessage::Elected { election, state } => {
                let Some(peer) = self.alive.get_mut(&from) else {
                    return;
                };
                if election.leader != from || election.incarnation != peer.incarnation {
                    return;
                }
                peer.leading = Some(election.clone());
                self.decide();
                if self.top_leader().as_ref() == Some(&from) && !self.leading {
                    self.current = Some(election.clone());
                    self.requested = None;
                    // It has met its cluster: a later loss of the leader is no start.
                    self.grace_until = None;
                    self.actions
                        .push_back(ElectionAction::Surrendered { election, state });
                    self.flush_merges();
                }
                self.ask_to_join();
            }
            ElectionMessage::Join => match self.current.clone() {
                Some(election) if self.leading && self.alive.contains_key(&from) => {
                    self.actions.push_back(ElectionAction::Elected {
                        election,
                        joined: Some(from),
                    });
                }
                // It thinks this node leads: tell it how things are.
                _ => self.hello(from, false),
            },
            ElectionMessage::Merge { from, state } => {
                self.merges.push((from, state));
                self.flush_merges();
            }
        }
    }

    fn handle_hello(
        &mut self,
        from: NodeName,
        incarnation: u64,
        candidates: Vec<NodeName>,
        leading: Option<ElectionId>,
        reply: bool,
    ) {
        if self
            .alive
            .get(&from)
            .is_some_and(|p| p.incarnation > incarnation)
        {
            return;
        }
        if !self.adopt(&candidates) {
            if self.refused.insert(from.clone()) {
                self.actions.push_back(ElectionAction::Refused {
                    node: from,
                    candidates,
                });
            }
            return;
        }
        let leading = leading.filter(|e| e.leader == from && e.incarnation == incarnation);
        // The leader this node follows says it leads no more (or leads another term): it is
        // lost to this node, which decides again.
        if !self.leading
            && let Some(current) = &self.current
            && current.leader == from
            && leading.as_ref() != Some(current)
        {
            self.current = None;
            self.requested = None;
            self.actions
                .push_back(ElectionAction::LeaderLost(from.clone()));
        }
        let fresh = self
            .alive
            .insert(
                from.clone(),
                Peer {
                    incarnation,
                    leading,
                },
            )
            .is_none_or(|old| old.incarnation != incarnation);
        if reply {
            self.hello(from.clone(), false);
        }
        let was_leading = self.leading;
        self.reevaluate();
        // A fresh win already sends its state to every member.
        if fresh
            && was_leading
            && self.leading
            && let Some(election) = self.current.clone()
        {
            self.actions.push_back(ElectionAction::Elected {
                election,
                joined: Some(from),
            });
        }
    }

    /// Takes `theirs` if it extends this node's list; false if the two conflict.
    fn adopt(&mut self, theirs: &[NodeName]) -> bool {
        let ours = &self.config.candidates;
        let common = ours.len().min(theirs.len());
        if ours[..common] != theirs[..common] {
            return false;
        }
        if theirs.len() > ours.len() {
            self.config.candidates = theirs.to_vec();
        }
        true
    }

    fn hello(&mut self, to: NodeName, reply: bool) {
        let leading = self.current.clone().filter(|_| self.leading);
        self.actions.push_back(ElectionAction::Send {
            to,
            message: ElectionMessage::Hello {
                incarnation: self.incarnation,
                candidates: self.config.candidates.clone(),
                leading,
                reply,
            },
        });
    }

    fn priority(&self, node: &NodeName) -> Option<usize> {
        self.config.candidates.iter().position(|c| c == node)
    }

    /// The highest-priority leader this node sees, itself included.
    fn top_leader(&self) -> Option<NodeName> {
        let others = self
            .alive
            .iter()
            .filter(|(_, p)| p.leading.is_some())
            .map(|(name, _)| name);
        let me = self.leading.then_some(&self.me);
        others
            .chain(me)
            .min_by_key(|n| self.priority(n).unwrap_or(usize::MAX))
            .cloned()
    }

    /// The highest-priority candidate alive, itself included.
    fn top_candidate(&self) -> Option<NodeName> {
        self.config
            .candidates
            .iter()
            .find(|c| **c == self.me || self.alive.contains_key(*c))
            .cloned()
    }

    fn reevaluate(&mut self) {
        self.decide();
        self.ask_to_join();
    }

    /// Applies rules 1 and 2: step down, or take the lead.
    fn decide(&mut self) {
        let top_candidate = self.top_candidate();
        let take_over = self.config.failback && top_candidate.as_ref() == Some(&self.me);
        match self.top_leader() {
            Some(top) if top == self.me => {}
            Some(top) if !take_over && self.leading => self.step_down(top),
            // Someone leads: follow it.
            Some(_) if !take_over => {}
            _ if top_candidate.as_ref() == Some(&self.me) && !self.leading => {
                let all_alive = self
                    .config
                    .candidates
                    .iter()
                    .all(|c| *c == self.me || self.alive.contains_key(c));
                if self.grace_until.is_none() || all_alive {
                    self.grace_until = None;
                    self.take_lead();
                }
            }
            _ => {}
        }
    }

    /// Asks the leader this node sees but does not follow for its state.
    fn ask_to_join(&mut self) {
        if self.leading {
            return;
        }
        let Some(top) = self.top_leader() else {
            return;
        };
        let leading = self.alive.get(&top).and_then(|p| p.leading.clone());
        if leading.is_some() && self.current != leading && self.requested != leading {
            self.requested = leading;
            self.actions.push_back(ElectionAction::Send {
                to: top,
                message: ElectionMessage::Join,
            });
        }
    }

    fn take_lead(&mut self) {
        let election = self.next_election();
        self.leading = true;
        self.current = Some(election.clone());
        self.actions.push_back(ElectionAction::Elected {
            election,
            joined: None,
        });
        self.flush_merges();
    }

    fn next_election(&mut self) -> ElectionId {
        self.rounds += 1;
        ElectionId {
            leader: self.me.clone(),
            incarnation: self.incarnation,
            round: self.rounds,
            term: 0,
        }
    }

    fn step_down(&mut self, to: NodeName) {
        self.leading = false;
        self.current = None;
        self.actions
            .push_back(ElectionAction::LeaderLost(self.me.clone()));
        self.actions
            .push_back(ElectionAction::SteppedDown { to: to.clone() });
        let alive: Vec<NodeName> = self.alive.keys().cloned().collect();
        for peer in alive {
            self.hello(peer, false);
        }
    }

    /// Hands held states to the leader: merged here if this node leads, else sent on.
    fn flush_merges(&mut self) {
        let Some(current) = &self.current else {
            return;
        };
        let leader = current.leader.clone();
        for (from, state) in std::mem::take(&mut self.merges) {
            self.actions.push_back(if self.leading {
                ElectionAction::Merge { from, state }
            } else {
                ElectionAction::Send {
                    to: leader.clone(),
                    message: ElectionMessage::Merge { from, state },
                }
            });
        }
    }

    /// The election this node takes part in (its own if it leads), if any.
    pub fn current(&self) -> Option<&ElectionId> {
        self.current.as_ref()
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.leading
    }

    /// The candidate list, highest priority first.
    pub fn candidates(&self) -> &[NodeName] {
        &self.config.candidates
    }

    /// The workers: those configured and those alive that are not candidates.
    pub fn workers(&self) -> BTreeSet<NodeName> {
        let alive = self.alive.keys().chain(std::iter::once(&self.me));
        self.config
            .workers
            .iter()
            .chain(alive)
            .filter(|n| self.priority(n).is_none())
            .cloned()
            .collect()
    }

    /// The nodes taking part: this one and its alive peers.
    pub fn alive(&self) -> BTreeSet<NodeName> {
        self.alive
            .keys()
            .cloned()
            .chain(std::iter::once(self.me.clone()))
            .collect()
    }

    /// The alive peers (the leader's members).
    pub fn members(&self) -> impl Iterator<Item = &NodeName> {
        self.alive.keys()
    }

    /// Candidates and workers known but not alive.
    pub fn down(&self) -> BTreeSet<NodeName> {
        let alive = self.alive();
        self.config
            .candidates
            .iter()
            .chain(self.workers().iter())
            .filter(|n| !alive.contains(*n))
            .cloned()
            .collect()
    }

    /// Nodes refused for a conflicting candidate list.
    pub fn refused(&self) -> &BTreeSet<NodeName> {
        &self.refused
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn config(candidates: &[&str]) -> ElectionConfig {
        ElectionConfig {
            candidates: candidates.iter().map(|c| name(c)).collect(),
            workers: vec![],
            failback: false,
            start_grace: Duration::from_millis(100),
        }
    }

    fn drain(e: &mut Election<u32>) -> Vec<ElectionAction<u32>> {
        std::iter::from_fn(|| e.poll_action()).collect()
    }

    #[test]
    fn a_lone_candidate_leads_after_the_start_grace_or_at_once_when_it_is_the_only_one() {
        let t0 = Instant::now();
        let mut a = Election::<u32>::new(name("a"), 1, config(&["a", "b"]), t0);
        assert!(!a.is_leader(), "b may be about to connect");
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        a.handle_timeout(t0 + Duration::from_millis(100));
        assert!(a.is_leader());
        assert!(matches!(
            drain(&mut a)[..],
            [ElectionAction::Elected { joined: None, .. }]
        ));
        let only = Election::<u32>::new(name("a"), 1, config(&["a"]), t0);
        assert!(only.is_leader(), "every candidate is alive");
    }

    #[test]
    fn a_conflicting_candidate_list_is_refused_and_an_extension_adopted() {
        let mut a = Election::<u32>::new(name("a"), 1, config(&["a", "b"]), Instant::now());
        drain(&mut a);
        a.handle_node_up(name("c"));
        drain(&mut a);
        a.handle_message(
            name("c"),
            ElectionMessage::Hello {
                incarnation: 1,
                candidates: vec![name("b"), name("a")],
                leading: None,
                reply: false,
            },
        );
        assert!(matches!(
            drain(&mut a)[..],
            [ElectionAction::Refused { .. }]
        ));
        assert!(!a.alive().contains(&name("c")));
        a.handle_node_up(name("d"));
        a.handle_message(
            name("d"),
            ElectionMessage::Hello {
                incarnation: 1,
                candidates: vec![name("a"), name("b"), name("d")],
                leading: None,
                reply: false,
            },
        );
        assert_eq!(a.candidates(), &[name("a"), name("b"), name("d")]);
    }

    #[test]
    fn lost_node_events_are_made_up_from_the_connected_set() {
        let mut a = Election::<u32>::new(name("a"), 1, config(&["a", "b", "c"]), Instant::now());
        a.handle_node_up(name("b"));
        drain(&mut a);
        a.handle_connected_now(&BTreeSet::from([name("c")]));
        let actions = drain(&mut a);
        assert!(
            actions
                .iter()
                .any(|x| matches!(x, ElectionAction::Send { to, .. } if *to == name("c")))
        );
        assert!(
            !actions
                .iter()
                .any(|x| matches!(x, ElectionAction::Send { to, .. } if *to == name("b")))
        );
        a.handle_message(
            name("b"),
            ElectionMessage::Hello {
                incarnation: 1,
                candidates: vec![name("a"), name("b"), name("c")],
                leading: None,
                reply: false,
            },
        );
        assert!(!a.alive().contains(&name("b")), "b is no longer connected");
    }

    #[test]
    fn a_state_handed_over_by_a_peer_not_yet_counted_is_held_until_it_counts() {
        let t0 = Instant::now();
        let mut a = Election::<u32>::new(name("a"), 1, config(&["a", "b"]), t0);
        a.handle_timeout(t0 + Duration::from_millis(100));
        assert!(a.is_leader());
        drain(&mut a);
        // b stepped down to a, which does not count b yet.
        let merge = |state| ElectionMessage::Merge {
            from: name("b"),
            state,
        };
        a.handle_message(name("b"), merge(7));
        assert!(drain(&mut a).is_empty(), "held until b counts");
        a.handle_node_up(name("b"));
        assert!(
            drain(&mut a).contains(&ElectionAction::Merge {
                from: name("b"),
                state: 7
            }),
            "the state is merged"
        );
        // One from a peer whose link goes before it counts is dropped.
        a.handle_message(name("c"), merge(8));
        a.handle_node_down(&name("c"));
        a.handle_node_up(name("c"));
        assert!(
            !drain(&mut a)
                .iter()
                .any(|action| matches!(action, ElectionAction::Merge { .. })),
            "a lost link takes its held states with it"
        );
    }

    #[test]
    fn elected_from_an_older_incarnation_is_ignored() {
        let mut b = Election::<u32>::new(name("b"), 1, config(&["a", "b"]), Instant::now());
        b.handle_node_up(name("a"));
        b.handle_message(
            name("a"),
            ElectionMessage::Hello {
                incarnation: 2,
                candidates: vec![name("a"), name("b")],
                leading: None,
                reply: false,
            },
        );
        drain(&mut b);
        let stale = ElectionId {
            leader: name("a"),
            incarnation: 1,
            round: 1,
            term: 0,
        };
        b.handle_message(
            name("a"),
            ElectionMessage::Elected {
                election: stale,
                state: 7,
            },
        );
        assert!(
            !drain(&mut b)
                .iter()
                .any(|a| matches!(a, ElectionAction::Surrendered { .. }))
        );
    }
}

//! The global name registry as a state machine: what each node knows of `name → pid`, and the one
//! rule that settles a clash.
//!
//! Each node is the authority for the names held by its own processes: it sends all of them to a
//! peer it starts counting ([`RegistryMessage::Sync`], answered in kind), announces each one
//! registered, and withdraws them when the holder ends or unregisters. A peer's names are
//! forgotten when it goes down or is no longer counted (the runtime counts the peers of this
//! node's group in the cluster view). Per name, a node
//! keeps the registration each node announced (its candidates); the holder is the candidate with
//! the earliest [`Stamp`] — **the earlier registration wins**, by Lamport clock, then by node
//! name. Every node computes the same winner from the same candidates, so views converge once the
//! announcements have crossed; a name held longer keeps its holder, which is what callers of a
//! long-lived name expect. Keeping every candidate, not only the winner, matters: when a winner
//! is withdrawn, the next candidate (which its own node still holds) is the holder again.
//! The node of a losing process notifies it once ([`RegistryAction::NotifyLoser`]) and withdraws
//! its registration.
//!
//! Inputs: `register`, `unregister`, `handle_message`, `handle_node_up`, `handle_node_down`,
//! `handle_process_down`. Outputs: [`Registry::poll_action`]. Costs: O(log names) per
//! registration; a peer counted is sent this node's own names, a peer lost scans all names.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{Incarnation, NodeId, NodeName, Pid};

/// When a registration was made: a Lamport clock, tie-broken by the registering node's name.
/// Ordered: earlier first.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// The registering node's Lamport clock at registration.
    pub clock: u64,
    /// The registering node.
    pub node: NodeName,
}

/// One name held by one process.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Registration {
    /// The name.
    pub name: String,
    /// Its holder.
    pub pid: Pid,
    /// When it was registered.
    pub stamp: Stamp,
}

/// What registries tell each other.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RegistryMessage {
    /// Names held by the sender's processes. With `ack`, the receiver answers with [`Ack`].
    /// The sender is the authenticated peer the message came from, never a field of it.
    ///
    /// [`Ack`]: RegistryMessage::Ack
    Announce {
        /// Its registrations.
        registrations: Vec<Registration>,
        /// A reference to answer with, when the sender waits for the answer.
        ack: Option<u64>,
    },
    /// The answer to an announcement: the receiver's registrations that beat the announced ones.
    Ack {
        /// The announcement's reference.
        reference: u64,
        /// Registrations that won against the announced ones.
        winners: Vec<Registration>,
    },
    /// Every name held by the sender's processes: the receiver replaces what it held of the
    /// sender's with them. Sent when the sender starts counting the receiver as a peer (their
    /// link came up, or they came to share a group), asking for the receiver's in return
    /// (`answer`). Both sides send one, so each learns the other's names even if what one said
    /// arrived before the receiver counted the sender and was dropped.
    Sync {
        /// All its registrations.
        registrations: Vec<Registration>,
        /// Whether the receiver answers with a `Sync` of its own (without `answer`).
        answer: bool,
    },
    /// The sender's process no longer holds the name.
    Withdraw {
        /// The registration withdrawn.
        registration: Registration,
    },
}

/// What the registry wants done.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum RegistryAction {
    /// Send to the registry of every connected peer.
    Broadcast(RegistryMessage),
    /// Send to the registry of one peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: RegistryMessage,
    },
    /// Tell a local process that another process won its name.
    NotifyLoser {
        /// The local process that lost the name.
        loser: Pid,
        /// The name.
        name: String,
        /// Its holder now.
        winner: Pid,
    },
    /// Watch a local process, so that its end releases its names (asked once per holder, when
    /// it takes its first name).
    Monitor(Pid),
    /// Stop watching a local process: it holds no name any more.
    Demonitor(Pid),
}

/// A name that cannot be registered.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another live process holds the name.
    #[error("the name is held by {0}")]
    Taken(Pid),
    /// Only processes of this node can be registered by this node.
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
    /// Names are 1 to 255 bytes.
    #[error("a global name must be 1 to 255 bytes")]
    BadName,
}

/// One node's view of the global names.
#[derive(Debug)]
pub struct Registry {
    node: NodeName,
    id: NodeId,
    incarnation: Incarnation,
    clock: u64,
    /// Per name, the registration each node announced.
    names: BTreeMap<String, BTreeMap<NodeId, Registration>>,
    /// How many names each local process holds, to watch each holder once.
    local_holders: BTreeMap<Pid, usize>,
    actions: VecDeque<RegistryAction>,
}

impl Registry {
    /// The registry of the node `node` in its life `incarnation`.
    pub fn new(node: NodeName, incarnation: Incarnation) -> Self {
        Self {
            id: node.id(),
            node,
            incarnation,
            clock: 0,
            names: BTreeMap::new(),
            local_holders: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The holder of `name`, as far as this node knows.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.winner(name).map(|r| r.pid)
    }

    /// Every name this node knows, with its holder.
    pub fn names(&self) -> impl Iterator<Item = (&str, Pid)> {
        self.names.iter().filter_map(|(name, candidates)| {
            let winner = candidates.values().min_by(|a, b| a.stamp.cmp(&b.stamp))?;
            Some((name.as_str(), winner.pid))
        })
    }

    /// Registers `name` for the local process `pid`. The caller announces the returned
    /// registration to every peer (and may wait for their [`RegistryMessage::Ack`]s).
    pub fn register(&mut self, name: &str, pid: Pid) -> Result<Registration, RegisterError> {
        if name.is_empty() || name.len() > 255 {
            return Err(RegisterError::BadName);
        }
        if !self.is_local(pid) {
            return Err(RegisterError::NotLocal(pid));
        }
        if let Some(held) = self.winner(name) {
            return if held.pid == pid {
                Ok(held.clone())
            } else {
                Err(RegisterError::Taken(held.pid))
            };
        }
        self.clock += 1;
        let registration = Registration {
            name: name.to_string(),
            pid,
            stamp: Stamp {
                clock: self.clock,
                node: self.node.clone(),
            },
        };
        self.names
            .entry(name.to_string())
            .or_default()
            .insert(self.id, registration.clone());
        self.holds(pid);
        Ok(registration)
    }

    /// Releases `name` if the local process `pid` holds it; returns whether it did.
    pub fn unregister(&mut self, name: &str, pid: Pid) -> bool {
        if self.local_registration(name).is_none_or(|r| r.pid != pid) {
            return false;
        }
        self.drop_local(name, None);
        true
    }

    /// A message from the registry of the peer `from`: the node of the authenticated connection
    /// it arrived on, which the runtime knows and the message does not say.
    pub fn handle_message(&mut self, from: NodeId, message: RegistryMessage) {
        match message {
            RegistryMessage::Announce { registrations, ack } => {
                let winners = self.take_in(from, registrations);
                if let Some(reference) = ack {
                    self.actions.push_back(RegistryAction::Send {
                        to: from,
                        message: RegistryMessage::Ack { reference, winners },
                    });
                }
            }
            RegistryMessage::Sync {
                registrations,
                answer,
            } => {
                self.forget(from, |_| true);
                self.take_in(from, registrations);
                if answer {
                    self.sync(from, false);
                }
            }
            // Winners may be other nodes' registrations: they only tell this node that its own
            // registration lost; their own nodes announce them.
            RegistryMessage::Ack { winners, .. } => {
                for winner in winners {
                    self.clock = self.clock.max(winner.stamp.clock);
                    if self
                        .local_registration(&winner.name)
                        .is_some_and(|local| winner.stamp < local.stamp)
                    {
                        self.drop_local(&winner.name.clone(), None);
                    }
                }
            }
            RegistryMessage::Withdraw { registration } => {
                if registration.pid.node != from {
                    return;
                }
                if let Some(candidates) = self.names.get_mut(&registration.name) {
                    if candidates.get(&from) == Some(&registration) {
                        candidates.remove(&from);
                    }
                    if candidates.is_empty() {
                        self.names.remove(&registration.name);
                    }
                }
            }
        }
    }

    /// This node counts the peer `peer` from now on (their link came up, or they came to share
    /// a group): the two exchange the names of their processes.
    pub fn handle_node_up(&mut self, peer: NodeId) {
        self.sync(peer, true);
    }

    /// The peer `node` (in its life `incarnation`) went down, or this node no longer counts it:
    /// its processes' names are released.
    pub fn handle_node_down(&mut self, node: NodeId, incarnation: Incarnation) {
        self.forget(node, |registration| {
            registration.pid.incarnation == incarnation
        });
    }

    /// The local process `pid` ended: its names are released everywhere.
    pub fn handle_process_down(&mut self, pid: Pid) {
        let released: Vec<String> = self
            .names
            .iter()
            .filter(|(_, candidates)| candidates.get(&self.id).is_some_and(|r| r.pid == pid))
            .map(|(name, _)| name.clone())
            .collect();
        for name in released {
            self.unregister(&name, pid);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<RegistryAction> {
        self.actions.pop_front()
    }

    fn is_local(&self, pid: Pid) -> bool {
        pid.is_of(self.id, self.incarnation)
    }

    /// The local process `pid` took a name.
    fn holds(&mut self, pid: Pid) {
        let count = self.local_holders.entry(pid).or_default();
        *count += 1;
        if *count == 1 {
            self.actions.push_back(RegistryAction::Monitor(pid));
        }
    }

    /// The local process `pid` gave up a name.
    fn releases(&mut self, pid: Pid) {
        if let Some(count) = self.local_holders.get_mut(&pid) {
            *count -= 1;
            if *count == 0 {
                self.local_holders.remove(&pid);
                self.actions.push_back(RegistryAction::Demonitor(pid));
            }
        }
    }

    /// The registrations of this node's processes that beat `registrations`, announced by a
    /// peer this node does not count (not yet, or no longer, in its group): its answer to that
    /// peer, who takes no name this node holds, while this node takes none of the peer's.
    pub fn own_winners(&self, registrations: &[Registration]) -> Vec<Registration> {
        registrations
            .iter()
            .filter_map(|announced| {
                self.local_registration(&announced.name)
                    .filter(|local| local.stamp < announced.stamp)
                    .cloned()
            })
            .collect()
    }

    /// Sends every name of this node's processes to `peer`.
    fn sync(&mut self, peer: NodeId, answer: bool) {
        let registrations = self
            .names
            .values()
            .filter_map(|candidates| candidates.get(&self.id))
            .cloned()
            .collect();
        self.actions.push_back(RegistryAction::Send {
            to: peer,
            message: RegistryMessage::Sync {
                registrations,
                answer,
            },
        });
    }

    /// Forgets the registrations of `node`'s processes that `which` selects.
    fn forget(&mut self, node: NodeId, which: impl Fn(&Registration) -> bool) {
        self.names.retain(|_, candidates| {
            candidates.retain(|&id, registration| !(id == node && which(registration)));
            !candidates.is_empty()
        });
    }

    /// Takes in the registrations the peer `from` sent (only those of its own processes); returns
    /// the registrations held here that beat them.
    fn take_in(&mut self, from: NodeId, registrations: Vec<Registration>) -> Vec<Registration> {
        let mut winners = Vec::new();
        for registration in registrations {
            // A node speaks only for its own processes.
            if registration.pid.node != from {
                continue;
            }
            let name = registration.name.clone();
            self.merge(from, registration.clone());
            if let Some(winner) = self.winner(&name).filter(|w| **w != registration) {
                winners.push(winner.clone());
            }
        }
        winners
    }

    /// The earliest registration of `name` this node knows.
    fn winner(&self, name: &str) -> Option<&Registration> {
        self.names
            .get(name)?
            .values()
            .min_by(|a, b| a.stamp.cmp(&b.stamp))
    }

    fn local_registration(&self, name: &str) -> Option<&Registration> {
        self.names.get(name)?.get(&self.id)
    }

    /// Takes in the registration that the peer `from` announced for one of its processes; a
    /// local registration of the same name that it beats has lost.
    fn merge(&mut self, from: NodeId, incoming: Registration) {
        self.clock = self.clock.max(incoming.stamp.clock);
        let name = incoming.name.clone();
        let winner = incoming.pid;
        let stamp = incoming.stamp.clone();
        self.names
            .entry(name.clone())
            .or_default()
            .insert(from, incoming);
        if self
            .local_registration(&name)
            .is_some_and(|local| stamp < local.stamp)
        {
            self.drop_local(&name, Some(winner));
        }
    }

    /// Removes this node's registration of `name` and withdraws it everywhere; with `lost_to`,
    /// tells its holder which process won the name.
    fn drop_local(&mut self, name: &str, lost_to: Option<Pid>) {
        let Some(candidates) = self.names.get_mut(name) else {
            return;
        };
        let Some(registration) = candidates.remove(&self.id) else {
            return;
        };
        if candidates.is_empty() {
            self.names.remove(name);
        }
        self.releases(registration.pid);
        if let Some(winner) = lost_to {
            self.actions.push_back(RegistryAction::NotifyLoser {
                loser: registration.pid,
                name: name.to_string(),
                winner,
            });
        }
        self.actions
            .push_back(RegistryAction::Broadcast(RegistryMessage::Withdraw {
                registration,
            }));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn registry(name: &str) -> Registry {
        Registry::new(NodeName::new(name).unwrap(), Incarnation(1))
    }

    fn pid_of(registry: &Registry, local: u64) -> Pid {
        Pid {
            node: registry.id,
            incarnation: registry.incarnation,
            local,
        }
    }

    fn drain(registry: &mut Registry) -> Vec<RegistryAction> {
        std::iter::from_fn(|| registry.poll_action()).collect()
    }

    /// Delivers every message `from` wants sent to `to` (broadcasts included).
    fn deliver(from: &mut Registry, to: &mut Registry) -> Vec<RegistryAction> {
        let sender = from.id;
        let mut other = Vec::new();
        for action in drain(from) {
            match action {
                RegistryAction::Broadcast(message) => to.handle_message(sender, message),
                RegistryAction::Send { to: id, message } if id == to.id => {
                    to.handle_message(sender, message)
                }
                action => other.push(action),
            }
        }
        other
    }

    fn announce(registration: &Registration) -> RegistryMessage {
        RegistryMessage::Announce {
            registrations: vec![registration.clone()],
            ack: None,
        }
    }

    #[test]
    fn a_free_name_is_registered_and_its_holder_watched() {
        let mut a = registry("a");
        let pid = pid_of(&a, 1);
        a.register("x", pid).unwrap();
        assert_eq!(a.whereis("x"), Some(pid));
        assert_eq!(drain(&mut a), vec![RegistryAction::Monitor(pid)]);
    }

    #[test]
    fn a_holder_is_watched_once_and_released_with_its_last_name() {
        let mut a = registry("a");
        let pid = pid_of(&a, 1);
        a.register("x", pid).unwrap();
        a.register("y", pid).unwrap();
        assert_eq!(drain(&mut a), vec![RegistryAction::Monitor(pid)]);
        a.unregister("x", pid);
        assert!(!drain(&mut a).contains(&RegistryAction::Demonitor(pid)));
        a.unregister("y", pid);
        assert!(drain(&mut a).contains(&RegistryAction::Demonitor(pid)));
    }

    #[test]
    fn a_held_name_is_refused_to_another_process() {
        let mut a = registry("a");
        a.register("x", pid_of(&a, 1)).unwrap();
        assert_eq!(
            a.register("x", pid_of(&a, 2)),
            Err(RegisterError::Taken(pid_of(&a, 1)))
        );
        assert!(
            a.register("x", pid_of(&a, 1)).is_ok(),
            "registering again is idempotent"
        );
    }

    #[test]
    fn only_local_processes_and_sane_names_are_registered() {
        let mut a = registry("a");
        let b = registry("b");
        assert_eq!(
            a.register("x", pid_of(&b, 1)),
            Err(RegisterError::NotLocal(pid_of(&b, 1)))
        );
        assert_eq!(a.register("", pid_of(&a, 1)), Err(RegisterError::BadName));
    }

    #[test]
    fn an_announcement_teaches_a_peer_and_an_unregistration_withdraws_it() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let registration = a.register("x", pid_of(&a, 1)).unwrap();
        b.handle_message(a.id, announce(&registration));
        assert_eq!(b.whereis("x"), Some(pid_of(&a, 1)));
        drain(&mut a);
        assert!(a.unregister("x", pid_of(&a, 1)));
        deliver(&mut a, &mut b);
        assert_eq!((a.whereis("x"), b.whereis("x")), (None, None));
    }

    #[test]
    fn a_node_cannot_speak_for_another_nodes_processes() {
        let (a, mut b, c) = (registry("a"), registry("b"), registry("c"));
        let forged = Registration {
            name: "x".into(),
            pid: pid_of(&c, 1),
            stamp: Stamp {
                clock: 1,
                node: c.node.clone(),
            },
        };
        b.handle_message(a.id, announce(&forged));
        assert_eq!(b.whereis("x"), None);
    }

    #[test]
    fn a_lost_node_releases_its_names_and_a_dead_holder_releases_everywhere() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let x = a.register("x", pid_of(&a, 1)).unwrap();
        let y = a.register("y", pid_of(&a, 2)).unwrap();
        for r in [&x, &y] {
            b.handle_message(a.id, announce(r));
        }
        drain(&mut a);
        a.handle_process_down(pid_of(&a, 1));
        deliver(&mut a, &mut b);
        assert_eq!(b.whereis("x"), None);
        assert_eq!(b.whereis("y"), Some(pid_of(&a, 2)));
        b.handle_node_down(a.id, a.incarnation);
        assert_eq!(b.whereis("y"), None);
    }

    #[test]
    fn after_a_heal_the_earlier_registration_wins_everywhere_and_the_loser_is_told_once() {
        let (mut a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        // Partition {a} | {b, c}, each side registers "x"; b's registration is later in Lamport
        // time.
        b.clock = 10;
        a.register("x", pid_of(&a, 1)).unwrap();
        let bx = b.register("x", pid_of(&b, 1)).unwrap();
        c.handle_message(b.id, announce(&bx));
        drain(&mut a);
        drain(&mut b);
        // Heal: a sends its names to b and c, b sends its own to a.
        a.handle_node_up(b.id);
        a.handle_node_up(c.id);
        for action in drain(&mut a) {
            if let RegistryAction::Send { to, message } = action {
                let peer = if to == b.id { &mut b } else { &mut c };
                peer.handle_message(a.id, message);
            }
        }
        b.handle_node_up(a.id);
        let b_actions = drain(&mut b);
        let notices: Vec<_> = b_actions
            .iter()
            .filter(|a| matches!(a, RegistryAction::NotifyLoser { .. }))
            .collect();
        let expected = RegistryAction::NotifyLoser {
            loser: pid_of(&b, 1),
            name: "x".into(),
            winner: pid_of(&a, 1),
        };
        assert_eq!(notices, vec![&expected], "the loser is told exactly once");
        for action in b_actions {
            match action {
                RegistryAction::Broadcast(message) => {
                    a.handle_message(b.id, message.clone());
                    c.handle_message(b.id, message);
                }
                RegistryAction::Send { message, .. } => a.handle_message(b.id, message),
                _ => {}
            }
        }
        for r in [&a, &b, &c] {
            assert_eq!(r.whereis("x"), Some(pid_of(&a, 1)), "on {:?}", r.node);
        }
        let told_a_loss = |actions: Vec<RegistryAction>| {
            actions
                .iter()
                .any(|action| matches!(action, RegistryAction::NotifyLoser { .. }))
        };
        assert!(
            !told_a_loss(drain(&mut a)) && !told_a_loss(drain(&mut c)),
            "no one else is told of a loss"
        );
    }

    #[test]
    fn a_sync_replaces_what_was_held_of_its_sender_and_is_answered_once() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let ax = a.register("x", pid_of(&a, 1)).unwrap();
        b.handle_message(a.id, announce(&ax));
        drain(&mut a);
        // a's x ended while b did not count a: b never heard the withdrawal.
        a.handle_process_down(pid_of(&a, 1));
        drain(&mut a);
        a.register("y", pid_of(&a, 2)).unwrap();
        drain(&mut a);
        a.handle_node_up(b.id);
        let answer = deliver(&mut a, &mut b);
        assert!(answer.is_empty());
        assert_eq!(b.whereis("x"), None, "the sync holds all of a's names");
        assert_eq!(b.whereis("y"), Some(pid_of(&a, 2)));
        let answers = drain(&mut b);
        assert!(
            matches!(answers.as_slice(), [RegistryAction::Send { to, message: RegistryMessage::Sync { answer: false, .. } }] if *to == a.id),
            "b answers with its own names, asking for nothing: {answers:?}"
        );
    }

    #[test]
    fn a_peer_not_counted_is_answered_with_the_own_names_that_beat_its_announcement() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let ax = a.register("x", pid_of(&a, 1)).unwrap();
        b.clock = 10;
        let bx = b.register("x", pid_of(&b, 1)).unwrap();
        let by = b.register("y", pid_of(&b, 2)).unwrap();
        assert_eq!(a.own_winners(&[bx, by]), vec![ax.clone()]);
        assert!(b.own_winners(&[ax]).is_empty(), "a later x beats nothing");
        assert_eq!(a.whereis("y"), None, "nothing of b's is taken in");
    }

    #[test]
    fn an_acknowledged_announcement_tells_the_later_registrant_it_lost() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let ax = a.register("x", pid_of(&a, 1)).unwrap();
        b.clock = 5;
        let bx = b.register("x", pid_of(&b, 1)).unwrap();
        drain(&mut a);
        drain(&mut b);
        a.handle_message(
            b.id,
            RegistryMessage::Announce {
                registrations: vec![bx.clone()],
                ack: Some(7),
            },
        );
        let actions = drain(&mut a);
        let [RegistryAction::Send { to, message }] = actions.as_slice() else {
            panic!("one ack, got {actions:?}")
        };
        assert_eq!(
            (*to, message),
            (
                b.id,
                &RegistryMessage::Ack {
                    reference: 7,
                    winners: vec![ax.clone()]
                }
            )
        );
        b.handle_message(a.id, message.clone());
        assert_eq!(b.whereis("x"), None, "the losing registration is dropped");
        assert_eq!(
            drain(&mut b),
            vec![
                RegistryAction::Demonitor(pid_of(&b, 1)),
                RegistryAction::Broadcast(RegistryMessage::Withdraw { registration: bx }),
            ],
            "and withdrawn, without a notice: the registrant learns it from its register call"
        );
        b.handle_message(a.id, announce(&ax));
        assert_eq!(b.whereis("x"), Some(pid_of(&a, 1)));
    }

    #[test]
    fn withdrawing_a_winner_reveals_the_registration_it_had_beaten() {
        let (mut a, mut b, mut c) = (registry("a"), registry("b"), registry("c"));
        let ax = a.register("x", pid_of(&a, 1)).unwrap();
        c.clock = 5;
        let cx = c.register("x", pid_of(&c, 1)).unwrap();
        // b hears both; c (cut off from a) keeps its own.
        b.handle_message(c.id, announce(&cx));
        b.handle_message(a.id, announce(&ax));
        assert_eq!(b.whereis("x"), Some(pid_of(&a, 1)));
        drain(&mut a);
        a.unregister("x", pid_of(&a, 1));
        deliver(&mut a, &mut b);
        assert_eq!(
            b.whereis("x"),
            Some(pid_of(&c, 1)),
            "c's registration, still held by c, is the holder"
        );
    }

    #[test]
    fn equal_clocks_are_settled_by_node_name() {
        let (mut a, mut b) = (registry("a"), registry("b"));
        let ax = a.register("x", pid_of(&a, 1)).unwrap();
        let bx = b.register("x", pid_of(&b, 1)).unwrap();
        assert_eq!(ax.stamp.clock, bx.stamp.clock);
        a.handle_message(b.id, announce(&bx));
        b.handle_message(a.id, announce(&ax));
        assert_eq!(a.whereis("x"), Some(pid_of(&a, 1)));
        assert_eq!(b.whereis("x"), Some(pid_of(&a, 1)));
    }
}

//! Membership of one cluster of processes (the gen_cluster behaviour), as a state machine owned
//! by each member process. It is the member's one source of truth, changed only by messages:
//! nothing ships closures or whole states between members.
//!
//! - A newcomer asks one member (its seed) to [`Join`](MembershipMessage::Join). The contacted
//!   member adds it, reports [`MembershipEvent::Joined`] with `contacted: true` (the behaviour's
//!   `handle_join`) and welcomes it with the member list. A member lets others in only once it is
//!   in itself: it holds their requests until then. A newcomer whose seed ends first is told
//!   ([`MembershipEvent::SeedLost`]) and joins again through another member
//!   ([`Membership::rejoin`]).
//! - The newcomer adopts the list silently and announces itself to every member with a
//!   [`Sync`](MembershipMessage::Sync): its pid and a digest of its member set, not the set. A
//!   member that hears from a member it did not know adds it and reports `Joined` with
//!   `contacted: false` (`handle_node_joined`). Two members whose digests differ exchange their
//!   lists (at most three messages: digest, list, list); a member learning of another from a
//!   list sends it its own digest, so knowing is always mutual. That is how concurrent joins
//!   through different seeds meet.
//! - Anti-entropy: on each [`tick`](Membership::tick) (the runtime ticks every `down_after`) a
//!   member sends its digest to the next member in pid order, so a lost message or a member
//!   that two groups did not tell each other about is repaired within n ticks. A member whose
//!   list lacks the rally name's holder sends it its digest ([`Membership::introduce_to`], which
//!   the runtime calls on each tick), so split groups merge.
//! - Each member monitors every other member once; a DOWN removes the member and reports
//!   [`MembershipEvent::Left`] with the reason (`handle_leave`). A member that ended is
//!   remembered (the last [`DEPARTED_REMEMBERED`]), so a late list does not bring it back (pids
//!   are never reused). A member lost
//!   with its node (`noconnection`: its fate is unknown) comes back only on its own word: a
//!   digest from it (probed for on each tick, [`MembershipAction::Probe`], once its node is
//!   connected again) lets it in again, reported `Joined` once more; lists that name it do not.
//!   A child lost with its node cannot speak for itself: it is let in again from a list.
//!
//! Each event is reported once per member and per process, but for a member lost with its node
//! and heard from again (left, then joined). Costs: a join sends the list (O(n) entries) to the
//! newcomer and a digest from the newcomer to each of the n members, O(n) bytes per join when
//! the lists agree (a member whose list differs answers with its list, O(n) more); a tick sends
//! one digest (O(1) bytes; O(n) more when the two lists differ, as they do for good across a
//! partition that cuts only some members apart) and one probe per member lost with its node
//! (at most [`LOST_REMEMBERED`]; the runtime sends a probe only over a link that is up, and
//! watches the probed process, so one that ended is forgotten); a member holds n entries,
//! n − 1 monitors and the pids of the last [`DEPARTED_REMEMBERED`] members that ended (pids
//! are never reused, so those are never let in again; one forgotten can come back only on a
//! list that still names it long after its end, and its monitor then fires at once: it is
//! reported joined and left again); the digest is kept up to date in O(1) per change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::{ExitReason, Pid};

/// A member: its pid, its kind (members of several kinds can share one cluster) and where its
/// node listens (so that every member can reach every other member's node).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Member {
    /// The member process.
    pub pid: Pid,
    /// Its kind.
    pub kind: String,
    /// The listen address of its node.
    pub addr: String,
    /// A plain process added as a member ([`Membership::add_child`]): it gets no membership
    /// messages, and the member it was added through tells the others about it.
    pub child: bool,
}

/// What members tell each other.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MembershipMessage {
    /// A newcomer asks the receiving member to let it in.
    Join {
        /// The newcomer.
        member: Member,
    },
    /// The members the sender knows (itself included): the welcome of a newcomer.
    Members {
        /// The members.
        members: Vec<Member>,
    },
    /// Anti-entropy between two members: the sender, a digest of its member set, and its list
    /// when a digest differed. Hearing it is proof the sender lives.
    Sync {
        /// The sender.
        from: Member,
        /// The digest of the sender's member set ([`Membership::digest`]).
        digest: u64,
        /// Whether the sender's list comes with it.
        list: SyncList,
    },
}

/// How far a [`MembershipMessage::Sync`] exchange has gone; it ends after three messages.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SyncList {
    /// The digest alone: answered with the receiver's list when the digests differ.
    None,
    /// The answer to a differing digest: merged, then answered with the receiver's list if it
    /// holds members the answer lacks.
    Answer(Vec<Member>),
    /// The last word: merged, not answered.
    Last(Vec<Member>),
}

/// What happened to the membership, for the behaviour's callbacks.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MembershipEvent {
    /// A member joined.
    Joined {
        /// The new member.
        member: Member,
        /// Whether it joined through this member (`handle_join`), or this member learned of it
        /// (`handle_node_joined`).
        contacted: bool,
    },
    /// The member this one was joining through ended before letting it in: join again through
    /// another member ([`Membership::rejoin`]), for instance the cluster's rally name.
    SeedLost {
        /// The seed that ended.
        seed: Pid,
    },
    /// A member left.
    Left {
        /// The member that left.
        member: Member,
        /// Why it ended.
        reason: ExitReason,
    },
    /// This member is in its cluster: at once for the first member, when its seed let it in
    /// for a newcomer (the list it was given is the member list). Reported once.
    Welcomed,
}

/// What the membership wants done.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum MembershipAction {
    /// Send a message to another member.
    Send {
        /// The member.
        to: Pid,
        /// The message.
        message: MembershipMessage,
    },
    /// Send a message to a member lost with its node, only if that node is connected now
    /// (nothing is dialed for it; the node's own discovery redials it).
    Probe {
        /// The lost member.
        to: Pid,
        /// The message.
        message: MembershipMessage,
    },
    /// Watch a member, so that its end is reported.
    Monitor(Pid),
    /// Report an event to the behaviour; the member list already reflects it.
    Event(MembershipEvent),
}

/// One member's view of its cluster.
#[derive(Debug)]
pub struct Membership {
    me: Member,
    members: BTreeMap<Pid, Member>,
    /// The digest of `members`' pids, kept up to date.
    digest: u64,
    /// The last members that ended (at most [`DEPARTED_REMEMBERED`]): never let in again.
    departed: BTreeSet<Pid>,
    /// The same, oldest first: the order they are forgotten in.
    departed_order: VecDeque<Pid>,
    /// Members lost with their node, oldest first (at most [`LOST_REMEMBERED`]): let in again
    /// only on their own word.
    lost: VecDeque<Pid>,
    /// The member the last tick's digest went to.
    synced: Option<Pid>,
    /// Whether this member has heard its first list since asking to join (a newcomer adopts that
    /// list without reporting each member as joined).
    welcomed: bool,
    /// The member it is joining through, until welcomed.
    seed: Option<Pid>,
    /// Newcomers that asked this member to let them in before it was in itself.
    held_joins: Vec<Member>,
    actions: VecDeque<MembershipAction>,
}

/// How many members lost with their node a member remembers (and probes on each tick); the
/// oldest is forgotten first, and a forgotten one may then be let in again from a list, as
/// one never lost.
pub const LOST_REMEMBERED: usize = 256;

/// How many members that ended a member remembers, so that a late list or join does not bring
/// them back; the oldest is forgotten first. A bound on what churn (members ending and others
/// starting, for as long as the cluster runs) makes a member hold: far more than the ends a
/// list can lag behind.
pub const DEPARTED_REMEMBERED: usize = 4096;

impl Membership {
    /// The membership of `me`, alone: the first member of a new cluster (welcomed at once).
    pub fn first(me: Member) -> Self {
        let mut membership = Self::alone(me, true);
        membership
            .actions
            .push_back(MembershipAction::Event(MembershipEvent::Welcomed));
        membership
    }

    /// The membership of `me`, joining through the member `seed`, which must be another
    /// member: through itself, it would wait for a welcome that never comes.
    pub fn joining(me: Member, seed: Pid) -> Self {
        let mut membership = Self::alone(me, false);
        membership.rejoin(seed);
        membership
    }

    fn alone(me: Member, welcomed: bool) -> Self {
        Self {
            members: BTreeMap::from([(me.pid, me.clone())]),
            digest: pid_hash(me.pid),
            me,
            departed: BTreeSet::new(),
            departed_order: VecDeque::new(),
            lost: VecDeque::new(),
            synced: None,
            welcomed,
            seed: None,
            held_joins: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// Asks `seed` to let this member in, after its previous seed was lost (it may be the same
    /// seed again, lost behind a link that dropped). Does nothing once this member has been let
    /// in, and when `seed` is this member (the caller must find another: see
    /// [`Membership::joining`]).
    pub fn rejoin(&mut self, seed: Pid) {
        if self.welcomed || seed == self.me.pid {
            return;
        }
        self.forget_lost(seed);
        self.seed = Some(seed);
        self.actions.push_back(MembershipAction::Monitor(seed));
        self.actions.push_back(MembershipAction::Send {
            to: seed,
            message: MembershipMessage::Join {
                member: self.me.clone(),
            },
        });
    }

    /// Sends this member's digest to `other`, a member of the same cluster that this one does
    /// not know — the rally name's holder, when members that linked two groups ended before
    /// telling each side of the other, or when a partition healed. The groups then exchange
    /// their lists and learn of each other as of joins.
    /// A holder that ended is not told; nor one lost with its node (it is probed on each tick).
    pub fn introduce_to(&mut self, other: Pid) {
        if self.welcomed && self.is_stranger(other) {
            self.send_digest(other);
        }
    }

    /// Anti-entropy, every `down_after` in the runtime: sends this member's digest to the next
    /// member in pid order (each member hears from each other within n ticks), and probes the members lost
    /// with their node, in case their node is back.
    pub fn tick(&mut self) {
        if !self.welcomed {
            return;
        }
        let after = self.synced.unwrap_or(self.me.pid);
        let next = self
            .members
            .range((Bound::Excluded(after), Bound::Unbounded))
            .chain(self.members.range(..=after))
            .map(|(_, member)| member)
            .find(|member| !member.child && member.pid != self.me.pid)
            .map(|member| member.pid);
        if let Some(next) = next {
            self.synced = Some(next);
            self.send_digest(next);
        }
        let message = self.sync_message(SyncList::None);
        for &to in &self.lost {
            let message = message.clone();
            self.actions
                .push_back(MembershipAction::Probe { to, message });
        }
    }

    /// The digest of the member set: equal sets have equal digests (a wrapping sum of a hash
    /// of each pid, so it is kept up to date in O(1) per change and needs no order).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Adds `child`, a plain process (not a member process), as a member through this one: it is
    /// reported joined here (`handle_join`) and on the others, watched by all, and its end is a
    /// leave. Ignored until this member is in (then held, as any join).
    pub fn add_child(&mut self, child: Member) {
        self.handle_message(MembershipMessage::Join {
            member: Member {
                child: true,
                ..child
            },
        });
    }

    /// Whether this member has been let in (its seed, or any member, sent it the list).
    pub fn is_welcomed(&self) -> bool {
        self.welcomed
    }

    /// The members, this one included, ordered by pid.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The members' pids grouped by kind.
    pub fn by_kind(&self) -> BTreeMap<&str, Vec<Pid>> {
        let mut kinds: BTreeMap<&str, Vec<Pid>> = BTreeMap::new();
        for member in self.members.values() {
            kinds
                .entry(member.kind.as_str())
                .or_default()
                .push(member.pid);
        }
        kinds
    }

    /// Whether `pid` is a member.
    pub fn contains(&self, pid: Pid) -> bool {
        self.members.contains_key(&pid)
    }

    /// The member `pid`, if it is one.
    pub fn member(&self, pid: Pid) -> Option<&Member> {
        self.members.get(&pid)
    }

    /// A message from another member (or a newcomer).
    pub fn handle_message(&mut self, message: MembershipMessage) {
        match message {
            MembershipMessage::Join { member } => {
                if member.pid == self.me.pid || self.departed.contains(&member.pid) {
                    return;
                }
                if !self.welcomed {
                    // Let others in only once in: hold the join until then.
                    if !self.held_joins.contains(&member) {
                        self.held_joins.push(member);
                    }
                    return;
                }
                let newcomer = member.pid;
                if member.child {
                    if !self.members.contains_key(&newcomer) {
                        self.add(member.clone(), Some(true));
                        // A child does not speak: tell the others about it (the last word of
                        // an exchange: merged, not answered).
                        let news = self.sync_message(SyncList::Last(vec![self.me.clone(), member]));
                        let others: Vec<Pid> = self
                            .speaking_members()
                            .filter(|&pid| pid != self.me.pid)
                            .collect();
                        for pid in others {
                            self.actions.push_back(MembershipAction::Send {
                                to: pid,
                                message: news.clone(),
                            });
                        }
                    }
                    return;
                }
                // A join is the newcomer's own word: one lost with its node is let in again.
                self.forget_lost(newcomer);
                if !self.members.contains_key(&newcomer) {
                    self.add(member, Some(true));
                }
                // The welcome (sent again to a newcomer that retried).
                self.send_list(newcomer);
            }
            MembershipMessage::Members { members } if !self.welcomed => self.adopt(members),
            MembershipMessage::Members { members } => self.merge(members),
            MembershipMessage::Sync { .. } if !self.welcomed => {
                // A newcomer announces itself once let in; the sender will hear from it then.
            }
            MembershipMessage::Sync { from, digest, list } => self.handle_sync(from, digest, list),
        }
    }

    /// A digest, or a list answering one, from the member `from`.
    fn handle_sync(&mut self, from: Member, digest: u64, list: SyncList) {
        if from.pid == self.me.pid || from.child || self.departed.contains(&from.pid) {
            return;
        }
        if !self.members.contains_key(&from.pid) {
            // Its own word: it lives, even if it was lost with its node.
            self.forget_lost(from.pid);
            self.add(from.clone(), Some(false));
        }
        match list {
            SyncList::None => {
                if digest != self.digest {
                    let answer = self.sync_message(SyncList::Answer(self.list()));
                    self.send(from.pid, answer);
                }
            }
            SyncList::Answer(members) => {
                let theirs: BTreeSet<Pid> = members.iter().map(|m| m.pid).collect();
                self.merge(members);
                if self.members.keys().any(|pid| !theirs.contains(pid)) {
                    let last = self.sync_message(SyncList::Last(self.list()));
                    self.send(from.pid, last);
                }
            }
            SyncList::Last(members) => self.merge(members),
        }
    }

    /// Adds the members of a list that this one did not know, ended or lost, reporting each
    /// joined (`handle_node_joined`), and sends each its digest: the new member hears of this
    /// one even if whoever told of it ends before telling it.
    fn merge(&mut self, members: Vec<Member>) {
        for member in members {
            if !self.is_stranger(member.pid) {
                continue;
            }
            let (pid, child) = (member.pid, member.child);
            self.add(member, Some(false));
            if !child {
                self.send_digest(pid);
            }
        }
    }

    /// A monitored process ended: if it was a member, it left. A member lost with its node
    /// (`noconnection`) may live on: it is let in again when it is heard from (a child, which
    /// never speaks, from a list); any other end is final.
    pub fn handle_down(&mut self, pid: Pid, reason: ExitReason) {
        let child = self.members.get(&pid).is_some_and(|member| member.child);
        if reason == ExitReason::NoConnection {
            if !child && !self.departed.contains(&pid) && !self.lost.contains(&pid) {
                if self.lost.len() == LOST_REMEMBERED {
                    self.lost.pop_front();
                }
                self.lost.push_back(pid);
            }
        } else {
            self.forget_lost(pid);
            self.remember_departed(pid);
        }
        if !self.welcomed && self.seed == Some(pid) {
            self.seed = None;
            self.actions
                .push_back(MembershipAction::Event(MembershipEvent::SeedLost {
                    seed: pid,
                }));
        }
        if let Some(member) = self.members.remove(&pid) {
            self.digest = self.digest.wrapping_sub(pid_hash(pid));
            self.actions
                .push_back(MembershipAction::Event(MembershipEvent::Left {
                    member,
                    reason,
                }));
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<MembershipAction> {
        self.actions.pop_front()
    }

    /// A newcomer takes its first list as the cluster it joined, without reporting each member
    /// as joined (it is told it is in: [`MembershipEvent::Welcomed`]); announces itself to
    /// every member with its digest (the contacted one may end before telling anyone); then
    /// lets in the newcomers that asked it while it waited.
    fn adopt(&mut self, members: Vec<Member>) {
        self.welcomed = true;
        self.seed = None;
        for member in members {
            if self.is_stranger(member.pid) {
                self.add(member, None);
            }
        }
        self.actions
            .push_back(MembershipAction::Event(MembershipEvent::Welcomed));
        let others: Vec<Pid> = self
            .speaking_members()
            .filter(|&pid| pid != self.me.pid)
            .collect();
        for pid in others {
            self.send_digest(pid);
        }
        for member in std::mem::take(&mut self.held_joins) {
            self.handle_message(MembershipMessage::Join { member });
        }
    }

    /// Adds a member this one did not know, watches it, and reports it joined (`Some(contacted)`)
    /// or not at all (`None`, while adopting a welcome).
    fn add(&mut self, member: Member, joined: Option<bool>) {
        let pid = member.pid;
        self.members.insert(pid, member.clone());
        self.digest = self.digest.wrapping_add(pid_hash(pid));
        self.actions.push_back(MembershipAction::Monitor(pid));
        if let Some(contacted) = joined {
            self.actions
                .push_back(MembershipAction::Event(MembershipEvent::Joined {
                    member,
                    contacted,
                }));
        }
    }

    /// The members that take part in the membership protocol (all but children).
    fn speaking_members(&self) -> impl Iterator<Item = Pid> + '_ {
        self.members.values().filter(|m| !m.child).map(|m| m.pid)
    }

    fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    fn send_list(&mut self, to: Pid) {
        if self.members.get(&to).is_some_and(|m| m.child) {
            return;
        }
        let members = self.list();
        self.send(to, MembershipMessage::Members { members });
    }

    fn sync_message(&self, list: SyncList) -> MembershipMessage {
        MembershipMessage::Sync {
            from: self.me.clone(),
            digest: self.digest,
            list,
        }
    }

    fn send_digest(&mut self, to: Pid) {
        let message = self.sync_message(SyncList::None);
        self.send(to, message);
    }

    fn send(&mut self, to: Pid, message: MembershipMessage) {
        self.actions
            .push_back(MembershipAction::Send { to, message });
    }

    /// Whether `pid` is another process that is not a member here and may become one from a
    /// list: it neither ended nor was lost with its node (those come back on their own word).
    fn is_stranger(&self, pid: Pid) -> bool {
        pid != self.me.pid
            && !self.members.contains_key(&pid)
            && !self.departed.contains(&pid)
            && !self.lost.contains(&pid)
    }

    fn remember_departed(&mut self, pid: Pid) {
        if !self.departed.insert(pid) {
            return;
        }
        if self.departed_order.len() == DEPARTED_REMEMBERED
            && let Some(oldest) = self.departed_order.pop_front()
        {
            self.departed.remove(&oldest);
        }
        self.departed_order.push_back(pid);
    }

    fn forget_lost(&mut self, pid: Pid) {
        self.lost.retain(|&lost| lost != pid);
    }
}

/// A hash of a pid, the same on every member (SplitMix64's finalizer over its three numbers).
fn pid_hash(pid: Pid) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(mix(pid.node.0) ^ pid.incarnation.0) ^ pid.local)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::{Incarnation, NodeId};

    fn member(local: u64, kind: &str) -> Member {
        Member {
            pid: Pid {
                node: NodeId(local % 3),
                incarnation: Incarnation(1),
                local,
            },
            kind: kind.into(),
            addr: format!("127.0.0.1:{}", 4000 + local % 3),
            child: false,
        }
    }

    fn drain(m: &mut Membership) -> Vec<MembershipAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn events(actions: &[MembershipAction]) -> Vec<&MembershipEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                MembershipAction::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Delivers the messages in `actions` addressed to `to`.
    fn deliver(actions: &[MembershipAction], to: &mut Membership) {
        for action in actions {
            if let MembershipAction::Send { to: pid, message } = action
                && *pid == to.me.pid
            {
                to.handle_message(message.clone());
            }
        }
    }

    #[test]
    fn a_join_is_handle_join_on_the_contacted_member_and_handle_node_joined_on_the_others() {
        let (a, b, c) = (member(1, "web"), member(2, "web"), member(3, "db"));
        let mut ma = Membership::first(a.clone());
        assert_eq!(
            events(&drain(&mut ma)),
            vec![&MembershipEvent::Welcomed],
            "the first member is in at once"
        );
        let mut mb = Membership::joining(b.clone(), a.pid);
        let b_asks = drain(&mut mb);
        assert!(
            events(&b_asks).is_empty(),
            "not in before its seed lets it in"
        );
        deliver(&b_asks, &mut ma);
        let a_out = drain(&mut ma);
        assert_eq!(
            events(&a_out),
            vec![&MembershipEvent::Joined {
                member: b.clone(),
                contacted: true
            }]
        );
        deliver(&a_out, &mut mb);
        let b_out = drain(&mut mb);
        assert_eq!(
            events(&b_out),
            vec![&MembershipEvent::Welcomed],
            "the newcomer adopts the list silently, told once that it is in"
        );
        assert!(mb.is_welcomed());
        deliver(&b_out, &mut ma);
        assert!(events(&drain(&mut ma)).is_empty(), "a already knew b");
        // c joins through b: b reports handle_join; c announces itself; a reports handle_node_joined.
        let mut mc = Membership::joining(c.clone(), b.pid);
        deliver(&drain(&mut mc), &mut mb);
        let b_out = drain(&mut mb);
        assert_eq!(
            events(&b_out),
            vec![&MembershipEvent::Joined {
                member: c.clone(),
                contacted: true
            }]
        );
        deliver(&b_out, &mut mc);
        let c_out = drain(&mut mc);
        assert_eq!(events(&c_out), vec![&MembershipEvent::Welcomed]);
        deliver(&c_out, &mut ma);
        deliver(&c_out, &mut mb);
        assert_eq!(
            events(&drain(&mut ma)),
            vec![&MembershipEvent::Joined {
                member: c.clone(),
                contacted: false
            }]
        );
        assert!(events(&drain(&mut mb)).is_empty(), "b reported c once");
        for m in [&ma, &mb, &mc] {
            assert_eq!(m.members().count(), 3);
            assert_eq!(m.by_kind()["web"], vec![a.pid, b.pid]);
            assert_eq!(m.by_kind()["db"], vec![c.pid]);
        }
    }

    #[test]
    fn a_newcomer_whose_seed_ends_first_is_told_and_can_join_elsewhere() {
        let (a, b, c) = (member(1, "k"), member(2, "k"), member(3, "k"));
        let mut mb = Membership::first(b.clone());
        let mut mc = Membership::joining(c.clone(), a.pid);
        drain(&mut mc);
        mc.handle_down(a.pid, ExitReason::NoConnection);
        assert_eq!(
            events(&drain(&mut mc)),
            vec![&MembershipEvent::SeedLost { seed: a.pid }]
        );
        mc.rejoin(b.pid);
        deliver(&drain(&mut mc), &mut mb);
        deliver(&drain(&mut mb), &mut mc);
        assert!(mc.is_welcomed());
        assert_eq!(mc.members().count(), 2);
    }

    #[test]
    fn a_child_is_announced_by_the_member_it_joined_through_and_never_messaged() {
        let (a, b, child) = (member(1, "web"), member(2, "web"), member(9, "worker"));
        let mut ma = Membership::first(a.clone());
        let mut mb = Membership::joining(b.clone(), a.pid);
        deliver(&drain(&mut mb), &mut ma);
        deliver(&drain(&mut ma), &mut mb);
        deliver(&drain(&mut mb), &mut ma);
        drain(&mut ma);
        ma.add_child(child.clone());
        let a_out = drain(&mut ma);
        let as_child = Member {
            child: true,
            ..child.clone()
        };
        assert_eq!(
            events(&a_out),
            vec![&MembershipEvent::Joined {
                member: as_child.clone(),
                contacted: true
            }]
        );
        assert!(
            a_out
                .iter()
                .all(|a| !matches!(a, MembershipAction::Send { to, .. } if *to == child.pid)),
            "nothing is sent to a child"
        );
        deliver(&a_out, &mut mb);
        let b_out = drain(&mut mb);
        assert_eq!(
            events(&b_out),
            vec![&MembershipEvent::Joined {
                member: as_child.clone(),
                contacted: false
            }]
        );
        assert!(
            b_out
                .iter()
                .all(|a| !matches!(a, MembershipAction::Send { to, .. } if *to == child.pid))
        );
        assert!(b_out.contains(&MembershipAction::Monitor(child.pid)));
        for m in [&mut ma, &mut mb] {
            m.handle_down(child.pid, ExitReason::Normal);
            assert_eq!(
                events(&drain(m)),
                vec![&MembershipEvent::Left {
                    member: as_child.clone(),
                    reason: ExitReason::Normal
                }]
            );
        }
    }

    #[test]
    fn a_member_that_ends_is_reported_left_once_and_never_comes_back() {
        let (a, b) = (member(1, "k"), member(2, "k"));
        let mut ma = Membership::first(a);
        ma.handle_message(MembershipMessage::Join { member: b.clone() });
        drain(&mut ma);
        ma.handle_down(b.pid, ExitReason::Shutdown);
        ma.handle_down(b.pid, ExitReason::Shutdown);
        assert_eq!(
            events(&drain(&mut ma)),
            vec![&MembershipEvent::Left {
                member: b.clone(),
                reason: ExitReason::Shutdown
            }]
        );
        ma.handle_message(MembershipMessage::Members {
            members: vec![b.clone()],
        });
        ma.handle_message(MembershipMessage::Join { member: b });
        assert!(
            drain(&mut ma).is_empty(),
            "a stale list or join does not revive a departed member"
        );
        assert_eq!(ma.members().count(), 1);
    }

    #[test]
    fn a_member_remembers_the_last_members_that_ended_and_forgets_the_oldest_first() {
        let mut ma = Membership::first(member(0, "k"));
        let ended = DEPARTED_REMEMBERED as u64 + 1;
        for i in 1..=ended {
            let m = member(i, "k");
            ma.handle_message(MembershipMessage::Join { member: m.clone() });
            ma.handle_down(m.pid, ExitReason::Shutdown);
            ma.handle_down(m.pid, ExitReason::Shutdown);
        }
        drain(&mut ma);
        assert_eq!(ma.departed.len(), DEPARTED_REMEMBERED);
        assert_eq!(ma.departed_order.len(), DEPARTED_REMEMBERED);
        let (oldest, second) = (member(1, "k"), member(2, "k"));
        ma.handle_message(MembershipMessage::Join {
            member: second.clone(),
        });
        assert!(
            drain(&mut ma).is_empty(),
            "the last that ended are remembered"
        );
        ma.handle_message(MembershipMessage::Join {
            member: oldest.clone(),
        });
        assert_eq!(
            events(&drain(&mut ma)),
            vec![&MembershipEvent::Joined {
                member: oldest,
                contacted: true
            }],
            "the oldest is forgotten: its monitor, set again, tells that it ended"
        );
    }

    /// Delivers every message among `members` until none is left.
    fn settle(members: &mut [Membership]) {
        loop {
            let mut sent = Vec::new();
            for m in members.iter_mut() {
                for action in drain(m) {
                    if let MembershipAction::Send { to, message } = action {
                        sent.push((to, message));
                    }
                }
            }
            if sent.is_empty() {
                return;
            }
            for (to, message) in sent {
                if let Some(m) = members.iter_mut().find(|m| m.me.pid == to) {
                    m.handle_message(message);
                }
            }
        }
    }

    #[test]
    fn two_groups_merge_when_a_member_of_one_meets_a_member_of_the_other() {
        let mut members = vec![
            Membership::first(member(0, "web")),
            Membership::first(member(10, "web")),
        ];
        let (left, right) = (members[0].me.pid, members[1].me.pid);
        for i in 1..4 {
            members.push(Membership::joining(member(i, "web"), left));
            members.push(Membership::joining(member(10 + i, "web"), right));
        }
        settle(&mut members);
        assert_eq!(members[0].members().count(), 4);
        // The loser of the rally name meets its winner.
        let loser = members.iter().position(|m| m.me.pid == right).unwrap();
        members[loser].introduce_to(left);
        settle(&mut members);
        for m in &members {
            assert_eq!(m.members().count(), 8, "{:?}", m.me.pid);
        }
    }

    #[test]
    fn a_newcomer_whose_seed_was_lost_behind_a_dropped_link_joins_through_it_again() {
        let a = member(0, "web");
        let mut members = vec![Membership::first(a.clone())];
        let mut newcomer = Membership::joining(member(1, "web"), a.pid);
        drain(&mut newcomer);
        // The link to the seed's node dropped: the seed is reported down, and the join is lost.
        newcomer.handle_down(a.pid, ExitReason::NoConnection);
        assert!(
            events(&drain(&mut newcomer)).contains(&&MembershipEvent::SeedLost { seed: a.pid })
        );
        newcomer.rejoin(a.pid);
        members.push(newcomer);
        settle(&mut members);
        for m in &members {
            assert_eq!(m.members().count(), 2, "{:?}", m.me.pid);
        }
    }

    /// Members let in one after another through the first, every message delivered.
    fn cluster_of(n: u64) -> Vec<Membership> {
        let first = member(0, "web");
        let mut members = vec![Membership::first(first.clone())];
        for i in 1..n {
            members.push(Membership::joining(member(i, "web"), first.pid));
            settle(&mut members);
        }
        members
    }

    /// The member entries carried by the messages in `actions`.
    fn entries_sent(actions: &[MembershipAction]) -> usize {
        actions
            .iter()
            .map(|action| match action {
                MembershipAction::Send { message, .. }
                | MembershipAction::Probe { message, .. } => match message {
                    MembershipMessage::Join { .. } => 1,
                    MembershipMessage::Members { members } => members.len(),
                    MembershipMessage::Sync { list, .. } => match list {
                        SyncList::None => 1,
                        SyncList::Answer(members) | SyncList::Last(members) => members.len() + 1,
                    },
                },
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_join_into_agreeing_members_sends_one_list_and_a_digest_to_each() {
        let mut members = cluster_of(40);
        let seed = members[0].me.pid;
        let mut newcomer = Membership::joining(member(40, "web"), seed);
        let mut sent = 0;
        let asks = drain(&mut newcomer);
        sent += entries_sent(&asks);
        deliver(&asks, &mut members[0]);
        let welcome = drain(&mut members[0]);
        sent += entries_sent(&welcome);
        deliver(&welcome, &mut newcomer);
        let announce = drain(&mut newcomer);
        sent += entries_sent(&announce);
        for m in &mut members[1..] {
            deliver(&announce, m);
            let answer = drain(m);
            assert_eq!(
                events(&answer),
                vec![&MembershipEvent::Joined {
                    member: newcomer.me.clone(),
                    contacted: false
                }]
            );
            sent += entries_sent(&answer);
        }
        // The join, the welcome's 41 entries, one digest to each of the 40 members, no answer.
        assert_eq!(sent, 1 + 41 + 40, "O(n) entries per join when lists agree");
        assert!(members.iter().all(|m| m.digest() == newcomer.digest()));
    }

    #[test]
    fn a_member_lost_with_its_node_comes_back_on_its_own_word_not_on_a_list() {
        let mut members = cluster_of(3);
        let (a, b) = (members[1].me.clone(), members[2].me.clone());
        // The link between a and b drops: each reports the other left, with noconnection.
        members[1].handle_down(b.pid, ExitReason::NoConnection);
        members[2].handle_down(a.pid, ExitReason::NoConnection);
        for m in &mut members[1..] {
            let left = drain(m);
            assert!(matches!(
                events(&left)[..],
                [MembershipEvent::Left {
                    reason: ExitReason::NoConnection,
                    ..
                }]
            ));
        }
        // The first member's list still names b; a takes no one's word for it.
        let list = members[0].list();
        members[1].handle_message(MembershipMessage::Members { members: list });
        assert!(events(&drain(&mut members[1])).is_empty());
        assert!(!members[1].contains(b.pid));
        // On the next tick, b probes the members it lost (sent only once the link is back).
        members[2].tick();
        let probes: Vec<MembershipAction> = drain(&mut members[2])
            .into_iter()
            .filter(|action| matches!(action, MembershipAction::Probe { to, .. } if *to == a.pid))
            .collect();
        assert_eq!(probes.len(), 1, "b probes a, lost with its node");
        let MembershipAction::Probe { message, .. } = probes[0].clone() else {
            unreachable!()
        };
        members[1].handle_message(message);
        let heard = drain(&mut members[1]);
        assert_eq!(
            events(&heard),
            vec![&MembershipEvent::Joined {
                member: b.clone(),
                contacted: false
            }],
            "a lets b in again on b's word"
        );
        exchange(&mut members, sends(heard), &[]);
        for m in &members {
            assert_eq!(m.members().count(), 3, "{:?}", m.me.pid);
        }
    }

    /// The messages `actions` sends.
    fn sends(actions: Vec<MembershipAction>) -> Vec<(Pid, MembershipMessage)> {
        actions
            .into_iter()
            .filter_map(|action| match action {
                MembershipAction::Send { to, message } => Some((to, message)),
                _ => None,
            })
            .collect()
    }

    /// Delivers `sent`, and what each delivery sends in turn, until nothing is left; what goes
    /// to `dead` is lost. Returns how many messages were delivered.
    fn exchange(
        members: &mut [Membership],
        mut sent: Vec<(Pid, MembershipMessage)>,
        dead: &[Pid],
    ) -> usize {
        let mut delivered = 0;
        while let Some((to, message)) = sent.pop() {
            if dead.contains(&to) {
                continue;
            }
            delivered += 1;
            let m = members.iter_mut().find(|m| m.me.pid == to).unwrap();
            m.handle_message(message);
            sent.extend(sends(drain(m)));
        }
        delivered
    }

    #[test]
    fn a_sync_exchange_ends_even_when_the_lists_never_agree() {
        let mut members = cluster_of(3);
        let gone = members[2].me.pid;
        // The first member saw the third end; the second has not yet.
        members[0].handle_down(gone, ExitReason::Shutdown);
        drain(&mut members[0]);
        let digest = (members[0].me.pid, members[1].sync_message(SyncList::None));
        let rounds = exchange(&mut members, vec![digest], &[gone]);
        assert!(
            (2..=3).contains(&rounds),
            "digest, answer, last word: {rounds} messages"
        );
        assert!(
            !members[0].contains(gone),
            "a late list does not bring back a member that ended"
        );
    }

    #[test]
    fn ticks_reach_every_other_member_in_turn() {
        let mut members = cluster_of(5);
        let me = members[2].me.pid;
        let mut reached = BTreeSet::new();
        for _ in 0..4 {
            members[2].tick();
            for action in drain(&mut members[2]) {
                if let MembershipAction::Send { to, .. } = action {
                    reached.insert(to);
                }
            }
        }
        let others: BTreeSet<Pid> = members
            .iter()
            .map(|m| m.me.pid)
            .filter(|&p| p != me)
            .collect();
        assert_eq!(reached, others);
    }

    #[test]
    fn a_child_lost_with_its_node_comes_back_from_a_list_and_is_never_probed() {
        let mut members = cluster_of(2);
        let child = Member {
            child: true,
            ..member(9, "worker")
        };
        members[0].add_child(child.clone());
        settle(&mut members);
        assert!(members[1].contains(child.pid));
        members[1].handle_down(child.pid, ExitReason::NoConnection);
        drain(&mut members[1]);
        members[1].tick();
        assert!(
            drain(&mut members[1])
                .iter()
                .all(|a| !matches!(a, MembershipAction::Probe { to, .. } if *to == child.pid)),
            "a child is never probed: it does not speak"
        );
        // The list of the member it was added through names it: it is let in again.
        let list = members[0].list();
        members[1].handle_message(MembershipMessage::Members { members: list });
        assert!(members[1].contains(child.pid));
        assert_eq!(members[1].digest(), members[0].digest());
    }

    #[test]
    fn a_member_that_ended_is_not_let_in_again_by_a_sync_in_its_name() {
        let mut members = cluster_of(3);
        let gone = members[2].me.clone();
        let forged = members[2].sync_message(SyncList::None);
        members[0].handle_down(gone.pid, ExitReason::Killed);
        drain(&mut members[0]);
        members[0].handle_message(forged);
        assert!(drain(&mut members[0]).is_empty());
        assert!(!members[0].contains(gone.pid));
    }
}

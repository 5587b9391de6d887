//! The cluster view: every node of the cluster as this node knows it, learned transitively, and
//! the fully connected group that the services (election, registry, rally, status) act on.
//!
//! - Each node authors one [`NodeRecord`] about itself — the address it can be dialed at, its
//!   incarnation, whether it left, and the nodes it is connected to now — and bumps the record's
//!   version on every change. A digest first, the records after: when a link comes up both sides
//!   send a [`Digest`](ViewMessage::Digest) (name, incarnation, version of every record held) and
//!   each asks ([`Want`](ViewMessage::Want)) for the records it lacks or holds older, once per
//!   version however many peers offer it. Changes go out once per burst, when the runtime calls
//!   [`View::flush`]: this node's own record to every node it is connected to — whole over a new
//!   link, then as what changed since the version flushed before ([`RecordChange`]; a peer that
//!   holds an older version asks for the whole record while its link lives; a goodbye goes whole) —
//!   and the records it learned to the connected nodes that cannot have them from their author
//!   directly: as the change it learned, or as a digest entry, and the nodes ask for what they
//!   lack. A later life of a node replaces the records of its earlier lives.
//! - A node is [`Up`](NodeState::Up) when connected to this node, [`Unreachable`](NodeState::Unreachable)
//!   when a node connected to this one says it is connected to it, [`Down`](NodeState::Down)
//!   when no one this node hears from is connected to it, and [`Left`](NodeState::Left) once it
//!   announced its goodbye. [`View::to_dial`] names the members this node should be connected to
//!   and is not (a full mesh, as Erlang's `connect_all`).
//! - Overlapping partitions (A–B cut while both reach C) are settled without disconnecting
//!   anyone: [`View::groups`] splits the live nodes (up or unreachable) into fully connected
//!   groups by one deterministic rule over the records, so the nodes that hold the same records
//!   compute the same groups, and a node acts only within its own ([`View::group`]). Two nodes
//!   are linked when each lists the other. While the nodes are not all linked to each other, the
//!   one missing the most links is set aside — among equals the one more others say they lost
//!   (each record lists the nodes its author was connected to in this life and lost: a crashed
//!   node goes, not the first survivor to notice), then the one of the latest life (a node
//!   joining, or back, not yet linked to all), then of the greater name; the rest are a group,
//!   and the nodes set aside are grouped the same way. In the example the groups are {A, C} and {B} when B started
//!   last. The latest life first matters while a mesh forms: a node that joins, or comes back,
//!   linked to some members but not yet to all is set aside until it is linked to all, rather
//!   than splitting members that are (which would make a second leader for a moment).
//!
//! - Failure detection is spread over the view: each node watches only the few peers the
//!   monitor ring gives it ([`View::watching`], see `monitor_ring`), and a watcher that finds a
//!   peer silent closes its link, which puts the peer in its record's `lost`. A member that a
//!   quorum of its watchers lost ([`View::unreachable`]) is disconnected by every other node
//!   ([`ViewAction::Disconnect`]) and dialed again, with backoff, as any member that is not
//!   connected: once most of its watchers get through (the node is back), their records no
//!   longer accuse it. A node that connects to this one while unreachable is watched by it. A
//!   closed connection needs no quorum: each end sees it at once. A record names the nodes its
//!   author lost, not their lives: this node counts an accusation against the life of the
//!   accused it held when it took in the record that began to list it (every life, if it held
//!   none yet), and later lives, so a node restarted and met by some of its watchers before the
//!   others is not set aside for the loss of its earlier life. (A watcher that met a later life
//!   and lost it again before it flushed its record is not counted against that life; the
//!   other watchers still are.) A node connected to a member that most of its watchers do not
//!   reach watches it too ([`View::watching`]): a later life cut off from its watchers, which
//!   no watcher can accuse, is still found if it hangs.
//!
//! - A node down for this node, or one that left, is forgotten once it has been so for
//!   [`forget_after`](View::with_forget_after) ([`View::handle_tick`]): a cluster whose nodes
//!   come and go under new names (containers) does not hold, and dial, every node it ever met.
//!   The version forgotten is remembered (the last [`FORGOTTEN_REMEMBERED`]), so that a peer that
//!   still holds it does not bring it back; a later version is taken from the node itself, or
//!   while a node connected to it says so (the node is alive, or back), not from a peer that lost
//!   it too. This node's record stops listing a node forgotten among those it lost.
//!
//! Sans-IO: the runtime reports links that come up and go down and the messages that arrive,
//! carries out what [`View::poll_action`] returns, and calls [`View::flush`] after each burst of
//! changes. Costs: a node holds one record per node of the cluster, each listing up to n − 1 links
//! (O(n²) per node). A flush sends what changed in the node's record over each of its links (the
//! whole record, O(n) bytes, once per new link); in a full mesh nothing is passed on, so a change
//! costs n − 1 messages of the size of the change. While a mesh forms, the records a node learned
//! reach the nodes not yet connected to their author relayed: as the change that made them (if one
//! change came since the last flush), or as a digest entry of O(1) bytes, fetched once per version
//! by each node that lacks it. A simulation of 40 nodes seeded with one, dialing one member at a
//! time, sends 0.7× the bytes of sending every change whole (measured in the same run); the rest is
//! relays (a node may hear a change from several), and per new link its digest and the whole record
//! it starts with. [`View::groups`] reads each record's links once (O(n²) for a full mesh), then
//! settles each group in O(n²) steps, computed when asked. The names a record taken in lists are,
//! where the view holds their record, clones of that record's key, so a test for equality between
//! them compares pointers, not text (ordering them still reads the text). A flush finds the
//! peers each learned record goes to in one walk of its links (O(n) per record learned); after a
//! change it finds the live nodes (O(n log n), the peers' records looked up once), builds the
//! monitor ring again only if they differ, and looks for unreachable members among the nodes
//! some record lists as lost (O(names lost + k log n per node lost): O(n) while no one lost
//! anyone) and for the peers connected to it that most of their watchers do not reach (O(peers ·
//! k log n)). A flush with nothing to send stops there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::handshake::Identity;
use crate::monitor_ring::{self, MonitorRing};
use crate::{Incarnation, NodeName};

/// The most names (links and lost together) a record holds: a change that would pass it is
/// dropped and a whole record past it is not taken, so an authenticated peer cannot grow a
/// record without bound. Far above the clusters a full mesh serves (the groups cost O(n²)),
/// and a record that large still fits a frame.
pub const MAX_RECORD_NAMES: usize = 8192;

/// How long a node stays in the view while down for this node, or after it left, by default.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(600);

/// How many forgotten records' versions a view remembers, oldest forgotten first: one forgotten
/// longer ago may be brought back by a peer that still holds it, and is forgotten again after
/// [`View::with_forget_after`]'s time.
pub const FORGOTTEN_REMEMBERED: usize = 4096;

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
    /// The nodes it was connected to in this life and lost (until it is connected to them
    /// again): the accusation that tells a failed node from a slow newcomer when groups are
    /// settled.
    pub lost: BTreeSet<NodeName>,
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
#[serde(rename_all = "snake_case")]
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
    /// The freshness of records the sender holds: all of them when a link comes up, those it
    /// learned since its last flush otherwise.
    Digest(Vec<(NodeName, Incarnation, u64)>),
    /// Records: the answer to a [`Want`](ViewMessage::Want) (possibly empty), or the sender's
    /// own record after it changed, to a peer not known to hold the version before.
    Records(Vec<NodeRecord>),
    /// The names whose records the sender asks for.
    Want(Vec<NodeName>),
    /// Changes of records, each from the version before: of the sender's own record, from the
    /// version it flushed last (what every copy of its record holds: it answers a
    /// [`Want`](ViewMessage::Want) with that version too); of records it learned as changes,
    /// relayed where digest entries would be (see [`View::flush`]).
    Changes(Vec<RecordChange>),
}

/// A change of a node's record, from one version to the next: what a flush sends to a peer
/// that holds the version before, so that a change costs a few names, not the whole record
/// (which lists every link of its author).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RecordChange {
    /// The record's node.
    pub name: NodeName,
    /// The node's life.
    pub incarnation: Incarnation,
    /// The version the change applies to.
    pub base: u64,
    /// The version it makes.
    pub version: u64,
    /// Whether the author is still a member.
    pub presence: Presence,
    /// Now among its links.
    pub linked: Vec<NodeName>,
    /// No longer among its links.
    pub unlinked: Vec<NodeName>,
    /// Now among its lost.
    pub lost: Vec<NodeName>,
    /// No longer among its lost.
    pub found: Vec<NodeName>,
}

impl RecordChange {
    /// From `before` to `after`, two versions of one record.
    fn between(before: &NodeRecord, after: &NodeRecord) -> Self {
        let added = |old: &BTreeSet<NodeName>, new: &BTreeSet<NodeName>| -> Vec<NodeName> {
            new.difference(old).cloned().collect()
        };
        Self {
            name: after.name.clone(),
            incarnation: after.incarnation,
            base: before.version,
            version: after.version,
            presence: after.presence,
            linked: added(&before.links, &after.links),
            unlinked: added(&after.links, &before.links),
            lost: added(&before.lost, &after.lost),
            found: added(&after.lost, &before.lost),
        }
    }

    /// Applies the change to `record`, if it holds the version the change applies to.
    fn apply(&self, record: &mut NodeRecord) -> bool {
        if (record.incarnation, record.version) != (self.incarnation, self.base) {
            return false;
        }
        record.version = self.version;
        record.presence = self.presence;
        record.links.extend(self.linked.iter().cloned());
        record.lost.extend(self.lost.iter().cloned());
        for name in &self.unlinked {
            record.links.remove(name);
        }
        for name in &self.found {
            record.lost.remove(name);
        }
        true
    }
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
    /// The view changed: states, members or groups may differ. Call [`View::flush`] once the
    /// burst of changes is over.
    Changed,
    /// A quorum of the node's watchers lost it: close the link to it (if there is one).
    Disconnect(NodeName),
}

/// One node's view of its cluster.
#[derive(Debug)]
pub struct View {
    me: NodeName,
    records: BTreeMap<NodeName, NodeRecord>,
    actions: VecDeque<ViewAction>,
    /// Whether this node's record changed since the last flush.
    mine_changed: bool,
    /// This node's record as of the last flush.
    flushed: NodeRecord,
    /// The peers that hold [`flushed`](View::flushed): sent to them over their link now.
    holding_flushed: BTreeSet<NodeName>,
    /// The peers whose links speak an earlier protocol: they are sent whole records only.
    whole_records_only: BTreeSet<NodeName>,
    /// The records learned since the last flush.
    learned: BTreeMap<NodeName, Learned>,
    /// The records asked for and not yet received.
    asked: BTreeMap<NodeName, Asked>,
    /// How many members watch each member.
    monitors: usize,
    /// The live nodes on the monitor ring, as of the last flush.
    ring: MonitorRing,
    /// The nodes on `ring`, in name order: the ring is built again only when they change.
    ring_nodes: Vec<NodeName>,
    /// The members a quorum of whose watchers lost them, as of the last flush.
    unreachable: BTreeSet<NodeName>,
    /// The peers connected to this node that most of their watchers do not reach, as of the
    /// last flush.
    reached_by_few: BTreeSet<NodeName>,
    /// For each record, the life of each node it lists as lost, as this node attributes it: the
    /// life of that node held here when this node took in the version that began to list it
    /// (every life, if none was held). A record names the nodes it lost, not their lives, and
    /// an accusation of an earlier life must not set aside the node's later one: a node
    /// restarted, and met by some of its watchers before the others, would be disconnected by
    /// all for a moment.
    lost_lives: BTreeMap<NodeName, BTreeMap<NodeName, Incarnation>>,
    /// Whether the view changed since the ring was last built.
    ring_stale: bool,
    /// How long a node down for this node, or that left, stays in the view.
    forget_after: Duration,
    /// The nodes down for this node, or that left, as of the last tick, and since when.
    gone_since: BTreeMap<NodeName, Instant>,
    /// The versions of the records forgotten (the last [`FORGOTTEN_REMEMBERED`]): not taken
    /// again.
    forgotten: BTreeMap<NodeName, (Incarnation, u64)>,
    /// The same names, oldest forgotten first.
    forgotten_order: VecDeque<NodeName>,
    /// Bumped whenever what [`View::members`] lists may differ: a record added or forgotten, or
    /// its address or presence changed.
    members_version: u64,
}

/// Whether a quorum of the watchers of `node` on `ring` say so (`says`); `None` if it has none.
fn watchers_agree(
    ring: &MonitorRing,
    node: &NodeName,
    says: impl Fn(&NodeName) -> bool,
) -> Option<bool> {
    let watchers = ring.watchers_of(node);
    if watchers.is_empty() {
        return None;
    }
    let agree = watchers.iter().filter(|w| says(w)).count();
    Some(agree >= monitor_ring::quorum(watchers.len()))
}

/// `name` as the key of its record, if one is held: the names records list are then clones of
/// one name, which compare without reading their text ([`View::groups`] compares them n² times).
fn shared(records: &BTreeMap<NodeName, NodeRecord>, name: &NodeName) -> NodeName {
    records
        .get_key_value(name)
        .map_or_else(|| name.clone(), |(key, _)| key.clone())
}

/// What came of a change: applied; ignored (this version or a later one is held, the record is
/// this node's, or the change would pass [`MAX_RECORD_NAMES`]); or made for a version not held.
enum Taken {
    Applied,
    Ignored,
    OtherVersion,
}

/// A record learned since the last flush: the node it came from, and the change that made it
/// if it came as the one change since (then relayed as it came).
#[derive(Debug)]
struct Learned {
    from: NodeName,
    change: Option<RecordChange>,
}

/// What a flush sends one peer, in this order.
struct ToPeer {
    /// This node's whole record: the peer is not known to hold the version flushed before.
    whole_mine: bool,
    /// Whether the peer's link takes changes (else only whole records and digests).
    takes_changes: bool,
    /// Changes: this node's own, then of the records it learned.
    changes: Vec<RecordChange>,
    /// Digest entries of the records learned whose changes cannot be relayed.
    entries: Vec<(NodeName, Incarnation, u64)>,
}

/// A record asked of one peer, and what the other peers offered of it: if the asked one answers
/// without it, or its link goes first, the peer that offered the freshest version is asked next.
#[derive(Debug)]
struct Asked {
    /// The version asked for.
    freshness: (Incarnation, u64),
    /// The peer asked.
    of: NodeName,
    /// The other peers that offered it, with the version each offered.
    offered_by: Vec<(NodeName, (Incarnation, u64))>,
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
            lost: BTreeSet::new(),
        };
        Self {
            flushed: record.clone(),
            records: BTreeMap::from([(me.clone(), record)]),
            me,
            actions: VecDeque::new(),
            mine_changed: false,
            holding_flushed: BTreeSet::new(),
            whole_records_only: BTreeSet::new(),
            learned: BTreeMap::new(),
            asked: BTreeMap::new(),
            monitors: monitor_ring::DEFAULT_MONITORS,
            ring: MonitorRing::default(),
            ring_nodes: Vec::new(),
            unreachable: BTreeSet::new(),
            reached_by_few: BTreeSet::new(),
            lost_lives: BTreeMap::new(),
            ring_stale: true,
            forget_after: DEFAULT_FORGET_AFTER,
            gone_since: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            forgotten_order: VecDeque::new(),
            members_version: 0,
        }
    }

    /// The same view forgetting a node once it has been down for this node, or has left, for
    /// `forget_after` (default [`DEFAULT_FORGET_AFTER`]).
    pub fn with_forget_after(mut self, forget_after: Duration) -> Self {
        self.forget_after = forget_after;
        self
    }

    /// Time passed: the nodes down for this node, or that left (and are no longer connected),
    /// for `forget_after` are forgotten, and no longer dialed; never this node, even once it
    /// left. O(n) when this node is connected to all, O(n²) at worst (finding who is down).
    pub fn handle_tick(&mut self, now: Instant) {
        let mine = &self.records[&self.me];
        let gone: Vec<NodeName> = self
            .nodes()
            .filter(|(_, state)| matches!(state, NodeState::Down | NodeState::Left))
            .map(|(record, _)| &record.name)
            .filter(|name| **name != self.me && !mine.links.contains(*name))
            .cloned()
            .collect();
        let mut since = BTreeMap::new();
        for name in gone {
            let at = self.gone_since.get(&name).copied().unwrap_or(now);
            since.insert(name, at);
        }
        self.gone_since = since;
        let due: Vec<NodeName> = self
            .gone_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.forget_after)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.forget(&name);
        }
    }

    /// Drops the record of `name`, remembering its version.
    fn forget(&mut self, name: &NodeName) {
        self.gone_since.remove(name);
        let Some(record) = self.records.remove(name) else {
            return;
        };
        self.learned.remove(name);
        self.asked.remove(name);
        self.unreachable.remove(name);
        self.lost_lives.remove(name);
        self.holding_flushed.remove(name);
        self.whole_records_only.remove(name);
        self.unforget(name);
        if self.forgotten_order.len() == FORGOTTEN_REMEMBERED
            && let Some(oldest) = self.forgotten_order.pop_front()
        {
            self.forgotten.remove(&oldest);
        }
        self.forgotten.insert(name.clone(), record.freshness());
        self.forgotten_order.push_back(name.clone());
        self.members_version += 1;
        self.changed();
        // No longer an accusation that counts: this node's record stops carrying it.
        self.change_mine(|mine| mine.lost.remove(name));
    }

    /// `name` is held again (or forgotten again): the version forgotten of it is no longer
    /// remembered. O(`FORGOTTEN_REMEMBERED`), once per node that comes back after it was
    /// forgotten.
    fn unforget(&mut self, name: &NodeName) {
        if self.forgotten.remove(name).is_some() {
            self.forgotten_order.retain(|forgotten| forgotten != name);
        }
    }

    /// Whether the version `offered` of `name`'s record is one this node forgot, or earlier.
    fn forgotten(&self, name: &NodeName, offered: (Incarnation, u64)) -> bool {
        self.forgotten
            .get(name)
            .is_some_and(|forgotten| *forgotten >= offered)
    }

    /// The same view with each member watched by `monitors` others (see `monitor_ring`).
    pub fn with_monitors(mut self, monitors: usize) -> Self {
        self.monitors = monitors.max(1);
        self.ring = MonitorRing::new(self.ring_nodes.iter().cloned(), self.monitors);
        self.ring_stale = true;
        self
    }

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// A link to `peer` came up (it proved the secret as the node named there, in that life,
    /// listening at that address): it is sent this node's digest, and at the next flush every
    /// connected node learns of the link — and of the peer, if this node is the first to know of
    /// this life of it, so that its address spreads even if this node ends before the peer
    /// speaks.
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
                lost: BTreeSet::new(),
            };
            self.records.insert(peer.name.clone(), first_sight);
            // What an earlier life of the peer lost is not what this one lost.
            self.lost_lives.remove(&peer.name);
            self.unforget(&peer.name);
            self.members_version += 1;
            self.learn(&peer.name, peer.name.clone(), None);
            self.changed();
        }
        // What was asked of an earlier life of the peer will not be answered; a new link starts
        // with this node's whole record.
        self.ask_elsewhere(|asked| asked.of == peer.name);
        self.holding_flushed.remove(&peer.name);
        self.whole_records_only.remove(&peer.name);
        self.gone_since.remove(&peer.name);
        self.change_mine(|mine| {
            mine.links.insert(peer.name.clone()) | mine.lost.remove(&peer.name)
        });
        let digest = self.digest();
        self.send(peer.name.clone(), ViewMessage::Digest(digest));
    }

    /// The link to `peer` is gone: what was asked of it is asked of the next peer that offered
    /// it.
    pub fn handle_down(&mut self, peer: &NodeName) {
        self.change_mine(|mine| mine.links.remove(peer) && mine.lost.insert(peer.clone()));
        self.holding_flushed.remove(peer);
        for asked in self.asked.values_mut() {
            asked.offered_by.retain(|(other, _)| other != peer);
        }
        self.ask_elsewhere(|asked| &asked.of == peer);
    }

    /// The link to `peer` (reported up) speaks a protocol from before record changes: until it
    /// goes, `peer` is sent this node's whole record on every change.
    pub fn handle_whole_records_only(&mut self, peer: &NodeName) {
        self.holding_flushed.remove(peer);
        self.whole_records_only.insert(peer.clone());
    }

    /// This node leaves the cluster: every connected node is told at once, before the links
    /// close.
    pub fn leave(&mut self) {
        // The goodbye goes whole: a peer cannot ask for it again once the links close.
        self.holding_flushed.clear();
        self.change_mine(|mine| {
            let changed = mine.presence != Presence::Left;
            mine.presence = Presence::Left;
            changed
        });
        self.flush();
    }

    /// Sends what changed since the last flush: this node's record to every node it is
    /// connected to (what changed in it to those that hold the version before, the whole
    /// record to the others), and the records it learned to the connected nodes that did not
    /// give them and are not connected to their authors (who send them their records
    /// themselves) — in a full mesh, no one: each as the change that made it, if it came as one
    /// change since the last flush, else as a digest entry. A member that a quorum of its
    /// watchers has newly lost is disconnected.
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.ring_stale) {
            let live: Vec<NodeName> = self.live().map(|record| record.name.clone()).collect();
            if live != self.ring_nodes {
                self.ring = MonitorRing::new(live.iter().cloned(), self.monitors);
                self.ring_nodes = live;
            }
            self.settle_unreachable();
            self.settle_reached_by_few();
        }
        if !self.mine_changed && self.learned.is_empty() {
            return;
        }
        let mine = &self.records[&self.me];
        let links: Vec<NodeName> = mine.links.iter().cloned().collect();
        let own_change = std::mem::take(&mut self.mine_changed)
            .then(|| RecordChange::between(&self.flushed, mine));
        let learned = std::mem::take(&mut self.learned);
        // What each peer is sent, in the order of `links`: this node's own change first, then
        // what it learned, in the authors' order.
        let mut outgoing: Vec<ToPeer> = links
            .iter()
            .map(|peer| ToPeer {
                whole_mine: own_change.is_some() && !self.holding_flushed.contains(peer),
                takes_changes: !self.whole_records_only.contains(peer),
                changes: match &own_change {
                    Some(change) if self.holding_flushed.contains(peer) => vec![change.clone()],
                    _ => Vec::new(),
                },
                entries: Vec::new(),
            })
            .collect();
        for (author, learned) in &learned {
            let Some(record) = self.records.get(author) else {
                continue;
            };
            // The peers that cannot have it from its author: both lists are in name order, so
            // one walk finds them (O(n) per record learned, not a lookup per peer).
            let mut theirs = record.links.iter().peekable();
            for (peer, to) in links.iter().zip(&mut outgoing) {
                while theirs.next_if(|linked| *linked < peer).is_some() {}
                if theirs.next_if_eq(&peer).is_some() || peer == author || *peer == learned.from {
                    continue;
                }
                match &learned.change {
                    Some(change) if to.takes_changes => to.changes.push(change.clone()),
                    _ => to
                        .entries
                        .push((record.name.clone(), record.incarnation, record.version)),
                }
            }
        }
        for (peer, to) in links.iter().zip(outgoing) {
            if to.whole_mine {
                let whole = self.records[&self.me].clone();
                self.send(peer.clone(), ViewMessage::Records(vec![whole]));
            }
            if !to.changes.is_empty() {
                self.send(peer.clone(), ViewMessage::Changes(to.changes));
            }
            if !to.entries.is_empty() {
                self.send(peer.clone(), ViewMessage::Digest(to.entries));
            }
        }
        if own_change.is_some() {
            self.holding_flushed = links
                .into_iter()
                .filter(|peer| !self.whole_records_only.contains(peer))
                .collect();
            self.flushed = self.records[&self.me].clone();
        }
    }

    /// A message from the node `from`. Digests and requests count only from a node this node
    /// is connected to (an answer could not reach any other); records and changes count from a
    /// node whose link has just gone too (its goodbye may come last).
    pub fn handle_message(&mut self, from: &NodeName, message: ViewMessage) {
        let linked = self.records[&self.me].links.contains(from);
        if !linked && !matches!(message, ViewMessage::Records(_) | ViewMessage::Changes(_)) {
            return;
        }
        match message {
            ViewMessage::Digest(entries) => {
                let wanted: Vec<NodeName> = entries
                    .into_iter()
                    .filter(|(name, incarnation, version)| {
                        self.offered(from, name, (*incarnation, *version))
                    })
                    .map(|(name, _, _)| name)
                    .collect();
                if !wanted.is_empty() {
                    self.send(from.clone(), ViewMessage::Want(wanted));
                }
            }
            ViewMessage::Want(names) => {
                // Answered even when empty: the asker then asks another peer for what is missing.
                let records: Vec<NodeRecord> = names
                    .iter()
                    .filter_map(|name| self.given(name).cloned())
                    .collect();
                self.send(from.clone(), ViewMessage::Records(records));
            }
            ViewMessage::Records(records) => {
                let mut changed = false;
                for record in records {
                    if self.merge(&record) {
                        changed = true;
                        self.learn(&record.name, from.clone(), None);
                    }
                }
                if changed {
                    self.changed();
                }
                // Whatever `from` was asked for and did not send (this may be its answer, or a
                // push of its own record before it: at worst a record is fetched twice) is asked
                // of the next peer that offered it.
                self.ask_elsewhere(|asked| &asked.of == from);
            }
            ViewMessage::Changes(changes) => {
                let mut wanted = Vec::new();
                let mut changed = false;
                for change in changes {
                    let (name, offered) =
                        (change.name.clone(), (change.incarnation, change.version));
                    match self.take_change(from, change) {
                        Taken::Applied => changed = true,
                        Taken::Ignored => {}
                        // Another version is held: the change is an offer of the record.
                        Taken::OtherVersion if linked && self.offered(from, &name, offered) => {
                            wanted.push(name)
                        }
                        Taken::OtherVersion => {}
                    }
                }
                if changed {
                    self.changed();
                }
                if !wanted.is_empty() {
                    self.send(from.clone(), ViewMessage::Want(wanted));
                }
            }
        }
    }

    /// `from` offers the record of `name` at version `offered`: whether to ask it for the record
    /// now. Not if this node holds that version or a later one, or asked another peer for it
    /// already (this offer is then kept, should that peer not answer).
    fn offered(&mut self, from: &NodeName, name: &NodeName, offered: (Incarnation, u64)) -> bool {
        let held = self.records.get(name).map(NodeRecord::freshness);
        if *name == self.me
            || held.is_some_and(|held| held >= offered)
            || self.forgotten(name, offered)
        {
            return false;
        }
        match self.asked.get_mut(name) {
            Some(asked) if asked.freshness >= offered && &asked.of != from => {
                asked.offered_by.retain(|(other, _)| other != from);
                asked.offered_by.push((from.clone(), offered));
                false
            }
            // Offered again by the peer asked (a later life, or it has it now).
            Some(asked) if asked.freshness >= offered => true,
            previous => {
                let offered_by = previous.map(|asked| std::mem::take(&mut asked.offered_by));
                let asked = Asked {
                    freshness: offered,
                    of: from.clone(),
                    offered_by: offered_by.unwrap_or_default(),
                };
                self.asked.insert(name.clone(), asked);
                true
            }
        }
    }

    /// Applies `change`, which came from `from`, if this node holds the version it applies to.
    fn take_change(&mut self, from: &NodeName, change: RecordChange) -> Taken {
        if change.name == self.me {
            return Taken::Ignored;
        }
        let Some(held) = self.records.get(&change.name) else {
            return Taken::OtherVersion;
        };
        let names = held.links.len() + held.lost.len() + change.linked.len() + change.lost.len();
        if held.freshness() >= (change.incarnation, change.version) || names > MAX_RECORD_NAMES {
            return Taken::Ignored;
        }
        let mut change = change;
        for name in change.linked.iter_mut().chain(&mut change.lost) {
            *name = shared(&self.records, name);
        }
        let Some(held) = self.records.get_mut(&change.name) else {
            return Taken::OtherVersion;
        };
        let name = change.name.clone();
        let presence = held.presence;
        if !change.apply(held) {
            return Taken::OtherVersion;
        }
        if held.presence != presence {
            self.members_version += 1;
        }
        self.note_lost(&name);
        self.learn(&name, from.clone(), Some(change));
        Taken::Applied
    }

    /// Notes that the record of `name` changed, learned from `from` (by `change`, if that was
    /// the change): it is relayed at the next flush, as that one change if it was the only one
    /// since the last flush, else as a digest entry.
    fn learn(&mut self, name: &NodeName, from: NodeName, change: Option<RecordChange>) {
        let change = change.filter(|_| !self.learned.contains_key(name));
        self.learned.insert(name.clone(), Learned { from, change });
    }

    /// Drops the asks that are answered; those of the others that `retry` picks go to the
    /// linked peer that offered the freshest version of the record, if one offered more than
    /// this node holds, or are given up.
    fn ask_elsewhere(&mut self, retry: impl Fn(&Asked) -> bool) {
        let links = &self.records[&self.me].links;
        let records = &self.records;
        let mut wants: BTreeMap<NodeName, Vec<NodeName>> = BTreeMap::new();
        self.asked.retain(|name, asked| {
            let held = records.get(name).map(NodeRecord::freshness);
            if held.is_some_and(|held| held >= asked.freshness) {
                return false;
            }
            if !retry(asked) {
                return true;
            }
            asked.offered_by.retain(|(peer, _)| links.contains(peer));
            let best = asked
                .offered_by
                .iter()
                .enumerate()
                .max_by_key(|(_, (_, offered))| *offered)
                .map(|(i, _)| i);
            let Some((next, offered)) = best.map(|i| asked.offered_by.swap_remove(i)) else {
                return false;
            };
            if held.is_some_and(|held| held >= offered) {
                return false;
            }
            wants.entry(next.clone()).or_default().push(name.clone());
            asked.of = next;
            asked.freshness = offered;
            true
        });
        for (peer, names) in wants {
            self.send(peer, ViewMessage::Want(names));
        }
    }

    /// The next thing the runtime should do.
    pub fn poll_action(&mut self) -> Option<ViewAction> {
        self.actions.pop_front()
    }

    /// The state of `name`; `None` if this node has never heard of it, or forgot it.
    pub fn state(&self, name: &NodeName) -> Option<NodeState> {
        let record = self.records.get(name)?;
        let mine = &self.records[&self.me];
        Some(if record.presence == Presence::Left {
            NodeState::Left
        } else if *name == self.me || mine.links.contains(name) {
            NodeState::Up
        } else if self.linked_to_a_peer(name) {
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

    /// The records of the other nodes that have not left.
    pub fn members(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records
            .values()
            .filter(|record| record.name != self.me && record.presence == Presence::Member)
    }

    /// A number that changes whenever what [`View::members`] lists may have changed (a node
    /// came, went, left or moved), and only then: the links of a mesh forming change the view
    /// on every message, its members far less often.
    pub fn members_version(&self) -> u64 {
        self.members_version
    }

    /// The members this node should be connected to and is not, with their addresses: every
    /// node that has not left (a node down for everyone may be back, an unreachable one may be
    /// reachable from here).
    pub fn to_dial(&self) -> impl Iterator<Item = (&NodeName, &str)> {
        let mine = &self.records[&self.me];
        self.members()
            .filter(|record| !mine.links.contains(&record.name))
            .map(|record| (&record.name, record.addr.as_str()))
    }

    /// The peers this node watches (as of the last flush): the failure detector runs on its
    /// links to them, and on no other link to a member (see `monitor_ring`). Those are the
    /// peers the ring gives it, and the peers connected to this node that most of their
    /// watchers do not reach (say they are not linked to: cut off from them, lost by them, or
    /// not met yet, as a later life of a node), so that a hang of one is still seen.
    pub fn watching(&self) -> BTreeSet<NodeName> {
        self.ring
            .watched_by(&self.me)
            .into_iter()
            .chain(&self.unreachable)
            .chain(&self.reached_by_few)
            .cloned()
            .collect()
    }

    /// Finds the peers connected to this node that most of their watchers say they are not
    /// linked to (see [`watching`](View::watching)). O(peers · k log n), at a flush after a
    /// change.
    fn settle_reached_by_few(&mut self) {
        let records = &self.records;
        let ring = &self.ring;
        self.reached_by_few = records[&self.me]
            .links
            .iter()
            .filter(|peer| {
                records
                    .get(*peer)
                    .is_some_and(|record| record.presence == Presence::Member)
                    && watchers_agree(ring, peer, |w| {
                        records.get(w).is_some_and(|r| r.links.contains(*peer))
                    }) == Some(false)
            })
            .cloned()
            .collect();
    }

    /// The members a quorum of whose watchers lost them (as of the last flush): hung, stopped
    /// or cut off from most of their watchers.
    pub fn unreachable(&self) -> &BTreeSet<NodeName> {
        &self.unreachable
    }

    /// The records of the nodes this node holds live, in name order: itself, the members it is
    /// connected to, and those a node it is connected to is connected to. O(n log n) when this
    /// node is connected to all (each record is one lookup in its links), O(n² log n) at worst.
    fn live(&self) -> impl Iterator<Item = &NodeRecord> {
        let mine = &self.records[&self.me];
        // Looked up once, not once per record not connected to this node.
        let peers: Vec<&NodeRecord> = self.peer_records().collect();
        self.records.values().filter(move |record| {
            record.presence == Presence::Member
                && (record.name == self.me
                    || mine.links.contains(&record.name)
                    || peers.iter().any(|peer| peer.links.contains(&record.name)))
        })
    }

    /// Whether a node this node is connected to says it is connected to `name`.
    fn linked_to_a_peer(&self, name: &NodeName) -> bool {
        self.peer_records().any(|peer| peer.links.contains(name))
    }

    /// The records of the nodes this node is connected to.
    fn peer_records(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records[&self.me]
            .links
            .iter()
            .filter_map(|peer| self.records.get(peer))
    }

    /// Finds the members a quorum of whose watchers say they lost them (and are not connected to
    /// them again); asks to disconnect those newly found that this node is connected to.
    fn settle_unreachable(&mut self) {
        let ring = &self.ring;
        // An accusation counts against the life it was made of and later ones only.
        let lost_by = |watcher: &NodeName, node: &NodeRecord| {
            self.records.get(watcher).is_some_and(|record| {
                record.lost.contains(&node.name) && !record.links.contains(&node.name)
            }) && self
                .lost_lives
                .get(watcher)
                .and_then(|lives| lives.get(&node.name))
                .is_none_or(|life| *life >= node.incarnation)
        };
        // Only a node that some record lists as lost can be: O(names lost) to find those, then
        // O(k log n) for each, not O(n·k log n) for every member.
        let suspects: BTreeSet<&NodeName> = self
            .records
            .values()
            .flat_map(|record| {
                record
                    .lost
                    .iter()
                    .filter(|name| !record.links.contains(*name))
            })
            .collect();
        let unreachable: BTreeSet<NodeName> = suspects
            .into_iter()
            .filter_map(|name| self.records.get(name))
            .filter(|record| record.name != self.me && record.presence == Presence::Member)
            .filter(|record| {
                watchers_agree(ring, &record.name, |w| lost_by(w, record)) == Some(true)
            })
            .map(|record| record.name.clone())
            .collect();
        let mine = &self.records[&self.me];
        let newly: Vec<NodeName> = unreachable
            .difference(&self.unreachable)
            .filter(|name| mine.links.contains(*name))
            .cloned()
            .collect();
        self.unreachable = unreachable;
        for name in newly {
            self.actions.push_back(ViewAction::Disconnect(name));
        }
    }

    /// The fully connected groups of the nodes that are up or unreachable (see the module docs),
    /// each in name order; each of those nodes is in exactly one.
    pub fn groups(&self) -> Vec<BTreeSet<NodeName>> {
        let live: Vec<&NodeRecord> = self.live().collect();
        // `lists[i][j]`: i's record lists j among its links; `lost[i][j]`: among its lost. Both
        // the names a record lists and `live` are in name order: each row is one merge walk.
        let matrix = |names: fn(&NodeRecord) -> &BTreeSet<NodeName>| -> Vec<Vec<bool>> {
            live.iter()
                .map(|record| {
                    let mut listed = names(record).iter().peekable();
                    live.iter()
                        .map(|other| {
                            while listed.next_if(|name| **name < other.name).is_some() {}
                            listed.next_if_eq(&&other.name).is_some()
                        })
                        .collect()
                })
                .collect()
        };
        let lists = matrix(|record| &record.links);
        let lost = matrix(|record| &record.lost);
        let linked = |a: usize, b: usize| lists[a][b] && lists[b][a];
        let mut rest: Vec<usize> = (0..live.len()).collect();
        let mut groups = Vec::new();
        while !rest.is_empty() {
            // How many of the others each node is not linked to, and how many of the others
            // say they lost it.
            let mut missing: Vec<usize> = rest
                .iter()
                .map(|&a| rest.iter().filter(|&&b| a != b && !linked(a, b)).count())
                .collect();
            let mut accused: Vec<usize> = rest
                .iter()
                .map(|&a| rest.iter().filter(|&&b| lost[b][a]).count())
                .collect();
            let mut aside = Vec::new();
            // Sets aside the node missing the most links until the rest are all linked; among
            // equals, the one more others say they lost (a crashed node, not the survivor that
            // noticed first), then the latest life (a newcomer not yet linked to all), then the
            // greater name.
            while let Some(worst) = (0..rest.len())
                .filter(|&i| missing[i] > 0)
                .max_by_key(|&i| {
                    let record = live[rest[i]];
                    (missing[i], accused[i], record.incarnation, &record.name)
                })
            {
                let gone = rest.remove(worst);
                missing.remove(worst);
                accused.remove(worst);
                for (i, &other) in rest.iter().enumerate() {
                    if !linked(gone, other) {
                        missing[i] -= 1;
                    }
                    if lost[gone][other] {
                        accused[i] -= 1;
                    }
                }
                aside.push(gone);
            }
            groups.push(rest.iter().map(|&i| live[i].name.clone()).collect());
            // In name order, as `live` is.
            aside.sort_unstable();
            rest = aside;
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

    /// The record of `name` as this node gives it out, in answers and digests: its own as
    /// flushed last (the changes it sends next apply to that version), any other as held.
    fn given(&self, name: &NodeName) -> Option<&NodeRecord> {
        match *name == self.me {
            true => Some(&self.flushed),
            false => self.records.get(name),
        }
    }

    /// The freshness of every record held, as given out.
    fn digest(&self) -> Vec<(NodeName, Incarnation, u64)> {
        self.records
            .keys()
            .filter_map(|name| self.given(name))
            .map(|r| (r.name.clone(), r.incarnation, r.version))
            .collect()
    }

    /// Takes `record` if it is fresher than the one held; true if it was.
    fn merge(&mut self, record: &NodeRecord) -> bool {
        if record.name == self.me
            || record.links.len() + record.lost.len() > MAX_RECORD_NAMES
            || self.forgotten(&record.name, record.freshness())
        {
            return false;
        }
        if self.forgotten.contains_key(&record.name) && !self.linked_to_a_peer(&record.name) {
            // A later version of a node forgotten, kept by a peer that lost it too: the node
            // comes back when it, or a node connected to it, speaks for it.
            return false;
        }
        match self.records.get(&record.name) {
            Some(held) if held.freshness() >= record.freshness() => false,
            held => {
                if held.is_none_or(|held| {
                    (&held.addr, held.presence) != (&record.addr, record.presence)
                }) {
                    self.members_version += 1;
                }
                if held.is_some_and(|held| held.incarnation != record.incarnation) {
                    // What an earlier life of the node lost is not what this one lost.
                    self.lost_lives.remove(&record.name);
                }
                let share = |names: &BTreeSet<NodeName>| -> BTreeSet<NodeName> {
                    names
                        .iter()
                        .map(|name| shared(&self.records, name))
                        .collect()
                };
                let name = shared(&self.records, &record.name);
                let taken = NodeRecord {
                    name: name.clone(),
                    addr: record.addr.clone(),
                    incarnation: record.incarnation,
                    version: record.version,
                    presence: record.presence,
                    links: share(&record.links),
                    lost: share(&record.lost),
                };
                self.records.insert(name.clone(), taken);
                self.note_lost(&name);
                self.unforget(&record.name);
                true
            }
        }
    }

    /// Changes this node's own record; if `change` says it changed, bumps its version, to be
    /// sent at the next flush.
    fn change_mine(&mut self, change: impl FnOnce(&mut NodeRecord) -> bool) {
        let Some(mine) = self.records.get_mut(&self.me) else {
            return;
        };
        if !change(mine) {
            return;
        }
        mine.version += 1;
        self.mine_changed = true;
        self.note_lost(&self.me.clone());
        self.changed();
    }

    /// Notes the life of each node the record of `accuser` now lists as lost and did not before:
    /// the life of that node held now, or any life if none is (see
    /// [`lost_lives`](View::lost_lives)). O(names lost) per record taken in.
    fn note_lost(&mut self, accuser: &NodeName) {
        let Some(record) = self.records.get(accuser) else {
            return;
        };
        let lives = self.lost_lives.entry(accuser.clone()).or_default();
        lives.retain(|name, _| record.lost.contains(name));
        for name in &record.lost {
            lives.entry(name.clone()).or_insert_with(|| {
                self.records
                    .get(name)
                    .map_or(Incarnation(u64::MAX), |lost| lost.incarnation)
            });
        }
    }

    /// States, members or groups may differ: the runtime is told, and the ring is built again at
    /// the next flush.
    fn changed(&mut self) {
        self.ring_stale = true;
        self.actions.push_back(ViewAction::Changed);
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

    /// Flushes the views and delivers every message between them until none is left.
    fn settle(views: &mut [View]) {
        let held = settle_holding(views, None);
        assert!(held.is_empty());
    }

    /// Settles, except that the view `held` sends nothing yet: what reaches it is returned, to
    /// be handed to it later.
    fn settle_holding(views: &mut [View], held: Option<usize>) -> Vec<(NodeName, ViewMessage)> {
        let mut for_held = Vec::new();
        loop {
            let mut sent = Vec::new();
            for (i, view) in views.iter_mut().enumerate() {
                if Some(i) == held {
                    continue;
                }
                view.flush();
                while let Some(action) = view.poll_action() {
                    if let ViewAction::Send { to, message } = action {
                        sent.push((i, to, message));
                    }
                }
            }
            if sent.is_empty() {
                return for_held;
            }
            for (from, to, message) in sent {
                let from = views[from].me.clone();
                let Some(at) = views.iter().position(|v| v.me == to) else {
                    continue;
                };
                if Some(at) == held {
                    for_held.push((from, message));
                } else if views[at].records[&to].links.contains(&from) {
                    views[at].handle_message(&from, message);
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

    /// What `view` asked to send, by peer, in order.
    fn sent(view: &mut View) -> Vec<(NodeName, ViewMessage)> {
        std::iter::from_fn(|| view.poll_action())
            .filter_map(|action| match action {
                ViewAction::Send { to, message } => Some((to, message)),
                _ => None,
            })
            .collect()
    }

    /// What `view` sends on its next flush (and asked to send before it), by peer.
    fn flushed(view: &mut View) -> Vec<(NodeName, ViewMessage)> {
        view.flush();
        sent(view)
    }

    #[test]
    fn a_peer_holding_the_record_is_sent_what_changed_a_new_peer_the_whole_record() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        connect(&mut views, 0, 2);
        let sent = flushed(&mut views[0]);
        let version = views[0].records[&name("a")].version;
        let to_b = sent.iter().find(|(to, _)| *to == name("b")).unwrap();
        let change = RecordChange {
            name: name("a"),
            incarnation: Incarnation(1),
            base: version - 1,
            version,
            presence: Presence::Member,
            linked: vec![name("c")],
            unlinked: Vec::new(),
            lost: Vec::new(),
            found: Vec::new(),
        };
        assert_eq!(to_b.1, ViewMessage::Changes(vec![change]));
        let to_c = sent.iter().filter(|(to, _)| *to == name("c"));
        let whole = ViewMessage::Records(vec![views[0].records[&name("a")].clone()]);
        assert!(
            to_c.clone().any(|(_, message)| *message == whole),
            "{sent:?}"
        );
        for (to, message) in sent {
            let at = usize::from(to == name("c")) + 1;
            views[at].handle_message(&name("a"), message);
        }
        settle(&mut views);
        assert_eq!(views[2].records[&name("a")], views[0].records[&name("a")]);
        cut(&mut views, 0, 2);
        settle(&mut views);
        assert_eq!(views[1].records[&name("a")], views[0].records[&name("a")]);
        assert_eq!(
            views[1].records[&name("a")].lost,
            BTreeSet::from([name("c")])
        );
    }

    #[test]
    fn a_change_to_a_version_not_held_makes_the_peer_ask_its_author_for_the_whole_record() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        connect(&mut views, 0, 2);
        connect(&mut views, 1, 2);
        // b misses a's change (as if it held a version learned elsewhere in between), then
        // gets the next one.
        let missed = flushed(&mut views[0]);
        assert!(
            missed
                .iter()
                .any(|(to, m)| *to == name("b") && matches!(m, ViewMessage::Changes(_)))
        );
        cut(&mut views, 0, 2);
        let next = flushed(&mut views[0]);
        let (_, change) = next.into_iter().find(|(to, _)| *to == name("b")).unwrap();
        let before = views[1].records[&name("a")].clone();
        views[1].handle_message(&name("a"), change);
        assert_eq!(
            views[1].records[&name("a")],
            before,
            "not applied to another version"
        );
        let asked = flushed(&mut views[1]);
        assert!(
            asked.contains(&(name("a"), ViewMessage::Want(vec![name("a")]))),
            "{asked:?}"
        );
        for (to, message) in asked {
            if to == name("a") {
                views[0].handle_message(&name("b"), message);
            }
        }
        settle(&mut views);
        assert_eq!(views[1].records[&name("a")], views[0].records[&name("a")]);
    }

    #[test]
    fn a_peer_of_an_earlier_protocol_is_sent_whole_records_only() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        views[0].handle_whole_records_only(&name("b"));
        settle(&mut views);
        connect(&mut views, 0, 2);
        let sent = flushed(&mut views[0]);
        assert!(
            sent.iter()
                .all(|(_, message)| !matches!(message, ViewMessage::Changes(_))),
            "{sent:?}"
        );
        assert!(sent.contains(&(
            name("b"),
            ViewMessage::Records(vec![views[0].records[&name("a")].clone()])
        )));
    }

    #[test]
    fn a_change_learned_is_relayed_as_it_came_to_a_node_not_connected_to_its_author() {
        // a – b – c, with c not connected to a.
        let mut views = vec![view("a"), view("b"), view("c"), view("d")];
        connect(&mut views, 0, 1);
        connect(&mut views, 1, 2);
        settle(&mut views);
        connect(&mut views, 0, 3);
        let from_a = flushed(&mut views[0]);
        let (_, to_b) = from_a.into_iter().find(|(to, _)| *to == name("b")).unwrap();
        let ViewMessage::Changes(changes) = to_b.clone() else {
            panic!("{to_b:?}");
        };
        views[1].handle_message(&name("a"), to_b);
        let from_b = flushed(&mut views[1]);
        assert_eq!(
            from_b,
            vec![(name("c"), ViewMessage::Changes(changes))],
            "relayed as it came, not as a digest entry to fetch"
        );
        for (_, message) in from_b {
            views[2].handle_message(&name("b"), message);
        }
        assert_eq!(views[2].records[&name("a")], views[0].records[&name("a")]);
        assert!(
            flushed(&mut views[2])
                .iter()
                .all(|(_, message)| !matches!(message, ViewMessage::Want(_))),
            "nothing to ask"
        );
    }

    #[test]
    fn a_goodbye_goes_whole_and_a_node_answers_for_its_record_with_the_version_it_flushed() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        let flushed_record = views[0].records[&name("a")].clone();
        connect(&mut views, 0, 2);
        views[0].handle_message(&name("b"), ViewMessage::Want(vec![name("a")]));
        let answer = sent(&mut views[0])
            .into_iter()
            .find_map(|(to, message)| (to == name("b")).then_some(message));
        assert_eq!(answer, Some(ViewMessage::Records(vec![flushed_record])));
        settle(&mut views);
        views[0].leave();
        let goodbye = sent(&mut views[0]);
        let whole = ViewMessage::Records(vec![views[0].records[&name("a")].clone()]);
        assert_eq!(
            goodbye,
            vec![(name("b"), whole.clone()), (name("c"), whole)]
        );
    }

    #[test]
    fn a_change_that_would_grow_a_record_past_its_bound_is_dropped() {
        let mut views = vec![view("a"), view("b")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        let held = views[1].records[&name("a")].clone();
        let change = RecordChange {
            name: name("a"),
            incarnation: held.incarnation,
            base: held.version,
            version: held.version + 1,
            presence: Presence::Member,
            linked: (0..=MAX_RECORD_NAMES)
                .map(|i| name(&format!("n{i}")))
                .collect(),
            unlinked: Vec::new(),
            lost: Vec::new(),
            found: Vec::new(),
        };
        views[1].handle_message(&name("a"), ViewMessage::Changes(vec![change]));
        assert_eq!(views[1].records[&name("a")], held);
        assert!(flushed(&mut views[1]).is_empty(), "and not asked for again");
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
    fn a_node_linked_to_some_members_but_not_all_waits_outside_their_group() {
        // b and c are one group; a, started later (and first by name), has reached b only.
        let mut views = vec![
            View::new(name("a"), "a:4370".into(), Incarnation(2)),
            view("b"),
            view("c"),
        ];
        connect(&mut views, 1, 2);
        settle(&mut views);
        connect(&mut views, 0, 1);
        settle(&mut views);
        let expected = vec![
            BTreeSet::from([name("b"), name("c")]),
            BTreeSet::from([name("a")]),
        ];
        for view in &views {
            assert_eq!(view.groups(), expected, "{}", view.me);
        }
        // a reaches c: c's record lists a before a's record, not yet sent, lists c.
        connect(&mut views, 0, 2);
        let held = settle_holding(&mut views, Some(0));
        for view in &views[1..] {
            assert_eq!(view.groups(), expected, "{}", view.me);
        }
        for (from, message) in held {
            views[0].handle_message(&from, message);
        }
        settle(&mut views);
        for view in &views {
            assert_eq!(view.group().len(), 3, "{}", view.me);
        }
    }

    #[test]
    fn a_crashed_node_is_set_aside_not_the_survivor_that_noticed_first() {
        let mut views = vec![view("a"), view("b"), view("c")];
        connect(&mut views, 0, 1);
        connect(&mut views, 0, 2);
        connect(&mut views, 1, 2);
        settle(&mut views);
        // a crashed: b noticed, c not yet; a's last record still lists b and c.
        views[1].handle_down(&name("a"));
        settle_holding(&mut views, Some(0));
        let expected = vec![
            BTreeSet::from([name("b"), name("c")]),
            BTreeSet::from([name("a")]),
        ];
        for view in &views[1..] {
            assert_eq!(view.groups(), expected, "{}", view.me);
        }
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
    fn a_later_life_is_not_held_unreachable_for_the_loss_of_an_earlier_one() {
        let mut views = vec![view("a"), view("b"), view("c"), view("d")];
        for (x, y) in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
            connect(&mut views, x, y);
        }
        settle(&mut views);
        for other in 0..3 {
            cut(&mut views, 3, other);
        }
        settle(&mut views);
        assert!(views[0].records[&name("b")].lost.contains(&name("d")));
        // d restarts and meets a first: b and c still say they lost d, its earlier life.
        views[3] = View::new(name("d"), "d2:4370".into(), Incarnation(2));
        connect(&mut views, 0, 3);
        settle(&mut views);
        let a = &mut views[0];
        let disconnects: Vec<ViewAction> = std::iter::from_fn(|| a.poll_action())
            .filter(|action| matches!(action, ViewAction::Disconnect(_)))
            .collect();
        assert!(disconnects.is_empty(), "{disconnects:?}");
        assert!(!a.unreachable().contains(&name("d")));
        assert_eq!(a.state(&name("d")), Some(NodeState::Up));
    }

    #[test]
    fn a_later_life_that_most_of_its_watchers_do_not_reach_is_watched_by_those_that_do() {
        let names = ["a", "b", "c", "d", "e", "f"];
        let mut views: Vec<View> = names.iter().map(|n| view(n).with_monitors(2)).collect();
        for x in 0..names.len() {
            for y in x + 1..names.len() {
                connect(&mut views, x, y);
            }
        }
        settle(&mut views);
        let d = 3;
        for other in (0..names.len()).filter(|&i| i != d) {
            cut(&mut views, d, other);
        }
        settle(&mut views);
        // d's later life meets one node that is not among its watchers, and no watcher.
        let watchers: Vec<NodeName> = views[0]
            .ring
            .watchers_of(&name("d"))
            .into_iter()
            .cloned()
            .collect();
        let meets = (0..names.len())
            .find(|&i| i != d && !watchers.contains(&name(names[i])))
            .unwrap();
        views[d] = View::new(name("d"), "d2:4370".into(), Incarnation(2)).with_monitors(2);
        connect(&mut views, meets, d);
        settle(&mut views);
        assert!(!views[meets].unreachable().contains(&name("d")));
        assert!(
            views[meets].watching().contains(&name("d")),
            "its watchers do not reach it: a hang of it would be seen by no one"
        );
        // Its watchers reach it: the ring's watchers alone watch it again.
        for watcher in &watchers {
            let w = names.iter().position(|n| name(n) == *watcher).unwrap();
            connect(&mut views, w, d);
        }
        settle(&mut views);
        assert!(!views[meets].watching().contains(&name("d")));
    }

    #[test]
    fn a_node_down_or_left_for_a_while_is_forgotten_and_a_peer_does_not_bring_it_back() {
        let forget_after = Duration::from_secs(60);
        let mut views: Vec<View> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| view(n).with_forget_after(forget_after))
            .collect();
        for (x, y) in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
            connect(&mut views, x, y);
        }
        settle(&mut views);
        // c is cut off from a only (b still reaches it); d crashes; b leaves.
        cut(&mut views, 0, 2);
        cut(&mut views, 3, 0);
        cut(&mut views, 3, 1);
        cut(&mut views, 3, 2);
        views[1].leave();
        settle(&mut views);
        cut(&mut views, 1, 0);
        cut(&mut views, 1, 2);
        let a = &mut views[0];
        assert_eq!(a.state(&name("d")), Some(NodeState::Down));
        assert_eq!(a.state(&name("b")), Some(NodeState::Left));
        let t0 = Instant::now();
        a.handle_tick(t0);
        a.handle_tick(t0 + forget_after - Duration::from_millis(1));
        assert_eq!(a.state(&name("d")), Some(NodeState::Down), "not yet");
        let d_held = a.record(&name("d")).unwrap().freshness();
        a.handle_tick(t0 + forget_after);
        assert_eq!(a.state(&name("d")), None, "down for a while: forgotten");
        assert_eq!(a.state(&name("b")), None, "left a while ago: forgotten");
        assert_eq!(
            a.state(&name("c")),
            None,
            "once b left, no one a hears from reaches c: forgotten too"
        );
        assert_eq!(a.to_dial().count(), 0, "and no longer dialed");
        sent(a);
        // c comes back to a: it says nothing new of d (the version forgotten), then news.
        let c = identity(&views[2]);
        let a = &mut views[0];
        a.handle_up(&c);
        sent(a);
        let offer = |version: u64| ViewMessage::Digest(vec![(name("d"), d_held.0, version)]);
        a.handle_message(&name("c"), offer(d_held.1));
        assert!(
            wants(a).is_empty(),
            "the version forgotten is not taken again"
        );
        a.handle_message(&name("c"), offer(d_held.1 + 1));
        assert_eq!(wants(a), vec![(name("c"), vec![name("d")])], "news is");
    }

    #[test]
    fn a_node_unreachable_from_here_but_reached_by_a_peer_is_not_forgotten() {
        let forget_after = Duration::from_secs(60);
        let mut views: Vec<View> = ["a", "b", "c"]
            .into_iter()
            .map(|n| view(n).with_forget_after(forget_after))
            .collect();
        for (x, y) in [(0, 1), (0, 2), (1, 2)] {
            connect(&mut views, x, y);
        }
        settle(&mut views);
        cut(&mut views, 0, 2);
        settle(&mut views);
        let t0 = Instant::now();
        views[0].handle_tick(t0);
        views[0].handle_tick(t0 + forget_after * 2);
        assert_eq!(views[0].state(&name("c")), Some(NodeState::Unreachable));
        assert_eq!(views[0].to_dial().count(), 1, "still dialed");
    }

    #[test]
    fn the_members_version_moves_when_a_member_comes_leaves_moves_or_is_forgotten_only() {
        let mut views = [view("a"), view("b"), view("c")];
        let version = |views: &[View]| views[0].members_version();
        connect(&mut views, 0, 1);
        settle(&mut views);
        let b_came = version(&views);
        connect(&mut views, 1, 2);
        settle(&mut views);
        let c_came = version(&views);
        assert_ne!(c_came, b_came, "c came, through b");
        connect(&mut views, 0, 2);
        cut(&mut views, 1, 2);
        settle(&mut views);
        assert_eq!(version(&views), c_came, "links changed, members did not");
        // c's next life listens elsewhere.
        cut(&mut views, 0, 2);
        settle(&mut views);
        views[2] = View::new(name("c"), "c:4371".into(), Incarnation(2));
        connect(&mut views, 1, 2);
        settle(&mut views);
        let c_moved = version(&views);
        assert_ne!(c_moved, c_came, "c moved");
        views[2].leave();
        settle(&mut views);
        let c_left = version(&views);
        assert_ne!(c_left, c_moved, "c left");
        cut(&mut views, 1, 2);
        let t0 = Instant::now();
        views[0].handle_tick(t0);
        views[0].handle_tick(t0 + DEFAULT_FORGET_AFTER);
        assert_eq!(views[0].state(&name("c")), None);
        assert_ne!(version(&views), c_left, "c forgotten");
    }

    /// Ticks `view` past `forget_after` (its default).
    fn forget_gone(view: &mut View) {
        let t0 = Instant::now();
        view.handle_tick(t0);
        view.handle_tick(t0 + DEFAULT_FORGET_AFTER);
    }

    #[test]
    fn a_node_forgotten_is_no_longer_listed_among_those_this_node_lost() {
        let mut views = [view("a"), view("b")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        cut(&mut views, 0, 1);
        assert!(views[0].records[&name("a")].lost.contains(&name("b")));
        forget_gone(&mut views[0]);
        assert_eq!(views[0].state(&name("b")), None);
        assert!(
            views[0].records[&name("a")].lost.is_empty(),
            "a record listing every node ever lost would grow with churn"
        );
    }

    #[test]
    fn a_node_that_left_forgets_others_never_itself() {
        let mut views = [view("a"), view("b")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        views[0].leave();
        settle(&mut views);
        cut(&mut views, 0, 1);
        forget_gone(&mut views[0]);
        assert_eq!(views[0].state(&name("a")), Some(NodeState::Left));
        assert_eq!(views[0].state(&name("b")), None);
        views[0].flush();
    }

    #[test]
    fn a_node_that_left_is_forgotten_only_once_its_link_is_gone() {
        let mut views = [view("a"), view("b")];
        connect(&mut views, 0, 1);
        settle(&mut views);
        views[1].leave();
        settle(&mut views);
        assert_eq!(views[0].state(&name("b")), Some(NodeState::Left));
        forget_gone(&mut views[0]);
        assert_eq!(
            views[0].state(&name("b")),
            Some(NodeState::Left),
            "still connected: kept"
        );
        cut(&mut views, 0, 1);
        forget_gone(&mut views[0]);
        assert_eq!(views[0].state(&name("b")), None);
    }

    #[test]
    fn a_later_version_of_a_node_forgotten_from_a_peer_that_lost_it_too_does_not_bring_it_back() {
        // a and b each reach c, not each other; c is cut from a, then from b (so b holds a
        // later version of c than a); a forgets c, then meets b.
        let mut views = [view("a"), view("b"), view("c")];
        connect(&mut views, 0, 2);
        connect(&mut views, 1, 2);
        settle(&mut views);
        cut(&mut views, 0, 2);
        settle(&mut views);
        cut(&mut views, 1, 2);
        settle(&mut views);
        forget_gone(&mut views[0]);
        assert_eq!(views[0].state(&name("c")), None);
        connect(&mut views, 0, 1);
        settle(&mut views);
        assert_eq!(views[0].state(&name("c")), None, "b lost c too");
        assert_eq!(views[0].to_dial().count(), 0);
        // c comes back to b: b now speaks for it, and a takes c again.
        connect(&mut views, 1, 2);
        settle(&mut views);
        assert_eq!(views[0].state(&name("c")), Some(NodeState::Unreachable));
    }

    #[test]
    fn a_node_forgotten_again_is_the_newest_forgotten() {
        let mut views = [view("a"), view("x"), view("y")];
        connect(&mut views, 0, 1);
        connect(&mut views, 0, 2);
        settle(&mut views);
        cut(&mut views, 0, 1);
        forget_gone(&mut views[0]);
        // x comes back, and goes again after y.
        connect(&mut views, 0, 1);
        settle(&mut views);
        assert!(
            views[0].forgotten.is_empty(),
            "held again: no longer remembered as forgotten"
        );
        cut(&mut views, 0, 2);
        forget_gone(&mut views[0]);
        cut(&mut views, 0, 1);
        forget_gone(&mut views[0]);
        assert_eq!(
            Vec::from(views[0].forgotten_order.clone()),
            vec![name("y"), name("x")],
            "oldest forgotten first"
        );
    }

    /// Delivers what the view `from` has sent so far, without flushing anyone.
    fn deliver_from(views: &mut [View], from: usize) {
        let sender = views[from].me.clone();
        while let Some(action) = views[from].poll_action() {
            if let ViewAction::Send { to, message } = action
                && let Some(to) = views.iter_mut().find(|v| v.me == to)
                && to.records[&to.me].links.contains(&sender)
            {
                to.handle_message(&sender, message);
            }
        }
    }

    #[test]
    fn a_record_asked_of_a_peer_whose_link_goes_is_asked_of_another_that_offered_it() {
        let mut views = vec![view("a"), view("b"), view("c"), view("x")];
        for (i, j) in [(0, 1), (0, 2), (3, 1), (3, 2)] {
            connect(&mut views, i, j);
        }
        settle(&mut views);
        views[3].leave();
        deliver_from(&mut views, 3);
        for relay in [1, 2] {
            views[relay].flush();
            deliver_from(&mut views, relay);
        }
        // a asked b for x's goodbye, and the link to b goes before b answers.
        cut(&mut views, 0, 1);
        assert_eq!(views[0].state(&name("x")), Some(NodeState::Unreachable));
        settle(&mut views);
        assert_eq!(views[0].state(&name("x")), Some(NodeState::Left));
    }

    fn wants(view: &mut View) -> Vec<(NodeName, Vec<NodeName>)> {
        sent(view)
            .into_iter()
            .filter_map(|(to, message)| match message {
                ViewMessage::Want(names) => Some((to, names)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_record_its_asked_peer_does_not_send_is_asked_of_the_peer_that_offered_the_freshest() {
        let mut a = view("a");
        for peer in ["p", "q", "r"] {
            a.handle_up(&identity(&view(peer)));
        }
        wants(&mut a);
        let x = |version| vec![(name("x"), Incarnation(1), version)];
        a.handle_message(&name("p"), ViewMessage::Digest(x(7)));
        a.handle_message(&name("q"), ViewMessage::Digest(x(5)));
        a.handle_message(&name("r"), ViewMessage::Digest(x(6)));
        assert_eq!(wants(&mut a), [(name("p"), vec![name("x")])], "asked once");
        // p answers without it (it no longer holds that version): r, with the freshest offer.
        a.handle_message(&name("p"), ViewMessage::Records(Vec::new()));
        assert_eq!(wants(&mut a), [(name("r"), vec![name("x")])]);
        // r's link goes before it answers: q.
        a.handle_down(&name("r"));
        assert_eq!(wants(&mut a), [(name("q"), vec![name("x")])]);
        // A digest from a node this one is not connected to asks nothing.
        a.handle_message(&name("r"), ViewMessage::Digest(x(9)));
        assert_eq!(wants(&mut a), []);
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

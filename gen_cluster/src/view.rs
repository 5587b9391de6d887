//! The cluster view service every node runs, and [`ClusterView`], what it publishes
//! (`node.view()`). One task owns the sans-IO machine of `gen_cluster_proto::view`: it feeds it the
//! node's link ups and downs (from the event bus) and the view messages of the peers' services
//! (each with the node of the authenticated link it came on), sends what the machine asks to the
//! peers' services, and after each burst of changes flushes the machine (its changes go out to
//! the peers once per burst) and publishes the view.
//!
//! With `connect_all` (the default) it also keeps this node connected to every member the view
//! knows — a full mesh, as Erlang's `connect_all` — through the reconcile machine of
//! `gen_cluster_proto::reconcile` fed with the members' addresses: a member is dialed when it is
//! learned of and again at once when its link drops, failed dials back off with jitter, and each
//! dial has the node's `connect_timeout`. A member at an address a discovery source no longer
//! finds ([`Undiscovered`], from `Node::forget_address`) is not dialed again when its link drops,
//! until it is connected again: a container gone from DNS is left alone, as discovery leaves
//! it, and its address, which another may take, is not dialed forever. When the node shuts down,
//! the service says it leaves before the links close, so that its peers mark it `left`, not
//! `down`. A hidden node's service tells no one anything and takes nothing from peers: its view
//! holds only itself.
//!
//! The service also runs the node's share of failure detection: after each flush it turns the
//! failure detector on for the links to the peers the view says this node watches (a few, on
//! the monitor ring) and off for the others, and closes the link to a member the view finds
//! lost by most of its watchers ([`DownReason::Unreachable`]). The reconcile machine keeps
//! redialing it, with backoff, as any lost member; a link to it that comes up while it is
//! unreachable is watched (so a later hang of it is still seen here).
//!
//! A node down for this node, or one that left, is forgotten after the node's
//! `forget_gone_after` (see the machine's docs), checked every tenth of that time: the reconcile
//! machine then stops dialing it.
//!
//! Costs: one record per node of the cluster; a change of one node's links is passed once over
//! each link (see the machine's docs); each published view is O(n) to build.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use gen_cluster_proto::handshake::{Identity, RECORD_CHANGES_VERSION};
use gen_cluster_proto::reconcile::{ReconcileAction, ReconcileConfig, Reconciler};
use gen_cluster_proto::view::{View, ViewAction, ViewMessage};
use gen_cluster_proto::{Incarnation, NodeId, NodeName};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use gen_cluster_proto::view::NodeState;

use crate::clock::{self, now};
use crate::dist::link::PeerLink;
use crate::dist::peers::PeerTable;
use crate::dist::queue::Outgoing;
use crate::dist::{self, Dist};
use crate::error::{ConnectError, StartError, with_causes};
use crate::events::{DownReason, EventBus, NodeEvent};
use crate::process::Target;
use crate::process::signal::{Inbox, Signal};
use crate::process::table::ProcessTable;
use crate::router::Router;
use crate::tasks::Tasks;

/// At most one flush per interval: a change after a quiet time goes out to the peers (and the
/// view is published) at once, and the changes of a burst (a mesh forming) go out together.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// The local name of every node's view service.
pub(crate) const MAILBOX: &str = "gen_cluster.view";

/// One node of the cluster, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownNode {
    /// Its name.
    pub name: NodeName,
    /// Where it can be dialed.
    pub addr: String,
    /// Its life, as last heard of.
    pub incarnation: Incarnation,
    /// Its state.
    pub state: NodeState,
}

/// The cluster as this node sees it at one moment: every node it knows of, and the group of
/// nodes the services act with (this node and the nodes it is connected to that are also
/// connected to each other, settled the same way on every node; see
/// `gen_cluster_proto::view`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// Every node known, this one included, in name order.
    pub nodes: Vec<KnownNode>,
    /// This node's group, in name order.
    pub group: BTreeSet<NodeName>,
}

impl ClusterView {
    /// The state of `name`, if this node knows of it.
    pub fn state(&self, name: &NodeName) -> Option<NodeState> {
        self.nodes
            .iter()
            .find(|node| &node.name == name)
            .map(|node| node.state)
    }
}

/// The peers a service acts with: those connected to this node *and* in its group of the view.
/// The election and the global names each keep one, feed it the node's link ups and downs and
/// the view's group changes, and tell their machine what it returns, so that they act on fully
/// connected groups only (see `gen_cluster_proto::view`). A service that needs no fully
/// connected group (the `majority` election: its quorums overlap whatever the links) keeps one
/// without a group, and counts every connected member.
#[derive(Debug)]
pub(crate) struct GroupPeers {
    connected: BTreeMap<NodeName, Incarnation>,
    /// This node's group, or `None` when the group is not heeded.
    group: Option<BTreeSet<NodeName>>,
    /// What the service's machine was told: always `connected ∩ group`, with the lives.
    counted: BTreeMap<NodeName, Incarnation>,
    /// The ids of `counted`, by which a service takes or drops a peer's messages.
    counted_ids: FxHashSet<NodeId>,
}

/// A change of the peers a service counts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Counting {
    /// The peer counts from now on.
    Joins(NodeName),
    /// The peer, in this life, no longer counts (its link is up but it left this node's group).
    Leaves(NodeName, Incarnation),
}

impl GroupPeers {
    /// Counts the peers connected now that are in `group` (all of them with `None`); the
    /// service's machine is to be told of them as a whole.
    pub(crate) fn new(
        connected: impl IntoIterator<Item = (NodeName, Incarnation)>,
        group: Option<BTreeSet<NodeName>>,
    ) -> Self {
        let mut peers = Self {
            connected: connected.into_iter().collect(),
            group,
            counted: BTreeMap::new(),
            counted_ids: FxHashSet::default(),
        };
        let _ = peers.recount();
        peers
    }

    /// The peers counted, with their lives.
    pub(crate) fn counted(&self) -> &BTreeMap<NodeName, Incarnation> {
        &self.counted
    }

    /// Whether the peer `id` counts.
    pub(crate) fn counts(&self, id: NodeId) -> bool {
        self.counted_ids.contains(&id)
    }

    /// The ids of the peers counted.
    pub(crate) fn counted_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.counted_ids.iter().copied()
    }

    /// A link came up.
    pub(crate) fn link_up(&mut self, peer: NodeName, incarnation: Incarnation) -> Vec<Counting> {
        self.connected.insert(peer, incarnation);
        self.recount()
    }

    /// A link went down: its peer no longer counts. The service tells its machine of the loss
    /// itself, counted or not (a machine forgets what it held of a lost peer).
    pub(crate) fn link_down(&mut self, peer: &NodeName) {
        self.connected.remove(peer);
        self.counted.remove(peer);
        self.counted_ids.remove(&peer.id());
    }

    /// The view published a group (nothing changes when the group is not heeded).
    pub(crate) fn group_changed(&mut self, group: &BTreeSet<NodeName>) -> Vec<Counting> {
        match &mut self.group {
            Some(heeded) if heeded != group => heeded.clone_from(group),
            _ => return Vec::new(),
        }
        self.recount()
    }

    /// After missed events: the links and the group as they are now.
    pub(crate) fn resync(
        &mut self,
        connected: impl IntoIterator<Item = (NodeName, Incarnation)>,
        group: BTreeSet<NodeName>,
    ) -> Vec<Counting> {
        self.connected = connected.into_iter().collect();
        if let Some(heeded) = &mut self.group {
            *heeded = group;
        }
        self.recount()
    }

    /// Counts `connected ∩ group` again; says what changed, the peers that leave first.
    fn recount(&mut self) -> Vec<Counting> {
        let counted: BTreeMap<NodeName, Incarnation> = self
            .connected
            .iter()
            .filter(|(peer, _)| self.group.as_ref().is_none_or(|g| g.contains(*peer)))
            .map(|(peer, incarnation)| (peer.clone(), *incarnation))
            .collect();
        let changed = |from: &BTreeMap<NodeName, Incarnation>,
                       to: &BTreeMap<NodeName, Incarnation>| {
            from.iter()
                .filter(|(peer, incarnation)| to.get(*peer) != Some(*incarnation))
                .map(|(peer, incarnation)| (peer.clone(), *incarnation))
                .collect::<Vec<_>>()
        };
        let mut changes: Vec<Counting> = changed(&self.counted, &counted)
            .into_iter()
            .map(|(peer, incarnation)| Counting::Leaves(peer, incarnation))
            .collect();
        changes.extend(
            changed(&counted, &self.counted)
                .into_iter()
                .map(|(peer, _)| Counting::Joins(peer)),
        );
        self.counted_ids = counted.keys().map(NodeName::id).collect();
        self.counted = counted;
        changes
    }
}

/// The longest a lost member waits between dials: one that restarts without seeds of its own
/// (the first node of a cluster) is met again within about this, not after a discovery
/// backoff's 10 s, if it comes back before it is forgotten (`forget_gone_after`). A member down
/// for good costs each node one failed dial per this until then.
const MEMBER_REDIAL_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the view looks for nodes gone long enough to be forgotten: a tenth of that time,
/// between 1 s and a minute.
fn forget_check_every(forget_after: std::time::Duration) -> std::time::Duration {
    (forget_after / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    )
}

/// Addresses a discovery source no longer finds: a member known at one is not redialed. At most
/// one entry per member (an address no member has is dropped at the next change of members).
#[derive(Default)]
pub(crate) struct Undiscovered {
    addrs: Mutex<BTreeSet<String>>,
    changed: Notify,
}

impl Undiscovered {
    pub(crate) fn insert(&self, addr: &str) {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        if addrs.insert(addr.to_string()) {
            self.changed.notify_one();
        }
    }

    fn remove(&self, addr: &str) {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        addrs.remove(addr);
    }

    /// Keeps only the addresses of `members`; returns those left.
    fn retain(&self, members: &BTreeSet<&str>) -> BTreeSet<String> {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        addrs.retain(|addr| members.contains(addr.as_str()));
        addrs.clone()
    }
}

/// The parts the service works with.
pub(crate) struct Parts {
    pub(crate) router: Router,
    pub(crate) processes: Arc<ProcessTable>,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) events: EventBus,
    pub(crate) tasks: Tasks,
    pub(crate) dist: Arc<Dist>,
}

/// Starts the service of a node; returns what it publishes.
pub(crate) fn start(parts: Parts) -> Result<Started, StartError> {
    let (_, inbox) = parts.processes.register(Some(MAILBOX.into()), None)?;
    let local = &parts.dist.local;
    let machine = View::new(local.name.clone(), local.listen.clone(), local.incarnation)
        .with_monitors(parts.dist.config.liveness.monitors)
        .with_forget_after(parts.dist.config.forget_gone_after);
    let hidden = local.hidden;
    let dialing = (parts.dist.config.connect_all && !hidden).then(|| {
        let config = ReconcileConfig {
            refresh_interval: None,
            backoff_max: MEMBER_REDIAL_MAX,
            // Members proved the cluster secret and are as many as the cluster: every one is
            // dialed at once, however many a netsplit holds in their connect timeouts.
            max_dials: usize::MAX,
            ..ReconcileConfig::default()
        };
        Reconciler::new(config, clock::seed(), now())
    });
    let (publish, published) = watch::channel(Arc::new(ClusterView::default()));
    let left = CancellationToken::new();
    let undiscovered = Arc::new(Undiscovered::default());
    let events = parts.events.subscribe();
    let tasks = parts.tasks.clone();
    let service = Service {
        machine,
        hidden,
        dialing,
        dialed: BTreeMap::new(),
        undiscovered: Arc::clone(&undiscovered),
        members: BTreeMap::new(),
        watched: BTreeMap::new(),
        router: parts.router,
        peers: parts.peers,
        dist: parts.dist,
        publish,
        mailbox_name: MAILBOX.into(),
        left: left.clone(),
        flush_due: None,
        flushed_at: tokio::time::Instant::now(),
        members_told: None,
    };
    tasks.spawn(
        tracing::info_span!("view"),
        service.run(inbox, events, parts.tasks),
    );
    Ok(Started {
        published,
        left,
        undiscovered,
    })
}

/// What a started service hands the node.
pub(crate) struct Started {
    /// The view, republished after every change.
    pub(crate) published: watch::Receiver<Arc<ClusterView>>,
    /// Cancelled once the service has told its peers that the node leaves: shutdown waits for
    /// it before it closes the links.
    pub(crate) left: CancellationToken,
    /// Where discovery says the addresses it no longer finds.
    pub(crate) undiscovered: Arc<Undiscovered>,
}

struct Service {
    machine: View,
    /// A hidden node is no member: it tells no one anything, and its view holds only itself.
    hidden: bool,
    /// Keeps the node connected to every member, with `connect_all`.
    dialing: Option<Reconciler>,
    /// The address each connected member was reached at, for the reconcile machine.
    dialed: BTreeMap<NodeName, String>,
    /// Members' addresses not to redial.
    undiscovered: Arc<Undiscovered>,
    /// Every member connected once and still in the view, by id: whose view messages are taken
    /// (never a hidden node's, which is never reported up).
    members: BTreeMap<NodeId, NodeName>,
    /// The links whose failure detector this node turned on.
    watched: BTreeMap<NodeName, Arc<PeerLink>>,
    router: Router,
    peers: Arc<PeerTable>,
    dist: Arc<Dist>,
    publish: watch::Sender<Arc<ClusterView>>,
    mailbox_name: Arc<str>,
    left: CancellationToken,
    /// When the view, changed, is to be flushed and published.
    flush_due: Option<tokio::time::Instant>,
    /// When the view was last flushed.
    flushed_at: tokio::time::Instant,
    /// The view's members version the reconcile machine was last told the members of.
    members_told: Option<u64>,
}

/// What a dial came to.
struct Dialed(String, Result<NodeName, ConnectError>);

impl Service {
    async fn run(
        mut self,
        mut inbox: Inbox,
        mut events: broadcast::Receiver<NodeEvent>,
        tasks: Tasks,
    ) {
        let (outcomes, mut results) = mpsc::unbounded_channel();
        let undiscovered = Arc::clone(&self.undiscovered);
        self.carry_out();
        self.flush();
        let mut forget_check =
            tokio::time::interval(forget_check_every(self.dist.config.forget_gone_after));
        forget_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dial(&outcomes, &tasks);
            let wake = self.dialing.as_ref().and_then(Reconciler::poll_timeout);
            let flush = self.flush_due;
            tokio::select! {
                _ = tasks.stopping() => break,
                () = undiscovered.changed.notified() => self.members_changed(),
                signal = inbox.recv() => match signal {
                    Some(Signal::Info { payload, from }) => {
                        // By the members' names, not the links: a goodbye may close the link
                        // between a message's arrival and its turn here.
                        let Some(peer) = self.member(from) else { continue };
                        match payload.decode::<ViewMessage>() {
                            Ok(message) => self.machine.handle_message(&peer, message),
                            Err(error) => tracing::warn!(%peer, %error, "dropped an undecodable view message"),
                        }
                    }
                    Some(Signal::Stop(_)) | None => break,
                    Some(Signal::Call { reply, .. }) => {
                        reply.refuse(gen_cluster_proto::wire::CallRefusal::NoReply)
                    }
                    Some(_) => {}
                },
                event = events.recv() => match event {
                    Ok(NodeEvent::NodeUp { .. } | NodeEvent::NodeDown { .. }) if self.hidden => {}
                    Ok(NodeEvent::NodeUp { peer, incarnation, addr }) => {
                        self.link_up(Identity { name: peer, incarnation, listen: addr, hidden: false });
                    }
                    Ok(NodeEvent::NodeDown { peer, .. }) => self.link_down(&peer),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::error!(missed, "the view service missed node events; it goes by the connection table");
                        if !self.hidden {
                            self.resync();
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(Dialed(addr, result)) = results.recv() => {
                    if let Some(dialing) = &mut self.dialing {
                        match result {
                            Ok(_) => dialing.handle_connected(&addr),
                            Err(error) if error.reached_self() => dialing.handle_self(now(), &addr),
                            Err(error) => dialing.handle_connect_failed(now(), &addr, with_causes(&error)),
                        }
                    }
                },
                _ = sleep_until(wake) => {}
                _ = forget_check.tick(), if !self.hidden => self.machine.handle_tick(now()),
                _ = async { tokio::time::sleep_until(flush.unwrap_or_else(tokio::time::Instant::now)).await }, if flush.is_some() => {
                    self.flush();
                }
            }
            self.carry_out();
        }
        // The node shuts down: its peers hear that it leaves before its links close.
        if !self.hidden {
            self.machine.leave();
            self.carry_out();
        }
        self.left.cancel();
    }

    /// The member `id`, whose message is taken: one connected now (its link reported up here
    /// first if its message came before its up event), or one whose link has just closed (a
    /// goodbye may be its last word).
    fn member(&mut self, id: NodeId) -> Option<NodeName> {
        if self.hidden {
            return None;
        }
        if let Some(link) = self.peers.link_to(id).filter(|link| !link.hidden) {
            if !self.dialed.contains_key(&link.name) {
                self.link_up(link.identity());
            }
            return Some(link.name.clone());
        }
        self.members.get(&id).cloned()
    }

    /// Carries out what the machine asks; if the view changed, a flush is due.
    fn carry_out(&mut self) {
        let mut changed = false;
        while let Some(action) = self.machine.poll_action() {
            match action {
                ViewAction::Send { to, message } => {
                    let target = Target::Named {
                        node: to.id(),
                        name: Arc::clone(&self.mailbox_name),
                    };
                    let _ = self.router.post_unbounded(&target, message);
                }
                ViewAction::Changed => changed = true,
                ViewAction::Disconnect(peer) => {
                    if let Some(link) = self.peers.link_to(peer.id()).filter(|l| l.name == peer) {
                        link.note_down_reason(DownReason::Unreachable);
                        link.cancel();
                    }
                }
            }
        }
        if changed {
            // New members are dialed at once; the rest waits for the burst to end.
            let members = Some(self.machine.members_version());
            if self.members_told != members {
                self.members_told = members;
                self.members_changed();
                let machine = &self.machine;
                self.members.retain(|_, name| machine.state(name).is_some());
            }
            if self.flush_due.is_none() {
                let next = self.flushed_at + FLUSH_INTERVAL;
                self.flush_due = Some(next.max(tokio::time::Instant::now()));
            }
        }
    }

    /// Sends the burst's changes to the peers and publishes the view (the reconcile machine
    /// heard of each change already, as it was carried out).
    fn flush(&mut self) {
        self.machine.flush();
        self.carry_out();
        self.flush_due = None;
        self.flushed_at = tokio::time::Instant::now();
        let nodes: Vec<KnownNode> = self
            .machine
            .nodes()
            .map(|(record, state)| KnownNode {
                name: record.name.clone(),
                addr: record.addr.clone(),
                incarnation: record.incarnation,
                state,
            })
            .collect();
        let group = self.machine.group();
        self.publish
            .send_replace(Arc::new(ClusterView { nodes, group }));
        self.watch();
    }

    /// Turns the failure detector on for the links to the peers the view says this node
    /// watches, and off for the others it was on for.
    fn watch(&mut self) {
        let wanted = self.machine.watching();
        self.watched.retain(|peer, link| {
            let keep = wanted.contains(peer);
            if !keep {
                link.queue.switch(Outgoing::Watch(false));
            }
            keep
        });
        for peer in wanted {
            let Some(link) = self.peers.link_to(peer.id()).filter(|l| l.name == peer) else {
                continue;
            };
            let switched = self
                .watched
                .get(&peer)
                .is_some_and(|watched| Arc::ptr_eq(watched, &link));
            if !switched && link.queue.switch(Outgoing::Watch(true)) {
                self.watched.insert(peer, link);
            }
        }
    }

    /// Tells the reconcile machine which members to keep connected to: every node that has not
    /// left, but at an address discovery no longer finds.
    fn members_changed(&mut self) {
        let addrs: BTreeSet<&str> = self
            .machine
            .members()
            .map(|record| record.addr.as_str())
            .collect();
        let undiscovered = self.undiscovered.retain(&addrs);
        if let Some(dialing) = &mut self.dialing {
            let members: Vec<String> = addrs
                .into_iter()
                .filter(|addr| !undiscovered.contains(*addr))
                .map(str::to_string)
                .collect();
            dialing.handle_discovered(now(), Ok(members));
        }
    }

    /// Starts the dials the reconcile machine asks for.
    fn dial(&mut self, outcomes: &mpsc::UnboundedSender<Dialed>, tasks: &Tasks) {
        let Some(dialing) = &mut self.dialing else {
            return;
        };
        while let Some(action) = dialing.poll(now()) {
            match action {
                ReconcileAction::Connect(addr) => {
                    let (dist, outcomes) = (Arc::clone(&self.dist), outcomes.clone());
                    let stop = tasks.child_token();
                    let span = tracing::info_span!("dial member", %addr);
                    tasks.spawn(span, async move {
                        let result = tokio::select! {
                            result = dist::handshake::dial(&dist, &addr) => result,
                            _ = stop.cancelled() => Err(ConnectError::ShuttingDown),
                        };
                        let _ = outcomes.send(Dialed(addr, result));
                    });
                }
                ReconcileAction::Event(event) => {
                    crate::events::report_connect_failed(&event, false, None)
                }
                // The members are pushed to the machine as they change; nothing to ask.
                ReconcileAction::Discover => {}
            }
        }
    }

    /// After missed events: takes the members' links from the connection table.
    fn resync(&mut self) {
        let links: Vec<_> = self
            .peers
            .links()
            .into_iter()
            .filter(|link| !link.hidden)
            .collect();
        let connected: BTreeSet<&NodeName> = links.iter().map(|link| &link.name).collect();
        let lost: Vec<NodeName> = self
            .dialed
            .keys()
            .filter(|name| !connected.contains(name))
            .cloned()
            .collect();
        for peer in lost {
            self.link_down(&peer);
        }
        for link in &links {
            if !self.dialed.contains_key(&link.name) {
                self.link_up(link.identity());
            }
        }
    }

    /// A link to the member `peer` came up: dialed again when it drops, wherever it is.
    fn link_up(&mut self, peer: Identity) {
        self.undiscovered.remove(&peer.listen);
        self.members.insert(peer.name.id(), peer.name.clone());
        self.machine.handle_up(&peer);
        let changes_spoken = self
            .peers
            .link_to(peer.name.id())
            .is_some_and(|link| link.version >= RECORD_CHANGES_VERSION);
        if !changes_spoken {
            self.machine.handle_whole_records_only(&peer.name);
        }
        // The member first (carrying out the change tells the reconcile machine of it), then
        // its link: the reconcile machine marks only members.
        self.carry_out();
        if let Some(dialing) = &mut self.dialing {
            dialing.handle_connected(&peer.listen);
        }
        self.dialed.insert(peer.name, peer.listen);
    }

    /// The link to the member `peer` is gone: it is dialed again at once.
    fn link_down(&mut self, peer: &NodeName) {
        self.watched.remove(peer);
        self.machine.handle_down(peer);
        if let (Some(dialing), Some(addr)) = (&mut self.dialing, self.dialed.remove(peer)) {
            dialing.handle_disconnected(now(), &addr);
        }
    }
}

async fn sleep_until(wake: Option<std::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    fn name(text: &str) -> NodeName {
        NodeName::new(text).unwrap()
    }

    fn lives(peers: &[(&str, u64)]) -> Vec<(NodeName, Incarnation)> {
        peers
            .iter()
            .map(|&(peer, life)| (name(peer), Incarnation(life)))
            .collect()
    }

    fn group(peers: &[&str]) -> BTreeSet<NodeName> {
        peers.iter().map(|peer| name(peer)).collect()
    }

    fn counted(peers: &GroupPeers) -> Vec<(String, u64)> {
        let ids: BTreeSet<NodeId> = peers.counted_ids().collect();
        let names: BTreeSet<NodeId> = peers.counted().keys().map(NodeName::id).collect();
        assert_eq!(ids, names, "the ids follow the peers counted");
        peers
            .counted()
            .iter()
            .map(|(peer, life)| (peer.as_str().to_string(), life.0))
            .collect()
    }

    #[test]
    fn without_a_group_every_connected_peer_counts_and_a_new_life_leaves_then_joins() {
        let mut peers = GroupPeers::new(lives(&[("b", 1)]), None);
        assert_eq!(counted(&peers), [("b".into(), 1)]);
        assert_eq!(
            peers.link_up(name("c"), Incarnation(1)),
            [Counting::Joins(name("c"))]
        );
        // The group is not heeded: a view that leaves `c` out changes nothing.
        assert!(peers.group_changed(&group(&["a", "b"])).is_empty());
        assert_eq!(
            peers.link_up(name("b"), Incarnation(2)),
            [
                Counting::Leaves(name("b"), Incarnation(1)),
                Counting::Joins(name("b"))
            ]
        );
        peers.link_down(&name("c"));
        assert_eq!(counted(&peers), [("b".into(), 2)]);
    }

    #[test]
    fn with_a_group_only_the_connected_peers_in_it_count() {
        let mut peers = GroupPeers::new(lives(&[("b", 1), ("c", 1)]), Some(group(&["a", "b"])));
        assert_eq!(counted(&peers), [("b".into(), 1)]);
        assert_eq!(
            peers.group_changed(&group(&["a", "c"])),
            [
                Counting::Leaves(name("b"), Incarnation(1)),
                Counting::Joins(name("c"))
            ]
        );
        // In the group but not connected: counted once its link is up.
        assert!(peers.group_changed(&group(&["a", "c", "d"])).is_empty());
        assert_eq!(
            peers.link_up(name("d"), Incarnation(1)),
            [Counting::Joins(name("d"))]
        );
        assert!(peers.counts(name("d").id()));
        assert!(!peers.counts(name("b").id()));
    }

    #[test]
    fn after_missed_events_a_resync_tells_every_change_the_events_would_have() {
        // Missed: `b` restarted, `c` went down, `d` came up, and the group grew to take in `e`.
        let mut peers = GroupPeers::new(
            lives(&[("b", 1), ("c", 1), ("e", 1)]),
            Some(group(&["a", "b", "c", "d"])),
        );
        let now = (
            lives(&[("b", 2), ("d", 1), ("e", 1)]),
            group(&["a", "b", "c", "d", "e"]),
        );
        assert_eq!(
            peers.resync(now.0.clone(), now.1.clone()),
            [
                Counting::Leaves(name("b"), Incarnation(1)),
                Counting::Leaves(name("c"), Incarnation(1)),
                Counting::Joins(name("b")),
                Counting::Joins(name("d")),
                Counting::Joins(name("e")),
            ]
        );
        assert_eq!(
            counted(&peers),
            [("b".into(), 2), ("d".into(), 1), ("e".into(), 1)]
        );
        // Nothing missed: nothing to tell.
        assert!(peers.resync(now.0, now.1).is_empty());
    }
}

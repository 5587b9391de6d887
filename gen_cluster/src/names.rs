//! Global names: the service every node runs, and [`GlobalNames`], the handle to it
//! (`node.globals()`). One task owns the sans-IO machine of `gen_cluster_proto::registry` (which
//! holds the names and settles clashes) and the registrations waiting for their peers' answers;
//! it feeds the machine what the node sees and carries out what the machine asks: messages to the
//! peers' services, monitors of local holders, the [`Info::NameLost`](crate::Info::NameLost)
//! notice to a process that lost its name.
//!
//! It acts on the node's group in the cluster view, not on its raw connections: a peer counts
//! while it is connected *and* in this node's group ([`GroupPeers`]). A peer that comes to count
//! exchanges its names with this node; a peer that stops counting (its link lost, or the view
//! split the two into different groups when links were cut unevenly) has its names released
//! here, and what it says is not taken until it counts again. So each fully connected group holds
//! one holder per name, and when groups merge the clash rule settles each name.
//!
//! Its inputs: registry messages from peers, each with the node of the authenticated link it came
//! on (its sender is that node, never a field of the message); the DOWN of a local holder; node
//! ups and downs and the view's group; and the handle's register and unregister commands. After
//! every input it publishes the names it knows, which [`GlobalNames::whereis`] reads without a
//! round trip.
//!
//! Costs: `whereis` is one read of the published map; each input republishes it (O(names)); a
//! registration is one announcement to every counted peer and waits for their answers; a peer
//! that comes to count costs one message each way holding each side's own names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gen_cluster_proto::registry::{self, Registration, Registry, RegistryAction, RegistryMessage};
use gen_cluster_proto::{Incarnation, NodeId, NodeName, Pid};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::now;
use crate::dist::peers::PeerTable;
use crate::error::StartError;
use crate::events::{EventBus, NodeEvent};
use crate::process::signal::{Inbox, Signal};
use crate::process::table::ProcessTable;
use crate::process::watch::Watchers;
use crate::process::{MonitorRef, Target};
use crate::router::Router;
use crate::tasks::Tasks;
use crate::view::{ClusterView, Counting, GroupPeers};

/// The local name of every node's global-name service.
pub(crate) const MAILBOX: &str = "gen_cluster.registry";

/// A global name could not be registered.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another live process holds the name (it registered earlier; see the clash rule).
    #[error("the name is held by {0}")]
    Taken(Pid),
    /// Only processes of this node can be registered by this node (the caller's input).
    #[error("{0} is not a process of this node")]
    NotLocal(Pid),
    /// Names are 1 to 255 bytes (the caller's input).
    #[error("a global name must be 1 to 255 bytes")]
    BadName,
    /// This node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<registry::RegisterError> for RegisterError {
    fn from(error: registry::RegisterError) -> Self {
        match error {
            registry::RegisterError::Taken(holder) => RegisterError::Taken(holder),
            registry::RegisterError::NotLocal(pid) => RegisterError::NotLocal(pid),
            _ => RegisterError::BadName,
        }
    }
}

/// The global names as this node knows them, and the way to register and release them. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct GlobalNames {
    commands: mpsc::UnboundedSender<Command>,
    known: watch::Receiver<Arc<BTreeMap<String, Pid>>>,
}

impl GlobalNames {
    /// Registers `name` for the local process `pid` across the cluster. Every node of this
    /// node's group (see [`ClusterView`](crate::ClusterView)) learns it before this returns
    /// (each answers within the failure detector's deadline or is treated as gone). If another
    /// process holds the name, or wins it while this registration is being announced (the
    /// clash rule: the earlier registration wins), the result is [`RegisterError::Taken`] with
    /// the holder.
    ///
    /// The name is released when `pid` ends, when it is unregistered, or — on the other nodes —
    /// when this node is lost or leaves their group. A holder that loses its name after a
    /// partition heals (or groups merge) gets [`Info::NameLost`](crate::Info::NameLost).
    pub async fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let (done, answer) = oneshot::channel();
        let command = Command::Register {
            name: name.to_string(),
            pid,
            done,
        };
        if self.commands.send(command).is_err() {
            return Err(RegisterError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(RegisterError::ShuttingDown))
    }

    /// Releases the global `name` if a process of this node holds it; returns whether one did.
    /// The other nodes learn it without a round trip being awaited.
    pub async fn unregister(&self, name: &str) -> bool {
        let (done, answer) = oneshot::channel();
        let command = Command::Unregister {
            name: name.to_string(),
            done,
        };
        self.commands.send(command).is_ok() && answer.await.unwrap_or(false)
    }

    /// The holder of the global `name`, as this node knows it: a local read, no round trip.
    /// Never a process whose end (or whose node's loss) this node has learned of.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.known.borrow().get(name).copied()
    }

    /// How many global names this node knows.
    pub fn len(&self) -> usize {
        self.known.borrow().len()
    }

    /// Whether this node knows no global name.
    pub fn is_empty(&self) -> bool {
        self.known.borrow().is_empty()
    }

    /// Every global name this node knows, with its holder, in name order.
    pub fn list(&self) -> Vec<(String, Pid)> {
        self.known
            .borrow()
            .iter()
            .map(|(name, pid)| (name.clone(), *pid))
            .collect()
    }

    /// Waits until `condition` holds, checking it now and after every change of the names this
    /// node knows. Bound the wait with a timeout.
    pub async fn wait_until(&self, mut condition: impl FnMut(&GlobalNames) -> bool) {
        let mut changes = self.known.clone();
        while !condition(self) {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// What the handle asks of the service.
#[derive(Debug)]
enum Command {
    Register {
        name: String,
        pid: Pid,
        done: oneshot::Sender<Result<(), RegisterError>>,
    },
    Unregister {
        name: String,
        done: oneshot::Sender<bool>,
    },
}

/// The parts the service works with.
pub(crate) struct Parts {
    pub(crate) node: NodeName,
    pub(crate) incarnation: Incarnation,
    pub(crate) router: Router,
    pub(crate) processes: Arc<ProcessTable>,
    pub(crate) watchers: Arc<Watchers>,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) events: EventBus,
    /// The cluster view, for the node's group.
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) tasks: Tasks,
    /// The longest a registration waits for the peers' answers.
    pub(crate) answer_within: Duration,
}

/// Starts the service of a node and returns its handle.
pub(crate) fn start(parts: Parts) -> Result<GlobalNames, StartError> {
    let (mailbox, inbox) = parts.processes.register(Some(MAILBOX.into()), None)?;
    let (commands, requests) = mpsc::unbounded_channel();
    let (publish, known) = watch::channel(Arc::new(BTreeMap::new()));
    let events = parts.events.subscribe();
    let tasks = parts.tasks.clone();
    let mut view = parts.view;
    let group = view.borrow_and_update().group.clone();
    let service = Service {
        id: parts.node.id(),
        machine: Registry::new(parts.node, parts.incarnation),
        mailbox,
        mailbox_name: MAILBOX.into(),
        router: parts.router,
        processes: parts.processes,
        watchers: parts.watchers,
        members: GroupPeers::new(Vec::new(), Some(group)),
        peers: parts.peers,
        monitors: FxHashMap::default(),
        pending: FxHashMap::default(),
        next_announcement: 1,
        answer_within: parts.answer_within,
        publish,
    };
    tasks.spawn(
        tracing::info_span!("names"),
        service.run(inbox, requests, events, view, parts.tasks),
    );
    Ok(GlobalNames { commands, known })
}

struct Service {
    id: NodeId,
    machine: Registry,
    /// The service's own pid: monitors of holders report to it.
    mailbox: Pid,
    mailbox_name: Arc<str>,
    router: Router,
    processes: Arc<ProcessTable>,
    watchers: Arc<Watchers>,
    peers: Arc<PeerTable>,
    /// The peers this node acts with: connected and in its group.
    members: GroupPeers,
    /// The monitor on each local holder.
    monitors: FxHashMap<Pid, MonitorRef>,
    /// Registrations announced and waiting for their peers' answers, by announcement.
    pending: FxHashMap<u64, Pending>,
    next_announcement: u64,
    answer_within: Duration,
    publish: watch::Sender<Arc<BTreeMap<String, Pid>>>,
}

/// A registration announced to the peers, waiting for their answers.
struct Pending {
    name: String,
    pid: Pid,
    waiting: FxHashSet<NodeId>,
    /// The registration that beat this one, if a peer reported one.
    winner: Option<Pid>,
    deadline: Instant,
    done: oneshot::Sender<Result<(), RegisterError>>,
}

impl Service {
    async fn run(
        mut self,
        mut inbox: Inbox,
        mut requests: mpsc::UnboundedReceiver<Command>,
        mut events: broadcast::Receiver<NodeEvent>,
        mut view: watch::Receiver<Arc<ClusterView>>,
        tasks: Tasks,
    ) {
        loop {
            let deadline = self.pending.values().map(|p| p.deadline).min();
            tokio::select! {
                _ = tasks.stopping() => break,
                signal = inbox.recv() => match signal {
                    Some(signal) => self.handle_signal(signal),
                    None => break,
                },
                Some(command) = requests.recv() => self.handle_command(command),
                changed = view.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let group = view.borrow_and_update().group.clone();
                    let changes = self.members.group_changed(&group);
                    self.count(changes);
                }
                event = events.recv() => match event {
                    Ok(NodeEvent::NodeUp { peer, incarnation, .. }) => {
                        let changes = self.members.link_up(peer, incarnation);
                        self.count(changes);
                    }
                    Ok(NodeEvent::NodeDown { peer, incarnation, .. }) => {
                        // Told whether or not the peer counted: its names are released.
                        self.members.link_down(&peer);
                        self.no_longer_counts(peer.id(), incarnation);
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the global-name service missed node events; resynchronizing");
                        let connected = self.peers.list().into_iter().map(|peer| (peer.name, peer.incarnation));
                        let changes = self.members.resync(connected, view.borrow().group.clone());
                        self.count(changes);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = sleep_until(deadline) => self.settle_expired(),
            }
        }
        self.watchers
            .process_ended(self.mailbox, gen_cluster_proto::ExitReason::Shutdown);
    }

    /// Tells the machine of the peers that start or stop counting.
    fn count(&mut self, changes: Vec<Counting>) {
        for change in changes {
            match change {
                Counting::Joins(peer) => {
                    self.drive(|machine| machine.handle_node_up(peer.id()));
                }
                Counting::Leaves(peer, incarnation) => {
                    self.no_longer_counts(peer.id(), incarnation)
                }
            }
        }
    }

    /// The peer `id`, in its life `incarnation`, is lost or no longer counts: its names are
    /// released and no registration waits for its answer.
    fn no_longer_counts(&mut self, id: NodeId, incarnation: Incarnation) {
        self.drive(|machine| machine.handle_node_down(id, incarnation));
        let announcements: Vec<u64> = self.pending.keys().copied().collect();
        for announcement in announcements {
            self.answered_by(announcement, id);
        }
    }

    fn handle_signal(&mut self, signal: Signal) {
        match signal {
            Signal::Info { payload, from } if from != self.id => match payload.decode() {
                Ok(message) if !self.members.counts(from) => self.handle_uncounted(from, message),
                Ok(message) => {
                    if let Some(message) = still_current(&self.peers, from, message) {
                        self.handle_message(from, message);
                    }
                }
                Err(error) => {
                    tracing::warn!(%from, %error, "dropped an undecodable registry message")
                }
            },
            Signal::Down { pid, .. } => {
                self.monitors.remove(&pid);
                self.drive(|machine| machine.handle_process_down(pid));
            }
            Signal::Call { reply, .. } => {
                reply.refuse(gen_cluster_proto::wire::CallRefusal::NoReply)
            }
            _ => {}
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Register { name, pid, done } => self.register(name, pid, done),
            Command::Unregister { name, done } => {
                let released = match self.machine.whereis(&name) {
                    Some(holder) if self.processes.is_local(holder) => {
                        self.drive(|machine| machine.unregister(&name, holder))
                    }
                    _ => false,
                };
                let _ = done.send(released);
            }
        }
    }

    /// Registers `name` for the local `pid`, then announces it to every counted peer; `done`
    /// gets the verdict once they have all answered (or gone, or the wait is over), so that a
    /// clash within the group is settled first.
    fn register(
        &mut self,
        name: String,
        pid: Pid,
        done: oneshot::Sender<Result<(), RegisterError>>,
    ) {
        let registration = match self.drive(|machine| machine.register(&name, pid)) {
            Ok(registration) => registration,
            Err(error) => {
                let _ = done.send(Err(error.into()));
                return;
            }
        };
        let peers: FxHashSet<NodeId> = self.members.counted_ids().collect();
        let announcement = self.next_announcement;
        self.next_announcement += 1;
        let message = RegistryMessage::Announce {
            registrations: vec![registration],
            ack: Some(announcement),
        };
        let unreachable: Vec<NodeId> = peers
            .iter()
            .copied()
            .filter(|&peer| self.send(peer, message.clone()).is_err())
            .collect();
        self.pending.insert(
            announcement,
            Pending {
                name,
                pid,
                waiting: peers,
                winner: None,
                deadline: now() + self.answer_within,
                done,
            },
        );
        for peer in unreachable {
            self.answered_by(announcement, peer);
        }
        self.settle_if_answered(announcement);
    }

    fn handle_message(&mut self, from: NodeId, message: RegistryMessage) {
        let answered = match &message {
            RegistryMessage::Ack {
                reference, winners, ..
            } => {
                if let Some(pending) = self.pending.get_mut(reference)
                    && pending.waiting.contains(&from)
                    && let Some(winner) = winners.first()
                {
                    pending.winner.get_or_insert(winner.pid);
                }
                Some(*reference)
            }
            _ => None,
        };
        self.drive(|machine| machine.handle_message(from, message));
        if let Some(announcement) = answered {
            self.answered_by(announcement, from);
        }
    }

    /// A message from a peer this node does not count (not yet, or no longer, in its group):
    /// nothing it says is taken. A registration waiting for this node's answer gets it — the
    /// names of this node's own processes that beat it — rather than wait out its deadline, so
    /// that a peer counting this node first takes no name this node holds; an answer it gives is
    /// an answer all the same. When the two come to count each other, they exchange their names.
    fn handle_uncounted(&mut self, from: NodeId, message: RegistryMessage) {
        match message {
            RegistryMessage::Announce {
                registrations,
                ack: Some(reference),
            } => {
                let winners = self.machine.own_winners(&registrations);
                let _ = self.send(from, RegistryMessage::Ack { reference, winners });
            }
            RegistryMessage::Ack { reference, .. } => self.answered_by(reference, from),
            _ => {}
        }
    }

    /// `peer` answered (or can no longer answer) `announcement`.
    fn answered_by(&mut self, announcement: u64, peer: NodeId) {
        if let Some(pending) = self.pending.get_mut(&announcement) {
            pending.waiting.remove(&peer);
            self.settle_if_answered(announcement);
        }
    }

    fn settle_if_answered(&mut self, announcement: u64) {
        if self
            .pending
            .get(&announcement)
            .is_some_and(|pending| pending.waiting.is_empty())
        {
            self.settle(announcement);
        }
    }

    fn settle_expired(&mut self) {
        let now = now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(&announcement, _)| announcement)
            .collect();
        for announcement in expired {
            self.settle(announcement);
        }
    }

    /// Tells the registrant of `announcement` whether its name is held.
    fn settle(&mut self, announcement: u64) {
        let Some(pending) = self.pending.remove(&announcement) else {
            return;
        };
        let verdict = match (pending.winner, self.machine.whereis(&pending.name)) {
            (Some(winner), _) => Err(RegisterError::Taken(winner)),
            (None, Some(holder)) if holder == pending.pid => Ok(()),
            (None, Some(holder)) => Err(RegisterError::Taken(holder)),
            // Lost to a registration whose announcement has not arrived yet, or released.
            (None, None) => Err(RegisterError::Taken(pending.pid)),
        };
        let _ = pending.done.send(verdict);
    }

    /// Feeds the machine one input, carries out what it asks, and publishes the names.
    fn drive<T>(&mut self, input: impl FnOnce(&mut Registry) -> T) -> T {
        let output = input(&mut self.machine);
        while let Some(action) = self.machine.poll_action() {
            self.execute(action);
        }
        let names: BTreeMap<String, Pid> = self
            .machine
            .names()
            .map(|(name, pid)| (name.to_string(), pid))
            .collect();
        self.publish.send_if_modified(|known| {
            let changed = **known != names;
            if changed {
                *known = Arc::new(names);
            }
            changed
        });
        output
    }

    fn execute(&mut self, action: RegistryAction) {
        match action {
            RegistryAction::Broadcast(message) => {
                for peer in self.members.counted_ids() {
                    let _ = self.send(peer, message.clone());
                }
            }
            RegistryAction::Send { to, message } => {
                let _ = self.send(to, message);
            }
            RegistryAction::NotifyLoser {
                loser,
                name,
                winner,
            } => {
                tracing::info!(%name, %loser, %winner, "global name lost to an earlier registration");
                self.processes
                    .deliver(loser, Signal::NameLost { name, winner });
            }
            RegistryAction::Monitor(pid) => {
                let reference = self.watchers.monitor(self.mailbox, pid);
                self.monitors.insert(pid, reference);
            }
            RegistryAction::Demonitor(pid) => {
                if let Some(reference) = self.monitors.remove(&pid) {
                    self.watchers.demonitor(reference, pid);
                }
            }
        }
    }

    /// Sends `message` to the service of the node `to`.
    fn send(&self, to: NodeId, message: RegistryMessage) -> Result<(), crate::error::SendError> {
        let target = Target::Named {
            node: to,
            name: Arc::clone(&self.mailbox_name),
        };
        self.router.post_unbounded(&target, message)
    }
}

/// What of `message` the node `from` may still say: registrations of its processes in the life
/// its link connects to now. A message read before its link was lost (or replaced by a later life
/// of the node) and handled after is dropped; applying it would bring back names that the loss
/// released.
fn still_current(
    peers: &PeerTable,
    from: NodeId,
    message: RegistryMessage,
) -> Option<RegistryMessage> {
    let link = peers.link_to(from)?;
    let its_own = |registrations: Vec<Registration>| -> Vec<Registration> {
        registrations
            .into_iter()
            .filter(|registration| link.owns(registration.pid))
            .collect()
    };
    Some(match message {
        RegistryMessage::Announce { registrations, ack } => RegistryMessage::Announce {
            registrations: its_own(registrations),
            ack,
        },
        RegistryMessage::Sync {
            registrations,
            answer,
        } => RegistryMessage::Sync {
            registrations: its_own(registrations),
            answer,
        },
        other => other,
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use gen_cluster_proto::handshake::Identity;
    use gen_cluster_proto::registry::Stamp;

    fn registration(node: &NodeName, incarnation: u64) -> Registration {
        Registration {
            name: "x".into(),
            pid: Pid {
                node: node.id(),
                incarnation: Incarnation(incarnation),
                local: 1,
            },
            stamp: Stamp {
                clock: 1,
                node: node.clone(),
            },
        }
    }

    fn announce(registrations: Vec<Registration>) -> RegistryMessage {
        RegistryMessage::Announce {
            registrations,
            ack: None,
        }
    }

    #[test]
    fn a_peers_announcement_counts_only_while_its_link_is_up_and_only_for_that_life() {
        let b = NodeName::new("b").unwrap();
        let peers = PeerTable::new(NodeName::new("a").unwrap());
        let stale = announce(vec![registration(&b, 1)]);
        assert_eq!(
            still_current(&peers, b.id(), stale.clone()),
            None,
            "read before the link was lost, handled after"
        );
        let life_two = Identity {
            name: b.clone(),
            incarnation: Incarnation(2),
            listen: "b:1".into(),
            hidden: false,
        };
        peers.connect_for_tests(&life_two);
        assert_eq!(
            still_current(&peers, b.id(), stale),
            Some(announce(vec![])),
            "an earlier life's names are not taken from the later life's link"
        );
        let fresh = announce(vec![registration(&b, 2)]);
        assert_eq!(still_current(&peers, b.id(), fresh.clone()), Some(fresh));
    }
}

//! The global registry service of a node. It drives the sans-IO machine of
//! `gen_cluster_proto::registry` (which holds the names and settles clashes) with what the node
//! sees: its named mailbox receives the peers' registry messages and the DOWNs of local holders,
//! node events bring peers up and down, and [`Node`]'s `*_global` methods register and release.
//! It carries out the machine's actions: messages to peers' registries, monitors, and the
//! [`Info::NameLost`](crate::Info::NameLost) notice to a process that lost its name.

use std::sync::{Mutex, OnceLock};

use gen_cluster_proto::registry::{RegisterError, Registry, RegistryAction, RegistryMessage};
use gen_cluster_proto::{NodeId, Pid};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{broadcast, oneshot};

use crate::events::NodeEvent;
use crate::node::{Node, lock};
use crate::process::{Info, Mailbox, MonitorRef, Signal};

/// The local name of every node's registry mailbox.
pub(crate) const MAILBOX: &str = "gen_cluster.registry";

/// A node's registry: the machine, and the registrations waiting for their peers' answers.
pub(crate) struct GlobalRegistry {
    machine: Mutex<Registry>,
    acks: Mutex<FxHashMap<u64, AckWait>>,
    mailbox: OnceLock<Pid>,
    monitors: Mutex<FxHashMap<Pid, MonitorRef>>,
}

struct AckWait {
    waiting: FxHashSet<NodeId>,
    done: Option<oneshot::Sender<()>>,
    /// The registration that beat the announced one, if a peer reported one.
    winner: Option<Pid>,
}

impl GlobalRegistry {
    pub(crate) fn new(machine: Registry) -> Self {
        Self {
            machine: Mutex::new(machine),
            acks: Mutex::default(),
            mailbox: OnceLock::new(),
            monitors: Mutex::default(),
        }
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        lock(&self.machine).whereis(name)
    }

    pub(crate) fn names(&self) -> Vec<(String, Pid)> {
        lock(&self.machine)
            .names()
            .map(|(name, pid)| (name.to_string(), pid))
            .collect()
    }
}

/// Feeds the machine one input and carries out what it asks.
pub(crate) fn drive<T>(node: &Node, input: impl FnOnce(&mut Registry) -> T) -> T {
    let (output, actions) = {
        let mut machine = lock(&node.inner.registry.machine);
        let output = input(&mut machine);
        (
            output,
            std::iter::from_fn(|| machine.poll_action()).collect::<Vec<_>>(),
        )
    };
    for action in actions {
        execute(node, action);
    }
    output
}

fn execute(node: &Node, action: RegistryAction) {
    match action {
        RegistryAction::Broadcast(message) => {
            for peer in node.peers() {
                let _ = node.post_named(peer.name.id(), MAILBOX, message.clone());
            }
        }
        RegistryAction::Send { to, message } => {
            let _ = node.post_named(to, MAILBOX, message);
        }
        RegistryAction::NotifyLoser {
            loser,
            name,
            winner,
        } => {
            tracing::info!(%name, %loser, %winner, "global name lost to an earlier registration");
            node.deliver_to_pid(loser, Signal::NameLost { name, winner });
        }
        RegistryAction::Monitor(pid) => {
            if let Some(&mailbox) = node.inner.registry.mailbox.get() {
                let reference = node.monitor_from(mailbox, pid);
                lock(&node.inner.registry.monitors).insert(pid, reference);
            }
        }
        RegistryAction::Demonitor(pid) => {
            if let Some(reference) = lock(&node.inner.registry.monitors).remove(&pid) {
                node.demonitor_from(reference, pid);
            }
        }
    }
}

/// Registers `name` for the local process `pid`, then announces it to every connected peer and
/// waits (at most `wait`) for their answers, so that a clash within the connected cluster is
/// settled before this returns.
pub(crate) async fn register(
    node: &Node,
    name: &str,
    pid: Pid,
    wait: std::time::Duration,
) -> Result<(), RegisterError> {
    let registration = drive(node, |machine| machine.register(name, pid))?;
    let peers: FxHashSet<NodeId> = node.peers().iter().map(|peer| peer.name.id()).collect();
    if !peers.is_empty() {
        let reference = node.next_ref();
        let (done, answered) = oneshot::channel();
        lock(&node.inner.registry.acks).insert(
            reference,
            AckWait {
                waiting: peers.clone(),
                done: Some(done),
                winner: None,
            },
        );
        let announce = RegistryMessage::Announce {
            from: node.id(),
            registrations: vec![registration],
            ack: Some(reference),
        };
        for peer in peers {
            if node.post_named(peer, MAILBOX, announce.clone()).is_err() {
                answered_by(node, reference, peer);
            }
        }
        let _ = tokio::time::timeout(wait, answered).await;
        let reported = lock(&node.inner.registry.acks)
            .remove(&reference)
            .and_then(|wait| wait.winner);
        if let Some(winner) = reported {
            return Err(RegisterError::Taken(winner));
        }
    }
    match node.inner.registry.whereis(name) {
        Some(holder) if holder == pid => Ok(()),
        Some(holder) => Err(RegisterError::Taken(holder)),
        // Lost to a registration whose announcement has not arrived yet, or released meanwhile.
        None => Err(RegisterError::Taken(pid)),
    }
}

/// `peer` answered (or can no longer answer) the announcement `reference`.
fn answered_by(node: &Node, reference: u64, peer: NodeId) {
    let mut acks = lock(&node.inner.registry.acks);
    if let Some(wait) = acks.get_mut(&reference) {
        wait.waiting.remove(&peer);
        if wait.waiting.is_empty()
            && let Some(done) = wait.done.take()
        {
            let _ = done.send(());
        }
    }
}

/// Starts the registry's mailbox and the task that feeds the machine.
pub(crate) fn start(node: &Node) {
    let mailbox = match node.mailbox_named::<RegistryMessage>(MAILBOX) {
        Ok(mailbox) => mailbox,
        Err(error) => {
            tracing::error!(%error, "the global registry could not start");
            return;
        }
    };
    let _ = node.inner.registry.mailbox.set(mailbox.pid());
    let events = node.subscribe();
    node.inner
        .link_tasks
        .spawn(run(node.clone(), mailbox, events));
}

async fn run(
    node: Node,
    mut mailbox: Mailbox<RegistryMessage>,
    mut events: broadcast::Receiver<NodeEvent>,
) {
    loop {
        tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            received = mailbox.recv() => match received {
                Some(Info::Message(message)) => handle_message(&node, message),
                Some(Info::Down { pid, .. }) => {
                    lock(&node.inner.registry.monitors).remove(&pid);
                    drive(&node, |machine| machine.handle_process_down(pid));
                }
                Some(_) => {}
                None => return,
            },
            event = events.recv() => match event {
                Ok(NodeEvent::NodeUp { peer, .. }) => drive(&node, |machine| machine.handle_node_up(peer.id())),
                Ok(NodeEvent::NodeDown { peer, incarnation, .. }) => {
                    drive(&node, |machine| machine.handle_node_down(peer.id(), incarnation));
                    let pending: Vec<u64> = lock(&node.inner.registry.acks).keys().copied().collect();
                    for reference in pending {
                        answered_by(&node, reference, peer.id());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(missed, "the global registry missed node events; views may differ until the next reconnect");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn handle_message(node: &Node, message: RegistryMessage) {
    // The sending node, as the message names it; peers are authenticated cluster members.
    let from = match &message {
        RegistryMessage::Announce { from, .. } | RegistryMessage::Ack { from, .. } => *from,
        RegistryMessage::Withdraw { registration } => registration.pid.node,
    };
    let answered = match &message {
        RegistryMessage::Ack {
            reference, winners, ..
        } => {
            if let Some(winner) = winners.first()
                && let Some(wait) = lock(&node.inner.registry.acks).get_mut(reference)
            {
                wait.winner.get_or_insert(winner.pid);
            }
            Some(*reference)
        }
        _ => None,
    };
    drive(node, |machine| machine.handle_message(from, message));
    if let Some(reference) = answered {
        answered_by(node, reference, from);
    }
}

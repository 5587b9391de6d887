//! The process table: every live process of this node by its local number, with its mailbox and
//! its local name; pid and reference allocation; delivery into a mailbox.
//!
//! One mutex guards the slots and the names; it is held only to look up or change them, never
//! across a send that could wait (mailboxes are unbounded) nor while another lock is taken. Costs:
//! delivery is one hash lookup under the lock and one channel push.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gen_cluster_proto::wire::Dest;
use gen_cluster_proto::{Incarnation, NodeId, Pid};
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::mpsc;

use crate::error::StartError;
use crate::lock;
use crate::process::signal::Signal;

/// The live processes of one node.
#[derive(Debug)]
pub(crate) struct ProcessTable {
    node: NodeId,
    incarnation: Incarnation,
    next_local: AtomicU64,
    next_ref: AtomicU64,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_local: HashMap<u64, Slot>,
    names: HashMap<Arc<str>, u64>,
    /// Set at shutdown: no process may start after it.
    closed: bool,
}

#[derive(Debug)]
struct Slot {
    mailbox: mpsc::UnboundedSender<Signal>,
    name: Option<Arc<str>>,
}

impl ProcessTable {
    /// The table of the node `node` in its life `incarnation`.
    pub(crate) fn new(node: NodeId, incarnation: Incarnation) -> Self {
        Self {
            node,
            incarnation,
            next_local: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            slots: Mutex::default(),
        }
    }

    /// Whether `pid` is a process of this node's life (alive or not).
    pub(crate) fn is_local(&self, pid: Pid) -> bool {
        pid.is_of(self.node, self.incarnation)
    }

    /// Whether `pid` names this node, in this life or an earlier one.
    pub(crate) fn is_this_node(&self, pid: Pid) -> bool {
        pid.node == self.node
    }

    /// A new reference for a call or a monitor, unique in this node's life.
    pub(crate) fn next_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a slot for a new process, named `name` if given; returns its pid and mailbox.
    pub(crate) fn register(
        &self,
        name: Option<Arc<str>>,
    ) -> Result<(Pid, mpsc::UnboundedReceiver<Signal>), StartError> {
        let (mailbox, rx) = mpsc::unbounded_channel();
        let mut slots = lock(&self.slots);
        if slots.closed {
            return Err(StartError::ShuttingDown);
        }
        if let Some(name) = &name
            && slots.names.contains_key(name)
        {
            return Err(StartError::NameTaken(name.to_string()));
        }
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = &name {
            slots.names.insert(Arc::clone(name), local);
        }
        slots.by_local.insert(local, Slot { mailbox, name });
        Ok((self.pid_of(local), rx))
    }

    /// A pid that will never receive anything, for a mailbox asked for during shutdown.
    pub(crate) fn closed_slot(&self) -> (Pid, mpsc::UnboundedReceiver<Signal>) {
        let (_, rx) = mpsc::unbounded_channel();
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        (self.pid_of(local), rx)
    }

    /// Frees the slot of `pid` and its name; false if it had no slot (already freed).
    pub(crate) fn remove(&self, pid: Pid) -> bool {
        if !self.is_local(pid) {
            return false;
        }
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.by_local.remove(&pid.local) else {
            return false;
        };
        if let Some(name) = &slot.name {
            slots.names.remove(name);
        }
        true
    }

    /// Whether `pid` is a live process of this node.
    pub(crate) fn is_alive(&self, pid: Pid) -> bool {
        self.is_local(pid) && lock(&self.slots).by_local.contains_key(&pid.local)
    }

    /// The pid registered as `name`.
    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        let local = *lock(&self.slots).names.get(name)?;
        Some(self.pid_of(local))
    }

    /// Puts `signal` in the mailbox of `pid`; false if it is not a live process of this node.
    pub(crate) fn deliver(&self, pid: Pid, signal: Signal) -> bool {
        if !self.is_local(pid) {
            return false;
        }
        let slots = lock(&self.slots);
        slots
            .by_local
            .get(&pid.local)
            .is_some_and(|slot| slot.mailbox.send(signal).is_ok())
    }

    /// Puts a signal from a peer in the mailbox of the process it names (one lock); gives the
    /// signal back if there is no such process.
    pub(crate) fn deliver_to(&self, dest: Dest<'_>, signal: Signal) -> Result<(), Signal> {
        let slots = lock(&self.slots);
        let local = match dest {
            Dest::Pid(pid) if self.is_local(pid) => Some(pid.local),
            Dest::Pid(_) => None,
            Dest::Name(name) => slots.names.get(name).copied(),
        };
        match local.and_then(|local| slots.by_local.get(&local)) {
            Some(slot) => slot.mailbox.send(signal).map_err(|returned| returned.0),
            None => Err(signal),
        }
    }

    /// Refuses new processes from now on and returns every live mailbox, for shutdown.
    pub(crate) fn close(&self) -> Vec<mpsc::UnboundedSender<Signal>> {
        let mut slots = lock(&self.slots);
        slots.closed = true;
        slots
            .by_local
            .values()
            .map(|slot| slot.mailbox.clone())
            .collect()
    }

    fn pid_of(&self, local: u64) -> Pid {
        Pid {
            node: self.node,
            incarnation: self.incarnation,
            local,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::process::signal::Payload;

    fn table() -> ProcessTable {
        ProcessTable::new(NodeId(7), Incarnation(3))
    }

    fn info(n: u8) -> Signal {
        Signal::Info {
            payload: Payload::Local(Box::new(n)),
            from: NodeId(7),
        }
    }

    fn received(rx: &mut mpsc::UnboundedReceiver<Signal>) -> Option<u8> {
        match rx.try_recv().ok()? {
            Signal::Info { payload, .. } => payload.decode().ok(),
            _ => None,
        }
    }

    #[test]
    fn pids_are_never_reused_and_carry_the_nodes_life() {
        let table = table();
        let (a, _) = table.register(None).unwrap();
        table.remove(a);
        let (b, _) = table.register(None).unwrap();
        assert_ne!(a, b);
        assert!(b.is_of(NodeId(7), Incarnation(3)));
    }

    #[test]
    fn a_local_name_is_held_by_one_process_and_freed_with_it() {
        let table = table();
        let (pid, _) = table.register(Some("x".into())).unwrap();
        assert!(
            matches!(table.register(Some("x".into())), Err(StartError::NameTaken(n)) if n == "x")
        );
        assert_eq!(table.whereis("x"), Some(pid));
        assert!(table.remove(pid));
        assert!(!table.remove(pid), "a slot is freed once");
        assert_eq!(table.whereis("x"), None);
        table.register(Some("x".into())).unwrap();
    }

    #[test]
    fn delivery_reaches_live_local_processes_only() {
        let table = table();
        let (pid, mut rx) = table.register(Some("p".into())).unwrap();
        assert!(table.deliver(pid, info(1)));
        assert!(table.deliver_to(Dest::Pid(pid), info(2)).is_ok());
        assert!(table.deliver_to(Dest::Name("p"), info(3)).is_ok());
        assert_eq!(
            [received(&mut rx), received(&mut rx), received(&mut rx)],
            [Some(1), Some(2), Some(3)]
        );
        let earlier_life = Pid {
            incarnation: Incarnation(2),
            ..pid
        };
        assert!(!table.deliver(earlier_life, info(4)));
        assert!(table.deliver_to(Dest::Pid(earlier_life), info(4)).is_err());
        assert!(table.deliver_to(Dest::Name("nobody"), info(4)).is_err());
        table.remove(pid);
        assert!(!table.deliver(pid, info(5)));
        assert!(!table.is_alive(pid));
    }

    #[test]
    fn a_closed_table_starts_nothing_and_returns_every_mailbox() {
        let table = table();
        let (a, _ra) = table.register(None).unwrap();
        let (_b, _rb) = table.register(None).unwrap();
        table.remove(a);
        assert_eq!(table.close().len(), 1);
        assert!(matches!(
            table.register(None),
            Err(StartError::ShuttingDown)
        ));
    }
}

//! The process table: every live process of this node by its local number, with its mailbox and
//! its local name; pid and reference allocation; delivery into a mailbox.
//!
//! A mailbox is unbounded unless its process asked for a capacity. A bounded one holds at most
//! that many messages (calls, casts, sends): a sender finding it full waits for a place
//! ([`deliver_message`](ProcessTable::deliver_message)) or is told it is busy
//! ([`try_deliver_message`](ProcessTable::try_deliver_message)). Notices about other processes
//! and stop requests never wait ([`deliver`](ProcessTable::deliver)). When the process ends,
//! senders waiting for a place give up: the message is dropped, as one to a dead process is.
//!
//! One mutex guards the slots and the names; it is held only to look up or change them, never
//! across a wait nor while another lock is taken. Costs: delivery is one hash lookup under the
//! lock and one channel push, and for a bounded mailbox one semaphore permit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gen_cluster_proto::wire::Dest;
use gen_cluster_proto::{Incarnation, NodeId, Pid};
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::error::StartError;
use crate::lock;
use crate::process::signal::{self, Inbox, MailboxSender, Signal};

/// A message could not be put in a mailbox now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// Where a message delivery stands.
pub(crate) enum Placement {
    /// Delivered; or given back: no such process.
    Done(Result<(), Signal>),
    /// The process's bounded mailbox is full.
    Waiting(Waiting),
}

impl Placement {
    /// Delivered, once there is a place; the signal given back if there is no such process, or
    /// it ended while the message waited.
    pub(crate) async fn finish(self) -> Result<(), Signal> {
        match self {
            Placement::Done(delivered) => delivered,
            Placement::Waiting(waiting) => waiting.place().await,
        }
    }
}

/// A message waiting for a place in a full mailbox.
pub(crate) struct Waiting {
    mailbox: MailboxSender,
    room: Arc<Semaphore>,
    signal: Signal,
}

impl Waiting {
    /// Puts the message in once a place frees; gives it back if the process ends first.
    pub(crate) async fn place(self) -> Result<(), Signal> {
        match self.room.acquire().await {
            Ok(place) => place.forget(),
            Err(_) => return Err(self.signal),
        }
        self.mailbox.send(self.signal)
    }
}

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
    mailbox: MailboxSender,
    /// The places left, for a bounded mailbox.
    room: Option<Arc<Semaphore>>,
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

    /// How many slots are taken: live processes, and mailboxes made without a process.
    pub(crate) fn len(&self) -> usize {
        lock(&self.slots).by_local.len()
    }

    /// The signals waiting in the longest mailbox, and in all of them.
    pub(crate) fn mailbox_lengths(&self) -> (usize, usize) {
        let slots = lock(&self.slots);
        slots
            .by_local
            .values()
            .map(|slot| slot.mailbox.waiting())
            .fold((0, 0), |(longest, all), waiting| {
                (longest.max(waiting), all + waiting)
            })
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

    /// Takes a slot for a new process, named `name` if given, whose mailbox holds at most
    /// `capacity` messages if given; returns its pid and mailbox.
    pub(crate) fn register(
        &self,
        name: Option<Arc<str>>,
        capacity: Option<usize>,
    ) -> Result<(Pid, Inbox), StartError> {
        let room = capacity.map(|places| Arc::new(Semaphore::new(places)));
        let (mailbox, inbox) = signal::mailbox(room.clone());
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
        slots.by_local.insert(
            local,
            Slot {
                mailbox,
                room,
                name,
            },
        );
        Ok((self.pid_of(local), inbox))
    }

    /// A pid that will never receive anything, for a mailbox asked for during shutdown.
    pub(crate) fn closed_slot(&self) -> (Pid, Inbox) {
        let (_, inbox) = signal::mailbox(None);
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        (self.pid_of(local), inbox)
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
        if let Some(room) = &slot.room {
            room.close();
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

    /// Puts the notice or stop request `signal` in the mailbox of `pid` at once, taking no place
    /// in it (messages take one: see [`deliver_message`](Self::deliver_message)); false if it
    /// is not a live process of this node.
    pub(crate) fn deliver(&self, pid: Pid, signal: Signal) -> bool {
        debug_assert!(
            !signal.is_message(),
            "a message takes a place in the mailbox"
        );
        if !self.is_local(pid) {
            return false;
        }
        let slots = lock(&self.slots);
        slots
            .by_local
            .get(&pid.local)
            .is_some_and(|slot| slot.mailbox.send(signal).is_ok())
    }

    /// Puts the message `signal` in the mailbox of `pid` now if it has a place for it (or there
    /// is no such process: the signal is given back); else hands back a [`Waiting`] delivery.
    pub(crate) fn deliver_message(&self, pid: Pid, signal: Signal) -> Placement {
        let to = self.is_local(pid).then_some(Dest::Pid(pid));
        self.deliver_now(to, signal)
    }

    /// Puts the message `signal` in the mailbox of `pid` if it has a place for it now; false if
    /// there is no such process.
    pub(crate) fn try_deliver_message(&self, pid: Pid, signal: Signal) -> Result<bool, Full> {
        match self.deliver_message(pid, signal) {
            Placement::Done(delivered) => Ok(delivered.is_ok()),
            Placement::Waiting(_) => Err(Full),
        }
    }

    /// [`deliver_message`](Self::deliver_message) for a message from a peer, to the process it
    /// names.
    pub(crate) fn deliver_to(&self, dest: Dest<'_>, signal: Signal) -> Placement {
        let to = match dest {
            Dest::Pid(pid) if !self.is_local(pid) => None,
            dest => Some(dest),
        };
        self.deliver_now(to, signal)
    }

    /// Delivers under one lock if the mailbox has a place (the common case: no clone, no wait).
    fn deliver_now(&self, to: Option<Dest<'_>>, signal: Signal) -> Placement {
        let slots = lock(&self.slots);
        let local = match to {
            Some(Dest::Pid(pid)) => Some(pid.local),
            Some(Dest::Name(name)) => slots.names.get(name).copied(),
            None => None,
        };
        let Some(slot) = local.and_then(|local| slots.by_local.get(&local)) else {
            return Placement::Done(Err(signal));
        };
        if let Some(room) = &slot.room {
            match room.try_acquire() {
                Ok(place) => place.forget(),
                Err(TryAcquireError::Closed) => return Placement::Done(Err(signal)),
                Err(TryAcquireError::NoPermits) => {
                    return Placement::Waiting(Waiting {
                        mailbox: slot.mailbox.clone(),
                        room: Arc::clone(room),
                        signal,
                    });
                }
            }
        }
        Placement::Done(slot.mailbox.send(signal))
    }

    /// Refuses new processes from now on and returns every live mailbox, for shutdown.
    pub(crate) fn close(&self) -> Vec<MailboxSender> {
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
    use futures::FutureExt;

    fn table() -> ProcessTable {
        ProcessTable::new(NodeId(7), Incarnation(3))
    }

    fn info(n: u8) -> Signal {
        Signal::Info {
            payload: Payload::Local(Box::new(n)),
            from: NodeId(7),
        }
    }

    fn received(inbox: &mut Inbox) -> Option<u8> {
        let signal = inbox.recv().now_or_never()??;
        match signal {
            Signal::Info { payload, .. } => payload.decode().ok(),
            _ => None,
        }
    }

    #[test]
    fn mailboxes_count_what_waits_in_them() {
        let table = table();
        let (a, mut inbox_a) = table.register(None, None).unwrap();
        let (b, _inbox_b) = table.register(None, Some(8)).unwrap();
        for n in 0..3 {
            assert!(matches!(
                table.deliver_message(a, info(n)),
                Placement::Done(Ok(()))
            ));
        }
        assert!(matches!(
            table.deliver_message(b, info(9)),
            Placement::Done(Ok(()))
        ));
        assert_eq!(table.mailbox_lengths(), (3, 4));
        assert_eq!(received(&mut inbox_a), Some(0));
        assert_eq!(table.mailbox_lengths(), (2, 3));
        table.remove(b);
        assert_eq!(table.mailbox_lengths(), (2, 2));
    }

    #[test]
    fn pids_are_never_reused_and_carry_the_nodes_life() {
        let table = table();
        let (a, _) = table.register(None, None).unwrap();
        table.remove(a);
        let (b, _) = table.register(None, None).unwrap();
        assert_ne!(a, b);
        assert!(b.is_of(NodeId(7), Incarnation(3)));
    }

    #[test]
    fn a_local_name_is_held_by_one_process_and_freed_with_it() {
        let table = table();
        let (pid, _) = table.register(Some("x".into()), None).unwrap();
        assert!(
            matches!(table.register(Some("x".into()), None), Err(StartError::NameTaken(n)) if n == "x")
        );
        assert_eq!(table.whereis("x"), Some(pid));
        assert!(table.remove(pid));
        assert!(!table.remove(pid), "a slot is freed once");
        assert_eq!(table.whereis("x"), None);
        table.register(Some("x".into()), None).unwrap();
    }

    #[test]
    fn delivery_reaches_live_local_processes_only() {
        let table = table();
        let (pid, mut rx) = table.register(Some("p".into()), None).unwrap();
        assert_eq!(table.try_deliver_message(pid, info(1)), Ok(true));
        assert!(
            table
                .deliver_to(Dest::Pid(pid), info(2))
                .finish()
                .now_or_never()
                .unwrap()
                .is_ok()
        );
        assert!(
            table
                .deliver_to(Dest::Name("p"), info(3))
                .finish()
                .now_or_never()
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            [received(&mut rx), received(&mut rx), received(&mut rx)],
            [Some(1), Some(2), Some(3)]
        );
        let earlier_life = Pid {
            incarnation: Incarnation(2),
            ..pid
        };
        assert_eq!(table.try_deliver_message(earlier_life, info(4)), Ok(false));
        let to_earlier = table.deliver_to(Dest::Pid(earlier_life), info(4)).finish();
        assert!(to_earlier.now_or_never().unwrap().is_err());
        let to_nobody = table.deliver_to(Dest::Name("nobody"), info(4)).finish();
        assert!(to_nobody.now_or_never().unwrap().is_err());
        table.remove(pid);
        assert_eq!(table.try_deliver_message(pid, info(5)), Ok(false));
        assert!(!table.deliver(pid, Signal::Stop(gen_cluster_proto::ExitReason::Normal)));
        assert!(!table.is_alive(pid));
    }

    #[tokio::test]
    async fn a_bounded_mailbox_holds_its_capacity_of_messages_and_never_holds_back_notices() {
        let table = table();
        let (pid, mut inbox) = table.register(None, Some(2)).unwrap();
        assert_eq!(table.try_deliver_message(pid, info(1)), Ok(true));
        assert!(table.deliver_message(pid, info(2)).finish().await.is_ok());
        assert_eq!(table.try_deliver_message(pid, info(3)), Err(Full));
        assert!(
            table.deliver(pid, Signal::Stop(gen_cluster_proto::ExitReason::Normal)),
            "a notice always goes in"
        );
        let waiting = table.deliver_message(pid, info(4)).finish();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "a sender waits for a place"
        );
        assert_eq!(received(&mut inbox), Some(1));
        assert!(waiting.await.is_ok(), "taking a message frees a place");
        assert_eq!(received(&mut inbox), Some(2));
        table.remove(pid);
        assert!(table.deliver_message(pid, info(5)).finish().await.is_err());
    }

    #[tokio::test]
    async fn senders_waiting_for_a_place_give_up_when_the_process_ends() {
        let table = table();
        let (pid, _inbox) = table.register(None, Some(1)).unwrap();
        assert!(table.deliver_message(pid, info(1)).finish().await.is_ok());
        let waiting = table.deliver_message(pid, info(2)).finish();
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        table.remove(pid);
        assert!(waiting.await.is_err());
    }

    #[test]
    fn a_closed_table_starts_nothing_and_returns_every_mailbox() {
        let table = table();
        let (a, _ra) = table.register(None, None).unwrap();
        let (_b, _rb) = table.register(None, None).unwrap();
        table.remove(a);
        assert_eq!(table.close().len(), 1);
        assert!(matches!(
            table.register(None, None),
            Err(StartError::ShuttingDown)
        ));
    }
}

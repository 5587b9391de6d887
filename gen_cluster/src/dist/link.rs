//! One established link to a peer ([`PeerLink`]): who the peer is, the queue its frames go on,
//! and what this node tracks on it ([`LinkState`]): calls waiting for a reply, monitors local
//! processes hold on the peer's processes, links between local and remote processes. When the
//! link closes, its state is taken out exactly once and handed to whoever reports the loss.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gen_cluster_proto::handshake::Identity;
use gen_cluster_proto::wire::{Dest, Header};
use gen_cluster_proto::{Incarnation, NodeId, NodeName, Pid};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::clock::{Epoch, now};
use crate::dist::outbox::Lane;
use crate::dist::queue::FrameQueue;
use crate::error::CallError;
use crate::events::DownReason;
use crate::lock;
use crate::process::signal::Payload;

/// A reply awaited from the peer.
pub(crate) type PendingCall = oneshot::Sender<Result<Payload, CallError>>;

/// An established connection to a peer, shared by everything that sends to it.
#[derive(Debug)]
pub(crate) struct PeerLink {
    /// The peer's name.
    pub(crate) name: NodeName,
    /// Its id (what its pids carry).
    pub(crate) id: NodeId,
    /// The life of the peer this link connects to.
    pub(crate) incarnation: Incarnation,
    /// Where the peer listens.
    pub(crate) addr: String,
    /// Whether the peer is a hidden node (not reported up or down, not a member).
    pub(crate) hidden: bool,
    /// The protocol version the handshake settled on.
    pub(crate) version: u16,
    /// Where frames to the peer go.
    pub(crate) queue: FrameQueue,
    /// `None` once the link has closed.
    state: Mutex<Option<LinkState>>,
    /// Stops the link's tasks.
    cancel: CancellationToken,
    /// The first reason recorded for the link's end.
    down_reason: Mutex<Option<DownReason>>,
    /// When the peer was last heard on it.
    heard: LastHeard,
}

/// When a peer was last heard on a connection: its reader notes every arrival, the handshake's
/// included.
#[derive(Clone, Debug)]
pub(crate) struct LastHeard {
    cell: Arc<AtomicU64>,
    epoch: Epoch,
}

impl LastHeard {
    /// Read from `cell`, where the reader stores arrivals relative to `epoch`.
    pub(crate) fn new(cell: Arc<AtomicU64>, epoch: Epoch) -> Self {
        Self { cell, epoch }
    }

    /// A peer heard just now (for tests of the parts that hold links).
    #[cfg(test)]
    pub(crate) fn now() -> Self {
        Self::new(Arc::default(), Epoch::start())
    }

    /// Whether the peer was heard less than `window` ago.
    pub(crate) fn within(&self, window: Duration) -> bool {
        now().saturating_duration_since(self.epoch.load(&self.cell)) < window
    }
}

/// What this node tracks on one link; taken out when the link closes.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// Calls to the peer waiting for their reply, by reference.
    pub(crate) calls: HashMap<u64, PendingCall>,
    /// Monitors local processes hold on the peer's processes: reference → (watcher, target).
    pub(crate) monitors: HashMap<u64, (Pid, Pid)>,
    /// Links between a local process and one of the peer's: (local, remote).
    pub(crate) links: HashSet<(Pid, Pid)>,
}

impl PeerLink {
    /// A link to the peer `peer` (as its handshake proved it) speaking protocol `version`,
    /// heard as `heard` says.
    pub(crate) fn new(peer: &Identity, version: u16, queue: FrameQueue, heard: LastHeard) -> Self {
        Self {
            version,
            id: peer.name.id(),
            name: peer.name.clone(),
            incarnation: peer.incarnation,
            addr: peer.listen.clone(),
            hidden: peer.hidden,
            queue,
            state: Mutex::new(Some(LinkState::default())),
            cancel: CancellationToken::new(),
            down_reason: Mutex::new(None),
            heard,
        }
    }

    /// The peer as its handshake proved it.
    pub(crate) fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            incarnation: self.incarnation,
            listen: self.addr.clone(),
            hidden: self.hidden,
        }
    }

    /// Whether the peer was heard on this link less than `window` ago.
    pub(crate) fn heard_within(&self, window: Duration) -> bool {
        self.heard.within(window)
    }

    /// Whether `pid` lives on this peer (in the life this link connects to).
    pub(crate) fn owns(&self, pid: Pid) -> bool {
        pid.is_of(self.id, self.incarnation)
    }

    /// Runs `f` on the link's state unless the link has closed (then returns `None`).
    pub(crate) fn track<T>(&self, f: impl FnOnce(&mut LinkState) -> T) -> Option<T> {
        lock(&self.state).as_mut().map(f)
    }

    /// Closes the link's state and returns it; `None` if it had closed already. Whoever gets
    /// `Some` reports the link's loss, so it is reported once. Senders waiting for room in its
    /// queue give up.
    pub(crate) fn close(&self) -> Option<LinkState> {
        self.queue.close();
        lock(&self.state).take()
    }

    /// Sends a call of `request` to the process `to` on the peer, once the link's queue has room
    /// for it; the receiver gets its reply.
    pub(crate) async fn start_call<M: Serialize>(
        &self,
        reference: u64,
        to: Dest<'_>,
        request: &M,
    ) -> Result<oneshot::Receiver<Result<Payload, CallError>>, CallError> {
        let frame = gen_cluster_proto::wire::encode(
            &Header::Call { to, reference },
            Some(request),
            self.queue.max_frame(),
        )?;
        let (tx, rx) = oneshot::channel();
        self.track(|state| state.calls.insert(reference, tx))
            .ok_or(CallError::NodeDown)?;
        if self.queue.push_message(frame, Lane::to(&to)).await.is_err() {
            self.track(|state| state.calls.remove(&reference));
            return Err(CallError::NodeDown);
        }
        Ok(rx)
    }

    /// Hands the outcome of the call `reference` to its caller, if it still waits.
    pub(crate) fn finish_call(&self, reference: u64, outcome: Result<Payload, CallError>) {
        if let Some(Some(call)) = self.track(|state| state.calls.remove(&reference)) {
            let _ = call.send(outcome);
        }
    }

    /// Forgets the call `reference`, whose caller stopped waiting.
    pub(crate) fn forget_call(&self, reference: u64) {
        self.track(|state| state.calls.remove(&reference));
    }

    /// Records why the link is going down, unless a reason was recorded first; returns the
    /// reason that stands (the first one recorded).
    pub(crate) fn note_down_reason(&self, reason: DownReason) -> DownReason {
        lock(&self.down_reason).get_or_insert(reason).clone()
    }

    /// Stops the link's tasks (after noting why, with [`note_down_reason`](Self::note_down_reason)).
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether the link's tasks were told to stop.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once the link's tasks are told to stop.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}

impl LinkState {
    /// Fails every call waiting on the link with [`CallError::NodeDown`].
    pub(crate) fn fail_calls(&mut self) {
        for (_, call) in self.calls.drain() {
            let _ = call.send(Err(CallError::NodeDown));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use futures::FutureExt;

    fn link() -> (
        PeerLink,
        tokio::sync::mpsc::UnboundedReceiver<crate::dist::queue::Outgoing>,
    ) {
        let name = NodeName::new("b").unwrap();
        let (queue, frames) = FrameQueue::new(name.clone(), 1 << 20, 1 << 20);
        (
            PeerLink::new(
                &Identity {
                    name,
                    incarnation: Incarnation(4),
                    listen: "127.0.0.1:1".into(),
                    hidden: false,
                },
                gen_cluster_proto::handshake::SUPPORTED_VERSIONS.max,
                queue,
                LastHeard::now(),
            ),
            frames,
        )
    }

    #[test]
    fn the_state_is_taken_out_once_and_nothing_is_tracked_after() {
        let (link, _frames) = link();
        assert_eq!(
            link.track(|state| state.links.insert((pid(1), pid(2)))),
            Some(true)
        );
        let state = link.close().expect("the first close takes the state");
        assert_eq!(state.links.len(), 1);
        assert!(link.close().is_none(), "a second close gets nothing");
        assert_eq!(link.track(|state| state.links.len()), None);
    }

    #[test]
    fn a_call_is_queued_then_finished_once() {
        let (link, mut frames) = link();
        let call = link.start_call(9, Dest::Name("echo"), &42u32);
        let mut reply = call.now_or_never().unwrap().unwrap();
        assert!(frames.try_recv().is_ok(), "the call frame is queued");
        link.finish_call(9, Ok(Payload::Local(Box::new(1u8))));
        link.finish_call(9, Err(CallError::NoReply));
        assert!(matches!(reply.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn calls_on_a_closed_link_fail_at_once_and_pending_ones_fail_at_close() {
        let (link, _frames) = link();
        let call = link.start_call(1, Dest::Name("echo"), &());
        let mut pending = call.now_or_never().unwrap().unwrap();
        link.close().unwrap().fail_calls();
        assert_eq!(pending.try_recv().unwrap().err(), Some(CallError::NodeDown));
        assert_eq!(
            link.start_call(2, Dest::Name("echo"), &())
                .now_or_never()
                .unwrap()
                .err(),
            Some(CallError::NodeDown)
        );
    }

    #[test]
    fn the_first_down_reason_recorded_wins() {
        let (link, _frames) = link();
        assert_eq!(
            link.note_down_reason(DownReason::Restarted),
            DownReason::Restarted
        );
        assert_eq!(
            link.note_down_reason(DownReason::Disconnected),
            DownReason::Restarted
        );
    }

    fn pid(local: u64) -> Pid {
        Pid {
            node: NodeId(1),
            incarnation: Incarnation(1),
            local,
        }
    }
}

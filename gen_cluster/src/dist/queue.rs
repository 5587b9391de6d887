//! The send side of one link: the queue its writer task drains ([`FrameQueue`]), and a reply
//! owed to a remote caller ([`RemoteReply`]: that queue plus the call's reference). Everything
//! that sends to a peer — calls, casts, control frames, replies — encodes one frame and pushes it
//! here; the link driver coalesces what is queued into one write.
//!
//! **The bound.** Messages (sends, casts, calls) take room in the queue, in bytes, until the
//! writer takes them: at most `send_queue_bytes` (one message larger than that takes all of it).
//! A message that finds no room waits for it — the async back-pressure of Erlang's
//! `busy_dist_port`, reaching the sender through TCP flow control when the peer reads slowly —
//! or, from the `try_` paths, is refused as busy, not queued. Control frames (monitors, links,
//! exits, replies, goodbyes) take no room and never wait: they are small, and their number is
//! bounded by the messages, calls and watches that caused them. When the link closes, waiting
//! senders give up (the peer is down).
//!
//! Cost: one encode into a fresh buffer and one channel push per frame; a message also takes and
//! gives back its room on a semaphore.

use std::sync::Arc;

use gen_cluster_proto::wire::{self, CallRefusal, Header, WireError};
use gen_cluster_proto::{ExitReason, NodeName};
use serde::Serialize;
use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use crate::dist::outbox::Lane;

/// What the writer task is given to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An encoded frame, length prefix included; the frames it keeps its order with; the room
    /// it holds in the queue, given back when the writer takes it.
    Frame(Vec<u8>, Lane, u32),
    /// Say goodbye with this reason, then close.
    Goodbye(ExitReason),
    /// Start or stop watching the peer (and ask it for heartbeats, or to stop them).
    Watch(bool),
    /// The peer asked for heartbeats, or to stop them.
    Heartbeats(bool),
}

/// The queue of frames to one peer. Cheap to clone: clones share the queue.
#[derive(Clone, Debug)]
pub(crate) struct FrameQueue(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    out: mpsc::UnboundedSender<Outgoing>,
    max_frame: usize,
    peer: NodeName,
    /// The room left for messages, in bytes.
    room: Semaphore,
    /// All the room there is.
    bound: u32,
}

/// A message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No room now (from a `try_` path).
    Busy,
    /// The link has closed.
    Closed,
}

impl FrameQueue {
    /// A queue to `peer` whose frames are at most `max_frame` bytes and whose messages take at
    /// most `bound` bytes; and its receiving end, for the link's writer.
    pub(crate) fn new(
        peer: NodeName,
        max_frame: usize,
        bound: usize,
    ) -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (out, queue) = mpsc::unbounded_channel();
        let bound = u32::try_from(bound).unwrap_or(u32::MAX);
        let shared = Shared {
            out,
            max_frame,
            peer,
            room: Semaphore::new(bound as usize),
            bound,
        };
        (Self(Arc::new(shared)), queue)
    }

    /// The largest frame this link sends.
    pub(crate) fn max_frame(&self) -> usize {
        self.0.max_frame
    }

    /// Queues a control frame of lane `lane` (it takes no room); false if the link has closed.
    pub(crate) fn push(&self, frame: Vec<u8>, lane: Lane) -> bool {
        self.0.out.send(Outgoing::Frame(frame, lane, 0)).is_ok()
    }

    /// Queues a message frame once there is room for it.
    pub(crate) async fn push_message(&self, frame: Vec<u8>, lane: Lane) -> Result<(), Refused> {
        let charge = self.charge(&frame);
        let room = self.0.room.acquire_many(charge).await;
        room.map_err(|_| Refused::Closed)?.forget();
        self.queue_charged(frame, lane, charge)
    }

    /// Queues a message frame if there is room for it now.
    pub(crate) fn try_push_message(&self, frame: Vec<u8>, lane: Lane) -> Result<(), Refused> {
        let charge = self.charge(&frame);
        match self.0.room.try_acquire_many(charge) {
            Ok(room) => room.forget(),
            Err(TryAcquireError::NoPermits) => return Err(Refused::Busy),
            Err(TryAcquireError::Closed) => return Err(Refused::Closed),
        }
        self.queue_charged(frame, lane, charge)
    }

    /// The bytes of messages queued, not yet taken by the writer.
    pub(crate) fn queued_bytes(&self) -> usize {
        (self.0.bound as usize).saturating_sub(self.0.room.available_permits())
    }

    /// The writer took a frame that held `charge` bytes of room.
    pub(crate) fn release(&self, charge: u32) {
        if charge > 0 {
            self.0.room.add_permits(charge as usize);
        }
    }

    /// The link has closed: senders waiting for room give up.
    pub(crate) fn close(&self) {
        self.0.room.close();
    }

    fn charge(&self, frame: &[u8]) -> u32 {
        u32::try_from(frame.len())
            .unwrap_or(u32::MAX)
            .min(self.0.bound)
            .max(1)
    }

    fn queue_charged(&self, frame: Vec<u8>, lane: Lane, charge: u32) -> Result<(), Refused> {
        match self.0.out.send(Outgoing::Frame(frame, lane, charge)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.release(charge);
                Err(Refused::Closed)
            }
        }
    }

    /// Encodes a reply: `header` with `payload`, and queues it (it takes no room).
    fn send_reply<P: Serialize>(
        &self,
        header: &Header<'_>,
        payload: &P,
    ) -> Result<bool, WireError> {
        let frame = wire::encode(header, Some(payload), self.0.max_frame)?;
        Ok(self.push(frame, Lane::of(header)))
    }

    /// Queues a frame without payload; false if the link has closed or the frame cannot be
    /// encoded (logged: our own control frames always can).
    pub(crate) fn send_header(&self, header: &Header<'_>) -> bool {
        match wire::encode_header(header, self.0.max_frame) {
            Ok(frame) => self.push(frame, Lane::of(header)),
            Err(error) => {
                tracing::error!(peer = %self.0.peer, %error, "cannot encode a control frame");
                false
            }
        }
    }

    /// Asks the writer to start or stop watching the peer, or to start or stop sending it
    /// heartbeats ([`Outgoing::Watch`], [`Outgoing::Heartbeats`]); false if the link has closed.
    pub(crate) fn switch(&self, switch: Outgoing) -> bool {
        debug_assert!(matches!(
            switch,
            Outgoing::Watch(_) | Outgoing::Heartbeats(_)
        ));
        self.0.out.send(switch).is_ok()
    }

    /// Asks the writer to say goodbye and close; false if the link has closed.
    pub(crate) fn goodbye(&self, reason: ExitReason) -> bool {
        self.0.out.send(Outgoing::Goodbye(reason)).is_ok()
    }
}

/// A reply owed to a caller on a peer.
#[derive(Debug)]
pub(crate) struct RemoteReply {
    queue: FrameQueue,
    reference: u64,
}

impl RemoteReply {
    /// The reply to the call `reference` that arrived on the link of `queue`.
    pub(crate) fn new(queue: FrameQueue, reference: u64) -> Self {
        Self { queue, reference }
    }

    /// Sends `value` as the reply; a reply that cannot be encoded is refused instead, so the
    /// caller learns at once.
    pub(crate) fn reply<R: Serialize>(self, value: &R) {
        let reference = self.reference;
        if let Err(error) = self.queue.send_reply(&Header::Reply { reference }, value) {
            tracing::error!(peer = %self.queue.0.peer, %error, "cannot send a reply");
            self.refuse(CallRefusal::NoReply);
        }
    }

    /// Tells the caller no reply will come.
    pub(crate) fn refuse(self, refusal: CallRefusal) {
        self.queue.send_header(&Header::ReplyRefused {
            reference: self.reference,
            refusal,
        });
    }
}

//! The send side of one link: the queue its writer task drains ([`FrameQueue`]), and a reply
//! owed to a remote caller ([`RemoteReply`]: that queue plus the call's reference). Everything
//! that sends to a peer — calls, casts, control frames, replies — encodes one frame and pushes it
//! here; the link driver coalesces what is queued into one write.
//!
//! The queue is unbounded, as Erlang's distribution buffers are: a sender never waits on it.
//! Cost: one encode into a fresh buffer and one channel push per frame.

use std::sync::Arc;

use gen_cluster_proto::wire::{self, CallRefusal, Header, WireError};
use gen_cluster_proto::{ExitReason, NodeName};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::dist::outbox::Lane;

/// What the writer task is given to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An encoded frame, length prefix included, and the frames it keeps its order with.
    Frame(Vec<u8>, Lane),
    /// Say goodbye with this reason, then close.
    Goodbye(ExitReason),
}

/// The queue of frames to one peer. Cheap to clone: clones share the queue.
#[derive(Clone, Debug)]
pub(crate) struct FrameQueue(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    out: mpsc::UnboundedSender<Outgoing>,
    max_frame: usize,
    peer: NodeName,
}

impl FrameQueue {
    /// A queue to `peer`, whose frames are at most `max_frame` bytes; and its receiving end, for
    /// the link's writer.
    pub(crate) fn new(
        peer: NodeName,
        max_frame: usize,
    ) -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (out, queue) = mpsc::unbounded_channel();
        let shared = Shared {
            out,
            max_frame,
            peer,
        };
        (Self(Arc::new(shared)), queue)
    }

    /// The largest frame this link sends.
    pub(crate) fn max_frame(&self) -> usize {
        self.0.max_frame
    }

    /// Queues an encoded frame of lane `lane`; false if the link has closed.
    pub(crate) fn push(&self, frame: Vec<u8>, lane: Lane) -> bool {
        self.0.out.send(Outgoing::Frame(frame, lane)).is_ok()
    }

    /// Encodes `header` with `payload` and queues it.
    pub(crate) fn send<P: Serialize>(
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
        if let Err(error) = self.queue.send(&Header::Reply { reference }, value) {
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

//! What a mailbox carries ([`Signal`]), a message body that is either a moved value or still
//! encoded ([`Payload`]), and where a call's reply goes ([`ReplyRoute`]): a local oneshot, or a
//! frame on the caller's link queue — the process layer never holds a connection.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use gen_cluster_proto::wire::CallRefusal;
use gen_cluster_proto::{ExitReason, NodeId, Pid};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::dist::queue::RemoteReply;
use crate::error::{CallError, DecodeError};
use crate::process::{Message, MonitorRef};

/// A message in a mailbox, as the runtime carries it.
pub(crate) enum Signal {
    /// A call; its reply goes back along `reply`.
    Call { request: Payload, reply: ReplyRoute },
    /// A one-way request.
    Cast(Payload),
    /// A plain message, and the node it came from: this node, or the authenticated peer whose
    /// link delivered it (the global-name service trusts nothing else about a sender).
    Info { payload: Payload, from: NodeId },
    /// A monitored process ended.
    Down {
        reference: MonitorRef,
        pid: Pid,
        reason: ExitReason,
    },
    /// A linked process ended.
    Exit { from: Pid, reason: ExitReason },
    /// This process lost a global name to an earlier registration.
    NameLost { name: String, winner: Pid },
    /// End now, with this reason.
    Stop(ExitReason),
}

impl Signal {
    /// Whether it is a message (a call, cast or send), which takes a place in a bounded
    /// mailbox; the others (notices about processes, stop) never wait for one.
    pub(crate) fn is_message(&self) -> bool {
        matches!(
            self,
            Signal::Call { .. } | Signal::Cast(_) | Signal::Info { .. }
        )
    }
}

/// The sending side of a process's mailbox, counting what it puts in (the count the node's
/// metrics sample: one atomic add per signal, as the channel's own).
#[derive(Clone, Debug)]
pub(crate) struct MailboxSender {
    tx: mpsc::UnboundedSender<Signal>,
    waiting: Arc<AtomicUsize>,
}

impl MailboxSender {
    /// Puts `signal` in the mailbox; gives it back if the process has ended.
    pub(crate) fn send(&self, signal: Signal) -> Result<(), Signal> {
        // Counted first: the process may take it (and count it out) before `send` returns.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.tx.send(signal).map_err(|returned| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            returned.0
        })
    }

    /// How many signals wait in the mailbox.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A process's mailbox: where signals are put in ([`MailboxSender`]), and where the process takes
/// them ([`Inbox`]).
pub(crate) fn mailbox(room: Option<Arc<Semaphore>>) -> (MailboxSender, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let outbox = MailboxSender {
        tx,
        waiting: Arc::clone(&waiting),
    };
    (outbox, Inbox { rx, room, waiting })
}

/// The receiving side of a process's mailbox: signals in the order they came. A bounded
/// mailbox gives a place back for each message taken.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<Signal>,
    room: Option<Arc<Semaphore>>,
    /// Counted in by the [`MailboxSender`], out here.
    waiting: Arc<AtomicUsize>,
}

impl Inbox {
    /// Whether no signal waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The next signal; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Signal> {
        let signal = self.rx.recv().await?;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if signal.is_message()
            && let Some(room) = &self.room
        {
            room.add_permits(1);
        }
        Some(signal)
    }

    /// The next signal if one is there now (for tests).
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Signal> {
        futures::FutureExt::now_or_never(self.recv()).flatten()
    }

    /// The process has ended (its slot is gone, so nothing more arrives): refuses, with
    /// `noproc`, the calls still waiting, so that their callers learn at once.
    pub(crate) fn refuse_left_calls(&mut self) {
        self.rx.close();
        while let Ok(signal) = self.rx.try_recv() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if let Signal::Call { reply, .. } = signal {
                reply.refuse(CallRefusal::NoProc);
            }
        }
    }
}

/// A message body: moved as a value on the local path, still encoded when it came from a peer.
pub(crate) enum Payload {
    Local(Box<dyn Any + Send>),
    Encoded(Bytes),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Local(_) => f.write_str("Payload::Local(..)"),
            Payload::Encoded(bytes) => write!(f, "Payload::Encoded({} bytes)", bytes.len()),
        }
    }
}

impl Payload {
    /// The body as the receiver's type.
    pub(crate) fn decode<T: Message>(self) -> Result<T, DecodeError> {
        match self {
            Payload::Local(value) => {
                value
                    .downcast::<T>()
                    .map(|boxed| *boxed)
                    .map_err(|_| DecodeError::WrongType {
                        expected: std::any::type_name::<T>(),
                    })
            }
            Payload::Encoded(bytes) => {
                let (value, rest) =
                    postcard::take_from_bytes(&bytes).map_err(DecodeError::Malformed)?;
                match rest.len() {
                    0 => Ok(value),
                    left => Err(DecodeError::TrailingBytes(left)),
                }
            }
        }
    }
}

/// Where a call's reply goes.
pub(crate) enum ReplyRoute {
    /// A caller on this node.
    Local(oneshot::Sender<Result<Payload, CallError>>),
    /// A caller on a peer: a Reply frame on that peer's link.
    Remote(RemoteReply),
}

impl ReplyRoute {
    /// Tells the caller that no reply will come, and why.
    pub(crate) fn refuse(self, refusal: CallRefusal) {
        match self {
            ReplyRoute::Local(tx) => {
                let _ = tx.send(Err(CallError::from(refusal)));
            }
            ReplyRoute::Remote(remote) => remote.refuse(refusal),
        }
    }

    /// Sends the reply.
    pub(crate) fn reply<R: Message>(self, value: R) {
        match self {
            ReplyRoute::Local(tx) => {
                let _ = tx.send(Ok(Payload::Local(Box::new(value))));
            }
            ReplyRoute::Remote(remote) => remote.reply(&value),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn a_message_from_a_peer_with_bytes_left_over_is_refused() {
        let mut bytes = postcard::to_stdvec(&(5u32, "a".to_string())).unwrap();
        let exact = Payload::Encoded(Bytes::from(bytes.clone())).decode::<(u32, String)>();
        assert_eq!(exact, Ok((5, "a".to_string())));
        // A newer version of the type, with a field added at the end.
        bytes.extend(postcard::to_stdvec(&vec!["b".to_string()]).unwrap());
        let newer = Payload::Encoded(Bytes::from(bytes)).decode::<(u32, String)>();
        assert_eq!(newer, Err(DecodeError::TrailingBytes(3)));
    }
}

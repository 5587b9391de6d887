//! Processes: the gen_server behaviour ([`Server`]) and what a process is made of.
//!
//! A process is a task with an unbounded mailbox of [`signal`]s, one slot in the node's
//! [`table`] (its pid and local name), and a list of who watches it in [`watch`] (monitors and
//! links, local and remote). [`run`] drives one process: `init`, one message at a time, then
//! `terminate`; [`handle`] has the typed handles that reach a process ([`ServerRef`],
//! [`ReplyTo`], [`Mailbox`]).
//!
//! Local senders move their message into the mailbox as a boxed value (no serialization);
//! messages from peers arrive still encoded and are decoded by the process itself, against its
//! own message types. A handler that panics or returns `Stop` ends its process with a reason;
//! monitors and links then fire; the node lives on.
//!
//! Below this folder: the clock, the errors and the frame queues of the distribution layer (a
//! remote reply is a frame pushed on the caller's queue). Nothing here names the node façade.

use std::future::Future;
use std::num::NonZeroUsize;

use gen_cluster_proto::{ExitReason, Pid};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod handle;
mod run;
pub(crate) mod signal;
pub(crate) mod table;
pub(crate) mod watch;

pub(crate) use handle::Target;
pub use handle::{Mailbox, ReplyTo, ServerRef};
pub use run::Context;
pub(crate) use run::{spawn, spawn_mailbox};

/// A type that can be sent between processes: serializable for the remote path, `Send` and
/// `'static` for the local one. Implemented for every such type.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// What a handler tells the runtime to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Wait for the next message.
    Continue,
    /// End the process with this reason (after `terminate`).
    Stop(ExitReason),
}

/// The gen_server behaviour: a process's state and its handlers. Handlers are async, so they may
/// call other processes; a process handles one message at a time.
///
/// Implement the methods with `async fn`. Every handler but `handle_call` has a default.
pub trait Server: Sized + Send + 'static {
    /// Requests of [`Node::call`](crate::Node::call).
    type Call: Message;
    /// Replies to them.
    type Reply: Message;
    /// Messages of [`Node::cast`](crate::Node::cast).
    type Cast: Message;
    /// Messages of [`Node::send`](crate::Node::send), delivered to `handle_info` with monitor and exit notices.
    type Info: Message;

    /// How many messages (calls, casts, sends) may wait in this process's mailbox. A sender
    /// that finds it full waits for a place (`call`, `cast`, `send`) or is told it is busy
    /// (`try_cast`, `try_send`); a message from a peer waits in its link, which stops reading
    /// meanwhile, so the peer's senders are slowed by TCP flow control. Notices (monitors,
    /// exits) never wait. `None` (the default): unbounded, as an Erlang mailbox.
    fn mailbox_capacity(&self) -> Option<NonZeroUsize> {
        None
    }

    /// Runs in the new process before any message; an error ends it and fails its start.
    fn init(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), ExitReason>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles a request. Reply now with `from.reply(value)`, or keep `from` and reply later from
    /// any task. Dropping `from` unreplied fails the caller at once with
    /// [`CallError::NoReply`](crate::CallError::NoReply).
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Flow> + Send;

    /// Handles a one-way request.
    fn handle_cast(
        &mut self,
        message: Self::Cast,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (message, ctx);
        async { Flow::Continue }
    }

    /// Handles a plain message, a monitor's DOWN, or (when trapping exits) a linked process's exit.
    fn handle_info(
        &mut self,
        info: Info<Self::Info>,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (info, ctx);
        async { Flow::Continue }
    }

    /// Runs each time the mailbox is found empty after a message was handled: work that gains
    /// from being done once for many messages (sending what several of them produced in one
    /// message, say) can wait for it. A process that is never idle is never told, so what waits
    /// for it needs a bound of its own.
    fn handle_drained(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = Flow> + Send {
        let _ = ctx;
        async { Flow::Continue }
    }

    /// Runs once when the process ends for any reason but a panic in `terminate` itself.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// A message for `handle_info`, or a notice about another process.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Info<M> {
    /// A message sent with [`Node::send`](crate::Node::send).
    Message(M),
    /// A monitored process ended.
    Down {
        /// The monitor, as returned by [`Context::monitor`].
        reference: MonitorRef,
        /// The process that ended.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A linked process ended (delivered only while trapping exits).
    Exit {
        /// The process that ended.
        from: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// This process held the global `name`, and an earlier registration by another process won
    /// it when the two met (after a partition healed). The name is no longer this process's.
    NameLost {
        /// The name.
        name: String,
        /// Its holder now.
        winner: Pid,
    },
}

/// Names one monitor, so its DOWN can be told apart and it can be removed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MonitorRef(pub(crate) u64);

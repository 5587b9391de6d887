//! The typed handles that reach a process: [`ServerRef`] (where to send), [`ReplyTo`] (where a
//! call's reply goes), and [`Mailbox`] (a pid without a behaviour, for code that is not a server).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use gen_cluster_proto::wire::CallRefusal;
use gen_cluster_proto::{ExitReason, NodeId, NodeName, Pid};

use crate::kernel::Node;
use crate::process::signal::{Inbox, ReplyRoute, Signal};
use crate::process::{Info, Message, MonitorRef};

/// The handle a call's reply goes through. Reply once with [`reply`](Self::reply), from any
/// task; dropping it unreplied tells the caller at once
/// ([`CallError::NoReply`](crate::CallError::NoReply)).
#[must_use = "dropping a ReplyTo fails the call; reply with it or keep it to reply later"]
pub struct ReplyTo<R> {
    route: Option<ReplyRoute>,
    _reply: PhantomData<fn(R)>,
}

impl<R: Message> ReplyTo<R> {
    pub(crate) fn new(route: ReplyRoute) -> Self {
        Self {
            route: Some(route),
            _reply: PhantomData,
        }
    }

    /// Sends the reply. If the caller has gone (timed out, or its node is down), the reply is
    /// dropped.
    pub fn reply(mut self, value: R) {
        if let Some(route) = self.route.take() {
            route.reply(value);
        }
    }
}

impl<R> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            route.refuse(CallRefusal::NoReply);
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// Where a [`ServerRef`] points.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    Pid(Pid),
    Named { node: NodeId, name: Arc<str> },
}

/// A typed address of a server: its pid, or its registered name on a node. Cheap to clone; the
/// same on every node.
pub struct ServerRef<S> {
    pub(crate) target: Target,
    _server: PhantomData<fn() -> S>,
}

impl<S> ServerRef<S> {
    /// The server with this pid. The type is the caller's promise; a wrong one gives
    /// [`CallError::BadRequest`](crate::CallError::BadRequest) or
    /// [`CallError::BadReply`](crate::CallError::BadReply).
    pub fn from_pid(pid: Pid) -> Self {
        Self::to(Target::Pid(pid))
    }

    /// The server registered as `name` on the node `node`.
    pub fn named(node: &NodeName, name: &str) -> Self {
        Self::to(Target::Named {
            node: node.id(),
            name: name.into(),
        })
    }

    /// The pid, if this reference was made from one.
    pub fn pid(&self) -> Option<Pid> {
        match self.target {
            Target::Pid(pid) => Some(pid),
            Target::Named { .. } => None,
        }
    }

    pub(crate) fn to(target: Target) -> Self {
        Self {
            target,
            _server: PhantomData,
        }
    }
}

impl<S> Clone for ServerRef<S> {
    fn clone(&self) -> Self {
        Self::to(self.target.clone())
    }
}

impl<S> fmt::Debug for ServerRef<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Pid(pid) => write!(f, "ServerRef({pid})"),
            Target::Named { node, name } => write!(f, "ServerRef({name}@{node})"),
        }
    }
}

/// A mailbox without a behaviour: a pid that can receive messages and notices, for code that is
/// not a server (a test, a CLI command, a bridge to other async code). Dropping it ends the
/// process with reason `normal`.
pub struct Mailbox<M = ()> {
    node: Node,
    pid: Pid,
    inbox: Inbox,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Mailbox<M> {
    pub(crate) fn new(node: Node, pid: Pid, inbox: Inbox) -> Self {
        Self {
            node,
            pid,
            inbox,
            _message: PhantomData,
        }
    }

    /// This mailbox's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Watches `target`; see [`Context::monitor`](crate::Context::monitor).
    pub fn monitor(&self, target: Pid) -> MonitorRef {
        self.node.0.watchers.monitor(self.pid, target)
    }

    /// Links to `other`. A mailbox always traps exits: they arrive as [`Info::Exit`].
    pub fn link(&self, other: Pid) {
        self.node.0.watchers.link(self.pid, other)
    }

    /// The next message or notice; `None` once the node has shut down. Calls to a mailbox are
    /// refused, and messages it cannot decode as `M` are logged and skipped.
    pub async fn recv(&mut self) -> Option<Info<M>> {
        loop {
            match self.inbox.recv().await? {
                Signal::Info { payload, .. } => match payload.decode::<M>() {
                    Ok(message) => return Some(Info::Message(message)),
                    Err(error) => {
                        tracing::warn!(pid = %self.pid, %error, "mailbox skipped an undecodable message")
                    }
                },
                Signal::Down {
                    reference,
                    pid,
                    reason,
                } => {
                    return Some(Info::Down {
                        reference,
                        pid,
                        reason,
                    });
                }
                Signal::Exit { from, reason } => return Some(Info::Exit { from, reason }),
                Signal::NameLost { name, winner } => return Some(Info::NameLost { name, winner }),
                Signal::Call { reply, .. } => reply.refuse(CallRefusal::NoReply),
                Signal::Cast(_) => {}
                Signal::Stop(_) => return None,
            }
        }
    }
}

impl<M> Drop for Mailbox<M> {
    fn drop(&mut self) {
        self.node
            .0
            .watchers
            .process_ended(self.pid, ExitReason::Normal);
    }
}

//! Processes: the gen_server behaviour ([`Server`]), its runtime loop, and the handles that reach
//! a process ([`ServerRef`], [`ReplyTo`], [`Mailbox`]).
//!
//! A process is a tokio task that owns its state and an unbounded mailbox of signals. Local
//! senders move their message into the mailbox as a boxed value (no serialization); messages
//! from peers arrive still encoded and are decoded by the process itself,
//! against its own message types. A handler that panics or returns `Stop` ends its process with
//! a reason; monitors and links then fire (see [`crate::node`]); the node lives on.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use gen_cluster_proto::wire::{CallRefusal, Header};
use gen_cluster_proto::{ExitReason, NodeId, NodeName, Pid};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::error::CallError;
use crate::node::{Node, PeerLink};

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
    /// Requests of [`Node::call`].
    type Call: Message;
    /// Replies to them.
    type Reply: Message;
    /// Messages of [`Node::cast`].
    type Cast: Message;
    /// Messages of [`Node::send`], delivered to `handle_info` with monitor and exit notices.
    type Info: Message;

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
    /// [`CallError::NoReply`].
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
    /// A message sent with [`Node::send`].
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

/// A message in a mailbox, as the runtime carries it.
pub(crate) enum Signal {
    Call {
        request: Payload,
        reply: ReplyRoute,
    },
    Cast(Payload),
    Info(Payload),
    Down {
        reference: MonitorRef,
        pid: Pid,
        reason: ExitReason,
    },
    Exit {
        from: Pid,
        reason: ExitReason,
    },
    NameLost {
        name: String,
        winner: Pid,
    },
    Stop(ExitReason),
}

/// A message body: moved as a value on the local path, still encoded when it came from a peer.
pub(crate) enum Payload {
    Local(Box<dyn Any + Send>),
    Remote(Bytes),
}

impl Payload {
    pub(crate) fn decode<T: Message>(self) -> Result<T, String> {
        match self {
            Payload::Local(value) => value
                .downcast::<T>()
                .map(|boxed| *boxed)
                .map_err(|_| format!("expected a message of type {}", std::any::type_name::<T>())),
            Payload::Remote(bytes) => postcard::from_bytes(&bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Where a reply goes.
pub(crate) enum ReplyRoute {
    Local(oneshot::Sender<Result<Payload, CallError>>),
    Remote { link: Arc<PeerLink>, reference: u64 },
}

impl ReplyRoute {
    pub(crate) fn refuse(self, refusal: CallRefusal) {
        match self {
            ReplyRoute::Local(tx) => {
                let _ = tx.send(Err(crate::node::call_error_of(refusal)));
            }
            ReplyRoute::Remote { link, reference } => {
                link.send_header(&Header::ReplyRefused { reference, refusal });
            }
        }
    }
}

/// The handle a call's reply goes through. Reply once with [`reply`](Self::reply), from any
/// task; dropping it unreplied tells the caller at once ([`CallError::NoReply`]).
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
        match self.route.take() {
            Some(ReplyRoute::Local(tx)) => {
                let _ = tx.send(Ok(Payload::Local(Box::new(value))));
            }
            Some(ReplyRoute::Remote { link, reference }) => link.send_reply(reference, &value),
            None => {}
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
    /// [`CallError::BadRequest`] or [`CallError::BadReply`].
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

/// What a handler can do besides replying: learn its own pid, monitor and link to others,
/// trap exits, reach the node.
pub struct Context<S> {
    node: Node,
    pid: Pid,
    trap_exits: bool,
    _server: PhantomData<fn() -> S>,
}

impl<S: Server> Context<S> {
    /// This process's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// A typed reference to this process.
    pub fn this(&self) -> ServerRef<S> {
        ServerRef::from_pid(self.pid)
    }

    /// The node this process runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Watches `target`: when it ends (or if it does not exist, or its node is lost) this process
    /// gets [`Info::Down`] with the returned reference.
    pub fn monitor(&self, target: Pid) -> MonitorRef {
        self.node.monitor_from(self.pid, target)
    }

    /// Stops watching; a DOWN already in the mailbox may still arrive.
    pub fn demonitor(&self, reference: MonitorRef, target: Pid) {
        self.node.demonitor_from(reference, target)
    }

    /// Links this process to `other`: when either ends abnormally, the other ends with the same
    /// reason, unless it traps exits.
    pub fn link(&self, other: Pid) {
        self.node.link(self.pid, other)
    }

    /// Removes a link.
    pub fn unlink(&self, other: Pid) {
        self.node.unlink(self.pid, other)
    }

    /// With `true`, a linked process's exit arrives as [`Info::Exit`] instead of ending this one.
    pub fn trap_exits(&mut self, trap: bool) {
        self.trap_exits = trap;
    }
}

/// A mailbox without a behaviour: a pid that can receive messages and notices, for code that is
/// not a server (a test, a CLI command, a bridge to other async code). Dropping it ends the
/// process with reason `normal`.
pub struct Mailbox<M = ()> {
    node: Node,
    pid: Pid,
    rx: mpsc::UnboundedReceiver<Signal>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Mailbox<M> {
    pub(crate) fn new(node: Node, pid: Pid, rx: mpsc::UnboundedReceiver<Signal>) -> Self {
        Self {
            node,
            pid,
            rx,
            _message: PhantomData,
        }
    }

    /// This mailbox's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Watches `target`; see [`Context::monitor`].
    pub fn monitor(&self, target: Pid) -> MonitorRef {
        self.node.monitor_from(self.pid, target)
    }

    /// Links to `other`. A mailbox always traps exits: they arrive as [`Info::Exit`].
    pub fn link(&self, other: Pid) {
        self.node.link(self.pid, other)
    }

    /// The next message or notice; `None` once the node has shut down. Calls to a mailbox are
    /// refused, and messages it cannot decode as `M` are logged and skipped.
    pub async fn recv(&mut self) -> Option<Info<M>> {
        loop {
            match self.rx.recv().await? {
                Signal::Info(payload) => match payload.decode::<M>() {
                    Ok(message) => return Some(Info::Message(message)),
                    Err(why) => {
                        tracing::warn!(pid = %self.pid, %why, "mailbox skipped an undecodable message")
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
        self.node.process_exited(self.pid, ExitReason::Normal);
    }
}

/// Runs a started process to its end: `init`, then one message at a time, then `terminate`, then
/// the node's exit handling. `started` learns how `init` went.
pub(crate) async fn run<S: Server>(
    mut server: S,
    node: Node,
    pid: Pid,
    mut rx: mpsc::UnboundedReceiver<Signal>,
    started: oneshot::Sender<Result<(), ExitReason>>,
) {
    let mut ctx = Context {
        node: node.clone(),
        pid,
        trap_exits: false,
        _server: PhantomData,
    };
    let reason = match guarded(server.init(&mut ctx)).await {
        Ok(Ok(())) => {
            let _ = started.send(Ok(()));
            serve(&mut server, &mut ctx, &mut rx).await
        }
        Ok(Err(reason)) | Err(reason) => {
            let _ = started.send(Err(reason.clone()));
            reason
        }
    };
    if let Err(panic) = guarded(server.terminate(&reason, &mut ctx)).await {
        tracing::error!(%pid, %panic, "terminate panicked");
    }
    if !reason.is_normal() {
        tracing::warn!(%pid, %reason, "process ended abnormally");
    }
    node.process_exited(pid, reason);
}

async fn serve<S: Server>(
    server: &mut S,
    ctx: &mut Context<S>,
    rx: &mut mpsc::UnboundedReceiver<Signal>,
) -> ExitReason {
    while let Some(signal) = rx.recv().await {
        let outcome = match signal {
            Signal::Call { request, reply } => match request.decode::<S::Call>() {
                Ok(request) => guarded(server.handle_call(request, ReplyTo::new(reply), ctx)).await,
                Err(why) => {
                    reply.refuse(CallRefusal::BadRequest(why));
                    Ok(Flow::Continue)
                }
            },
            Signal::Cast(payload) => match payload.decode::<S::Cast>() {
                Ok(message) => guarded(server.handle_cast(message, ctx)).await,
                Err(why) => {
                    tracing::warn!(pid = %ctx.pid, %why, "dropped an undecodable cast");
                    Ok(Flow::Continue)
                }
            },
            Signal::Info(payload) => match payload.decode::<S::Info>() {
                Ok(message) => guarded(server.handle_info(Info::Message(message), ctx)).await,
                Err(why) => {
                    tracing::warn!(pid = %ctx.pid, %why, "dropped an undecodable message");
                    Ok(Flow::Continue)
                }
            },
            Signal::Down {
                reference,
                pid,
                reason,
            } => {
                guarded(server.handle_info(
                    Info::Down {
                        reference,
                        pid,
                        reason,
                    },
                    ctx,
                ))
                .await
            }
            Signal::Exit { from, reason } if ctx.trap_exits => {
                guarded(server.handle_info(Info::Exit { from, reason }, ctx)).await
            }
            Signal::NameLost { name, winner } => {
                guarded(server.handle_info(Info::NameLost { name, winner }, ctx)).await
            }
            Signal::Exit { reason, .. } if reason.is_normal() => Ok(Flow::Continue),
            Signal::Exit { reason, .. } | Signal::Stop(reason) => return reason,
        };
        match outcome {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop(reason)) | Err(reason) => return reason,
        }
    }
    ExitReason::Shutdown
}

/// Runs a handler, turning a panic into an exit reason.
async fn guarded<T>(handler: impl Future<Output = T>) -> Result<T, ExitReason> {
    AssertUnwindSafe(handler)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            ExitReason::Error(format!("panicked: {why}"))
        })
}

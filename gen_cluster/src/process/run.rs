//! Runs one process: [`spawn`] takes a slot in the process table and starts a task (inside a
//! `proc{pid}` span, on the node's process tracker) that calls `init`, handles one signal at a
//! time, calls `terminate`, and finally tells the watchers the process ended. [`Context`] is what
//! a handler can do besides replying.

use std::future::Future;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use gen_cluster_proto::wire::CallRefusal;
use gen_cluster_proto::{ExitReason, Pid};
use tokio::sync::oneshot;

use crate::error::StartError;
use crate::kernel::Node;
use crate::process::handle::{Mailbox, ReplyTo, ServerRef};
use crate::process::signal::{Inbox, Signal};
use crate::process::{Flow, Info, Message, MonitorRef, Server};

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
        self.node.0.watchers.monitor(self.pid, target)
    }

    /// Stops watching; a DOWN already in the mailbox may still arrive.
    pub fn demonitor(&self, reference: MonitorRef, target: Pid) {
        self.node.0.watchers.demonitor(reference, target)
    }

    /// Links this process to `other`: when either ends abnormally, the other ends with the same
    /// reason, unless it traps exits.
    pub fn link(&self, other: Pid) {
        self.node.0.watchers.link(self.pid, other)
    }

    /// Removes a link.
    pub fn unlink(&self, other: Pid) {
        self.node.0.watchers.unlink(self.pid, other)
    }

    /// With `true`, a linked process's exit arrives as [`Info::Exit`] instead of ending this one.
    pub fn trap_exits(&mut self, trap: bool) {
        self.trap_exits = trap;
    }
}

/// Starts a process running `server` on `node`, registered as `name` if given (before `init`
/// runs, so `init` may already be reached by name); returns once `init` has succeeded.
pub(crate) async fn spawn<S: Server>(
    node: &Node,
    name: Option<Arc<str>>,
    server: S,
) -> Result<ServerRef<S>, StartError> {
    let kernel = &node.0;
    let capacity = server.mailbox_capacity().map(NonZeroUsize::get);
    let (pid, inbox) = kernel.processes.register(name, capacity)?;
    let (started_tx, started_rx) = oneshot::channel();
    let span = tracing::info_span!("proc", %pid);
    kernel
        .tasks
        .spawn_process(span, run(server, node.clone(), pid, inbox, started_tx));
    match started_rx.await {
        Ok(Ok(())) => Ok(ServerRef::from_pid(pid)),
        Ok(Err(reason)) => Err(StartError::InitFailed(reason)),
        Err(_) => Err(StartError::ShuttingDown),
    }
}

/// A new mailbox on `node`, registered as `name` if given.
pub(crate) fn spawn_mailbox<M: Message>(
    node: &Node,
    name: Option<Arc<str>>,
) -> Result<Mailbox<M>, StartError> {
    let (pid, inbox) = node.0.processes.register(name, None)?;
    Ok(Mailbox::new(node.clone(), pid, inbox))
}

/// Runs a started process to its end: `init`, then one message at a time, then `terminate`, then
/// the exit fan-out. `started` learns how `init` went.
async fn run<S: Server>(
    mut server: S,
    node: Node,
    pid: Pid,
    mut inbox: Inbox,
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
            serve(&mut server, &mut ctx, &mut inbox).await
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
    node.0.watchers.process_ended(pid, reason);
    inbox.refuse_left_calls();
}

async fn serve<S: Server>(server: &mut S, ctx: &mut Context<S>, inbox: &mut Inbox) -> ExitReason {
    while let Some(signal) = inbox.recv().await {
        let outcome = match signal {
            Signal::Call { request, reply } => match request.decode::<S::Call>() {
                Ok(request) => guarded(server.handle_call(request, ReplyTo::new(reply), ctx)).await,
                Err(error) => {
                    reply.refuse(CallRefusal::BadRequest(error.to_string()));
                    Ok(Flow::Continue)
                }
            },
            Signal::Cast(payload) => match payload.decode::<S::Cast>() {
                Ok(message) => guarded(server.handle_cast(message, ctx)).await,
                Err(error) => {
                    tracing::warn!(pid = %ctx.pid, %error, "dropped an undecodable cast");
                    Ok(Flow::Continue)
                }
            },
            Signal::Info { payload, .. } => match payload.decode::<S::Info>() {
                Ok(message) => guarded(server.handle_info(Info::Message(message), ctx)).await,
                Err(error) => {
                    tracing::warn!(pid = %ctx.pid, %error, "dropped an undecodable message");
                    Ok(Flow::Continue)
                }
            },
            Signal::Down {
                reference,
                pid,
                reason,
            } => {
                let down = Info::Down {
                    reference,
                    pid,
                    reason,
                };
                guarded(server.handle_info(down, ctx)).await
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
        let outcome = match outcome {
            Ok(Flow::Continue) if inbox.is_empty() => guarded(server.handle_drained(ctx)).await,
            outcome => outcome,
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

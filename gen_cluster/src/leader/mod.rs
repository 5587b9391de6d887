//! The gen_leader behaviour: one leader among candidate nodes, workers that follow, calls routed
//! to the leader. Each node runs one *instance* per election name, a process registered as
//! `gen_leader:<name>` (see [`instance`]); the instances greet each other when their nodes
//! connect, and the `gen_cluster_proto::election` machine (one per instance) decides who leads.
//! [`Leader::start`] starts a node's instance from a `&Node`, as an application would, and
//! returns the handle the application uses.
//!
//! - A fresh leader calls `elected(id, None)` and sends the state it returns to every member,
//!   who call `surrendered`; a member that becomes alive later gets `elected(id, Some(node))`'s
//!   state alone.
//! - When two leaders meet (a partition healed) the lower one steps down: its
//!   `stepping_down` state goes to the winner's `merge`, so what both sides did survives.
//! - A [`Leader::leader_call`] from a node that runs an instance goes straight to the leader's
//!   instance, which the handle knows from the election its own instance follows; it waits while
//!   no leader is known, and fails with [`LeaderCallError::LeaderDied`] the moment the leader's
//!   node or instance is lost. A handle on another node's instance ([`Leader::at`]) asks that
//!   instance, which handles the call if it leads, forwards it to the leader otherwise, or holds
//!   it while no leader is known.
//! - The incarnation, which tells a restarted node from its earlier self, is kept in
//!   `data_dir` (one file per election name, see `incarnation`), or drawn at random without one.
//!
//! Callbacks are plain functions: they change the state and return at once, so that elections
//! and calls are never held up by one of them. Do slow work in tasks of your own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gen_cluster_proto::election::{Election, ElectionConfig};
use gen_cluster_proto::wire::WireError;
use gen_cluster_proto::{ExitReason, NodeName, Pid};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

pub use gen_cluster_proto::election::ElectionId;

use crate::clock;
use crate::error::{CallError, DecodeError, StartError};
use crate::process::{Message, ReplyTo, ServerRef};
use crate::view::KnownNode;
use crate::{Node, SendError};

mod incarnation;
mod instance;

use instance::{ForwardOutcome, Instance, InstanceCall, InstanceCast, InstanceInfo, InstanceReply};

/// The local name of an election's instance on every node.
pub fn instance_name(election: &str) -> String {
    format!("gen_leader:{election}")
}

/// What a leader callback tells the runtime to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LeaderFlow<B> {
    /// Nothing more.
    Continue,
    /// Send this to every other member's `from_leader`.
    Broadcast(B),
    /// End this node's instance.
    Stop(ExitReason),
}

/// The gen_leader behaviour. Every node of the election runs the same type.
pub trait LeaderServer: Sized + Send + 'static {
    /// The state the leader hands to its members, and a stepped-down leader to the winner.
    type State: Message + Clone;
    /// Requests of `leader_call`, handled on the leader.
    type Call: Message;
    /// Their replies.
    type Reply: Message;
    /// Requests of `leader_cast`, handled on the leader.
    type Cast: Message;
    /// What the leader sends to every other member.
    type Broadcast: Message + Clone;
    /// Requests of [`Leader::call`], handled on this node's instance.
    type LocalCall: Message;
    /// Their replies.
    type LocalReply: Message;
    /// One-way requests of [`Leader::cast`], handled on this node's instance.
    type LocalCast: Message;

    /// This node leads `election`: return the state for `joined`, or for every member on a
    /// fresh win (`joined` is `None`).
    fn elected(&mut self, election: &ElectionId, joined: Option<&NodeName>) -> Self::State;

    /// This node follows `election`'s leader, whose state this is.
    fn surrendered(&mut self, state: Self::State, election: &ElectionId);

    /// A `leader_call`, on the leader. Reply with `from.reply(..)`, now or later.
    fn handle_leader_call(
        &mut self,
        request: Self::Call,
        from: LeaderReplyTo<Self>,
        election: &ElectionId,
    ) -> LeaderFlow<Self::Broadcast>;

    /// A `leader_cast`, on the leader.
    fn handle_leader_cast(
        &mut self,
        request: Self::Cast,
        election: &ElectionId,
    ) -> LeaderFlow<Self::Broadcast> {
        let _ = (request, election);
        LeaderFlow::Continue
    }

    /// A broadcast of the leader, on every other member.
    #[allow(clippy::wrong_self_convention)] // gen_leader's name for it
    fn from_leader(&mut self, message: Self::Broadcast, election: &ElectionId) {
        let _ = (message, election);
    }

    /// On the leader: the member `node` was lost.
    fn handle_down(
        &mut self,
        node: &NodeName,
        election: &ElectionId,
    ) -> LeaderFlow<Self::Broadcast> {
        let _ = (node, election);
        LeaderFlow::Continue
    }

    /// This node led, and steps down in favour of `to` (a partition healed): return the state
    /// to hand over for `merge`.
    fn stepping_down(&mut self, to: &NodeName) -> Self::State;

    /// On the leader: `theirs` is the state of `from`, a leader that stepped down. Merge it; a
    /// broadcast returned reaches every member.
    fn merge(
        &mut self,
        theirs: Self::State,
        from: &NodeName,
        election: &ElectionId,
    ) -> LeaderFlow<Self::Broadcast>;

    /// A local request ([`Leader::call`]) to this node's instance.
    fn handle_call(&mut self, request: Self::LocalCall, status: &LeaderStatus) -> Self::LocalReply;

    /// A local one-way request ([`Leader::cast`]) to this node's instance.
    fn handle_cast(&mut self, request: Self::LocalCast, status: &LeaderStatus) {
        let _ = (request, status);
    }

    /// Runs once when the instance ends.
    fn terminate(&mut self, reason: &ExitReason) {
        let _ = reason;
    }
}

/// Where an election stands, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStatus {
    /// This node.
    pub node: NodeName,
    /// The leader followed (or this node), if any.
    pub leader: Option<NodeName>,
    /// The election followed, if any.
    pub election: Option<ElectionId>,
    /// The candidates, highest priority first.
    pub candidates: Vec<NodeName>,
    /// The workers known.
    pub workers: Vec<NodeName>,
    /// The nodes taking part (this one included).
    pub alive: Vec<NodeName>,
    /// Candidates and workers known but not taking part now (see `nodes` for why: a node may
    /// be live but not connected to this one).
    pub absent: Vec<NodeName>,
    /// Every node of the cluster this node knows of, with its state in the cluster view. Filled
    /// in the answer to [`Leader::status`]; empty in the status the callbacks are given (they
    /// can read `node.view()`), which is built for every local call.
    pub nodes: Vec<KnownNode>,
    /// Connected nodes refused for a candidate list that conflicts with this node's.
    pub refused: Vec<NodeName>,
}

/// How an election runs on this node.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The election's name, the same on every node.
    pub name: String,
    /// The candidates, highest priority first; the same list on every node. A node not in it
    /// is a worker. A candidate added later goes at the end of the list; a node whose list
    /// conflicts with this one (not the same, nor one extending the other) is refused.
    pub candidates: Vec<NodeName>,
    /// Workers known in advance; others may join at any time.
    pub workers: Vec<NodeName>,
    /// What happens when a higher-priority candidate comes back (default: the leader stays).
    pub failback: Failback,
    /// How long a node just started waits to meet a leader before leading itself, unless every
    /// candidate is there sooner. Default 1 s.
    pub start_grace: Duration,
    /// Where the incarnation is kept (`gen_leader.<name>.incarnation`); `None`: a random one.
    pub data_dir: Option<PathBuf>,
}

impl LeaderConfig {
    /// An election `name` among `candidates` (highest priority first), no data directory.
    pub fn new(name: impl Into<String>, candidates: Vec<NodeName>) -> Self {
        Self {
            name: name.into(),
            candidates,
            workers: Vec::new(),
            failback: Failback::Never,
            start_grace: Duration::from_secs(1),
            data_dir: None,
        }
    }
}

/// Whether a higher-priority candidate that comes back takes the lead from a live leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failback {
    /// The live leader stays: a returning candidate follows it (gen_leader's default, and the
    /// fewest elections).
    #[default]
    Never,
    /// The highest-priority live candidate always leads: a returning one takes over.
    Always,
}

/// A leader call failed. Only [`LeaderDied`](Self::LeaderDied) is worth calling again for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderCallError {
    /// No leader answered in time (none was elected, or it was slow).
    #[error("no answer from a leader within {0:?}")]
    Timeout(Duration),
    /// The leader's node or instance was lost while the call was in flight: it may or may not
    /// have been handled. Call again to reach the next leader.
    #[error("the leader was lost during the call; it may or may not have been handled")]
    LeaderDied,
    /// The instance this handle asks is not running, or its node is not connected.
    #[error("the election's instance is not running or not reachable")]
    NotRunning,
    /// Too many leader calls already wait on this node's instance (for a leader, or for its
    /// answer): try again later.
    #[error("too many leader calls are waiting on this node")]
    Overloaded,
    /// The request could not be encoded, or is larger than the frame limit (the caller's input).
    #[error(transparent)]
    Encode(#[from] WireError),
    /// The leader could not decode the request: the nodes run different versions of the
    /// behaviour.
    #[error("the leader could not decode the request: {0}")]
    BadRequest(String),
    /// The reply could not be decoded: the nodes run different versions of the behaviour.
    #[error("cannot decode the leader's reply: {0}")]
    BadReply(DecodeError),
}

impl LeaderCallError {
    /// What a failed call to the leader's own instance means: a lost leader, or a request that
    /// no leader could take.
    fn from_leader(error: CallError, timeout: Duration) -> Self {
        match error {
            CallError::Timeout(_) => Self::Timeout(timeout),
            CallError::NoProc | CallError::NodeDown | CallError::NoReply => Self::LeaderDied,
            CallError::BadRequest(why) => Self::BadRequest(why),
            CallError::BadReply(error) => Self::BadReply(error),
            CallError::Encode(error) => Self::Encode(error),
        }
    }

    /// What a failed cast means.
    fn from_send(error: SendError) -> Self {
        match error {
            SendError::Encode(error) => Self::Encode(error),
            _ => Self::NotRunning,
        }
    }

    /// What a failed call to the instance a handle asks (not the leader's) means.
    fn from_instance(error: CallError, timeout: Duration) -> Self {
        match error {
            CallError::Timeout(_) => Self::Timeout(timeout),
            CallError::NoProc | CallError::NodeDown => Self::NotRunning,
            // The instance had the call (it led, or held it) and ended or dropped it.
            CallError::NoReply => Self::LeaderDied,
            CallError::BadRequest(why) => Self::BadRequest(why),
            CallError::BadReply(error) => Self::BadReply(error),
            CallError::Encode(error) => Self::Encode(error),
        }
    }
}

/// The reply handle of a leader call: reply once, now or later; dropping it unreplied tells the
/// caller at once.
#[must_use = "dropping a LeaderReplyTo fails the call; reply with it or keep it to reply later"]
pub struct LeaderReplyTo<B: LeaderServer> {
    route: Option<LeaderRoute<B>>,
}

/// Where a leader call's reply goes.
enum LeaderRoute<B: LeaderServer> {
    /// To the caller, which called this instance itself.
    Direct(ReplyTo<InstanceReply<B>>),
    /// To the instance that forwarded the call for its caller.
    Forwarded {
        node: Node,
        instance: Pid,
        reference: u64,
    },
}

impl<B: LeaderServer> LeaderReplyTo<B> {
    fn direct(reply: ReplyTo<InstanceReply<B>>) -> Self {
        Self {
            route: Some(LeaderRoute::Direct(reply)),
        }
    }

    fn forwarded(node: Node, instance: Pid, reference: u64) -> Self {
        Self {
            route: Some(LeaderRoute::Forwarded {
                node,
                instance,
                reference,
            }),
        }
    }

    /// Sends the reply (dropped if the caller has gone).
    pub fn reply(mut self, value: B::Reply) {
        match self.route.take() {
            Some(LeaderRoute::Direct(reply)) => reply.reply(InstanceReply::Leader(value)),
            Some(LeaderRoute::Forwarded {
                node,
                instance,
                reference,
            }) => forward_outcome::<B>(&node, instance, reference, ForwardOutcome::Replied(value)),
            None => {}
        }
    }
}

impl<B: LeaderServer> Drop for LeaderReplyTo<B> {
    fn drop(&mut self) {
        if let Some(LeaderRoute::Forwarded {
            node,
            instance,
            reference,
        }) = self.route.take()
        {
            forward_outcome::<B>(&node, instance, reference, ForwardOutcome::NoReply);
        }
    }
}

/// Tells the instance that forwarded the call `reference` how it ended. The reply is given
/// from a callback that cannot wait, so a task sends it once there is room.
fn forward_outcome<B: LeaderServer>(
    node: &Node,
    instance: Pid,
    reference: u64,
    outcome: ForwardOutcome<B>,
) {
    let info = InstanceInfo::<B>::Forwarded { reference, outcome };
    let to = ServerRef::<Instance<B>>::from_pid(instance);
    let sender = node.clone();
    node.spawn_task(tracing::Span::current(), async move {
        tokio::select! {
            _ = sender.send(&to, info) => {}
            () = sender.shutting_down() => {}
        }
    });
}

/// A handle on an instance of an election.
pub struct Leader<B: LeaderServer> {
    node: Node,
    /// The instance's local name, the same on every node.
    instance_name: Arc<str>,
    instance: ServerRef<Instance<B>>,
    /// The election followed, as this node's instance updates it (local handles only).
    changes: Option<watch::Receiver<Option<ElectionId>>>,
}

impl<B: LeaderServer> Clone for Leader<B> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            instance_name: Arc::clone(&self.instance_name),
            instance: self.instance.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// The first pause between two tries of [`Leader::leader_call_retried`], doubled each time up to
/// [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

impl<B: LeaderServer> Leader<B> {
    /// Starts `node`'s instance of the election `config.name`, running `behaviour`, and returns
    /// the handle on it.
    pub async fn start(
        node: &Node,
        config: LeaderConfig,
        behaviour: B,
    ) -> Result<Self, StartError> {
        let incarnation = match &config.data_dir {
            Some(dir) => incarnation::next(dir, &config.name)?,
            None => clock::seed() >> 1,
        };
        let machine = Election::new(
            node.name().clone(),
            incarnation,
            ElectionConfig {
                candidates: config.candidates.clone(),
                workers: config.workers.clone(),
                failback: config.failback == Failback::Always,
                start_grace: config.start_grace,
            },
            clock::now(),
        );
        let name = instance_name(&config.name);
        let (instance, wiring) = Instance::new(behaviour, machine, &name);
        let changes = wiring.changes.clone();
        let server = node.spawn_named(&name, instance).await?;
        instance::drive_from_node(node, &config.name, server.clone(), wiring);
        Ok(Self {
            node: node.clone(),
            instance_name: name.into(),
            instance: server,
            changes: Some(changes),
        })
    }

    /// A handle, used from `node`, on the instance of `election` that runs on the node `host`
    /// (`node` itself or a peer it is connected to, such as a client's). Its leader calls go
    /// through that instance.
    pub fn at(node: &Node, host: &NodeName, election: &str) -> Self {
        let name = instance_name(election);
        Self {
            node: node.clone(),
            instance: ServerRef::named(host, &name),
            instance_name: name.into(),
            changes: None,
        }
    }

    /// The election this node follows (its own if it leads), updated on every change: wait
    /// with `changed()`. `None` for a handle made with [`at`](Self::at).
    pub fn leader_changes(&self) -> Option<watch::Receiver<Option<ElectionId>>> {
        self.changes.clone()
    }

    /// Calls the leader: waits while no leader is known, and fails at once with
    /// [`LeaderCallError::LeaderDied`] if the leader is lost during the call. `timeout` bounds
    /// the whole wait.
    pub async fn leader_call(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError> {
        match &self.changes {
            Some(changes) => self.call_leader(changes.clone(), request, timeout).await,
            None => self.call_through_instance(request, timeout).await,
        }
    }

    /// The call of a handle on this node's own instance: straight to the leader's instance.
    async fn call_leader(
        &self,
        mut changes: watch::Receiver<Option<ElectionId>>,
        mut request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError> {
        let deadline = Instant::now() + timeout;
        loop {
            let election =
                match tokio::time::timeout_at(deadline, changes.wait_for(Option::is_some)).await {
                    Ok(Ok(followed)) => followed.clone(),
                    Ok(Err(_)) => return Err(LeaderCallError::NotRunning),
                    Err(_) => return Err(LeaderCallError::Timeout(timeout)),
                };
            let Some(election) = election else { continue };
            let leader = ServerRef::<Instance<B>>::named(&election.leader, &self.instance_name);
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .node
                .call(&leader, InstanceCall::Leader(request), left)
                .await
            {
                Ok(InstanceReply::Leader(reply)) => return Ok(reply),
                Ok(InstanceReply::NotLeader(returned)) => {
                    // Its instance no longer leads: wait until this node follows another election.
                    request = returned;
                    let moved_on =
                        changes.wait_for(|followed| followed.as_ref() != Some(&election));
                    match tokio::time::timeout_at(deadline, moved_on).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return Err(LeaderCallError::NotRunning),
                        Err(_) => return Err(LeaderCallError::Timeout(timeout)),
                    }
                }
                Ok(_) => return Err(wrong_reply::<B::Reply>()),
                Err(error) => return Err(LeaderCallError::from_leader(error, timeout)),
            }
        }
    }

    /// The call of a handle on another node's instance: that instance routes it.
    async fn call_through_instance(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError> {
        let call = InstanceCall::Route(request);
        match self.node.call(&self.instance, call, timeout).await {
            Ok(InstanceReply::Leader(reply)) => Ok(reply),
            Ok(InstanceReply::LeaderDied) => Err(LeaderCallError::LeaderDied),
            Ok(InstanceReply::Overloaded) => Err(LeaderCallError::Overloaded),
            Ok(_) => Err(wrong_reply::<B::Reply>()),
            Err(error) => Err(LeaderCallError::from_instance(error, timeout)),
        }
    }

    /// [`leader_call`](Self::leader_call), sent again (after a pause that doubles from 10 ms
    /// to 500 ms) when the leader is lost during the call, until `timeout`: for requests that
    /// are safe to handle twice (the lost leader may have handled it before it went). Other
    /// failures are returned at once.
    pub async fn leader_call_retried(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError>
    where
        B::Call: Clone,
    {
        let deadline = Instant::now() + timeout;
        let mut pause = RETRY_PAUSE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.leader_call(request.clone(), left).await {
                Err(LeaderCallError::LeaderDied) if Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                Err(LeaderCallError::Timeout(_)) => return Err(LeaderCallError::Timeout(timeout)),
                outcome => return outcome,
            }
        }
    }

    /// Sends a one-way request to this node's instance (`handle_cast`).
    pub async fn cast(&self, request: B::LocalCast) -> Result<(), LeaderCallError> {
        self.node
            .cast(&self.instance, InstanceCast::Local(request))
            .await
            .map_err(LeaderCallError::from_send)
    }

    /// Sends a one-way request to the leader: straight to the leader's instance when this
    /// node follows one (so that it keeps its order with this handle's leader calls), else
    /// through the instance, which holds it until a leader is known.
    pub async fn leader_cast(&self, request: B::Cast) -> Result<(), LeaderCallError> {
        let leader = self
            .changes
            .as_ref()
            .and_then(|changes| changes.borrow().as_ref().map(|e| e.leader.clone()));
        let sent = match leader {
            Some(leader) => {
                let leader = ServerRef::<Instance<B>>::named(&leader, &self.instance_name);
                self.node.send(&leader, InstanceInfo::Cast(request)).await
            }
            None => {
                self.node
                    .cast(&self.instance, InstanceCast::Leader(request))
                    .await
            }
        };
        sent.map_err(LeaderCallError::from_send)
    }

    /// Calls this node's instance (`handle_call`).
    pub async fn call(
        &self,
        request: B::LocalCall,
        timeout: Duration,
    ) -> Result<B::LocalReply, CallError> {
        match self
            .node
            .call(&self.instance, InstanceCall::Local(request), timeout)
            .await?
        {
            InstanceReply::Local(reply) => Ok(reply),
            _ => Err(CallError::BadReply(DecodeError::WrongType {
                expected: std::any::type_name::<B::LocalReply>(),
            })),
        }
    }

    /// Where the election stands, as this node sees it.
    pub async fn status(&self, timeout: Duration) -> Result<LeaderStatus, CallError> {
        match self
            .node
            .call(&self.instance, InstanceCall::Status, timeout)
            .await?
        {
            InstanceReply::Status(status) => Ok(*status),
            _ => Err(CallError::BadReply(DecodeError::WrongType {
                expected: std::any::type_name::<LeaderStatus>(),
            })),
        }
    }
}

/// An instance answered a call with a reply of another kind (a bug, or mixed versions).
fn wrong_reply<R>() -> LeaderCallError {
    LeaderCallError::BadReply(DecodeError::WrongType {
        expected: std::any::type_name::<R>(),
    })
}

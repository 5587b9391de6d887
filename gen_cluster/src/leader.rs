//! The gen_leader behaviour: one leader among candidate nodes, workers that follow, calls routed
//! to the leader. Each node runs one *instance* per election name, a process registered as
//! `gen_leader:<name>`; the instances greet each other when their nodes connect, and the
//! `gen_cluster_proto::election` machine (one per instance) decides who leads. This module
//! carries out the machine's actions: it calls the [`LeaderServer`] callbacks, sends the state
//! and broadcasts between instances, and routes [`Leader::leader_call`]s.
//!
//! - A fresh leader calls `elected(id, None)` and sends the state it returns to every member,
//!   who call `surrendered`; a member that becomes alive later gets `elected(id, Some(node))`'s
//!   state alone.
//! - When two leaders meet (a partition healed) the lower one steps down: its
//!   `stepping_down` state goes to the winner's `merge`, so what both sides did survives.
//! - A `leader_call` goes to this node's instance, which handles it if it leads, else relays
//!   it to the leader's instance, or holds it while no leader is known. It fails with
//!   [`LeaderCallError::LeaderDied`] the moment the leader's node or instance is lost.
//! - The incarnation, which tells a restarted node from its earlier self, is kept in
//!   `data_dir` (one file per election name), or drawn at random without one.
//!
//! Callbacks are plain functions: they change the state and return at once, so that elections
//! and calls are never held up by one of them. Do slow work in tasks of your own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gen_cluster_proto::election::{Election, ElectionAction, ElectionConfig, ElectionMessage};
use gen_cluster_proto::{ExitReason, NodeName, Pid};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

pub use gen_cluster_proto::election::ElectionId;

use crate::connection::now;
use crate::error::{CallError, StartError};
use crate::events::NodeEvent;
use crate::node::Node;
use crate::process::{Context, Flow, Info, Message, ReplyTo, Server, ServerRef};

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
    /// Candidates and workers known but not taking part.
    pub down: Vec<NodeName>,
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
    /// Whether a higher-priority candidate that comes back takes the lead (default: no).
    pub failback: bool,
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
            failback: false,
            start_grace: Duration::from_secs(1),
            data_dir: None,
        }
    }
}

/// A leader call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderCallError {
    /// No leader answered in time (none was elected, or it was slow).
    #[error("no answer from a leader within {0:?}")]
    Timeout(Duration),
    /// The leader was lost while the call was in flight: it may or may not have been handled.
    /// Call again to reach the next leader.
    #[error("the leader was lost during the call; it may or may not have been handled")]
    LeaderDied,
    /// This node's instance of the election is not running.
    #[error("this node does not run the election")]
    NotRunning,
    /// No leader is known, and too many calls already wait for one.
    #[error("no leader is known, and too many calls wait for one")]
    NoLeader,
    /// The call could not be made.
    #[error(transparent)]
    Call(CallError),
}

/// The reply handle of a leader call.
pub struct LeaderReplyTo<B: LeaderServer> {
    inner: ReplyTo<InstanceReply<B>>,
}

impl<B: LeaderServer> LeaderReplyTo<B> {
    /// Sends the reply (dropped if the caller has gone).
    pub fn reply(self, value: B::Reply) {
        self.inner.reply(InstanceReply::Leader(value));
    }
}

/// Requests to an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum InstanceCall<B: LeaderServer> {
    /// A leader call, and how long its caller waits.
    Leader(B::Call, Duration),
    /// A local call.
    Local(B::LocalCall),
    /// The status.
    Status,
}

/// Replies of an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum InstanceReply<B: LeaderServer> {
    /// A leader call's reply.
    Leader(B::Reply),
    /// The leader was lost while it had the call.
    LeaderDied,
    /// No leader answered within the caller's time.
    TimedOut,
    /// No leader is known and too many calls wait.
    NoLeader,
    /// A local call's reply.
    Local(B::LocalReply),
    /// The status.
    Status(Box<LeaderStatus>),
}

/// One-way requests to an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum InstanceCast<B: LeaderServer> {
    /// A leader cast, forwarded to the leader (held while none is known).
    Leader(B::Cast),
    /// A local cast.
    Local(B::LocalCast),
}

/// Between instances, and from this node's event forwarder.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum InstanceInfo<B: LeaderServer> {
    /// Election traffic from `from`'s instance `pid`.
    Election {
        /// The sending node.
        from: NodeName,
        /// Its instance.
        pid: Pid,
        /// The message.
        message: ElectionMessage<B::State>,
    },
    /// A leader's broadcast.
    Broadcast {
        /// The election it belongs to.
        election: ElectionId,
        /// The message.
        message: B::Broadcast,
    },
    /// A leader cast arriving at the leader.
    Cast(B::Cast),
    /// A node connected.
    NodeUp(NodeName),
    /// A node was lost.
    NodeDown(NodeName),
    /// The nodes connected now, after node events were missed.
    Connected(Vec<NodeName>),
    /// The start grace may be over.
    Timer,
}

/// The process that runs one node's part of an election.
pub struct Instance<B: LeaderServer> {
    behaviour: B,
    machine: Election<B::State>,
    name: String,
    /// Where each alive peer's instance is.
    pids: FxHashMap<NodeName, Pid>,
    /// Leader calls waiting for a leader: the request, its caller's time, the caller.
    held_calls: Vec<HeldCall<B>>,
    /// Leader casts waiting for a leader.
    held_casts: Vec<B::Cast>,
    /// Tells the local `Leader` handles which election this node follows.
    changes: watch::Sender<Option<ElectionId>>,
}

type HeldCall<B> = (
    <B as LeaderServer>::Call,
    Duration,
    ReplyTo<InstanceReply<B>>,
);

/// The most leader calls, and casts, held while no leader is known. Beyond it a call fails
/// with [`LeaderCallError::NoLeader`] and the oldest cast is dropped.
const MAX_HELD: usize = 10_000;

/// A handle on this node's instance of an election.
pub struct Leader<B: LeaderServer> {
    node: Node,
    instance: ServerRef<Instance<B>>,
    /// The election followed, as this node's instance updates it (local handles only).
    changes: Option<watch::Receiver<Option<ElectionId>>>,
}

impl<B: LeaderServer> Clone for Leader<B> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            instance: self.instance.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl Node {
    /// Starts this node's instance of the election `config.name`, running `behaviour`.
    pub async fn start_leader<B: LeaderServer>(
        &self,
        config: LeaderConfig,
        behaviour: B,
    ) -> Result<Leader<B>, StartError> {
        let incarnation = match &config.data_dir {
            Some(dir) => next_incarnation(dir, &config.name)
                .map_err(|e| StartError::Incarnation(e.to_string()))?,
            None => {
                let mut bytes = [0u8; 8];
                let _ = getrandom::fill(&mut bytes);
                u64::from_le_bytes(bytes) >> 1
            }
        };
        let machine = Election::new(
            self.name().clone(),
            incarnation,
            ElectionConfig {
                candidates: config.candidates.clone(),
                workers: config.workers.clone(),
                failback: config.failback,
                start_grace: config.start_grace,
            },
            now(),
        );
        let name = instance_name(&config.name);
        let (announce, changes) = watch::channel(None);
        let instance = Instance {
            behaviour,
            machine,
            name: name.clone(),
            pids: FxHashMap::default(),
            held_calls: Vec::new(),
            held_casts: Vec::new(),
            changes: announce,
        };
        let events = self.subscribe();
        let server = self.spawn_named(&name, instance).await?;
        let pid = server
            .pid()
            .ok_or(StartError::InitFailed(ExitReason::NoProc))?;
        self.inner
            .link_tasks
            .spawn(forward_node_events::<B>(self.clone(), pid, events));
        for peer in self.peers() {
            let _ = self.send(&server, InstanceInfo::NodeUp(peer.name));
        }
        Ok(Leader {
            node: self.clone(),
            instance: server,
            changes: Some(changes),
        })
    }
}

/// Tells the instance `pid` of node ups and downs, in order, until it or the node ends.
async fn forward_node_events<B: LeaderServer>(
    node: Node,
    pid: Pid,
    mut events: broadcast::Receiver<NodeEvent>,
) {
    let instance = ServerRef::<Instance<B>>::from_pid(pid);
    loop {
        let event = tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let info = match event {
            Ok(NodeEvent::NodeUp { peer, .. }) => InstanceInfo::NodeUp(peer),
            Ok(NodeEvent::NodeDown { peer, .. }) => InstanceInfo::NodeDown(peer),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "an election instance missed node events; resynchronizing"
                );
                InstanceInfo::Connected(node.peers().into_iter().map(|p| p.name).collect())
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if node.send(&instance, info).is_err() {
            return;
        }
    }
}

impl<B: LeaderServer> Leader<B> {
    /// A handle, used from `node`, on the instance of `election` that runs on the node `host`
    /// (`node` itself or a peer it is connected to, such as a client's).
    pub fn at(node: &Node, host: &NodeName, election: &str) -> Self {
        Self {
            node: node.clone(),
            instance: ServerRef::named(host, &instance_name(election)),
            changes: None,
        }
    }

    /// The election this node follows (its own if it leads), updated on every change: wait
    /// with `changed()`. `None` for a handle made with [`at`](Self::at).
    pub fn leader_changes(&self) -> Option<watch::Receiver<Option<ElectionId>>> {
        self.changes.clone()
    }

    /// Calls the leader: waits while no leader is known, and fails at once with
    /// [`LeaderCallError::LeaderDied`] if the leader is lost during the call.
    pub async fn leader_call(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError> {
        let call = InstanceCall::Leader(request, timeout);
        match self.node.call(&self.instance, call, timeout).await {
            Ok(InstanceReply::Leader(reply)) => Ok(reply),
            Ok(InstanceReply::LeaderDied) => Err(LeaderCallError::LeaderDied),
            Ok(InstanceReply::NoLeader) => Err(LeaderCallError::NoLeader),
            Ok(InstanceReply::TimedOut) | Err(CallError::Timeout(_)) => {
                Err(LeaderCallError::Timeout(timeout))
            }
            Ok(_) => Err(LeaderCallError::Call(CallError::BadReply(
                "not a leader call's reply".into(),
            ))),
            Err(CallError::NoProc | CallError::NodeDown) => Err(LeaderCallError::NotRunning),
            Err(error) => Err(LeaderCallError::Call(error)),
        }
    }

    /// [`leader_call`](Self::leader_call), sent again to the next leader when the leader is
    /// lost during the call, until `timeout`: for requests that are safe to handle twice (the
    /// lost leader may have handled it before it went).
    pub async fn leader_call_retried(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError>
    where
        B::Call: Clone,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.leader_call(request.clone(), left).await {
                Err(LeaderCallError::LeaderDied) if !left.is_zero() => continue,
                Err(LeaderCallError::Timeout(_)) => return Err(LeaderCallError::Timeout(timeout)),
                outcome => return outcome,
            }
        }
    }

    /// Sends a one-way request to this node's instance (`handle_cast`).
    pub fn cast(&self, request: B::LocalCast) -> Result<(), LeaderCallError> {
        self.node
            .cast(&self.instance, InstanceCast::Local(request))
            .map_err(|_| LeaderCallError::NotRunning)
    }

    /// Sends a one-way request to the leader (held until one is known).
    pub fn leader_cast(&self, request: B::Cast) -> Result<(), LeaderCallError> {
        self.node
            .cast(&self.instance, InstanceCast::Leader(request))
            .map_err(|_| LeaderCallError::NotRunning)
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
            _ => Err(CallError::BadReply("not a local reply".into())),
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
            _ => Err(CallError::BadReply("not a status".into())),
        }
    }
}

impl<B: LeaderServer> Instance<B> {
    fn status(&self, node: &Node) -> LeaderStatus {
        let election = self.machine.current().cloned();
        LeaderStatus {
            node: node.name().clone(),
            leader: election.as_ref().map(|e| e.leader.clone()),
            election,
            candidates: self.machine.candidates().to_vec(),
            workers: self.machine.workers().into_iter().collect(),
            alive: self.machine.alive().into_iter().collect(),
            down: self.machine.down().into_iter().collect(),
            refused: self.machine.refused().iter().cloned().collect(),
        }
    }

    /// The leader's instance, if a leader is known.
    fn leader_pid(&self, ctx: &Context<Self>) -> Option<Pid> {
        let leader = &self.machine.current()?.leader;
        if leader == ctx.node().name() {
            return Some(ctx.pid());
        }
        self.pids.get(leader).copied()
    }

    /// Feeds the machine one input, then carries out its actions.
    fn drive(&mut self, ctx: &Context<Self>, input: impl FnOnce(&mut Election<B::State>)) -> Flow {
        input(&mut self.machine);
        while let Some(action) = self.machine.poll_action() {
            if let Flow::Stop(reason) = self.execute(ctx, action) {
                return Flow::Stop(reason);
            }
        }
        let current = self.machine.current();
        self.changes.send_if_modified(|seen| {
            let changed = seen.as_ref() != current;
            if changed {
                seen.clone_from(&current.cloned());
            }
            changed
        });
        self.release_held(ctx)
    }

    fn execute(&mut self, ctx: &Context<Self>, action: ElectionAction<B::State>) -> Flow {
        match action {
            ElectionAction::Send { to, message } => self.send_election(ctx, &to, message),
            ElectionAction::Elected { election, joined } => {
                tracing::info!(%election, joined = ?joined, "elected");
                let state = self.behaviour.elected(&election, joined.as_ref());
                let members: Vec<NodeName> = match joined {
                    Some(joined) => vec![joined],
                    None => self.machine.members().cloned().collect(),
                };
                for member in members {
                    let message = ElectionMessage::Elected {
                        election: election.clone(),
                        state: state.clone(),
                    };
                    self.send_election(ctx, &member, message);
                }
            }
            ElectionAction::Surrendered { election, state } => {
                tracing::info!(%election, "surrendered");
                self.behaviour.surrendered(state, &election);
            }
            ElectionAction::SteppedDown { to } => {
                tracing::info!(leader = %to, "stepped down to a higher-priority leader");
                let state = self.behaviour.stepping_down(&to);
                let from = ctx.node().name().clone();
                self.send_election(ctx, &to, ElectionMessage::Merge { from, state });
            }
            ElectionAction::Merge { from, state } => {
                if let Some(election) = self.machine.current().cloned() {
                    let flow = self.behaviour.merge(state, &from, &election);
                    return self.follow(ctx, flow);
                }
            }
            ElectionAction::MemberDown(node) => {
                if let Some(election) = self.machine.current().cloned() {
                    let flow = self.behaviour.handle_down(&node, &election);
                    return self.follow(ctx, flow);
                }
            }
            ElectionAction::LeaderLost(leader) => {
                tracing::info!(%leader, "leader lost");
            }
            ElectionAction::Refused { node, candidates } => {
                tracing::error!(
                    peer = %node,
                    theirs = ?candidates,
                    ours = ?self.machine.candidates(),
                    "refused a node whose candidate list conflicts with ours; give every node the same list"
                );
            }
        }
        Flow::Continue
    }

    /// Carries out what a leader callback returned.
    fn follow(&mut self, ctx: &Context<Self>, flow: LeaderFlow<B::Broadcast>) -> Flow {
        match flow {
            LeaderFlow::Continue => Flow::Continue,
            LeaderFlow::Stop(reason) => Flow::Stop(reason),
            LeaderFlow::Broadcast(message) => {
                if let Some(election) = self.machine.current().cloned() {
                    let members: Vec<NodeName> = self.machine.members().cloned().collect();
                    for member in members {
                        let info = InstanceInfo::Broadcast {
                            election: election.clone(),
                            message: message.clone(),
                        };
                        let _ = ctx
                            .node()
                            .send(&ServerRef::<Self>::named(&member, &self.name), info);
                    }
                }
                Flow::Continue
            }
        }
    }

    fn send_election(
        &self,
        ctx: &Context<Self>,
        to: &NodeName,
        message: ElectionMessage<B::State>,
    ) {
        let info = InstanceInfo::Election {
            from: ctx.node().name().clone(),
            pid: ctx.pid(),
            message,
        };
        let _ = ctx
            .node()
            .send(&ServerRef::<Self>::named(to, &self.name), info);
    }

    /// Sends the held calls and casts on, once a leader is known.
    fn release_held(&mut self, ctx: &Context<Self>) -> Flow {
        if self.machine.current().is_none() {
            return Flow::Continue;
        }
        for (request, timeout, from) in std::mem::take(&mut self.held_calls) {
            if let Flow::Stop(reason) = self.leader_call(ctx, request, timeout, from) {
                return Flow::Stop(reason);
            }
        }
        for request in std::mem::take(&mut self.held_casts) {
            if let Flow::Stop(reason) = self.leader_cast(ctx, request) {
                return Flow::Stop(reason);
            }
        }
        Flow::Continue
    }

    /// A leader call: handled here if this node leads, relayed to the leader, or held.
    fn leader_call(
        &mut self,
        ctx: &Context<Self>,
        request: B::Call,
        timeout: Duration,
        from: ReplyTo<InstanceReply<B>>,
    ) -> Flow {
        match self.machine.current().cloned() {
            Some(election) if self.machine.is_leader() => {
                let from = LeaderReplyTo { inner: from };
                let flow = self.behaviour.handle_leader_call(request, from, &election);
                self.follow(ctx, flow)
            }
            Some(_) => {
                match self.leader_pid(ctx) {
                    Some(leader) => relay(ctx.node().clone(), leader, request, timeout, from),
                    None => from.reply(InstanceReply::LeaderDied),
                }
                Flow::Continue
            }
            None if self.held_calls.len() >= MAX_HELD => {
                from.reply(InstanceReply::NoLeader);
                Flow::Continue
            }
            None => {
                self.held_calls.push((request, timeout, from));
                Flow::Continue
            }
        }
    }

    /// A leader cast: handled here if this node leads, sent to the leader, or held.
    fn leader_cast(&mut self, ctx: &Context<Self>, request: B::Cast) -> Flow {
        match self.machine.current().cloned() {
            Some(election) if self.machine.is_leader() => {
                let flow = self.behaviour.handle_leader_cast(request, &election);
                self.follow(ctx, flow)
            }
            _ => {
                match self.leader_pid(ctx) {
                    Some(leader) => {
                        let leader = ServerRef::<Self>::from_pid(leader);
                        let _ = ctx.node().send(&leader, InstanceInfo::Cast(request));
                    }
                    None => self.hold_cast(request),
                }
                Flow::Continue
            }
        }
    }

    fn hold_cast(&mut self, request: B::Cast) {
        if self.held_casts.len() >= MAX_HELD {
            tracing::warn!(
                "too many leader casts held while no leader is known; dropping the oldest"
            );
            self.held_casts.remove(0);
        }
        self.held_casts.push(request);
    }
}

/// Passes a leader call to the leader's instance, and its answer back, in a task of its own
/// so that the instance goes on meanwhile.
fn relay<B: LeaderServer>(
    node: Node,
    leader: Pid,
    request: B::Call,
    timeout: Duration,
    from: ReplyTo<InstanceReply<B>>,
) {
    tokio::spawn(async move {
        let leader = ServerRef::<Instance<B>>::from_pid(leader);
        let reply = match node
            .call(&leader, InstanceCall::Leader(request, timeout), timeout)
            .await
        {
            Ok(reply) => reply,
            Err(CallError::Timeout(_)) => InstanceReply::TimedOut,
            Err(_) => InstanceReply::LeaderDied,
        };
        from.reply(reply);
    });
}

impl<B: LeaderServer> Server for Instance<B> {
    type Call = InstanceCall<B>;
    type Reply = InstanceReply<B>;
    type Cast = InstanceCast<B>;
    type Info = InstanceInfo<B>;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        let Flow::Continue = self.drive(ctx, |_| {}) else {
            return Err(ExitReason::Error("stopped during start".into()));
        };
        schedule_timeout(ctx, &self.machine);
        Ok(())
    }

    async fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        match request {
            InstanceCall::Leader(request, timeout) => self.leader_call(ctx, request, timeout, from),
            InstanceCall::Local(request) => {
                let status = self.status(ctx.node());
                from.reply(InstanceReply::Local(
                    self.behaviour.handle_call(request, &status),
                ));
                Flow::Continue
            }
            InstanceCall::Status => {
                from.reply(InstanceReply::Status(Box::new(self.status(ctx.node()))));
                Flow::Continue
            }
        }
    }

    async fn handle_cast(&mut self, message: Self::Cast, ctx: &mut Context<Self>) -> Flow {
        match message {
            InstanceCast::Leader(request) => self.leader_cast(ctx, request),
            InstanceCast::Local(request) => {
                let status = self.status(ctx.node());
                self.behaviour.handle_cast(request, &status);
                Flow::Continue
            }
        }
    }

    async fn handle_info(&mut self, info: Info<Self::Info>, ctx: &mut Context<Self>) -> Flow {
        let Info::Message(message) = info else {
            return Flow::Continue;
        };
        match message {
            InstanceInfo::Election { from, pid, message } => {
                self.pids.insert(from.clone(), pid);
                self.drive(ctx, |machine| machine.handle_message(from, message))
            }
            InstanceInfo::Broadcast { election, message } => {
                if self.machine.current() == Some(&election) && !self.machine.is_leader() {
                    self.behaviour.from_leader(message, &election);
                }
                Flow::Continue
            }
            InstanceInfo::Cast(request) => self.leader_cast(ctx, request),
            InstanceInfo::NodeUp(peer) => self.drive(ctx, |machine| machine.handle_node_up(peer)),
            InstanceInfo::NodeDown(peer) => {
                self.pids.remove(&peer);
                self.drive(ctx, |machine| machine.handle_node_down(&peer))
            }
            InstanceInfo::Connected(peers) => {
                let peers: BTreeSet<NodeName> = peers.into_iter().collect();
                self.pids.retain(|name, _| peers.contains(name));
                self.drive(ctx, |machine| machine.handle_connected_now(&peers))
            }
            InstanceInfo::Timer => self.drive(ctx, |machine| machine.handle_timeout(now())),
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _ctx: &mut Context<Self>) {
        self.behaviour.terminate(reason);
    }
}

/// Wakes the instance when the machine's start grace ends.
fn schedule_timeout<B: LeaderServer>(ctx: &Context<Instance<B>>, machine: &Election<B::State>) {
    let Some(at) = machine.poll_timeout() else {
        return;
    };
    let (node, me) = (ctx.node().clone(), ctx.this());
    tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let _ = node.send(&me, InstanceInfo::Timer);
    });
}

/// Reads the incarnation kept in `dir` for `election`, and keeps the next one, written to a
/// temporary file, flushed to disk and renamed over the old one.
fn next_incarnation(dir: &Path, election: &str) -> Result<u64, IncarnationError> {
    let path = dir.join(format!("gen_leader.{election}.incarnation"));
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse_incarnation(&text).ok_or_else(|| IncarnationError::Corrupt(path.clone()))?
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(IncarnationError::Io(path, error.to_string())),
    };
    let next = last + 1;
    let io = |e: std::io::Error| IncarnationError::Io(path.clone(), e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("incarnation.new");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(format!("{INCARNATION_HEADER} {next}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(next)
}

const INCARNATION_HEADER: &str = "gen_leader-incarnation-v1";

fn parse_incarnation(text: &str) -> Option<u64> {
    let number = text
        .strip_suffix('\n')?
        .strip_prefix(INCARNATION_HEADER)?
        .strip_prefix(' ')?;
    number.parse().ok().filter(|n| *n > 0)
}

/// The incarnation file cannot be used.
#[derive(Debug, thiserror::Error)]
enum IncarnationError {
    #[error("the incarnation file {0} is corrupt; restore it, or remove it to start a new history")]
    Corrupt(PathBuf),
    #[error("cannot keep the incarnation in {0}: {1}")]
    Io(PathBuf, String),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn the_incarnation_grows_across_starts_and_a_corrupt_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("gen-leader-inc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next_incarnation(&dir, "e").unwrap(), 1);
        assert_eq!(next_incarnation(&dir, "e").unwrap(), 2);
        assert_eq!(next_incarnation(&dir, "other").unwrap(), 1);
        std::fs::write(
            dir.join("gen_leader.e.incarnation"),
            "gen_leader-incarnation-v1 x\n",
        )
        .unwrap();
        let error = next_incarnation(&dir, "e").unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
        std::fs::write(dir.join("gen_leader.e.incarnation"), "").unwrap();
        assert!(
            next_incarnation(&dir, "e").is_err(),
            "an empty file is corrupt too"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

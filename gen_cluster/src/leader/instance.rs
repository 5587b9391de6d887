//! One node's instance of an election: the process that owns the `gen_cluster_proto::election`
//! machine, calls the [`LeaderServer`] callbacks, sends the state and broadcasts between
//! instances, and answers leader calls — its own if it leads; a handle's on another node, which
//! it forwards to the leader's instance or holds while no leader is known. A task beside it
//! ([`drive_from_node`], in a `leader{election}` span) feeds it the node's ups and downs and
//! fires the machine's timer.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use gen_cluster_proto::election::{Election, ElectionAction, ElectionMessage};
use gen_cluster_proto::{ExitReason, NodeName, Pid};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{ElectionId, LeaderFlow, LeaderReplyTo, LeaderServer, LeaderStatus};
use crate::Node;
use crate::clock::now;
use crate::events::NodeEvent;
use crate::process::{Context, Flow, Info, MonitorRef, ReplyTo, Server, ServerRef};
use crate::view::{Counting, GroupPeers};

/// The most leader calls an instance holds while no leader is known, and the most it has
/// forwarded and not yet heard back about; beyond either, a call fails with `Overloaded`. The
/// most leader casts it holds; beyond it the oldest is dropped.
const MAX_WAITING: usize = 10_000;

/// Requests to an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum InstanceCall<B: LeaderServer> {
    /// A leader call, to the instance its caller believes leads: handled if it does, handed back
    /// otherwise.
    Leader(B::Call),
    /// A leader call of a handle on another node: handled, forwarded to the leader, or held.
    Route(B::Call),
    /// A local call.
    Local(B::LocalCall),
    /// The status.
    Status,
}

/// Replies of an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum InstanceReply<B: LeaderServer> {
    /// A leader call's reply.
    Leader(B::Reply),
    /// This instance does not lead: the request, handed back unhandled.
    NotLeader(B::Call),
    /// The leader was lost while it had the call.
    LeaderDied,
    /// Too many calls wait on this instance.
    Overloaded,
    /// A local call's reply.
    Local(B::LocalReply),
    /// The status.
    Status(Box<LeaderStatus>),
}

/// One-way requests to an instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum InstanceCast<B: LeaderServer> {
    /// A leader cast, forwarded to the leader (held while none is known).
    Leader(B::Cast),
    /// A local cast.
    Local(B::LocalCast),
}

/// Between instances, and from the instance's driver task.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum InstanceInfo<B: LeaderServer> {
    /// Election traffic from `from`'s instance `pid`.
    Election {
        from: NodeName,
        pid: Pid,
        message: ElectionMessage<B::State>,
    },
    /// A leader's broadcast.
    Broadcast {
        election: ElectionId,
        message: B::Broadcast,
    },
    /// A leader cast arriving at the leader.
    Cast(B::Cast),
    /// A leader call forwarded by the instance `from` for a caller of its own.
    Forward {
        reference: u64,
        from: Pid,
        request: B::Call,
    },
    /// How a call this instance forwarded ended.
    Forwarded {
        reference: u64,
        outcome: ForwardOutcome<B>,
    },
    /// A node connected.
    NodeUp(NodeName),
    /// A node was lost.
    NodeDown(NodeName),
    /// The nodes connected now: at start, and after node events were missed.
    Connected(Vec<NodeName>),
    /// The machine's timer is due.
    Timer,
}

/// How a forwarded leader call ended, told back to the instance that forwarded it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ForwardOutcome<B: LeaderServer> {
    /// The leader replied.
    Replied(B::Reply),
    /// The receiving instance does not lead: the request, handed back unhandled.
    NotLeader(B::Call),
    /// The leader dropped the reply handle without replying.
    NoReply,
}

/// A routed leader call waiting for a leader.
struct Held<B: LeaderServer> {
    request: B::Call,
    reply: ReplyTo<InstanceReply<B>>,
    /// Set when the leader of this election handed the call back: wait for another election.
    not_under: Option<ElectionId>,
}

/// A routed leader call forwarded to the leader's instance.
struct Forwarded<B: LeaderServer> {
    /// The instance it was forwarded to (monitored: its end fails the call).
    leader: Pid,
    reply: ReplyTo<InstanceReply<B>>,
}

/// The process that runs one node's part of an election.
pub(crate) struct Instance<B: LeaderServer> {
    behaviour: B,
    machine: Election<B::State>,
    name: String,
    /// Where each alive peer's instance is.
    pids: FxHashMap<NodeName, Pid>,
    held_calls: Vec<Held<B>>,
    held_casts: VecDeque<B::Cast>,
    forwarded: FxHashMap<u64, Forwarded<B>>,
    next_forward: u64,
    /// The leaders' instances this one forwarded calls to, each monitored once.
    watched_leaders: FxHashMap<Pid, MonitorRef>,
    /// Tells the local `Leader` handles which election this node follows.
    changes: watch::Sender<Option<ElectionId>>,
    /// Tells the driver task when the machine's timer is due.
    timer: watch::Sender<Option<Instant>>,
}

/// The channels between an instance and what watches it.
pub(crate) struct Wiring {
    pub(crate) changes: watch::Receiver<Option<ElectionId>>,
    timer: watch::Receiver<Option<Instant>>,
}

impl<B: LeaderServer> Instance<B> {
    /// An instance named `name` running `behaviour` over `machine`.
    pub(crate) fn new(behaviour: B, machine: Election<B::State>, name: &str) -> (Self, Wiring) {
        let (changes, followed) = watch::channel(None);
        let (timer, due) = watch::channel(None);
        let instance = Self {
            behaviour,
            machine,
            name: name.to_string(),
            pids: FxHashMap::default(),
            held_calls: Vec::new(),
            held_casts: VecDeque::new(),
            forwarded: FxHashMap::default(),
            next_forward: 1,
            watched_leaders: FxHashMap::default(),
            changes,
            timer,
        };
        let wiring = Wiring {
            changes: followed,
            timer: due,
        };
        (instance, wiring)
    }

    /// Where the election stands; `with_nodes` adds the cluster view's nodes (for the status
    /// query, not for every local call).
    fn status(&self, node: &Node, with_nodes: bool) -> LeaderStatus {
        let election = self.machine.current().cloned();
        LeaderStatus {
            node: node.name().clone(),
            leader: election.as_ref().map(|e| e.leader.clone()),
            election,
            candidates: self.machine.candidates().to_vec(),
            workers: self.machine.workers().into_iter().collect(),
            alive: self.machine.alive().into_iter().collect(),
            absent: self.machine.down().into_iter().collect(),
            nodes: match with_nodes {
                true => node.view().nodes.clone(),
                false => Vec::new(),
            },
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

    /// Feeds the machine one input, then carries out its actions, tells the handles and the
    /// timer, and releases what waited for a leader.
    async fn drive(
        &mut self,
        ctx: &Context<Self>,
        input: impl FnOnce(&mut Election<B::State>),
    ) -> Flow {
        input(&mut self.machine);
        while let Some(action) = self.machine.poll_action() {
            if let Flow::Stop(reason) = self.execute(ctx, action).await {
                return Flow::Stop(reason);
            }
        }
        // What waited for a leader goes first, then the handles learn of it: a call a handle
        // sends once it sees the leader never overtakes an earlier cast held here.
        let flow = self.release_held(ctx).await;
        let current = self.machine.current();
        self.changes.send_if_modified(|seen| {
            let changed = seen.as_ref() != current;
            if changed {
                seen.clone_from(&current.cloned());
            }
            changed
        });
        self.timer.send_replace(self.machine.poll_timeout());
        flow
    }

    async fn execute(&mut self, ctx: &Context<Self>, action: ElectionAction<B::State>) -> Flow {
        match action {
            ElectionAction::Send { to, message } => self.send_election(ctx, &to, message).await,
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
                    self.send_election(ctx, &member, message).await;
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
                self.send_election(ctx, &to, ElectionMessage::Merge { from, state })
                    .await;
            }
            ElectionAction::Merge { from, state } => {
                if let Some(election) = self.machine.current().cloned() {
                    let flow = self.behaviour.merge(state, &from, &election);
                    return self.follow(ctx, flow).await;
                }
            }
            ElectionAction::MemberDown(node) => {
                if let Some(election) = self.machine.current().cloned() {
                    let flow = self.behaviour.handle_down(&node, &election);
                    return self.follow(ctx, flow).await;
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
    async fn follow(&mut self, ctx: &Context<Self>, flow: LeaderFlow<B::Broadcast>) -> Flow {
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
                            .send(&ServerRef::<Self>::named(&member, &self.name), info)
                            .await;
                    }
                }
                Flow::Continue
            }
        }
    }

    async fn send_election(
        &mut self,
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
            .send(&ServerRef::<Self>::named(to, &self.name), info)
            .await;
    }

    /// Routes the held calls and casts, once a leader is known.
    async fn release_held(&mut self, ctx: &Context<Self>) -> Flow {
        let Some(current) = self.machine.current().cloned() else {
            return Flow::Continue;
        };
        let (ready, waiting): (Vec<Held<B>>, Vec<Held<B>>) = std::mem::take(&mut self.held_calls)
            .into_iter()
            .partition(|held| held.not_under.as_ref() != Some(&current));
        self.held_calls = waiting;
        for held in ready {
            if let Flow::Stop(reason) = self.route_call(ctx, held.request, held.reply).await {
                return Flow::Stop(reason);
            }
        }
        for request in std::mem::take(&mut self.held_casts) {
            if let Flow::Stop(reason) = self.leader_cast(ctx, request).await {
                return Flow::Stop(reason);
            }
        }
        Flow::Continue
    }

    /// Handles a leader call here if this instance leads; gives it back otherwise.
    #[allow(clippy::type_complexity)] // the call and its reply handle, given back together
    async fn lead(
        &mut self,
        ctx: &Context<Self>,
        request: B::Call,
        reply: ReplyTo<InstanceReply<B>>,
    ) -> Result<Flow, (B::Call, ReplyTo<InstanceReply<B>>)> {
        match self.machine.current().cloned() {
            Some(election) if self.machine.is_leader() => {
                let reply = LeaderReplyTo::direct(reply);
                let flow = self.behaviour.handle_leader_call(request, reply, &election);
                Ok(self.follow(ctx, flow).await)
            }
            _ => Err((request, reply)),
        }
    }

    /// A leader call from a caller that believes this instance leads.
    async fn leader_call(
        &mut self,
        ctx: &Context<Self>,
        request: B::Call,
        reply: ReplyTo<InstanceReply<B>>,
    ) -> Flow {
        self.lead(ctx, request, reply)
            .await
            .unwrap_or_else(|(request, reply)| {
                reply.reply(InstanceReply::NotLeader(request));
                Flow::Continue
            })
    }

    /// A leader call of a handle on another node: handled here if this node leads, forwarded to
    /// the leader, or held.
    async fn route_call(
        &mut self,
        ctx: &Context<Self>,
        request: B::Call,
        reply: ReplyTo<InstanceReply<B>>,
    ) -> Flow {
        let (request, reply) = match self.lead(ctx, request, reply).await {
            Ok(flow) => return flow,
            Err(given_back) => given_back,
        };
        let known = self.machine.current().is_some();
        match self.leader_pid(ctx) {
            _ if !known => self.hold(request, reply, None),
            None => reply.reply(InstanceReply::LeaderDied),
            Some(_) if self.forwarded.len() >= MAX_WAITING => {
                reply.reply(InstanceReply::Overloaded)
            }
            Some(leader) => self.forward(ctx, leader, request, reply).await,
        }
        Flow::Continue
    }

    fn hold(
        &mut self,
        request: B::Call,
        reply: ReplyTo<InstanceReply<B>>,
        not_under: Option<ElectionId>,
    ) {
        if self.held_calls.len() >= MAX_WAITING {
            reply.reply(InstanceReply::Overloaded);
            return;
        }
        self.held_calls.push(Held {
            request,
            reply,
            not_under,
        });
    }

    /// Sends a routed call to the leader's instance `to`, which answers with `Forwarded`; the
    /// call fails with `LeaderDied` if that instance or its node is lost first (a monitor).
    async fn forward(
        &mut self,
        ctx: &Context<Self>,
        to: Pid,
        request: B::Call,
        reply: ReplyTo<InstanceReply<B>>,
    ) {
        let reference = self.next_forward;
        self.next_forward += 1;
        let info = InstanceInfo::Forward {
            reference,
            from: ctx.pid(),
            request,
        };
        if ctx
            .node()
            .send(&ServerRef::<Self>::from_pid(to), info)
            .await
            .is_err()
        {
            reply.reply(InstanceReply::LeaderDied);
            return;
        }
        self.forwarded
            .insert(reference, Forwarded { leader: to, reply });
        if to != ctx.pid() && !self.watched_leaders.contains_key(&to) {
            self.watched_leaders.insert(to, ctx.monitor(to));
        }
    }

    /// A call forwarded by the instance `from`: handled if this instance leads, else handed back.
    async fn forwarded_call(
        &mut self,
        ctx: &Context<Self>,
        reference: u64,
        from: Pid,
        request: B::Call,
    ) -> Flow {
        match self.machine.current().cloned() {
            Some(election) if self.machine.is_leader() => {
                let reply = LeaderReplyTo::forwarded(ctx.node().clone(), from, reference);
                let flow = self.behaviour.handle_leader_call(request, reply, &election);
                self.follow(ctx, flow).await
            }
            _ => {
                let outcome = ForwardOutcome::NotLeader(request);
                let info = InstanceInfo::Forwarded { reference, outcome };
                let _ = ctx
                    .node()
                    .send(&ServerRef::<Self>::from_pid(from), info)
                    .await;
                Flow::Continue
            }
        }
    }

    /// How a call this instance forwarded ended.
    async fn forward_ended(
        &mut self,
        ctx: &Context<Self>,
        reference: u64,
        outcome: ForwardOutcome<B>,
    ) -> Flow {
        let Some(forwarded) = self.forwarded.remove(&reference) else {
            return Flow::Continue;
        };
        match outcome {
            ForwardOutcome::Replied(value) => forwarded.reply.reply(InstanceReply::Leader(value)),
            ForwardOutcome::NoReply => forwarded.reply.reply(InstanceReply::LeaderDied),
            ForwardOutcome::NotLeader(request) => {
                match self.machine.current().cloned() {
                    // This node still believes the instance that refused leads: wait for the
                    // election to move on rather than ask it again.
                    Some(election) if self.leader_pid(ctx) == Some(forwarded.leader) => {
                        self.hold(request, forwarded.reply, Some(election))
                    }
                    _ => return self.route_call(ctx, request, forwarded.reply).await,
                }
            }
        }
        Flow::Continue
    }

    /// The leader's instance `lost` ended, or its node was lost: the calls forwarded to it will
    /// get no answer.
    fn leader_lost(&mut self, lost: Pid) {
        self.watched_leaders.remove(&lost);
        let gone: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, forwarded)| forwarded.leader == lost)
            .map(|(&reference, _)| reference)
            .collect();
        for reference in gone {
            if let Some(forwarded) = self.forwarded.remove(&reference) {
                forwarded.reply.reply(InstanceReply::LeaderDied);
            }
        }
    }

    /// A leader cast: handled here if this node leads, sent to the leader, or held.
    async fn leader_cast(&mut self, ctx: &Context<Self>, request: B::Cast) -> Flow {
        match self.machine.current().cloned() {
            Some(election) if self.machine.is_leader() => {
                let flow = self.behaviour.handle_leader_cast(request, &election);
                self.follow(ctx, flow).await
            }
            _ => {
                match self.leader_pid(ctx) {
                    Some(leader) => {
                        let leader = ServerRef::<Self>::from_pid(leader);
                        let _ = ctx.node().send(&leader, InstanceInfo::Cast(request)).await;
                    }
                    None => self.hold_cast(request),
                }
                Flow::Continue
            }
        }
    }

    fn hold_cast(&mut self, request: B::Cast) {
        if self.held_casts.len() >= MAX_WAITING {
            tracing::warn!(
                "too many leader casts held while no leader is known; dropping the oldest"
            );
            self.held_casts.pop_front();
        }
        self.held_casts.push_back(request);
    }
}

impl<B: LeaderServer> Server for Instance<B> {
    type Call = InstanceCall<B>;
    type Reply = InstanceReply<B>;
    type Cast = InstanceCast<B>;
    type Info = InstanceInfo<B>;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        match self.drive(ctx, |_| {}).await {
            Flow::Continue => Ok(()),
            Flow::Stop(_) => Err(ExitReason::Error("stopped during start".into())),
        }
    }

    async fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        match request {
            InstanceCall::Leader(request) => self.leader_call(ctx, request, from).await,
            InstanceCall::Route(request) => self.route_call(ctx, request, from).await,
            InstanceCall::Local(request) => {
                let status = self.status(ctx.node(), false);
                from.reply(InstanceReply::Local(
                    self.behaviour.handle_call(request, &status),
                ));
                Flow::Continue
            }
            InstanceCall::Status => {
                let status = self.status(ctx.node(), true);
                from.reply(InstanceReply::Status(Box::new(status)));
                Flow::Continue
            }
        }
    }

    async fn handle_cast(&mut self, message: Self::Cast, ctx: &mut Context<Self>) -> Flow {
        match message {
            InstanceCast::Leader(request) => self.leader_cast(ctx, request).await,
            InstanceCast::Local(request) => {
                let status = self.status(ctx.node(), false);
                self.behaviour.handle_cast(request, &status);
                Flow::Continue
            }
        }
    }

    async fn handle_info(&mut self, info: Info<Self::Info>, ctx: &mut Context<Self>) -> Flow {
        let message = match info {
            Info::Message(message) => message,
            Info::Down { pid, .. } => {
                self.leader_lost(pid);
                return Flow::Continue;
            }
            _ => return Flow::Continue,
        };
        match message {
            InstanceInfo::Election { from, pid, message } => {
                self.pids.insert(from.clone(), pid);
                self.drive(ctx, |machine| machine.handle_message(from, message))
                    .await
            }
            InstanceInfo::Broadcast { election, message } => {
                if self.machine.current() == Some(&election) && !self.machine.is_leader() {
                    self.behaviour.from_leader(message, &election);
                }
                Flow::Continue
            }
            InstanceInfo::Cast(request) => self.leader_cast(ctx, request).await,
            InstanceInfo::Forward {
                reference,
                from,
                request,
            } => self.forwarded_call(ctx, reference, from, request).await,
            InstanceInfo::Forwarded { reference, outcome } => {
                self.forward_ended(ctx, reference, outcome).await
            }
            InstanceInfo::NodeUp(peer) => {
                self.drive(ctx, |machine| machine.handle_node_up(peer))
                    .await
            }
            InstanceInfo::NodeDown(peer) => {
                self.pids.remove(&peer);
                self.drive(ctx, |machine| machine.handle_node_down(&peer))
                    .await
            }
            InstanceInfo::Connected(peers) => {
                let peers: BTreeSet<NodeName> = peers.into_iter().collect();
                self.pids.retain(|name, _| peers.contains(name));
                self.drive(ctx, |machine| machine.handle_connected_now(&peers))
                    .await
            }
            InstanceInfo::Timer => {
                self.drive(ctx, |machine| machine.handle_timeout(now()))
                    .await
            }
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _ctx: &mut Context<Self>) {
        self.behaviour.terminate(reason);
    }
}

/// Starts the task that tells the instance `instance` of node ups and downs, in order, and when
/// its machine's timer is due; it ends with the instance or the node.
///
/// The election acts on the node's group in the cluster view, not on its raw connections: a
/// peer is up for the election while it is connected *and* in this node's group. When links are
/// cut unevenly (A–B cut while both reach C), the view splits the nodes into fully connected
/// groups that every node computes alike, so C drops A or B from its election as they drop each
/// other, and each group elects one leader.
pub(crate) fn drive_from_node<B: LeaderServer>(
    node: &Node,
    election: &str,
    instance: ServerRef<Instance<B>>,
    wiring: Wiring,
) {
    let events = node.subscribe();
    let span = tracing::info_span!("leader", %election);
    node.spawn_task(
        span,
        feed::<B>(node.clone(), instance, events, wiring.timer),
    );
}

/// The peers the election counts, connected now and in this node's group.
fn group_peers(node: &Node) -> GroupPeers {
    let connected = node
        .peers()
        .into_iter()
        .map(|peer| (peer.name, peer.incarnation));
    GroupPeers::new(connected, node.view().group.clone())
}

/// What the instance is told of a change of the peers it counts.
fn told<B: LeaderServer>(changes: Vec<Counting>) -> Vec<InstanceInfo<B>> {
    changes
        .into_iter()
        .map(|change| match change {
            Counting::Joins(peer) => InstanceInfo::NodeUp(peer),
            Counting::Leaves(peer, _) => InstanceInfo::NodeDown(peer),
        })
        .collect()
}

async fn feed<B: LeaderServer>(
    node: Node,
    instance: ServerRef<Instance<B>>,
    mut events: broadcast::Receiver<NodeEvent>,
    mut timer: watch::Receiver<Option<Instant>>,
) {
    let mut views = node.view_changes();
    views.borrow_and_update();
    // The peers connected now, read after subscribing to the node's events: an event about
    // them that follows is applied after it, in order.
    let mut members = group_peers(&node);
    let counted = members.counted().keys().cloned().collect();
    if node
        .send(&instance, InstanceInfo::Connected(counted))
        .await
        .is_err()
    {
        return;
    }
    let mut due = *timer.borrow_and_update();
    loop {
        let changes: Vec<InstanceInfo<B>> = tokio::select! {
            _ = node.shutting_down() => return,
            changed = timer.changed() => {
                if changed.is_err() {
                    return; // the instance has ended
                }
                due = *timer.borrow_and_update();
                continue;
            }
            _ = sleep_until(due) => {
                due = None;
                vec![InstanceInfo::Timer]
            }
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                let group = views.borrow_and_update().group.clone();
                told(members.group_changed(&group))
            }
            event = events.recv() => match event {
                Ok(NodeEvent::NodeUp { peer, incarnation, .. }) => {
                    told(members.link_up(peer, incarnation))
                }
                Ok(NodeEvent::NodeDown { peer, .. }) => {
                    // Every lost link is told: the instance forgets what it held of the peer,
                    // counted or not.
                    members.link_down(&peer);
                    vec![InstanceInfo::NodeDown(peer)]
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "an election instance missed node events; resynchronizing");
                    members = group_peers(&node);
                    vec![InstanceInfo::Connected(members.counted().keys().cloned().collect())]
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        for info in changes {
            if node.send(&instance, info).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

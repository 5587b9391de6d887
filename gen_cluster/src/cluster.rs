//! The gen_cluster behaviour: a cluster of processes that know each other. A [`ClusterServer`] is
//! a gen_server with four more callbacks — `handle_welcomed` on a member once it is in,
//! `handle_join` on the member a newcomer contacted, `handle_node_joined` on every other
//! member, `handle_leave` on every survivor — each called exactly once per event, with the member
//! list after it.
//!
//! [`Clustered`] runs a `ClusterServer` as a [`Server`]: it owns the member's
//! `gen_cluster_proto::membership` machine (the member's one source of truth, changed only by
//! messages), carries out its actions (membership messages, monitors) and turns its events into
//! the callbacks. Membership messages travel encoded even between members on one node, so members
//! of different kinds (different `ClusterServer` types) share one cluster.
//!
//! The cluster's **rally name** (`gen_cluster:<cluster>`, a global name) points at one live
//! member: the first member takes it; when its holder leaves, a survivor takes it over (the
//! registry lets exactly one win). Newcomers can join through it ([`Seed::Rally`],
//! [`Seed::Address`]); a newcomer whose seed ends first joins again through it; and a member
//! whose list lacks the rally's holder (after members that linked two groups ended, or after a
//! partition heals) introduces itself to it, so the groups merge.
//!
//! Every `down_after` (the failure detector's deadline) a member ticks its membership: it sends
//! its digest to the next member and probes the members lost with their node (anti-entropy:
//! what a dropped link lost is repaired), and introduces itself to the rally's holder if it does
//! not know it.
//!
//! A member never waits on the network: what the membership sends to (or watches) a member on
//! a node this node is not connected to waits, in order, while a task connects to that node;
//! the member carries it out once connected, or after three failed attempts (its monitor then
//! reports that member gone).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use gen_cluster_proto::membership::{MembershipAction, MembershipEvent, MembershipMessage};

use gen_cluster_proto::{ExitReason, NodeId, Pid};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

pub use gen_cluster_proto::membership::{Member, Membership};

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock;
use crate::error::{SendError, StartError};
use crate::process::{Context, Flow, Info, Message, MonitorRef, ReplyTo, Server, ServerRef};
use crate::{Node, RegisterError, telemetry};

/// The context of a cluster member's callbacks.
pub type ClusterContext<C> = Context<Clustered<C>>;

/// The gen_cluster behaviour. Every callback gets the member list (`members`), this member
/// included. Only `handle_call` must be written.
pub trait ClusterServer: Sized + Send + 'static {
    /// Requests of [`Node::call`].
    type Call: Message;
    /// Replies to them.
    type Reply: Message;
    /// Messages of [`Node::cast`].
    type Cast: Message;
    /// The behaviour's own messages, sent as [`ClusterInfo::User`].
    type Info: Message;

    /// Runs in the new process before it joins.
    fn init(
        &mut self,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Result<(), ExitReason>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// This member is in its cluster: at once for the first member, once its seed let it in
    /// for a newcomer (`members` is the list it was given). Called once.
    fn handle_welcomed(
        &mut self,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (members, ctx);
        async { Flow::Continue }
    }

    /// A newcomer joined through this member.
    fn handle_join(
        &mut self,
        joining: &Member,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (joining, members, ctx);
        async { Flow::Continue }
    }

    /// A newcomer joined through another member, or a member lost with its node (reported in
    /// `handle_leave` with `noconnection`) was heard from again.
    fn handle_node_joined(
        &mut self,
        joined: &Member,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (joined, members, ctx);
        async { Flow::Continue }
    }

    /// A member left: `reason` is how its process ended (`noconnection` when its node was lost).
    fn handle_leave(
        &mut self,
        left: &Member,
        members: &Membership,
        reason: &ExitReason,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (left, members, reason, ctx);
        async { Flow::Continue }
    }

    /// Handles a request; see [`Server::handle_call`].
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo<Self::Reply>,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send;

    /// Handles a one-way request.
    fn handle_cast(
        &mut self,
        message: Self::Cast,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (message, members, ctx);
        async { Flow::Continue }
    }

    /// Handles the behaviour's own messages and notices about processes it watches itself.
    fn handle_info(
        &mut self,
        info: Info<Self::Info>,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = Flow> + Send {
        let _ = (info, members, ctx);
        async { Flow::Continue }
    }

    /// Runs once when the member ends.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ClusterContext<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// What a member's mailbox carries: membership traffic (handled by the runtime) or the
/// behaviour's own messages. Send a member `ClusterInfo::User(message)` with [`Node::send`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ClusterInfo<I> {
    /// Between members; never reaches the behaviour.
    Membership(MembershipMessage),
    /// The behaviour's own message.
    User(I),
    /// A member's connection attempt to a node ended: what waited on it is carried out. Sent
    /// by the member's own task with the attempt's random token; one with any other token is
    /// ignored.
    #[doc(hidden)]
    Reached(NodeId, u64),
    /// The join's seed was lost and no other member held the rally name: time to join again.
    /// Sent by the member's own task.
    #[doc(hidden)]
    Rejoin,
    /// Time for the membership's anti-entropy round. Sent by the member's own task with the
    /// member's random token; one with any other token is ignored.
    #[doc(hidden)]
    Tick(u64),
}

/// Where a new member joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// Nowhere: it is the first member of a new cluster (if the cluster's rally name turns out
    /// to be held already, it joins through its holder).
    First,
    /// Through this member.
    Member(Pid),
    /// Through the cluster's rally name, as this node resolves it; the first member if nobody
    /// holds it.
    Rally,
    /// Connect to the node at this address, then join through the rally name. The rally's
    /// holder may live on another node: this node must be (or become) connected to it — node
    /// discovery keeps the nodes of a cluster connected — or the start fails after the handshake
    /// timeout.
    Address(String),
}

/// How a member starts.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// The cluster's name (its rally name is `gen_cluster:<cluster>`).
    pub cluster: String,
    /// This member's kind (members are grouped by kind).
    pub kind: String,
    /// Where it joins.
    pub seed: Seed,
}

impl MemberConfig {
    /// A member of kind `kind` in `cluster`, joining through `seed`.
    pub fn new(cluster: impl Into<String>, kind: impl Into<String>, seed: Seed) -> Self {
        Self {
            cluster: cluster.into(),
            kind: kind.into(),
            seed,
        }
    }

    /// The cluster's rally name.
    pub fn rally_name(&self) -> String {
        rally_name(&self.cluster)
    }
}

/// The rally name of `cluster`.
pub fn rally_name(cluster: &str) -> String {
    format!("gen_cluster:{cluster}")
}

/// A connection attempt to a member's node, and what waits on it.
struct Reaching {
    /// The current attempt's random token, which its task sends back when it ends.
    token: u64,
    waiting: Vec<Deferred>,
    /// Where the node listens.
    addr: String,
    /// The attempts started.
    attempts: u32,
}

/// How many times a member tries to connect to another member's node before it carries out
/// what waits (its monitor then reports the member gone).
const REACH_ATTEMPTS: u32 = 3;

/// A membership action that waits for a node to be reached.
enum Deferred {
    Send(Pid, MembershipMessage),
    Monitor(Pid),
}

/// A [`ClusterServer`] run as a [`Server`]: the behaviour and its membership.
pub struct Clustered<C> {
    inner: C,
    config: MemberConfig,
    membership: Option<Membership>,
    /// The monitors set for the membership, to tell their DOWNs from the behaviour's own.
    monitors: FxHashSet<MonitorRef>,
    /// The members lost with their node that were probed and are watched since (so that one
    /// that ended meanwhile is forgotten), until their monitor fires.
    probed: FxHashSet<Pid>,
    /// The token of this member's ticks (a tick with another is ignored).
    tick_token: u64,
    /// What waits, in order, on a connection attempt to a node, by node.
    reaching: FxHashMap<NodeId, Reaching>,
    /// Cancelled when the member ends, however it ends: its rally takeovers stop with it.
    ended: CancellationToken,
    _end_on_drop: DropGuard,
    /// The kinds the members gauge was set for (to zero a kind whose last member left).
    kinds_counted: BTreeSet<String>,
}

impl<C: ClusterServer> Clustered<C> {
    /// Starts a cluster member running `server` on `node`. With [`Seed::Address`] it first
    /// connects to that node and waits (at most the handshake timeout) until the rally name
    /// resolves. The join itself is asynchronous: the callbacks report it.
    pub async fn start(
        node: &Node,
        mut config: MemberConfig,
        server: C,
    ) -> Result<ServerRef<Clustered<C>>, StartError> {
        if let Seed::Address(addr) = &config.seed {
            node.connect(addr)
                .await
                .map_err(StartError::SeedUnreachable)?;
            let rally = config.rally_name();
            let globals = node.globals();
            let held = globals.wait_until(|names| names.whereis(&rally).is_some());
            tokio::time::timeout(node.config().handshake_timeout, held)
                .await
                .map_err(|_| StartError::NoRallyHolder {
                    rally: rally.clone(),
                })?;
            let holder = globals
                .whereis(&rally)
                .ok_or(StartError::NoRallyHolder { rally })?;
            config.seed = Seed::Member(holder);
        }
        let ended = CancellationToken::new();
        node.spawn(Clustered {
            inner: server,
            config,
            membership: None,
            monitors: FxHashSet::default(),
            probed: FxHashSet::default(),
            tick_token: clock::seed(),
            reaching: FxHashMap::default(),
            _end_on_drop: ended.clone().drop_guard(),
            ended,
            kinds_counted: BTreeSet::new(),
        })
        .await
    }

    /// Adds `child`, a plain process of `node` (any server, not a cluster member), to the
    /// cluster as a member of kind `kind`, through `member`: `member` reports it in
    /// `handle_join`, every other member in `handle_node_joined`, and its end is a leave on every
    /// member. The child itself gets no membership messages.
    pub async fn add_child(
        node: &Node,
        member: &ServerRef<Clustered<C>>,
        child: Pid,
        kind: &str,
    ) -> Result<(), SendError> {
        let join = MembershipMessage::Join {
            member: Member {
                pid: child,
                kind: kind.to_string(),
                addr: node.listen_addr().to_string(),
                child: true,
            },
        };
        node.send(member, ClusterInfo::Membership(join)).await
    }

    fn membership_mut(&mut self) -> &mut Membership {
        self.membership.as_mut().expect("set in init")
    }

    /// Sets the members gauge, by kind, from the member list.
    fn count_members(&mut self) {
        let mut by_kind: BTreeMap<String, usize> = self
            .kinds_counted
            .iter()
            .map(|kind| (kind.clone(), 0))
            .collect();
        for member in self.membership.iter().flat_map(Membership::members) {
            *by_kind.entry(member.kind.clone()).or_default() += 1;
        }
        for (kind, count) in &by_kind {
            metrics::gauge!(
                telemetry::MEMBERS,
                "cluster" => self.config.cluster.clone(),
                "kind" => kind.clone()
            )
            .set(*count as f64);
        }
        self.kinds_counted = by_kind.into_keys().collect();
    }

    /// Carries out what the membership asks, calling back the behaviour for its events.
    async fn drive(&mut self, ctx: &mut ClusterContext<C>) -> Flow {
        while let Some(action) = self.membership_mut().poll_action() {
            let flow = match action {
                MembershipAction::Send { to, message } => {
                    self.carry_out(Deferred::Send(to, message), ctx).await;
                    Flow::Continue
                }
                MembershipAction::Probe { to, message } => {
                    self.probe(to, message, ctx).await;
                    Flow::Continue
                }
                MembershipAction::Monitor(pid) => {
                    self.carry_out(Deferred::Monitor(pid), ctx).await;
                    Flow::Continue
                }
                MembershipAction::Event(MembershipEvent::Joined { member, contacted }) => {
                    self.count_members();
                    let members = self.membership.as_ref().expect("set in init");
                    if contacted {
                        self.inner.handle_join(&member, members, ctx).await
                    } else {
                        self.inner.handle_node_joined(&member, members, ctx).await
                    }
                }
                MembershipAction::Event(MembershipEvent::Welcomed) => {
                    self.count_members();
                    let members = self.membership.as_ref().expect("set in init");
                    self.inner.handle_welcomed(members, ctx).await
                }
                MembershipAction::Event(MembershipEvent::Left { member, reason }) => {
                    self.count_members();
                    let members = self.membership.as_ref().expect("set in init");
                    let flow = self
                        .inner
                        .handle_leave(&member, members, &reason, ctx)
                        .await;
                    self.after_leave(member.pid, ctx);
                    flow
                }
                MembershipAction::Event(MembershipEvent::SeedLost { seed }) => {
                    self.join_again(Some(seed), ctx);
                    Flow::Continue
                }
            };
            if let Flow::Stop(reason) = flow {
                return Flow::Stop(reason);
            }
        }
        Flow::Continue
    }

    /// Sends or monitors now, or, when the member's node is not connected (members learn of
    /// members on nodes their own node has not met), once a task has tried to connect to it.
    /// What waits on one node is carried out in order.
    async fn carry_out(&mut self, action: Deferred, ctx: &mut ClusterContext<C>) {
        let pid = match &action {
            Deferred::Send(to, _) => *to,
            Deferred::Monitor(pid) => *pid,
        };
        if let Some(reaching) = self.reaching.get_mut(&pid.node) {
            reaching.waiting.push(action);
            return;
        }
        let node = ctx.node();
        let unreached = pid.node != node.id() && !node.is_connected_id(pid.node);
        let addr = self
            .membership
            .as_ref()
            .and_then(|members| members.member(pid))
            .map(|member| member.addr.clone());
        match addr.filter(|_| unreached) {
            Some(addr) => {
                let reaching = Reaching {
                    token: 0,
                    waiting: vec![action],
                    addr,
                    attempts: 0,
                };
                self.reaching.insert(pid.node, reaching);
                self.attempt(pid.node, ctx);
            }
            None => self.now(action, ctx).await,
        }
    }

    /// Joins again through the rally name's holder (but `lost_seed`, the seed just lost, or this
    /// member itself); with no such holder, again after the failure detector's deadline.
    fn join_again(&mut self, lost_seed: Option<Pid>, ctx: &mut ClusterContext<C>) {
        let me = ctx.pid();
        let holder = ctx
            .node()
            .globals()
            .whereis(&self.config.rally_name())
            .filter(|&holder| holder != me && Some(holder) != lost_seed);
        match holder {
            Some(holder) => self.membership_mut().rejoin(holder),
            None => {
                if let Some(seed) = lost_seed {
                    tracing::info!(%seed, "seed lost before the join; joining again shortly");
                }
                rejoin_later(ctx);
            }
        }
    }

    /// Sends `message` to `to`, a member lost with its node, if that node is connected again,
    /// and watches it (once): if it ended meanwhile, or belonged to an earlier life of its
    /// node, the monitor says so at once and the membership forgets it.
    async fn probe(&mut self, to: Pid, message: MembershipMessage, ctx: &mut ClusterContext<C>) {
        if !ctx.node().is_connected_id(to.node) {
            return;
        }
        self.now(Deferred::Send(to, message), ctx).await;
        if self.probed.insert(to) {
            self.now(Deferred::Monitor(to), ctx).await;
        }
    }

    /// Starts a task that connects to the node `id` and then tells this member.
    fn attempt(&mut self, id: NodeId, ctx: &mut ClusterContext<C>) {
        let Some(reaching) = self.reaching.get_mut(&id) else {
            return;
        };
        reaching.attempts += 1;
        reaching.token = clock::seed();
        let (token, addr) = (reaching.token, reaching.addr.clone());
        let (node, me) = (ctx.node().clone(), ctx.pid());
        let span = tracing::info_span!("reach member node", %addr);
        ctx.node().clone().spawn_task(span, async move {
            let connected = tokio::select! {
                _ = node.shutting_down() => return,
                connected = node.connect(&addr) => connected,
            };
            if let Err(error) = connected {
                tracing::warn!(%addr, %error, "cannot reach a member's node");
            }
            let _ = node
                .send_encoded(me, ClusterInfo::<()>::Reached(id, token))
                .await;
        });
    }

    /// Carries out `action` at once; a member whose node is not connected is reported gone by
    /// its monitor, and a message to it is lost.
    async fn now(&mut self, action: Deferred, ctx: &mut ClusterContext<C>) {
        match action {
            Deferred::Send(to, message) => {
                let _ = ctx
                    .node()
                    .send_encoded(to, ClusterInfo::<C::Info>::Membership(message))
                    .await;
            }
            Deferred::Monitor(pid) => {
                self.monitors.insert(ctx.monitor(pid));
            }
        }
    }

    /// The connection attempt to `node` ended: what waited on it is carried out, in order —
    /// after up to [`REACH_ATTEMPTS`] attempts while the node is not connected (a dial that
    /// crossed one from the other side, or from this node's view, can fail while the link
    /// comes up by the other way).
    async fn reached(&mut self, node: NodeId, token: u64, ctx: &mut ClusterContext<C>) {
        let Some(reaching) = self.reaching.remove(&node) else {
            return;
        };
        if reaching.token != token {
            // Not from the current attempt's task: it is still connecting.
            self.reaching.insert(node, reaching);
            return;
        }
        if !ctx.node().is_connected_id(node) && reaching.attempts < REACH_ATTEMPTS {
            self.reaching.insert(node, reaching);
            self.attempt(node, ctx);
            return;
        }
        for action in reaching.waiting {
            self.now(action, ctx).await;
        }
    }

    /// After a leave: take the rally name over if its holder left, and meet the rally's holder if
    /// this member does not know it.
    fn after_leave(&mut self, left: Pid, ctx: &mut ClusterContext<C>) {
        let rally = self.config.rally_name();
        match ctx.node().globals().whereis(&rally) {
            Some(holder) if holder != left => {
                self.membership_mut().introduce_to(holder);
            }
            _ => {
                let span = tracing::info_span!("rally", %rally);
                let takeover = take_over(
                    ctx.node().clone(),
                    rally,
                    ctx.pid(),
                    left,
                    self.ended.clone(),
                );
                ctx.node().spawn_task(span, takeover);
            }
        }
    }
}

/// Has the member told to join again after the failure detector's deadline: its seed was lost
/// with no other member holding the rally name, and the seed may be alive behind a link that
/// dropped, or its successor not chosen yet.
fn rejoin_later<S: Server>(ctx: &mut Context<S>) {
    let (node, me) = (ctx.node().clone(), ctx.pid());
    let pause = node.config().liveness.down_after;
    ctx.node()
        .clone()
        .spawn_task(tracing::info_span!("rejoin"), async move {
            tokio::select! {
                _ = node.shutting_down() => {}
                _ = tokio::time::sleep(pause) => {
                    let _ = node.send_encoded(me, ClusterInfo::<()>::Rejoin).await;
                }
            }
        });
}

/// Has the member told to tick its membership every `down_after`, with a random tenth either
/// way so that members do not tick in step, until it ends.
fn tick_every<S: Server>(ctx: &mut Context<S>, token: u64, ended: CancellationToken) {
    let (node, me) = (ctx.node().clone(), ctx.pid());
    let period = node.config().liveness.down_after;
    ctx.node()
        .clone()
        .spawn_task(tracing::info_span!("membership ticks"), async move {
            loop {
                // A uniform fraction from the top 53 bits of a random word.
                let fraction = (clock::seed() >> 11) as f64 / (1u64 << 53) as f64;
                let pause = period.mul_f64(0.9 + 0.2 * fraction);
                tokio::select! {
                    _ = node.shutting_down() => return,
                    _ = ended.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                let _ = node.send_encoded(me, ClusterInfo::<()>::Tick(token)).await;
            }
        });
}

/// Takes the rally name for `me` once the registry has let go of `left`, the member that held
/// it; done when some live member holds it. Every survivor runs this: the registry lets one win,
/// and the others see the winner. The registry learns of the end on its own (at once for a
/// goodbye, within the failure-detection deadline for a crash); the wait is bounded and repeated
/// until then, and the whole ends with this member or its node.
async fn take_over(node: Node, rally: String, me: Pid, left: Pid, ended: CancellationToken) {
    let globals = node.globals();
    let patience = node.config().liveness.down_after;
    // After a stale answer, the next try waits this long, doubling up to `patience`.
    let mut pause = patience / 10;
    loop {
        let released = globals.wait_until(|names| names.whereis(&rally) != Some(left));
        tokio::select! {
            _ = node.shutting_down() => return,
            _ = ended.cancelled() => return,
            _ = tokio::time::timeout(patience, released) => {}
        }
        match globals.whereis(&rally) {
            Some(holder) if holder != left => return,
            Some(_) => continue,
            None => {}
        }
        let registered = tokio::select! {
            _ = ended.cancelled() => return,
            registered = globals.register(&rally, me) => registered,
        };
        match registered {
            Ok(()) => {
                tracing::info!(%left, "took the rally name over");
                return;
            }
            // Another live member won.
            Err(RegisterError::Taken(holder)) if holder != left && holder != me => return,
            // A registry that has not let go yet answered (or the attempt settled on no one):
            // try again a little later.
            Err(RegisterError::Taken(_)) => {
                tokio::select! {
                    _ = ended.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(patience);
            }
            Err(RegisterError::ShuttingDown) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot take the rally name over");
                return;
            }
        }
    }
}

impl<C: ClusterServer> Server for Clustered<C> {
    type Call = C::Call;
    type Reply = C::Reply;
    type Cast = C::Cast;
    type Info = ClusterInfo<C::Info>;

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        self.inner.init(ctx).await?;
        let me = Member {
            pid: ctx.pid(),
            kind: self.config.kind.clone(),
            addr: ctx.node().listen_addr().to_string(),
            child: false,
        };
        let rally = self.config.rally_name();
        let seed = match &self.config.seed {
            Seed::Member(pid) => Some(*pid),
            Seed::Rally => ctx.node().globals().whereis(&rally),
            Seed::First | Seed::Address(_) => None,
        };
        self.membership = Some(match seed {
            Some(seed) => Membership::joining(me, seed),
            None => match ctx.node().globals().register(&rally, ctx.pid()).await {
                Ok(()) => Membership::first(me),
                Err(RegisterError::Taken(holder)) if holder != ctx.pid() => {
                    // The cluster exists after all (its name reached this node late).
                    tracing::info!(%rally, %holder, "the rally name is held: joining through its holder");
                    Membership::joining(me, holder)
                }
                Err(error) => {
                    tracing::warn!(%rally, %error, "a first member could not take the rally name");
                    Membership::first(me)
                }
            },
        });
        tick_every(ctx, self.tick_token, self.ended.clone());
        match self.drive(ctx).await {
            Flow::Continue => Ok(()),
            Flow::Stop(reason) => Err(reason),
        }
    }

    async fn handle_call(
        &mut self,
        request: C::Call,
        from: ReplyTo<C::Reply>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        let members = self.membership.as_ref().expect("set in init");
        self.inner.handle_call(request, from, members, ctx).await
    }

    async fn handle_cast(&mut self, message: C::Cast, ctx: &mut Context<Self>) -> Flow {
        let members = self.membership.as_ref().expect("set in init");
        self.inner.handle_cast(message, members, ctx).await
    }

    async fn handle_info(
        &mut self,
        info: Info<ClusterInfo<C::Info>>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        let forwarded = match info {
            Info::Message(ClusterInfo::Membership(message)) => {
                self.membership_mut().handle_message(message);
                return self.drive(ctx).await;
            }
            Info::Message(ClusterInfo::Reached(node, token)) => {
                self.reached(node, token, ctx).await;
                return self.drive(ctx).await;
            }
            Info::Message(ClusterInfo::Tick(token)) if token == self.tick_token => {
                let holder = ctx.node().globals().whereis(&self.config.rally_name());
                let membership = self.membership_mut();
                membership.tick();
                if let Some(holder) = holder {
                    membership.introduce_to(holder);
                }
                return self.drive(ctx).await;
            }
            Info::Message(ClusterInfo::Tick(_)) => return Flow::Continue,
            Info::Message(ClusterInfo::Rejoin) if self.membership_mut().is_welcomed() => {
                return Flow::Continue;
            }
            Info::Message(ClusterInfo::Rejoin) => {
                self.join_again(None, ctx);
                return self.drive(ctx).await;
            }
            Info::Down {
                reference,
                pid,
                reason,
            } if self.monitors.remove(&reference) => {
                self.probed.remove(&pid);
                self.membership_mut().handle_down(pid, reason);
                return self.drive(ctx).await;
            }
            Info::NameLost { name, winner } if name == self.config.rally_name() => {
                // Two groups met (a partition healed): meet the rally's holder, so they merge.
                self.membership_mut().introduce_to(winner);
                return self.drive(ctx).await;
            }
            Info::Message(ClusterInfo::User(message)) => Info::Message(message),
            Info::Down {
                reference,
                pid,
                reason,
            } => Info::Down {
                reference,
                pid,
                reason,
            },
            Info::Exit { from, reason } => Info::Exit { from, reason },
            Info::NameLost { name, winner } => Info::NameLost { name, winner },
        };
        let members = self.membership.as_ref().expect("set in init");
        self.inner.handle_info(forwarded, members, ctx).await
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        self.inner.terminate(reason, ctx).await;
    }
}

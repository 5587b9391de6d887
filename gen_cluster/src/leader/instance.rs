//! One node's instance of an election: the process that owns the election's machine
//! ([`Machine`]: `gen_cluster_proto::election` in the `priority` mode,
//! `gen_cluster_proto::majority` in the `majority` mode), calls the [`LeaderServer`] callbacks,
//! sends the state and broadcasts between instances, and answers leader calls — its own if it
//! leads; a handle's on another node, which it forwards to the leader's instance or holds while
//! no leader is known. In the `majority` mode it also keeps the term file ([`super::disk`]) and
//! holds each reply until a quorum holds what came before it. A task beside it
//! ([`drive_from_node`], in a `leader{election}` span) feeds it the node's ups and downs and
//! fires the machine's timer.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gen_cluster_proto::election::{Election, ElectionAction, ElectionMessage};
use gen_cluster_proto::majority::{self, Majority, MajorityAction, MajorityMessage};
use gen_cluster_proto::{ExitReason, Incarnation, NodeName, Pid};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::batch::Outgoing;
use super::disk::TermFile;
use super::{
    ElectionId, GivenReply, LeaderFlow, LeaderReplyTo, LeaderRoute, LeaderServer, LeaderStatus,
    ReplyGate,
};
use crate::Node;
use crate::clock::now;
use crate::events::NodeEvent;
use crate::process::{Context, Flow, Info, MonitorRef, ReplyTo, Server, ServerRef};
use crate::telemetry;
use crate::view::{Counting, GroupPeers};

/// The most leader calls an instance holds while no leader is known, and the most it has
/// forwarded and not yet heard back about; beyond either, a call fails with `Overloaded`. The
/// most leader casts it holds; beyond it the oldest is dropped.
const MAX_WAITING: usize = 10_000;

/// After this many election timeouts waiting for a leader's state after a restart, a voter
/// says so in its log (normally the state comes within a round trip of a leader).
const STATE_WAIT_LOGGED: u32 = 10;

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
    /// A leader call's reply, given in `term` (0 in the `priority` mode).
    Leader { reply: B::Reply, term: u64 },
    /// This instance does not lead: the request, handed back unhandled.
    NotLeader(B::Call),
    /// The leader was lost while it had the call.
    LeaderDied,
    /// Too many calls wait on this instance.
    Overloaded,
    /// `majority` mode: no leader with a quorum is reachable; the request was not handled.
    NoQuorum,
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
    /// Election traffic from `from`'s instance `pid` (`priority` mode).
    Election {
        from: NodeName,
        pid: Pid,
        message: ElectionMessage<B::State>,
    },
    /// Election traffic from `from`'s instance `pid` (`majority` mode), in the order sent
    /// (see [`batch`](super::batch)).
    Majority {
        from: NodeName,
        pid: Pid,
        messages: Vec<MajorityMessage<B::State, B::Broadcast>>,
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
    /// The behaviour gave replies outside its callbacks (`majority` mode).
    RepliesGiven,
}

/// How a forwarded leader call ended, told back to the instance that forwarded it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ForwardOutcome<B: LeaderServer> {
    /// The leader replied, in `term` (0 in the `priority` mode).
    Replied { reply: B::Reply, term: u64 },
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
    /// When it began to wait.
    since: Instant,
}

/// A routed leader call forwarded to the leader's instance.
struct Forwarded<B: LeaderServer> {
    /// The instance it was forwarded to (monitored: its end fails the call).
    leader: Pid,
    reply: ReplyTo<InstanceReply<B>>,
}

/// An election's machine, by mode.
pub(crate) enum Machine<B: LeaderServer> {
    Priority(Box<Election<B::State>>),
    Majority(Box<Quorum<B>>),
}

/// The `majority` mode's machine and what the instance keeps beside it.
pub(crate) struct Quorum<B: LeaderServer> {
    machine: Majority<B::State, B::Broadcast>,
    /// Where a voter keeps its term and vote (`None` on a worker).
    term_file: Option<TermFile>,
    /// The replies the behaviour gave, not yet numbered.
    gate: Arc<ReplyGate<B>>,
    /// Replies waiting for a quorum, in the order given (so by broadcast; by round too, but
    /// for the replies a lease let through with none).
    gated: VecDeque<Gated<B>>,
    /// How long a call waits here for a leader while a quorum of voters is counted.
    election_wait: Duration,
    /// The leader's round when the message being handled arrived: a reply given while handling
    /// it needs a round started later (see `admit_replies`).
    round_at_receipt: u64,
    /// Whether the driver task has told which peers are counted: until then the quorum is
    /// unknown, not missing.
    told: bool,
    /// The term file could not be written: nothing that depended on it may leave.
    broken: bool,
    /// The machine's messages not sent yet.
    outgoing: Outgoing<B::State, B::Broadcast>,
    /// Since when this voter has waited for a leader's state after a restart (rule 2), and
    /// whether the wait was logged (once it lasted [`STATE_WAIT_LOGGED`] election timeouts).
    state_wait: Option<(Instant, bool)>,
}

impl<B: LeaderServer> Quorum<B> {
    /// Logs, once per wait, a voter that has waited [`STATE_WAIT_LOGGED`] election timeouts
    /// for a leader's state after a restart: no leader could be elected to give it, which is
    /// what a majority of the voters restarted together, with a voter still missing, leads to.
    /// Called at each of the machine's timeouts, which come about once an election timeout
    /// while no leader is known.
    fn note_state_wait(&mut self, now: Instant) {
        if !self.machine.waits_for_state() {
            self.state_wait = None;
            return;
        }
        let (since, logged) = self.state_wait.get_or_insert((now, false));
        let waited = now.saturating_duration_since(*since);
        if !*logged && waited >= self.machine.config().election_timeout * STATE_WAIT_LOGGED {
            *logged = true;
            tracing::warn!(
                ?waited,
                "this voter restarted without the state it held (the state lives in memory) and \
                 waits for a leader to give it, but no leader is elected: with a majority of the \
                 voters restarted, a candidate counts their votes only once every voter has \
                 answered it, so that the voter furthest along is elected; start the voters that \
                 are down, or mend their links"
            );
        }
    }

    /// Takes the replies the quorum's progress now covers, in order.
    fn take_covered(&mut self) -> Vec<Gated<B>> {
        let Some((committed, confirmed)) = self.machine.progress() else {
            return Vec::new();
        };
        let covered = self
            .gated
            .iter()
            .take_while(|next| next.seq <= committed && next.round <= confirmed)
            .count();
        self.gated.drain(..covered).collect()
    }
}

/// Which of a leader's batches leave (see [`super::batch`]); a node that does not lead sends
/// every batch.
#[derive(Clone, Copy)]
enum Window {
    /// A voter's once it answered the one before; a worker's waits for the leader's progress.
    Kept,
    /// The leader's progress moved: a voter's or a worker's once it answered the one before.
    Progressed,
    /// Every batch, answered or not.
    Ignored,
}

/// A leader call's reply, sent once a quorum holds broadcast `seq` and answered round `round`.
struct Gated<B: LeaderServer> {
    seq: u64,
    round: u64,
    term: u64,
    route: LeaderRoute<B>,
    value: B::Reply,
}

impl<B: LeaderServer> Machine<B> {
    pub(crate) fn majority(
        machine: Majority<B::State, B::Broadcast>,
        term_file: Option<TermFile>,
        election_wait: Duration,
    ) -> Self {
        Self::Majority(Box::new(Quorum {
            machine,
            term_file,
            gate: Arc::new(ReplyGate::new()),
            gated: VecDeque::new(),
            election_wait,
            round_at_receipt: 0,
            told: false,
            broken: false,
            outgoing: Outgoing::new(),
            state_wait: None,
        }))
    }

    /// The election this node follows (its own if it leads). In the `majority` mode a node
    /// follows a leader once it holds that leader's state, not merely once it heard of it.
    fn current(&self) -> Option<ElectionId> {
        match self {
            Self::Priority(machine) => machine.current().cloned(),
            Self::Majority(quorum) => {
                let machine = &quorum.machine;
                let leader = machine.leader()?.clone();
                let term = machine.term();
                let holds = machine.held().is_some_and(|held| held.term == term);
                (machine.is_leader() || holds).then(|| ElectionId::of_term(leader, term))
            }
        }
    }

    fn is_leader(&self) -> bool {
        match self {
            Self::Priority(machine) => machine.is_leader(),
            Self::Majority(quorum) => quorum.machine.is_leader(),
        }
    }

    /// Whether this node counts a quorum of voters (itself included) and abstains for no peer of
    /// other voters; always in the `priority` mode, which needs none.
    fn has_quorum(&self) -> bool {
        let Self::Majority(quorum) = self else {
            return true;
        };
        if !quorum.told {
            return true;
        }
        let machine = &quorum.machine;
        let voters = machine.voters();
        let counted = machine.connected().filter(|n| voters.contains(n)).count();
        let me = usize::from(voters.contains(machine.me()));
        !machine.abstains() && counted + me >= majority::quorum(voters.len())
    }

    fn standing(&self) -> Standing {
        Standing {
            quorum: self.has_quorum(),
            term: match self {
                Self::Priority(_) => 0,
                Self::Majority(quorum) => quorum.machine.term(),
            },
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Priority(machine) => machine.poll_timeout(),
            Self::Majority(quorum) => quorum.machine.poll_timeout(),
        }
    }

    fn node_up(&mut self, peer: NodeName, now: Instant) {
        match self {
            Self::Priority(machine) => machine.handle_node_up(peer),
            Self::Majority(quorum) => quorum.machine.handle_node_up(peer, now),
        }
    }

    fn node_down(&mut self, peer: &NodeName, now: Instant) {
        match self {
            Self::Priority(machine) => machine.handle_node_down(peer),
            Self::Majority(quorum) => {
                quorum.outgoing.forget(peer);
                quorum.machine.handle_node_down(peer, now);
            }
        }
    }

    /// The peers counted now are exactly `peers`.
    fn connected_now(&mut self, peers: &BTreeSet<NodeName>, now: Instant) {
        match self {
            Self::Priority(machine) => machine.handle_connected_now(peers),
            Self::Majority(quorum) => {
                quorum.told = true;
                let machine = &mut quorum.machine;
                let gone: Vec<NodeName> = machine
                    .connected()
                    .filter(|peer| !peers.contains(*peer))
                    .cloned()
                    .collect();
                for peer in gone {
                    quorum.outgoing.forget(&peer);
                    machine.handle_node_down(&peer, now);
                }
                let counted: BTreeSet<NodeName> = machine.connected().cloned().collect();
                for peer in peers.difference(&counted) {
                    machine.handle_node_up(peer.clone(), now);
                }
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        match self {
            Self::Priority(machine) => machine.handle_timeout(now),
            Self::Majority(quorum) => {
                quorum.machine.handle_timeout(now);
                quorum.note_state_wait(now);
            }
        }
    }

    /// The other members, to send a leader's state or broadcasts to.
    fn members(&self) -> Vec<NodeName> {
        match self {
            Self::Priority(machine) => machine.members().cloned().collect(),
            Self::Majority(quorum) => quorum.machine.connected().cloned().collect(),
        }
    }

    /// The candidates (the voters in the `majority` mode), highest priority first.
    fn candidates(&self) -> &[NodeName] {
        match self {
            Self::Priority(machine) => machine.candidates(),
            Self::Majority(quorum) => quorum.machine.voters(),
        }
    }
}

/// An action of either machine.
enum Action<B: LeaderServer> {
    Priority(ElectionAction<B::State>),
    Majority(MajorityAction<B::State, B::Broadcast>),
}

/// This node's standing in its election, for the local handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Whether it counts a quorum of voters (always in the `priority` mode).
    pub(crate) quorum: bool,
    /// Its term (0 in the `priority` mode).
    pub(crate) term: u64,
}

/// The process that runs one node's part of an election.
pub(crate) struct Instance<B: LeaderServer> {
    behaviour: B,
    machine: Machine<B>,
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
    /// Tells them this node's term and whether it counts a quorum.
    standing: watch::Sender<Standing>,
    /// Tells the driver task when the machine's timer is due.
    timer: watch::Sender<Option<Instant>>,
    /// Whether the timer fired since the driver task was last told.
    timer_fired: bool,
}

/// The channels between an instance and what watches it.
pub(crate) struct Wiring<B: LeaderServer> {
    pub(crate) changes: watch::Receiver<Option<ElectionId>>,
    pub(crate) standing: watch::Receiver<Standing>,
    timer: watch::Receiver<Option<Instant>>,
    /// `majority` mode: where the behaviour's replies wait.
    gate: Option<Arc<ReplyGate<B>>>,
    /// Whether the election counts only the peers of this node's group (see
    /// [`drive_from_node`]).
    by_group: bool,
}

impl<B: LeaderServer> Instance<B> {
    /// An instance named `name` running `behaviour` over `machine`.
    pub(crate) fn new(behaviour: B, machine: Machine<B>, name: &str) -> (Self, Wiring<B>) {
        let (changes, followed) = watch::channel(None);
        let (standing, standing_seen) = watch::channel(machine.standing());
        let (timer, due) = watch::channel(None);
        let gate = match &machine {
            Machine::Priority(_) => None,
            Machine::Majority(quorum) => Some(Arc::clone(&quorum.gate)),
        };
        let by_group = matches!(machine, Machine::Priority(_));
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
            standing,
            timer,
            timer_fired: false,
        };
        let wiring = Wiring {
            changes: followed,
            standing: standing_seen,
            timer: due,
            gate,
            by_group,
        };
        (instance, wiring)
    }

    /// A reply handle for a leader call, gated in the `majority` mode.
    fn reply_handle(&self, route: LeaderRoute<B>) -> LeaderReplyTo<B> {
        let gate = match &self.machine {
            Machine::Priority(_) => None,
            Machine::Majority(quorum) => Some((Arc::clone(&quorum.gate), quorum.machine.term())),
        };
        LeaderReplyTo::new(route, gate)
    }

    /// Where the election stands; `with_nodes` adds the cluster view's nodes (for the status
    /// query, not for every local call).
    fn status(&self, node: &Node, with_nodes: bool) -> LeaderStatus {
        let election = self.machine.current();
        let nodes = match with_nodes {
            true => node.view().nodes.clone(),
            false => Vec::new(),
        };
        let (candidates, workers, alive, absent, refused) = match &self.machine {
            Machine::Priority(machine) => (
                machine.candidates().to_vec(),
                machine.workers().into_iter().collect(),
                machine.alive().into_iter().collect(),
                machine.down().into_iter().collect(),
                machine.refused().iter().cloned().collect(),
            ),
            Machine::Majority(quorum) => {
                let machine = &quorum.machine;
                let voters = machine.voters();
                let refused = machine.refused();
                let connected: BTreeSet<&NodeName> = machine.connected().collect();
                let counted: BTreeSet<&NodeName> = connected
                    .iter()
                    .copied()
                    .filter(|n| !refused.contains(*n))
                    .collect();
                let workers = counted.iter().filter(|n| !voters.contains(n));
                let mut alive: Vec<NodeName> = counted.iter().map(|&n| n.clone()).collect();
                alive.push(node.name().clone());
                alive.sort();
                let absent = voters
                    .iter()
                    .filter(|n| *n != node.name() && !connected.contains(n));
                (
                    voters.to_vec(),
                    workers.map(|&n| n.clone()).collect(),
                    alive,
                    absent.cloned().collect(),
                    refused.iter().cloned().collect(),
                )
            }
        };
        LeaderStatus {
            node: node.name().clone(),
            leader: election.as_ref().map(|e| e.leader.clone()),
            election,
            candidates,
            workers,
            alive,
            absent,
            nodes,
            refused,
        }
    }

    /// The leader's instance, if a leader is known.
    fn leader_pid(&self, ctx: &Context<Self>) -> Option<Pid> {
        let leader = self.machine.current()?.leader;
        if &leader == ctx.node().name() {
            return Some(ctx.pid());
        }
        self.pids.get(&leader).copied()
    }

    /// After any input or callback: carries out the machine's actions, sends the replies a
    /// quorum now covers, releases or fails what waited for a leader, then tells the handles
    /// and the timer.
    async fn settle(&mut self, ctx: &Context<Self>) -> Flow {
        if let Flow::Stop(reason) = self.carry_out(ctx).await {
            return Flow::Stop(reason);
        }
        self.expire_held();
        // What waited for a leader goes first, then the handles learn of it: a call a handle
        // sends once it sees the leader never overtakes an earlier cast held here.
        if let Flow::Stop(reason) = self.release_held(ctx).await {
            return Flow::Stop(reason);
        }
        let flow = self.carry_out(ctx).await;
        let current = self.machine.current();
        let leader_changed = self.changes.send_if_modified(|seen| {
            let changed = *seen != current;
            if changed {
                seen.clone_from(&current);
            }
            changed
        });
        if leader_changed {
            record_leader(&self.name, current.as_ref());
        }
        let standing = self.machine.standing();
        self.standing.send_if_modified(|seen| {
            let changed = *seen != standing;
            *seen = standing;
            changed
        });
        // The driver task forgets a due time once it fires; otherwise it is told only of changes
        // (most messages change none, and waking it for each would cost every call a task switch).
        let due = [self.machine.poll_timeout(), self.held_due()];
        let due = due.into_iter().flatten().min();
        let fired = std::mem::take(&mut self.timer_fired);
        self.timer.send_if_modified(|seen| {
            let changed = fired || *seen != due;
            *seen = due;
            changed
        });
        if let Machine::Majority(quorum) = &mut self.machine
            && quorum.outgoing.handled()
        {
            self.send_batches(ctx, Window::Kept).await;
        }
        flow
    }

    /// Carries out the machine's actions until none is left and no reply given waits to be
    /// numbered.
    async fn carry_out(&mut self, ctx: &Context<Self>) -> Flow {
        loop {
            while let Some(action) = self.poll_action() {
                let flow = match action {
                    Action::Priority(action) => self.execute(ctx, action).await,
                    Action::Majority(action) => self.execute_majority(ctx, action).await,
                };
                if let Flow::Stop(reason) = flow {
                    return Flow::Stop(reason);
                }
            }
            if !self.admit_replies() {
                return Flow::Continue;
            }
            self.release_covered(ctx).await;
        }
    }

    /// `majority` mode: sends the replies a quorum's progress now covers, in order, each after
    /// every message waiting for its caller's node (a caller that reads its own node's copy
    /// once answered finds its write there), so all batches leave first, answered or not.
    async fn release_covered(&mut self, ctx: &Context<Self>) {
        let Machine::Majority(quorum) = &mut self.machine else {
            return;
        };
        let covered = quorum.take_covered();
        if covered.is_empty() {
            return;
        }
        self.send_batches(ctx, Window::Ignored).await;
        for gated in covered {
            gated.route.send(gated.value, gated.term);
        }
    }

    fn poll_action(&mut self) -> Option<Action<B>> {
        match &mut self.machine {
            Machine::Priority(machine) => machine.poll_action().map(Action::Priority),
            Machine::Majority(quorum) => quorum.machine.poll_action().map(Action::Majority),
        }
    }

    /// `majority` mode: numbers the replies the behaviour gave since the last time. Each waits
    /// for a quorum to hold the broadcasts sent so far and to answer a round started after its
    /// request arrived: the round of a broadcast sent since, or else (no lease holding) one
    /// started now (one round for them all); given when this node no longer leads, they fail.
    /// Whether any was.
    fn admit_replies(&mut self) -> bool {
        let Machine::Majority(quorum) = &mut self.machine else {
            return false;
        };
        let given = quorum.gate.take();
        if given.is_empty() {
            return false;
        }
        let at = now();
        let round = match quorum.machine.round() {
            Some(round) if round > quorum.round_at_receipt => Ok(round),
            // A lease (rule 8 of the machine): replies that broadcast nothing (reads) need no
            // round; what they read was this leader's alone to change since.
            Some(_) if quorum.machine.lease_holds(at) => Ok(0),
            _ => quorum.machine.confirm(at),
        };
        let term = quorum.machine.term();
        match (quorum.machine.seq(), round) {
            (Some(seq), Ok(round)) => {
                for GivenReply {
                    route,
                    value,
                    term: taken_in,
                } in given
                {
                    match taken_in == term {
                        true => quorum.gated.push_back(Gated {
                            seq,
                            round,
                            term,
                            route,
                            value,
                        }),
                        false => route.leader_died(),
                    }
                }
                // A quorum of one has already answered: see `release_covered`.
            }
            _ => given
                .into_iter()
                .for_each(|reply| reply.route.leader_died()),
        }
        true
    }

    /// `majority` mode, no leader known: the held calls fail with `NoQuorum` at once when this
    /// node counts no quorum of voters, or once they waited the election wait.
    fn expire_held(&mut self) {
        let Machine::Majority(quorum) = &self.machine else {
            return;
        };
        if self.machine.current().is_some() {
            return;
        }
        let at = now();
        let wait = quorum.election_wait;
        let quorum = self.machine.has_quorum();
        let (expired, waiting) = std::mem::take(&mut self.held_calls)
            .into_iter()
            .partition(|held| !quorum || held.since + wait <= at);
        self.held_calls = waiting;
        for held in expired {
            held.reply.reply(InstanceReply::NoQuorum);
        }
    }

    /// When the oldest held call expires (`majority` mode, no leader known).
    fn held_due(&self) -> Option<Instant> {
        let Machine::Majority(quorum) = &self.machine else {
            return None;
        };
        if self.machine.current().is_some() {
            return None;
        }
        let oldest = self.held_calls.iter().map(|held| held.since).min()?;
        Some(oldest + quorum.election_wait)
    }

    /// Carries out a `priority` machine's action.
    async fn execute(&mut self, ctx: &Context<Self>, action: ElectionAction<B::State>) -> Flow {
        match action {
            ElectionAction::Send { to, message } => self.send_election(ctx, &to, message).await,
            ElectionAction::Elected { election, joined } => {
                tracing::info!(%election, joined = ?joined, "elected");
                let state = self.behaviour.elected(&election, joined.as_ref());
                let members: Vec<NodeName> = match joined {
                    Some(joined) => vec![joined],
                    None => self.machine.members(),
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
                if let Some(election) = self.machine.current() {
                    let flow = self.behaviour.merge(state, &from, &election);
                    return self.follow(ctx, flow).await;
                }
            }
            ElectionAction::MemberDown(node) => {
                if let Some(election) = self.machine.current() {
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

    /// Carries out a `majority` machine's action.
    async fn execute_majority(
        &mut self,
        ctx: &Context<Self>,
        action: MajorityAction<B::State, B::Broadcast>,
    ) -> Flow {
        let Machine::Majority(quorum) = &mut self.machine else {
            return Flow::Continue;
        };
        match action {
            MajorityAction::Persist(durable) => {
                // Written in place, blocking this thread for one fsync: it happens once per
                // term change, and nothing of this instance may go on before it is done.
                let Some(Err(error)) = quorum.term_file.as_ref().map(|f| f.store(&durable)) else {
                    return Flow::Continue;
                };
                // Going on could vote twice in a term after a restart: what was to follow the
                // write never leaves.
                while quorum.machine.poll_action().is_some() {}
                quorum.broken = true;
                let error = crate::error::with_causes(&error);
                tracing::error!(%error, "cannot keep the election's term; this node's instance stops");
                return Flow::Stop(ExitReason::Error(format!("cannot keep the term: {error}")));
            }
            MajorityAction::Send { to, message } => {
                if let Some(full) = quorum.outgoing.push(to.clone(), message, now()) {
                    self.send_majority(ctx, &to, full).await;
                }
            }
            MajorityAction::Elected { term, joined } => {
                let election = ElectionId::of_term(ctx.node().name().clone(), term);
                if joined.is_none() {
                    tracing::info!(%election, "elected");
                }
                let state = self.behaviour.elected(&election, joined.as_ref());
                let members = match joined {
                    Some(joined) => vec![joined],
                    None => quorum.machine.connected().cloned().collect(),
                };
                for member in members {
                    // Leading when the action was queued; if no more, the member waits for
                    // the next leader's state.
                    let _ = quorum.machine.send_state(member, state.clone());
                }
            }
            MajorityAction::Follow {
                term,
                leader,
                state,
            } => {
                let election = ElectionId::of_term(leader, term);
                tracing::info!(%election, "following");
                self.behaviour.surrendered(state, &election);
            }
            MajorityAction::Apply { term, broadcast } => {
                if let Some(election) = self.machine.current().filter(|e| e.term == term) {
                    self.behaviour.from_leader(broadcast, &election);
                }
            }
            MajorityAction::Progress { .. } => {
                self.release_covered(ctx).await;
                self.send_batches(ctx, Window::Progressed).await;
            }
            MajorityAction::LeaderLost { term, leader } => {
                tracing::info!(%leader, term, "leader lost");
                quorum
                    .gated
                    .drain(..)
                    .for_each(|gated| gated.route.leader_died());
            }
            MajorityAction::Refused {
                node,
                voters,
                leases_with,
            } => {
                let config = quorum.machine.config();
                tracing::error!(
                    peer = %node,
                    theirs = ?voters,
                    ours = ?config.voters,
                    their_leases_with = ?leases_with,
                    our_leases_with = ?config.leases_with(),
                    "a connected node was started with other voters or another lease setting; no node here leads, stands or votes while it is connected: give every node the same candidate list, leases and (with leases) election timeout"
                );
            }
        }
        Flow::Continue
    }

    async fn send_majority(
        &mut self,
        ctx: &Context<Self>,
        to: &NodeName,
        messages: Vec<MajorityMessage<B::State, B::Broadcast>>,
    ) {
        let info = InstanceInfo::Majority {
            from: ctx.node().name().clone(),
            pid: ctx.pid(),
            messages,
        };
        // To the peer's instance by pid once it spoke (else by name): the pid is where this
        // instance's replies to the calls it forwarded go, and a link keeps the order of the
        // messages to one destination only, so a reply never overtakes the batch before it.
        let to = match self.pids.get(to) {
            Some(pid) => ServerRef::<Self>::from_pid(*pid),
            None => ServerRef::named(to, &self.name),
        };
        let _ = ctx.node().send(&to, info).await;
    }

    /// Sends the batches of the machine's messages ready to leave (`majority` mode).
    async fn send_batches(&mut self, ctx: &Context<Self>, window: Window) {
        let Machine::Majority(quorum) = &mut self.machine else {
            return;
        };
        let machine = &quorum.machine;
        let leads = machine.is_leader();
        let heartbeat = machine.config().heartbeat;
        let (window, workers_held) = match window {
            Window::Kept if leads => (Some(heartbeat), true),
            Window::Progressed if leads => (Some(heartbeat), false),
            _ => (None, false),
        };
        let voters = machine.voters();
        let held = |peer: &NodeName| workers_held && !voters.contains(peer);
        for (to, messages) in quorum.outgoing.take_ready(now(), window, held) {
            self.send_majority(ctx, &to, messages).await;
        }
    }

    /// Sends `info` to the instance on `to`; lost if `to` is not connected (the machines
    /// learn of that from the node's downs).
    async fn send_to(&mut self, ctx: &Context<Self>, to: &NodeName, info: InstanceInfo<B>) {
        let _ = ctx
            .node()
            .send(&ServerRef::<Self>::named(to, &self.name), info)
            .await;
    }

    /// Carries out what a leader callback returned (its broadcast, in the `majority` mode, is
    /// numbered by the machine and sent with the actions that follow).
    async fn follow(&mut self, ctx: &Context<Self>, flow: LeaderFlow<B::Broadcast>) -> Flow {
        match flow {
            LeaderFlow::Continue => Flow::Continue,
            LeaderFlow::Stop(reason) => Flow::Stop(reason),
            LeaderFlow::Broadcast(message) if matches!(self.machine, Machine::Majority(_)) => {
                if let Machine::Majority(quorum) = &mut self.machine
                    && quorum.machine.broadcast(message, now()).is_err()
                {
                    tracing::debug!("a broadcast given after this node stopped leading is dropped");
                }
                Flow::Continue
            }
            LeaderFlow::Broadcast(message) => {
                if let Some(election) = self.machine.current() {
                    let members: Vec<NodeName> = self.machine.members();
                    for member in members {
                        let info = InstanceInfo::Broadcast {
                            election: election.clone(),
                            message: message.clone(),
                        };
                        self.send_to(ctx, &member, info).await;
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
        self.send_to(ctx, to, info).await;
    }

    /// Routes the held calls and casts, once a leader is known.
    async fn release_held(&mut self, ctx: &Context<Self>) -> Flow {
        let Some(current) = self.machine.current() else {
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
        match self.machine.current() {
            Some(election) if self.machine.is_leader() => {
                let reply = self.reply_handle(LeaderRoute::Direct(reply));
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
            since: now(),
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
        match self.machine.current() {
            Some(election) if self.machine.is_leader() => {
                let route = LeaderRoute::Forwarded {
                    node: ctx.node().clone(),
                    instance: from,
                    reference,
                };
                let reply = self.reply_handle(route);
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
            ForwardOutcome::Replied { reply, term } => {
                forwarded.reply.reply(InstanceReply::Leader { reply, term });
            }
            ForwardOutcome::NoReply => forwarded.reply.reply(InstanceReply::LeaderDied),
            ForwardOutcome::NotLeader(request) => {
                match self.machine.current() {
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
        match self.machine.current() {
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
        let flow = self.settle(ctx).await;
        // No message was handled: nothing drains the mailbox before the first one.
        self.send_batches(ctx, Window::Kept).await;
        match flow {
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
        self.receive();
        let flow = match request {
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
        };
        self.settle_after(ctx, flow).await
    }

    async fn handle_cast(&mut self, message: Self::Cast, ctx: &mut Context<Self>) -> Flow {
        self.receive();
        let flow = match message {
            InstanceCast::Leader(request) => self.leader_cast(ctx, request).await,
            InstanceCast::Local(request) => {
                let status = self.status(ctx.node(), false);
                self.behaviour.handle_cast(request, &status);
                Flow::Continue
            }
        };
        self.settle_after(ctx, flow).await
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
        self.receive();
        let at = now();
        let flow = match message {
            InstanceInfo::Election { from, pid, message } => {
                match &mut self.machine {
                    Machine::Priority(machine) => {
                        self.pids.insert(from.clone(), pid);
                        machine.handle_message(from, message);
                    }
                    Machine::Majority(_) => mixed_modes(&from),
                }
                Flow::Continue
            }
            InstanceInfo::Majority {
                from,
                pid,
                messages,
            } => {
                match &mut self.machine {
                    Machine::Majority(quorum) => {
                        self.pids.insert(from.clone(), pid);
                        quorum.outgoing.answered(&from);
                        for message in messages {
                            quorum.machine.handle_message(from.clone(), message, at);
                        }
                    }
                    Machine::Priority(_) => mixed_modes(&from),
                }
                Flow::Continue
            }
            InstanceInfo::Broadcast { election, message } => {
                let current = self.machine.current();
                if current.as_ref() == Some(&election) && !self.machine.is_leader() {
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
                self.machine.node_up(peer, at);
                Flow::Continue
            }
            InstanceInfo::NodeDown(peer) => {
                self.pids.remove(&peer);
                self.machine.node_down(&peer, at);
                Flow::Continue
            }
            InstanceInfo::Connected(peers) => {
                let peers: BTreeSet<NodeName> = peers.into_iter().collect();
                self.pids.retain(|name, _| peers.contains(name));
                self.machine.connected_now(&peers, at);
                Flow::Continue
            }
            InstanceInfo::Timer => {
                self.timer_fired = true;
                self.machine.timeout(at);
                Flow::Continue
            }
            InstanceInfo::RepliesGiven => Flow::Continue,
        };
        self.settle_after(ctx, flow).await
    }

    async fn handle_drained(&mut self, ctx: &mut Context<Self>) -> Flow {
        self.send_batches(ctx, Window::Kept).await;
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        if let Machine::Majority(quorum) = &mut self.machine
            && !quorum.broken
        {
            // Hand over while the links still live (a node's processes end before its links).
            quorum.machine.resign(now());
            let _ = self.carry_out(ctx).await;
            self.send_batches(ctx, Window::Kept).await;
        }
        self.behaviour.terminate(reason);
    }
}

impl<B: LeaderServer> Instance<B> {
    /// Notes the leader's round as a message arrives (`majority` mode).
    fn receive(&mut self) {
        if let Machine::Majority(quorum) = &mut self.machine {
            quorum.round_at_receipt = quorum.machine.round().unwrap_or(0);
        }
    }

    /// Settles after a message was handled, unless the instance stops.
    async fn settle_after(&mut self, ctx: &Context<Self>, flow: Flow) -> Flow {
        match flow {
            Flow::Continue => self.settle(ctx).await,
            stop => stop,
        }
    }
}

/// A peer's instance runs the other mode: its messages are ignored.
fn mixed_modes(peer: &NodeName) {
    tracing::error!(
        %peer,
        "a peer runs this election in the other mode (priority or majority); give every node the same mode"
    );
}

/// Starts the task that tells the instance `instance` of node ups and downs, in order, and when
/// its machine's timer is due; it ends with the instance or the node.
///
/// The `priority` election acts on the node's group in the cluster view, not on its raw
/// connections: a peer is up for the election while it is connected *and* in this node's group.
/// When links are cut unevenly (A–B cut while both reach C), the view splits the nodes into
/// fully connected groups that every node computes alike, so C drops A or B from its election as
/// they drop each other, and each group elects one leader.
///
/// The `majority` election counts every connected member: any two of its quorums share a voter
/// whatever the links, so it needs no fully connected group, and heeding one would cost it its
/// leader for nothing — a node back from a cut is linked to one peer a moment before the other,
/// and the group rule may set aside, for that moment, a peer that never left.
pub(crate) fn drive_from_node<B: LeaderServer>(
    node: &Node,
    election: &str,
    instance: ServerRef<Instance<B>>,
    wiring: Wiring<B>,
) {
    let events = node.subscribe();
    let span = tracing::info_span!("leader", %election);
    let task = feed::<B>(
        node.clone(),
        instance,
        events,
        wiring.timer,
        wiring.gate,
        wiring.by_group,
    );
    node.spawn_task(span, task);
}

/// The members connected now, with their lives.
fn linked_members(node: &Node) -> impl Iterator<Item = (NodeName, Incarnation)> {
    node.peers()
        .into_iter()
        .filter(|peer| !peer.hidden)
        .map(|peer| (peer.name, peer.incarnation))
}

/// The peers the election counts: the members connected now, in this node's group if
/// `by_group`.
fn counted_peers(node: &Node, by_group: bool) -> GroupPeers {
    GroupPeers::new(
        linked_members(node),
        by_group.then(|| node.view().group.clone()),
    )
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
    gate: Option<Arc<ReplyGate<B>>>,
    by_group: bool,
) {
    let mut views = node.view_changes();
    views.borrow_and_update();
    // The peers connected now, read after subscribing to the node's events: an event about
    // them that follows is applied after it, in order.
    let mut members = counted_peers(&node, by_group);
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
            () = replies_given(gate.as_deref()) => vec![InstanceInfo::RepliesGiven],
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
                    // A peer that restarted meanwhile leaves in its old life and joins in its
                    // new one, so that the machine forgets what the old life said.
                    let group = node.view().group.clone();
                    let mut changes = told(members.resync(linked_members(&node), group));
                    changes.push(InstanceInfo::Connected(members.counted().keys().cloned().collect()));
                    changes
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

async fn replies_given<B: LeaderServer>(gate: Option<&ReplyGate<B>>) {
    match gate {
        Some(gate) => gate.given().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The election metrics of the instance `instance`, which follows `leader`: a change to a new
/// leader counts, one to none does not (a failover is one change).
pub(super) fn record_leader(instance: &str, leader: Option<&ElectionId>) {
    let election = super::election_of(instance);
    if leader.is_some() {
        metrics::counter!(telemetry::LEADER_CHANGES, "election" => election.clone()).increment(1);
    }
    metrics::gauge!(telemetry::LEADER_PRESENT, "election" => election.clone())
        .set(f64::from(u8::from(leader.is_some())));
    let term = leader.map_or(0, |e| e.term.max(e.round));
    metrics::gauge!(telemetry::LEADER_TERM, "election" => election).set(term as f64);
}

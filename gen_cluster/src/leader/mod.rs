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
//!   `data_dir` (one file per election name, see `disk`), or drawn at random without one.
//!
//! That is the `priority` mode ([`ElectionMode::Priority`], gen_leader's): a leader on every side
//! of a partition, merged on heal. In the `majority` mode ([`ElectionMode::Majority`], the
//! `gen_cluster_proto::majority` machine) the candidates are voters and a node leads only while a
//! quorum of them accepts it; there is never a merge (`stepping_down`, `merge` and `handle_down`
//! are not called). Its differences:
//!
//! - Every election has a term ([`ElectionId::term`]) that only grows, one leader per term: the
//!   fencing token to check with a [`Fence`] wherever the leader's acts land. A voter keeps its
//!   term and vote in `data_dir` (required), written and synced before it votes or stands.
//! - A leader call's reply leaves the leader only once a quorum of voters holds its state and
//!   every broadcast the leader sent before the reply, and has answered a round of messages
//!   started after the call arrived (the reply's own broadcast, or a heartbeat sent for it):
//!   the caller's `Ok` means the change survives any minority of crashes, and a reply never
//!   comes from a leader already deposed. A leader that loses its quorum first, or a reply
//!   given in a later term than its call's, fails the call with
//!   [`LeaderCallError::LeaderDied`].
//! - With no leader known, a call fails with [`LeaderCallError::NoQuorum`] at once when this
//!   node counts fewer than a quorum of voters (it is on the minority side), and after twice the
//!   election timeout otherwise (no election was won meanwhile).
//! - A node connected to a peer started with other voters (not the same set) abstains while
//!   that peer is connected — it leads no more, neither stands nor votes, and fails calls with
//!   `NoQuorum` — and logs an error naming the peer; the peer does the same. Two lists could
//!   otherwise each have a quorum of their own and elect two leaders.
//! - A leader that stops (its node shuts down) hands over to the voter furthest along, which
//!   stands at once.
//! - With [`LeaderConfig::leases`], a call whose callback broadcast nothing (a read) is
//!   answered without a round of its own while the leader's lease holds (a quorum answered it
//!   within the lease); a leader elected after a timeout serves nothing for the election
//!   timeout after it won, a handover's successor at once.
//!
//! Callbacks are plain functions: they change the state and return at once, so that elections
//! and calls are never held up by one of them. Do slow work in tasks of your own.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gen_cluster_proto::election::{Election, ElectionConfig};
use gen_cluster_proto::majority::{Majority, MajorityConfig};
use gen_cluster_proto::wire::WireError;
use gen_cluster_proto::{ExitReason, NodeName, Pid};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub use gen_cluster_proto::election::ElectionId;

use crate::clock;
use crate::error::{CallError, DataDirError, DecodeError, StartError};
use crate::process::{Message, ReplyTo, ServerRef};
use crate::telemetry;
use crate::view::KnownNode;
use crate::{Node, SendError};

mod batch;
mod disk;
mod fence;
mod instance;

pub use fence::{Fence, StaleTerm};
use instance::{
    ForwardOutcome, Instance, InstanceCall, InstanceCast, InstanceInfo, InstanceReply, Machine,
    Standing,
};

/// The local name of an election's instance on every node.
pub fn instance_name(election: &str) -> String {
    format!("{INSTANCE_PREFIX}{election}")
}

const INSTANCE_PREFIX: &str = "gen_leader:";

/// The election an instance named `instance` runs (its metrics' `election` label).
fn election_of(instance: &str) -> String {
    instance
        .strip_prefix(INSTANCE_PREFIX)
        .unwrap_or(instance)
        .to_string()
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

/// The gen_leader behaviour. Every node of the election runs the same type. In the `majority`
/// mode `stepping_down`, `merge` and `handle_down` are never called (no leader is ever merged).
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
    /// Connected nodes refused for a candidate list that conflicts with this node's (in the
    /// `majority` mode, any list of other voters, or another lease setting: while one is
    /// connected this node neither leads nor votes).
    pub refused: Vec<NodeName>,
}

/// How an election runs on this node.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The election's name, the same on every node: 1 to 64 ASCII letters, digits, `-`, `_` or
    /// `.`, not starting with `.` (it names the election's files in `data_dir`).
    pub name: String,
    /// The candidates, highest priority first; the same list on every node. A node not in it
    /// is a worker. A candidate added later goes at the end of the list; a node whose list
    /// conflicts with this one (not the same, nor one extending the other) is refused. In the
    /// `majority` mode any other set of voters is refused, and stops the election where it is
    /// seen (see [`LeaderStatus::refused`]).
    pub candidates: Vec<NodeName>,
    /// Workers known in advance; others may join at any time.
    pub workers: Vec<NodeName>,
    /// What happens when a higher-priority candidate comes back (default: the leader stays).
    pub failback: Failback,
    /// How long a node just started waits to meet a leader before leading itself, unless every
    /// candidate is there sooner. Default 1 s.
    pub start_grace: Duration,
    /// Where the incarnation is kept (`gen_leader.<name>.incarnation`; `None`: a random one),
    /// and in the `majority` mode a voter's term and vote (`gen_leader.<name>.term`; required).
    pub data_dir: Option<PathBuf>,
    /// How the leader is chosen. Default: [`ElectionMode::Priority`].
    pub mode: ElectionMode,
    /// `majority` mode: a voter that hears no leader for a random time in `[t, 2t)` stands, and
    /// a leader that hears no quorum within `t` steps down. Default 500 ms.
    pub election_timeout: Duration,
    /// `majority` mode: how often the leader tells its members it lives; well under
    /// `election_timeout`. Default 100 ms.
    pub heartbeat: Duration,
    /// `majority` mode: leader leases. A leader call that broadcasts nothing (a read) is
    /// answered by the leader alone, a round trip sooner, while a quorum answered it within the
    /// lease (`election_timeout × 0.98 − 5 ms`, on the monotonic clock); in return a leader
    /// elected after a timeout (a crash, a cut) serves nothing for `election_timeout` after it
    /// won, so that the leader before it has stopped answering reads by then. A handover (a
    /// leader that shuts down) costs no wait. Not for hosts that suspend (their monotonic clock
    /// stops). It must be the same on every node, and with it `election_timeout` too (a node
    /// elected with leases off, or a shorter timeout, would not wait long enough): a node
    /// connected to one that differs stops the election, as one with other candidates does
    /// (see [`LeaderStatus::refused`]). To change either, stop every node first, as for the
    /// candidates. Default `false`.
    pub leases: bool,
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
            mode: ElectionMode::Priority,
            election_timeout: Duration::from_millis(500),
            heartbeat: Duration::from_millis(100),
            leases: false,
        }
    }

    /// The `majority` mode's machine for `node`, or why the settings cannot run it.
    fn majority<S: Clone, B: Clone>(
        &self,
        node: &NodeName,
    ) -> Result<(Majority<S, B>, Option<disk::TermFile>), StartError> {
        let invalid = |why: &str| Err(StartError::BadElectionConfig(why.to_string()));
        if self.candidates.is_empty() {
            return invalid("a majority election needs candidates: they are its voters");
        }
        let distinct: BTreeSet<&NodeName> = self.candidates.iter().collect();
        if distinct.len() < self.candidates.len() {
            return invalid("a candidate is named twice: each voter counts once in a quorum");
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.election_timeout {
            return invalid("the heartbeat must be above zero and below the election timeout");
        }
        if self.election_timeout > MAX_ELECTION_TIMEOUT {
            return invalid("the election timeout must be at most an hour");
        }
        if self.candidates.len().is_multiple_of(2) {
            tracing::warn!(
                voters = self.candidates.len(),
                "an even number of voters tolerates no more failures than one fewer; \
                 add or remove a candidate"
            );
        }
        let (term_file, durable) = match (&self.data_dir, self.candidates.contains(node)) {
            (Some(dir), true) => {
                let (file, durable) = disk::TermFile::open(dir, &self.name)?;
                (Some(file), durable)
            }
            (None, true) => return Err(DataDirError::NoDataDir.into()),
            (_, false) => (None, Default::default()),
        };
        let config = MajorityConfig {
            voters: self.candidates.clone(),
            election_timeout: self.election_timeout,
            heartbeat: self.heartbeat,
            leases: self.leases,
        };
        let machine = Majority::new(node.clone(), config, durable, clock::now(), clock::seed());
        Ok((machine, term_file))
    }
}

/// An election's name names its instance and its files in the data directory: 1 to 64 ASCII
/// letters, digits, `-`, `_` or `.`, not starting with `.`.
fn check_election_name(name: &str) -> Result<(), StartError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=64).contains(&name.len()) && !name.starts_with('.') && name.chars().all(allowed) {
        return Ok(());
    }
    Err(StartError::BadElectionConfig(format!(
        "the election name {name:?} must be 1 to 64 ASCII letters, digits, '-', '_' or '.', \
         not starting with '.' (it names files in the data directory)"
    )))
}

/// The longest election timeout taken: beyond it a minority side would wait hours to say so.
const MAX_ELECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How an election chooses its leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ElectionMode {
    /// gen_leader's: the highest-priority candidate each node can reach leads; every side of a
    /// partition has a leader, and their states are merged on heal.
    #[default]
    Priority,
    /// A leader only while a quorum (⌊n/2⌋+1) of the candidates, its voters, accepts it; none on
    /// a minority side; terms that fence; replies sent once a quorum holds the change.
    Majority,
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

/// A leader call failed. [`LeaderDied`](Self::LeaderDied) and [`NoQuorum`](Self::NoQuorum) are
/// worth calling again for (once the request is safe to handle twice, for the first);
/// [`Overloaded`](Self::Overloaded) after a pause.
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
    /// `majority` mode: no leader with a quorum of voters could be reached — this node counts
    /// fewer than a quorum of voters (it is on a minority side), a node connected to it was
    /// started with other voters (no node that sees it leads or votes: see the error logged and
    /// [`LeaderStatus::refused`]), or no election was won within twice the election timeout.
    /// The request was not handled; call again once the voters are reachable.
    #[error(
        "no leader with a quorum of voters is reachable from this node; the request was not handled"
    )]
    NoQuorum,
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
    /// `majority` mode: where the reply waits until a quorum holds what came before it, and
    /// the term the call was taken in (a reply given in a later term fails: what the call
    /// changed may be lost with the earlier term).
    gate: Option<(Arc<ReplyGate<B>>, u64)>,
}

/// `majority` mode: the replies a leader's behaviour gave, which its instance sends once a
/// quorum of voters holds the broadcasts sent before them and confirms the leader still leads.
/// One entry per leader call at most, so it is bounded by the calls in flight.
pub(crate) struct ReplyGate<B: LeaderServer> {
    given: Mutex<Vec<GivenReply<B>>>,
    /// Wakes the instance for a reply given outside its callbacks.
    wake: Notify,
}

/// A reply given, with the term its call was taken in.
pub(crate) struct GivenReply<B: LeaderServer> {
    pub(crate) route: LeaderRoute<B>,
    pub(crate) value: B::Reply,
    pub(crate) term: u64,
}

impl<B: LeaderServer> ReplyGate<B> {
    pub(crate) fn new() -> Self {
        Self {
            given: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    fn give(&self, reply: GivenReply<B>) {
        self.given
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reply);
        self.wake.notify_one();
    }

    /// The replies given since the last call.
    pub(crate) fn take(&self) -> Vec<GivenReply<B>> {
        std::mem::take(&mut *self.given.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Resolves when a reply was given.
    pub(crate) async fn given(&self) {
        self.wake.notified().await;
    }
}

/// Where a leader call's reply goes.
pub(crate) enum LeaderRoute<B: LeaderServer> {
    /// To the caller, which called this instance itself.
    Direct(ReplyTo<InstanceReply<B>>),
    /// To the instance that forwarded the call for its caller.
    Forwarded {
        node: Node,
        instance: Pid,
        reference: u64,
    },
}

impl<B: LeaderServer> LeaderRoute<B> {
    /// Sends the reply, given in `term` (dropped if the caller has gone).
    pub(crate) fn send(self, reply: B::Reply, term: u64) {
        match self {
            Self::Direct(to) => to.reply(InstanceReply::Leader { reply, term }),
            Self::Forwarded {
                node,
                instance,
                reference,
            } => {
                let outcome = ForwardOutcome::Replied { reply, term };
                forward_outcome::<B>(&node, instance, reference, outcome);
            }
        }
    }

    /// Tells the caller the leader was lost before its reply could be sent.
    pub(crate) fn leader_died(self) {
        match self {
            Self::Direct(reply) => reply.reply(InstanceReply::LeaderDied),
            Self::Forwarded {
                node,
                instance,
                reference,
            } => forward_outcome::<B>(&node, instance, reference, ForwardOutcome::NoReply),
        }
    }
}

impl<B: LeaderServer> LeaderReplyTo<B> {
    fn new(route: LeaderRoute<B>, gate: Option<(Arc<ReplyGate<B>>, u64)>) -> Self {
        Self {
            route: Some(route),
            gate,
        }
    }

    /// Sends the reply (dropped if the caller has gone). In the `majority` mode it leaves once
    /// a quorum of voters holds what this leader broadcast before it.
    pub fn reply(mut self, value: B::Reply) {
        if let Some(route) = self.route.take() {
            match &self.gate {
                Some((gate, term)) => gate.give(GivenReply {
                    route,
                    value,
                    term: *term,
                }),
                None => route.send(value, 0),
            }
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
    /// This node's term and whether it counts a quorum, as its instance updates them (local
    /// handles only).
    standing: Option<watch::Receiver<Standing>>,
    /// `majority` mode: how long a call waits for a leader to be elected before it fails with
    /// `NoQuorum`.
    election_wait: Option<Duration>,
}

impl<B: LeaderServer> Clone for Leader<B> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            instance_name: Arc::clone(&self.instance_name),
            instance: self.instance.clone(),
            changes: self.changes.clone(),
            standing: self.standing.clone(),
            election_wait: self.election_wait,
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
        check_election_name(&config.name)?;
        let (machine, election_wait) = match config.mode {
            ElectionMode::Priority => {
                let machine = priority_machine(node, &config)?;
                (Machine::Priority(Box::new(machine)), None)
            }
            ElectionMode::Majority => {
                let (machine, term_file) = config.majority(node.name())?;
                let wait = 2 * config.election_timeout;
                (Machine::majority(machine, term_file, wait), Some(wait))
            }
        };
        let name = instance_name(&config.name);
        let (instance, wiring) = Instance::new(behaviour, machine, &name);
        // No leader yet: an alert on a missing leader fires even if one never comes.
        instance::record_leader(&name, None);
        let changes = wiring.changes.clone();
        let standing = wiring.standing.clone();
        let server = node.spawn_named(&name, instance).await?;
        instance::drive_from_node(node, &config.name, server.clone(), wiring);
        Ok(Self {
            node: node.clone(),
            instance_name: name.into(),
            instance: server,
            changes: Some(changes),
            standing: Some(standing),
            election_wait,
        })
    }

    /// This node's term in the `majority` mode (the highest it has seen; 0 in the `priority`
    /// mode, or for a handle made with [`at`](Self::at)).
    pub fn term(&self) -> u64 {
        self.standing
            .as_ref()
            .map_or(0, |standing| standing.borrow().term)
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
            standing: None,
            election_wait: None,
        }
    }

    /// The election this node follows (its own if it leads), updated on every change: wait
    /// with `changed()`. `None` for a handle made with [`at`](Self::at).
    pub fn leader_changes(&self) -> Option<watch::Receiver<Option<ElectionId>>> {
        self.changes.clone()
    }

    /// Calls the leader: waits while no leader is known (in the `majority` mode, see the
    /// module's notes for when it fails with [`LeaderCallError::NoQuorum`] instead), and fails at
    /// once with [`LeaderCallError::LeaderDied`] if the leader is lost during the call. `timeout`
    /// bounds the whole wait.
    pub async fn leader_call(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<B::Reply, LeaderCallError> {
        let (reply, _term) = self.leader_call_with_term(request, timeout).await?;
        Ok(reply)
    }

    /// [`leader_call`](Self::leader_call), and the term of the leader that replied (0 in the
    /// `priority` mode): what the caller passes to a [`Fence`](crate::Fence) wherever the call's effect
    /// lands.
    pub async fn leader_call_with_term(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<(B::Reply, u64), LeaderCallError> {
        let outcome = match &self.changes {
            Some(changes) => self.call_leader(changes.clone(), request, timeout).await,
            None => self.call_through_instance(request, timeout).await,
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(LeaderCallError::Timeout(_)) => "timeout",
            Err(LeaderCallError::LeaderDied) => "leader_died",
            Err(LeaderCallError::NoQuorum) => "no_quorum",
            Err(LeaderCallError::NotRunning) => "not_running",
            Err(LeaderCallError::Overloaded) => "overloaded",
            Err(_) => "other",
        };
        let election = election_of(&self.instance_name);
        metrics::counter!(telemetry::LEADER_CALLS, "election" => election, "outcome" => label)
            .increment(1);
        outcome
    }

    /// The call of a handle on this node's own instance: straight to the leader's instance.
    async fn call_leader(
        &self,
        mut changes: watch::Receiver<Option<ElectionId>>,
        mut request: B::Call,
        timeout: Duration,
    ) -> Result<(B::Reply, u64), LeaderCallError> {
        let deadline = Instant::now() + timeout;
        loop {
            let election = self.known_leader(&mut changes, deadline, timeout).await?;
            let leader = ServerRef::<Instance<B>>::named(&election.leader, &self.instance_name);
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .node
                .call(&leader, InstanceCall::Leader(request), left)
                .await
            {
                Ok(InstanceReply::Leader { reply, term }) => return Ok((reply, term)),
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
                Ok(InstanceReply::LeaderDied) => return Err(LeaderCallError::LeaderDied),
                Ok(_) => return Err(wrong_reply::<B::Reply>()),
                Err(error) => return Err(LeaderCallError::from_leader(error, timeout)),
            }
        }
    }

    /// The election this node follows, once one is: in the `majority` mode, `NoQuorum` at once
    /// while this node counts no quorum of voters, or after `election_wait` with no leader.
    async fn known_leader(
        &self,
        changes: &mut watch::Receiver<Option<ElectionId>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<ElectionId, LeaderCallError> {
        let no_quorum = async {
            match (&self.standing, self.election_wait) {
                (Some(standing), Some(wait)) => {
                    let mut standing = standing.clone();
                    let _ = tokio::time::timeout(wait, standing.wait_for(|s| !s.quorum)).await;
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            known = tokio::time::timeout_at(deadline, changes.wait_for(Option::is_some)) => {
                match known {
                    Ok(Ok(followed)) => followed.clone().ok_or(LeaderCallError::NotRunning),
                    Ok(Err(_)) => Err(LeaderCallError::NotRunning),
                    Err(_) => Err(LeaderCallError::Timeout(timeout)),
                }
            }
            () = no_quorum => Err(LeaderCallError::NoQuorum),
        }
    }

    /// The call of a handle on another node's instance: that instance routes it.
    async fn call_through_instance(
        &self,
        request: B::Call,
        timeout: Duration,
    ) -> Result<(B::Reply, u64), LeaderCallError> {
        let call = InstanceCall::Route(request);
        match self.node.call(&self.instance, call, timeout).await {
            Ok(InstanceReply::Leader { reply, term }) => Ok((reply, term)),
            Ok(InstanceReply::LeaderDied) => Err(LeaderCallError::LeaderDied),
            Ok(InstanceReply::Overloaded) => Err(LeaderCallError::Overloaded),
            Ok(InstanceReply::NoQuorum) => Err(LeaderCallError::NoQuorum),
            Ok(_) => Err(wrong_reply::<B::Reply>()),
            Err(error) => Err(LeaderCallError::from_instance(error, timeout)),
        }
    }

    /// [`leader_call`](Self::leader_call), sent again (after a pause that doubles from 10 ms
    /// to 500 ms) when the leader is lost during the call, or no leader with a quorum was
    /// reachable (`majority` mode), until `timeout`: for requests that are safe to handle twice
    /// (the lost leader may have handled it before it went). Other failures are returned at
    /// once.
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
                Err(LeaderCallError::LeaderDied | LeaderCallError::NoQuorum)
                    if Instant::now() + pause < deadline =>
                {
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
    /// through the instance, which holds it until a leader is known. In the `majority` mode,
    /// fails with `NoQuorum` when no leader is known and this node counts no quorum of voters.
    pub async fn leader_cast(&self, request: B::Cast) -> Result<(), LeaderCallError> {
        let leader = self
            .changes
            .as_ref()
            .and_then(|changes| changes.borrow().as_ref().map(|e| e.leader.clone()));
        let quorum = self.standing.as_ref().is_none_or(|s| s.borrow().quorum);
        if leader.is_none() && !quorum {
            return Err(LeaderCallError::NoQuorum);
        }
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

/// The `priority` mode's machine for `node`, with its incarnation drawn or kept in `data_dir`.
fn priority_machine<S: Clone>(
    node: &Node,
    config: &LeaderConfig,
) -> Result<Election<S>, StartError> {
    if config.leases {
        let why = "leases are a setting of the majority mode: set mode to ElectionMode::Majority";
        return Err(StartError::BadElectionConfig(why.to_string()));
    }
    let incarnation = match &config.data_dir {
        Some(dir) => disk::next_incarnation(dir, &config.name)?,
        None => clock::seed() >> 1,
    };
    Ok(Election::new(
        node.name().clone(),
        incarnation,
        ElectionConfig {
            candidates: config.candidates.clone(),
            workers: config.workers.clone(),
            failback: config.failback == Failback::Always,
            start_grace: config.start_grace,
        },
        clock::now(),
    ))
}

/// An instance answered a call with a reply of another kind (a bug, or mixed versions).
fn wrong_reply<R>() -> LeaderCallError {
    LeaderCallError::BadReply(DecodeError::WrongType {
        expected: std::any::type_name::<R>(),
    })
}

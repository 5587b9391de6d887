//! The `majority` election, as a state machine: a leader only while a quorum (⌊n/2⌋+1) of the
//! voters accepts it, terms that only grow and fence a deposed leader, and changes that, once a
//! quorum holds them, survive any minority of voters losing their memory (crashing), and a
//! majority too while a running voter holds them. Raft's
//! election without its log: the leader's changes are its behaviour's state, handed whole to a
//! member that lacks it ([`MajorityMessage::State`]), then streamed as numbered broadcasts
//! ([`MajorityMessage::Append`]). The runtime's `leader` module is to run one machine per node
//! and per election name in this mode, as it runs `crate::election` in the `priority` mode.
//!
//! What it needs of the runtime: messages between two nodes arrive in order, and none is lost
//! while their link lives (a TCP connection, one per pair); the loss of a link is told
//! ([`Majority::handle_node_down`]) before a new one to the same peer
//! ([`Majority::handle_node_up`]).
//!
//! The rules:
//!
//! 1. **Terms.** Every message carries its sender's term. A node that hears a later term adopts
//!    it and follows no one in it until its leader speaks; a message of an earlier term is
//!    answered with the later one, so its sender catches up. A voter's term and its vote are
//!    [`Durable`]: the runtime writes them to disk ([`MajorityAction::Persist`]) before it sends
//!    what follows, so a restarted voter never votes twice in one term. One vote per term and a
//!    quorum per win make at most one leader per term. A term with no successor (`u64::MAX`)
//!    is never taken.
//! 2. **Up to date.** What a node holds is a [`Position`]: the term of the leader whose state it
//!    holds and how many of that leader's broadcasts it has applied; a new leader starts at
//!    `(term, 0)` and its state carries every change it held. A voter grants its vote only to a
//!    candidate at least as far as itself (Raft's election restriction), so a change a quorum
//!    holds is held by every later leader. A voter that took part in a term in an earlier life
//!    and holds nothing yet in this one (its term is on disk, its state was in memory) cannot
//!    compare what it acknowledged then. It does not stand (unless every other voter has told
//!    it, in this life, that it holds nothing either: the cluster restarted whole, nothing is
//!    left to lose), and its vote is *conditional* ([`MajorityMessage::VoteReply`]; its own
//!    too, when it stands): the candidate counts it only once every other voter has answered
//!    it in its term, each holding no more than the candidate. An answer in the candidate's term is final: its
//!    voter took that term, so it takes no earlier leader's state from then on (rule 1), and a
//!    change some voter held when it answered is held by the candidate. (What a voter said
//!    before, in a greeting, is not enough: a state on its way can overtake it.) So a change a
//!    quorum acknowledged is held by every later leader unless, at some moment, a majority of
//!    the voters had lost their memory and no running voter held it. A restarted voter spends
//!    its vote only on a candidate as far as every other voter told it it holds, and grants a
//!    pre-vote likewise. A new cluster elects with any quorum; a voter restarted while a leader
//!    lives gets its state and votes again; when a majority of the voters lost their memory
//!    together, the voter furthest along among those that kept theirs is elected once every
//!    voter answers it, and none while a voter is missing.
//! 3. **Pre-vote and stickiness.** A voter that hears no leader for its election timeout (random
//!    in `[t, 2t)`) first asks whether it would win ([`MajorityMessage::PreVote`]); only with a
//!    quorum of yeses does it raise its term. A voter that heard a leader within `t` refuses
//!    both, so a node coming back from a cut cannot depose a healthy leader (unless its term
//!    ran ahead after a pre-vote won and a vote lost: its next message then deposes the
//!    leader, once, as in etcd). A refusal names the
//!    refuser's term, and a pre-candidate behind it adopts it: a node whose term ran ahead
//!    while it could not win does not block the others for good (etcd#9586). A voter met while
//!    a node stands (their link came up meanwhile) is asked at once, once it greets: what was
//!    asked before went unheard, and waiting would cost an election timeout. A pre-candidate
//!    that grants the pre-vote of a voter earlier by name stops asking for its own until a
//!    heartbeat later, so that two voters asking each other do not both stand and split the
//!    vote.
//! 4. **Check-quorum.** A leader whose messages sent within the last `t` no quorum (itself
//!    included) has answered steps down: a leader cut off from its quorum stops leading within
//!    one election timeout, and at once when its links to the voters close.
//! 5. **Commit and confirm.** The leader numbers its broadcasts (`seq`) and every message it
//!    sends to its members (`round`); members answer each with what they hold and the round.
//!    A broadcast is *committed* once a quorum of voters holds it; a round is *confirmed* once a
//!    quorum answered it, still in this term ([`MajorityAction::Progress`]). Nothing is, until
//!    a quorum said it holds the leader's state: that state may carry its predecessor's last
//!    broadcasts, which no quorum held yet (Raft's leader that commits nothing before an entry
//!    of its own term). The runtime sends a
//!    leader call's reply only once every broadcast sent before it is committed and a round
//!    started after it ([`Majority::confirm`]) is confirmed: the caller's `Ok` means a quorum
//!    holds the change, and a read never comes from a leader already deposed (Raft's read
//!    index; no clock is trusted). With leases, a reply that follows no broadcast of its own
//!    needs no round while the lease holds (rule 8).
//! 6. **Handover.** A leader that resigns tells the voter furthest along (among equals, the
//!    earliest by name: the one that stands first should it see the close first) to stand at once
//!    ([`MajorityMessage::TimeoutNow`]); voters grant such a vote despite rule 3. A voter that
//!    sees its leader's link close stands after a short delay by its rank among the voters
//!    (by name), without waiting for its timeout: a crash is seen at once, a hang after `t`. So
//!    does a leader whose links to its quorum closed. A follower that refused a pre-vote only
//!    because it still heard its leader judges it again when that leader's link closes: the
//!    voter that saw the crash first does not wait for the next ranked.
//! 7. **One list of voters, one lease.** Every node greets a peer with its list of voters and
//!    its lease setting ([`MajorityConfig::leases_with`]), and answers a peer's first greeting
//!    with its own (a message from a peer not counted yet goes unheard, and the peer may have
//!    greeted this node before this node counted it). Until a peer's greeting is heard, nothing
//!    else it says is. Two lists could each have a quorum of nodes that hold it, with no node
//!    in both (`a, b, c` on a and b; `c, d, e` on c, d and e), and elect a leader each; a voter
//!    elected without leases, or with a shorter `t`, would wait less than its predecessor's
//!    lease may last (rule 8). So a node linked to a peer whose list differs (as a set), or a
//!    voter linked to a voter whose lease setting differs, abstains while that link lives: it
//!    leads no more, follows no one, neither stands nor votes, and heeds no message but
//!    greetings; the runtime is told ([`MajorityAction::Refused`]) to say which node to fix.
//!    The peer, greeted with this node's settings, abstains too, so nodes that meet cannot
//!    keep two leaders, nor serve within one another's lease; nodes of two lists that never
//!    meet are two clusters, which no protocol can tell from one. (A worker's lease setting
//!    is not compared: it never leads.)
//!
//! 8. **Leases** (only with [`MajorityConfig::leases`]). A round a quorum answered lets the
//!    leader answer reads by itself (a call that broadcast nothing: [`Majority::lease_holds`])
//!    for a [`lease`](MajorityConfig::lease) from when the round was sent: `t × (1 − 2ρ) −
//!    margin`, with ρ the bound on how far each clock's rate is off true time
//!    ([`MAX_CLOCK_DRIFT`]). A leader elected by a timeout lets no reply leave (reads and writes wait) for `t` after it
//!    won: whatever leader led before, its last round a quorum answered was sent before that
//!    win (the two quorums share a voter, which answered the round before it voted in the
//!    later term), so its lease ended first, on any clock. A leader elected by a handover
//!    serves at once: its predecessor, past its own wait then, stopped before it handed over,
//!    and one still waiting out earlier leases hands over to no one. Only the monotonic clock
//!    is used; a host that sleeps (suspend, not a paused process) stops it, and then a lease
//!    can outlast its term. Every voter must run with the same `leases` and, with leases, the
//!    same `t`: greetings carry both (rule 7).
//!
//! Workers (nodes not among the voters) follow and never vote. The machine is generic over `S`,
//! the behaviour's state, and `B`, its broadcasts; it never looks inside either. Costs: O(voters)
//! time per event, O(nodes) state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::NodeName;

/// How many voters of `voters` make a quorum: ⌊n/2⌋+1.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Settings of a `majority` election, the same on every node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MajorityConfig {
    /// The voters: the candidates, the same list everywhere.
    pub voters: Vec<NodeName>,
    /// `t`: a voter that hears no leader for a random time in `[t, 2t)` stands; a leader that
    /// has not heard a quorum within `t` steps down; a voter that heard a leader within `t`
    /// votes for no one else.
    pub election_timeout: Duration,
    /// How often a leader tells its members it lives (well under `t`).
    pub heartbeat: Duration,
    /// Leader leases (rule 8): a leader answers a call that broadcast nothing (a read) while a
    /// quorum answered it within [`lease`](Self::lease), without a round of its own; a leader
    /// elected by a timeout serves nothing for `t`. The same on every node.
    pub leases: bool,
}

/// The most a node's monotonic clock may be off true time in rate, either way, as a fraction
/// (so two clocks may differ by twice it): a lease lasts `t × (1 − 2 × MAX_CLOCK_DRIFT) −
/// LEASE_MARGIN`, so that it ends, on any clock, before a successor's wait of `t` on its own.
pub const MAX_CLOCK_DRIFT: f64 = 0.01;

/// Taken off every lease on top of the drift.
pub const LEASE_MARGIN: Duration = Duration::from_millis(5);

impl MajorityConfig {
    /// How long a round answered by a quorum lets the leader answer reads by itself, counted
    /// from when the round was sent; `None` without leases.
    pub fn lease(&self) -> Option<Duration> {
        let t = self.election_timeout;
        self.leases.then(|| {
            t.mul_f64(1.0 - 2.0 * MAX_CLOCK_DRIFT)
                .saturating_sub(LEASE_MARGIN)
        })
    }

    /// What every node's lease setting must match (rule 7): with leases, the election timeout
    /// they are drawn from; `None` without.
    pub fn leases_with(&self) -> Option<Duration> {
        self.leases.then_some(self.election_timeout)
    }
}

/// What a node holds: the term of the leader whose state it has, and how many of that
/// leader's broadcasts it has applied since. Ordered by term, then broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The leader's term.
    pub term: u64,
    /// Its broadcasts applied, from 0 (its state alone).
    pub seq: u64,
}

/// What a voter keeps on disk, written and synced before the messages that depend on it leave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Durable {
    /// The latest term this node has seen.
    pub term: u64,
    /// Whom it voted for in that term.
    pub voted_for: Option<NodeName>,
}

/// Between the instances of two nodes. `held` is what the sender holds (`None`: nothing in
/// this life).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MajorityMessage<S, B> {
    /// Sent when the peer is counted: the sender's term, what it holds and the settings every
    /// node must share (rule 7).
    Hello {
        /// The sender's term.
        term: u64,
        /// What it holds.
        held: Option<Position>,
        /// The voters it was started with.
        voters: Vec<NodeName>,
        /// Its lease setting ([`MajorityConfig::leases_with`]).
        leases_with: Option<Duration>,
    },
    /// Would the receiver vote for the sender in `term` (one past the sender's own)?
    PreVote {
        /// The term it would stand in.
        term: u64,
        /// What it holds.
        held: Option<Position>,
    },
    /// The answer to a [`PreVote`](Self::PreVote): `term` is the one asked about when granted,
    /// the receiver's own otherwise.
    PreVoteReply {
        /// See above.
        term: u64,
        /// Whether it would vote.
        granted: bool,
        /// What the answering node holds.
        held: Option<Position>,
    },
    /// A vote request of a candidate in `term`.
    Vote {
        /// The candidate's term.
        term: u64,
        /// What it holds.
        held: Option<Position>,
        /// Sent on a leader's resignation: granted even by a voter that hears a leader.
        handover: bool,
    },
    /// The answer to a [`Vote`](Self::Vote).
    VoteReply {
        /// The voter's term.
        term: u64,
        /// Whether it voted for the candidate.
        granted: bool,
        /// What the voter holds.
        held: Option<Position>,
        /// The vote counts only if every voter answered in this term and none holds more than
        /// the candidate: the voter lost its memory and cannot compare by itself (rule 2).
        conditional: bool,
    },
    /// The leader of `term`'s whole state, as of its broadcast `seq`, sent in `round`.
    State {
        /// The leader's term.
        term: u64,
        /// Its broadcasts the state includes.
        seq: u64,
        /// The leader's round when it sent this.
        round: u64,
        /// The state.
        state: S,
    },
    /// The leader of `term`'s broadcast number `seq` (from 1), sent in `round`.
    Append {
        /// The leader's term.
        term: u64,
        /// The broadcast's number.
        seq: u64,
        /// The leader's round when it sent this.
        round: u64,
        /// The broadcast.
        broadcast: B,
    },
    /// The leader of `term` lives; it has sent `seq` broadcasts; this is its `round`.
    Heartbeat {
        /// The leader's term.
        term: u64,
        /// Its broadcasts sent.
        seq: u64,
        /// The leader's round.
        round: u64,
    },
    /// A member's answer to its leader's message of `round`: it holds the broadcasts up to
    /// `held` of that term, or lacks the state (`None`) and asks for it.
    Ack {
        /// The member's term.
        term: u64,
        /// The leader's broadcasts it holds, if it has the leader's state.
        held: Option<u64>,
        /// The round answered.
        round: u64,
    },
    /// The leader of `term` resigns: stand now.
    TimeoutNow {
        /// The resigning leader's term.
        term: u64,
    },
}

impl<S, B> MajorityMessage<S, B> {
    /// Whether this message, sent after `earlier` on the same link, says all `earlier` said, so
    /// that a sender still holding `earlier` may send this one alone: an answer supersedes an
    /// earlier answer of the same term (within a term what a member holds only grows, and
    /// answering a round answers every round sent before it on the link).
    pub fn supersedes(&self, earlier: &Self) -> bool {
        matches!(
            (self, earlier),
            (Self::Ack { term, .. }, Self::Ack { term: before, .. }) if term == before
        )
    }
}

/// What the runtime must do, in order. A [`Persist`](Self::Persist) must be on disk before
/// any action after it is carried out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum MajorityAction<S, B> {
    /// Write the term and vote to disk (atomically, synced), then go on.
    Persist(Durable),
    /// Send `message` to the instance on `to`.
    Send {
        /// The node.
        to: NodeName,
        /// The message.
        message: MajorityMessage<S, B>,
    },
    /// This node leads `term`: call `elected` and send the state it returns in a
    /// [`MajorityMessage::State`] (see [`Majority::send_state`]) to `joined`, or to every
    /// member on a fresh win (`joined` is `None`).
    Elected {
        /// The term.
        term: u64,
        /// The member that lacks the state, if that is the reason.
        joined: Option<NodeName>,
    },
    /// This node follows `leader` in `term`, whose state this is: call `surrendered`.
    Follow {
        /// The term.
        term: u64,
        /// The leader.
        leader: NodeName,
        /// Its state.
        state: S,
    },
    /// A broadcast of the leader of `term`, in order: call `from_leader`.
    Apply {
        /// The term.
        term: u64,
        /// The broadcast.
        broadcast: B,
    },
    /// On the leader: a quorum of voters holds the broadcasts up to `committed` of `term`, and
    /// has answered its rounds up to `confirmed` in that term. Sent once the leader serves (a
    /// quorum holds its state, and with leases, earlier leases are over: rule 8), then when
    /// either grows; until then no reply may leave.
    Progress {
        /// The term.
        term: u64,
        /// The last broadcast committed.
        committed: u64,
        /// The last round confirmed.
        confirmed: u64,
    },
    /// The leader of `term` (this node, or the one it followed) is no longer known to lead
    /// here: fail what waits on it.
    LeaderLost {
        /// The term.
        term: u64,
        /// The leader.
        leader: NodeName,
    },
    /// The peer `node` was started with other voters or another lease setting: this node
    /// abstains while it is linked to it (rule 7). Tell the operator.
    Refused {
        /// The peer.
        node: NodeName,
        /// Its voters.
        voters: Vec<NodeName>,
        /// Its lease setting ([`MajorityConfig::leases_with`]).
        leases_with: Option<Duration>,
    },
}

/// Only the leader broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node does not lead")]
pub struct NotLeader;

/// How many of its latest rounds a leader remembers the sending time of: answers to older ones
/// still confirm them, but no longer count as recent for check-quorum.
const ROUNDS_KEPT: usize = 1024;

/// Rounds started closer together than this share the sending time of the first: with
/// [`ROUNDS_KEPT`], the times of the last second or more are kept however many rounds the
/// writes start.
const ROUND_TIME_GRAIN: Duration = Duration::from_millis(1);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Role {
    /// Following `leader` (if known), last heard at `heard`.
    Follower {
        leader: Option<NodeName>,
        heard: Option<Instant>,
    },
    /// Asking whether it would win its term plus one.
    PreCandidate {
        granted: BTreeSet<NodeName>,
    },
    /// Standing in its own term since `since`; `handover`: asked to by its resigning leader.
    /// `conditional`: the votes of voters that lost their memory; `answered`: what each voter
    /// that answered in this term holds (rule 2).
    Candidate {
        granted: BTreeSet<NodeName>,
        conditional: BTreeSet<NodeName>,
        answered: BTreeMap<NodeName, Option<Position>>,
        since: Instant,
        handover: bool,
    },
    Leader(Leading),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Leading {
    /// Broadcasts sent in this term.
    seq: u64,
    /// Rounds sent in this term.
    round: u64,
    committed: u64,
    confirmed: u64,
    /// When each recent round was sent, oldest first.
    sent: VecDeque<(u64, Instant)>,
    /// Per voter (not this node): what it answered last.
    answers: BTreeMap<NodeName, Answer>,
    /// Members sent the state and not yet answered it, with the round it went out in: their
    /// answers to what was sent before it ask for it again, and are not heeded; an answer to a
    /// later round that still lacks it says it went unheeded (sent while the member abstained,
    /// say), and it goes again.
    awaiting_state: BTreeMap<NodeName, u64>,
    next_heartbeat: Instant,
    /// Rule 8: until when it waits out its predecessors' leases (`None` once it did).
    serve_from: Option<Instant>,
    /// Whether a quorum of voters (itself included) has held its state: until then nothing of
    /// this term is committed, not even the state (which may carry its predecessor's last
    /// broadcasts, not yet committed).
    state_held: bool,
    /// Rule 8: until when it may answer reads by itself.
    lease_until: Option<Instant>,
}

impl Leading {
    /// Starts the next round, sent `now`. Its time is kept unless a kept round was sent less
    /// than [`ROUND_TIME_GRAIN`] before: an answer to it then counts from that earlier time (a
    /// `now` earlier than the last time kept is kept, so that no round counts from later than
    /// it was sent).
    fn start_round(&mut self, now: Instant) {
        self.round += 1;
        if self
            .sent
            .back()
            .is_some_and(|(_, at)| *at <= now && now < *at + ROUND_TIME_GRAIN)
        {
            return;
        }
        if self.sent.len() == ROUNDS_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((self.round, now));
    }

    /// Whether it may answer calls: its state is held by a quorum, and no earlier leader's
    /// lease may hold (rules 5 and 8).
    fn serves(&self) -> bool {
        self.serve_from.is_none() && self.state_held
    }

    /// When `round`, or the latest round kept before it, was sent: never later than it was.
    fn sent_at(&self, round: u64) -> Option<Instant> {
        self.sent
            .iter()
            .rev()
            .find(|(r, _)| *r <= round)
            .map(|(_, at)| *at)
    }
}

/// A voter's latest answers to its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Answer {
    /// The broadcasts it holds.
    seq: u64,
    /// The latest round it answered.
    round: u64,
    /// When that round (or the vote) was sent.
    sent_at: Instant,
    /// Whether it said it holds this leader's state.
    holds_state: bool,
}

/// What a node knows of a peer it counts, since it began to count it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Peer {
    /// What the peer last said it holds, once it said.
    held: Option<Option<Position>>,
    /// Whether its greeting arrived.
    greeted: bool,
    /// Its pre-vote (the term asked for, what it held) that this node, a follower, refused only
    /// because it still heard its leader: judged again (granted or refused) if that leader's
    /// link closes before this one (rule 6); one per peer, the latest.
    deferred_pre_vote: Option<(u64, Option<Position>)>,
}

/// One node's `majority` election state (cloned, compared and hashed by model checkers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Majority<S, B> {
    me: NodeName,
    config: MajorityConfig,
    durable: Durable,
    role: Role,
    held: Option<Position>,
    /// Whether this node took part in a term in an earlier life and holds nothing yet in this
    /// one: what it acknowledged then is lost to it (rule 2).
    amnesiac: bool,
    /// The peers counted now.
    connected: BTreeMap<NodeName, Peer>,
    /// The peers counted now that were started with other voters or another lease setting:
    /// while there is one, this node abstains (rule 7).
    refused: BTreeSet<NodeName>,
    /// When a voter that does not lead stands next.
    stand_at: Option<Instant>,
    rng: u64,
    actions: VecDeque<MajorityAction<S, B>>,
}

impl<S: Clone, B: Clone> Majority<S, B> {
    /// A node's machine, started at `now` with what it kept on disk (`Durable::default()` the
    /// first time); `seed` draws its timeouts. It holds nothing until a leader gives it state.
    pub fn new(
        me: NodeName,
        config: MajorityConfig,
        durable: Durable,
        now: Instant,
        seed: u64,
    ) -> Self {
        let rng = (seed ^ fnv1a(me.as_str())) | 1;
        let mut machine = Self {
            me,
            config,
            amnesiac: durable.term > 0,
            durable,
            role: Role::Follower {
                leader: None,
                heard: None,
            },
            held: None,
            connected: BTreeMap::new(),
            refused: BTreeSet::new(),
            stand_at: None,
            rng,
            actions: VecDeque::new(),
        };
        machine.reset_timer(now);
        machine
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<MajorityAction<S, B>> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Leader(leading) => Some(
                leading
                    .serve_from
                    .map_or(leading.next_heartbeat, |at| at.min(leading.next_heartbeat)),
            ),
            _ => self.stand_at,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &MajorityConfig {
        &self.config
    }

    /// This node.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// This node's term.
    pub fn term(&self) -> u64 {
        self.durable.term
    }

    /// The leader this node knows in its term (itself when leading).
    pub fn leader(&self) -> Option<&NodeName> {
        match &self.role {
            Role::Leader(_) => Some(&self.me),
            Role::Follower { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// What this node holds.
    pub fn held(&self) -> Option<Position> {
        self.held
    }

    /// On the leader: its broadcasts sent in this term.
    pub fn seq(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(leading) => Some(leading.seq),
            _ => None,
        }
    }

    /// On the leader: its latest round.
    pub fn round(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(leading) => Some(leading.round),
            _ => None,
        }
    }

    /// On the leader, once it serves (rule 8): the broadcasts committed and the rounds
    /// confirmed so far (see [`MajorityAction::Progress`]).
    pub fn progress(&self) -> Option<(u64, u64)> {
        match &self.role {
            Role::Leader(leading) if leading.serves() => {
                Some((leading.committed, leading.confirmed))
            }
            _ => None,
        }
    }

    /// On the leader, with leases (rule 8): whether it may answer a read now by itself, with
    /// no round of its own (the reply still waits for the broadcasts sent before it to be
    /// committed).
    pub fn lease_holds(&self, now: Instant) -> bool {
        match &self.role {
            Role::Leader(leading) => {
                leading.serves() && leading.lease_until.is_some_and(|until| now < until)
            }
            _ => false,
        }
    }

    /// The voters.
    pub fn voters(&self) -> &[NodeName] {
        &self.config.voters
    }

    /// The peers counted now.
    pub fn connected(&self) -> impl Iterator<Item = &NodeName> {
        self.connected.keys()
    }

    /// The peers counted now that were started with other voters or another lease setting
    /// (rule 7).
    pub fn refused(&self) -> &BTreeSet<NodeName> {
        &self.refused
    }

    /// Whether this node abstains: a peer it counts was started with other settings (rule 7).
    pub fn abstains(&self) -> bool {
        !self.refused.is_empty()
    }

    /// On the leader: hands `state` (its behaviour's state now) to `to`. Called for each
    /// member an [`MajorityAction::Elected`] names.
    pub fn send_state(&mut self, to: NodeName, state: S) -> Result<(), NotLeader> {
        let term = self.durable.term;
        let Role::Leader(leading) = &mut self.role else {
            return Err(NotLeader);
        };
        leading.awaiting_state.insert(to.clone(), leading.round);
        let message = MajorityMessage::State {
            term,
            seq: leading.seq,
            round: leading.round,
            state,
        };
        self.send(to, message);
        Ok(())
    }

    /// On the leader: starts a round (a heartbeat to every member) and returns its number; a
    /// reply given now is safe to send once [`MajorityAction::Progress`] confirms it (and
    /// commits the broadcasts sent so far, [`seq`](Self::seq)).
    pub fn confirm(&mut self, now: Instant) -> Result<u64, NotLeader> {
        if !self.is_leader() {
            return Err(NotLeader);
        }
        // Not a heartbeat: the next one (and its check-quorum) stays due when it was.
        self.send_round(now);
        let round = match &self.role {
            Role::Leader(leading) => leading.round,
            _ => return Err(NotLeader),
        };
        self.advance(now);
        Ok(round)
    }

    /// The peer `peer` is counted: greet it.
    pub fn handle_node_up(&mut self, peer: NodeName, _now: Instant) {
        if peer == self.me {
            return;
        }
        self.connected.insert(peer.clone(), Peer::default());
        let hello = self.hello();
        self.send(peer, hello);
    }

    /// The peer `peer` no longer counts (its link is gone).
    pub fn handle_node_down(&mut self, peer: &NodeName, now: Instant) {
        if self.connected.remove(peer).is_none() {
            return;
        }
        if self.refused.remove(peer) {
            if !self.abstains() {
                // Rule 7: the lists agree again; stand in time if no leader speaks.
                self.reset_timer(now);
            }
            return;
        }
        match &mut self.role {
            Role::Leader(leading) => {
                // What it answered belongs to that link: a new life answers afresh.
                leading.awaiting_state.remove(peer);
                leading.answers.remove(peer);
                let voters = self
                    .connected
                    .keys()
                    .filter(|node| self.config.voters.contains(node))
                    .count();
                if voters + 1 < quorum(self.config.voters.len()) {
                    // Rule 4: its quorum is gone for sure. Rule 6: the closes were seen at
                    // once, so it stands again by rank, as a follower whose leader's link
                    // closed does: a voter whose link comes back is asked at once (rule 3).
                    self.step_down(now);
                    self.stand_at = Some(now + self.rank_delay());
                }
            }
            Role::Follower {
                leader: Some(leader),
                ..
            } if leader == peer => {
                self.lose_leader();
                if self.is_voter(&self.me) {
                    // Rule 6: a crash is seen at once; the higher ranked stands first, and a
                    // voter that saw it first and was refused for it is granted now.
                    self.stand_at = Some(now + self.rank_delay());
                    self.grant_deferred_pre_votes(now);
                }
            }
            _ => {}
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.abstains() {
            return;
        }
        if let Role::Leader(leading) = &self.role {
            let beat = leading.next_heartbeat <= now;
            if leading.serve_from.is_some_and(|at| at <= now) {
                // Rule 8: every earlier leader's lease is over.
                self.advance(now);
            }
            if beat {
                if !self.heard_quorum_within(now, self.config.election_timeout) {
                    self.step_down(now);
                    return;
                }
                self.heartbeat(now);
            }
            return;
        }
        if self.stand_at.is_some_and(|at| at <= now) {
            // No leader heard (or it went silent): ask whether this node would win.
            self.lose_leader();
            self.pre_vote(now);
        }
    }

    /// On the leader: numbers `broadcast`, sends it to every member in a round started `now`
    /// (its answers confirm that round: a reply given with it needs no [`confirm`](Self::confirm)),
    /// and returns its number.
    pub fn broadcast(&mut self, broadcast: B, now: Instant) -> Result<u64, NotLeader> {
        let term = self.durable.term;
        let Role::Leader(leading) = &mut self.role else {
            return Err(NotLeader);
        };
        leading.seq += 1;
        leading.start_round(now);
        let (seq, round) = (leading.seq, leading.round);
        self.held = Some(Position { term, seq });
        let append = MajorityMessage::Append {
            term,
            seq,
            round,
            broadcast,
        };
        self.send_to_all(&append);
        self.advance(now);
        Ok(seq)
    }

    /// This node is about to stop: if it leads, it hands over to the voter furthest along and
    /// leads no more.
    pub fn resign(&mut self, now: Instant) {
        let Role::Leader(leading) = &self.role else {
            return;
        };
        // Among the furthest along (holding this term's state first: the others would refuse
        // a voter that lacks it), the earliest by name: the one that stands first by rank when
        // it sees this node's link close before the handover arrives (rule 6).
        let along = |a: &Answer| (a.holds_state, a.seq, a.round);
        let successor = leading
            .answers
            .iter()
            .filter(|(voter, _)| self.connected.contains_key(*voter))
            .max_by(|(a, x), (b, y)| along(x).cmp(&along(y)).then(b.cmp(a)))
            .map(|(voter, _)| voter.clone());
        // Rule 8: one still waiting out an earlier lease hands over to no one (its successor
        // would serve at once, within that lease).
        let serving = leading.serve_from.is_none();
        let term = self.durable.term;
        self.step_down(now);
        if let Some(successor) = successor.filter(|_| serving) {
            self.send(successor, MajorityMessage::TimeoutNow { term });
        }
    }

    /// A message from `from`'s instance. Only a peer this node counts is heard.
    pub fn handle_message(&mut self, from: NodeName, message: MajorityMessage<S, B>, now: Instant) {
        let first_greeting = matches!(message, MajorityMessage::Hello { .. })
            && self.connected.get(&from).is_some_and(|peer| !peer.greeted);
        self.heed(from.clone(), message, first_greeting, now);
        if first_greeting && self.connected.contains_key(&from) && !self.abstains() {
            self.ask_met_voter(from);
        }
    }

    /// Rule 3: a voter met while this node stands (their link came up meanwhile) is asked at
    /// once. What this node asked before it counted the voter went unheard, and the voter
    /// counts this node now that it greeted it; left unasked, it would cost a whole election
    /// timeout (a follower that restarted and met the leader before the other follower, when
    /// that leader resigns or is lost).
    fn ask_met_voter(&mut self, voter: NodeName) {
        if !self.is_voter(&voter) {
            return;
        }
        let request = match &self.role {
            Role::PreCandidate { granted } if !granted.contains(&voter) => {
                MajorityMessage::PreVote {
                    term: self.durable.term + 1,
                    held: self.held,
                }
            }
            Role::Candidate {
                granted,
                conditional,
                handover,
                ..
            } if !granted.contains(&voter) && !conditional.contains(&voter) => {
                MajorityMessage::Vote {
                    term: self.durable.term,
                    held: self.held,
                    handover: *handover,
                }
            }
            _ => return,
        };
        self.send(voter, request);
    }

    /// `message` from `from`; `first_greeting`: it is the peer's first greeting on this link.
    fn heed(
        &mut self,
        from: NodeName,
        message: MajorityMessage<S, B>,
        first_greeting: bool,
        now: Instant,
    ) {
        if from == self.me || self.refused.contains(&from) {
            return;
        }
        let Some(peer) = self.connected.get_mut(&from) else {
            return;
        };
        if !peer.greeted && !first_greeting {
            // Not judged yet (rule 7): its greeting went unheard, and it answers this node's
            // with another, after which it asks again what it asked meanwhile.
            return;
        }
        if let Some(held) = held_of(&message) {
            peer.held = Some(held);
        }
        if first_greeting {
            // The peer may have greeted this node before this node counted it, and that
            // greeting was not heard: answer its first greeting with this node's own, so that
            // both ends know each other's voters (rule 7) however their link-ups were ordered.
            peer.greeted = true;
            let hello = self.hello();
            self.send(from.clone(), hello);
        }
        if let MajorityMessage::Hello {
            voters,
            leases_with,
            ..
        } = &message
            && (!same_voters(voters, &self.config.voters)
                || (self.is_voter(&self.me)
                    && self.is_voter(&from)
                    && *leases_with != self.config.leases_with()))
        {
            return self.refuse(from, voters.clone(), *leases_with);
        }
        if self.abstains() {
            return;
        }
        let term = term_of(&message);
        if term == u64::MAX {
            // No term can follow it: a peer that sends it is broken; nothing it says counts.
            return;
        }
        // Pre-votes change no term (rule 3); a vote that would depose a healthy leader is
        // refused without its term being adopted.
        match message {
            MajorityMessage::PreVote { term, held } => {
                return self.handle_pre_vote(from, term, held, now);
            }
            MajorityMessage::PreVoteReply {
                term,
                granted: true,
                ..
            } => return self.handle_pre_vote_granted(from, term, now),
            MajorityMessage::Vote {
                handover: false, ..
            } if self.hears_leader(now) => {
                let reply = MajorityMessage::VoteReply {
                    term: self.durable.term,
                    granted: false,
                    held: self.held,
                    conditional: false,
                };
                return self.send(from, reply);
            }
            _ => {}
        }
        if term > self.durable.term {
            self.adopt_term(term, now);
        } else if term < self.durable.term {
            return self.answer_stale(from, &message);
        }
        match message {
            MajorityMessage::Hello { .. } => {
                if self.is_leader() && first_greeting {
                    // A member just met: it gets the state.
                    self.actions.push_back(MajorityAction::Elected {
                        term,
                        joined: Some(from),
                    });
                }
            }
            // Refused, in this term: nothing to do (a refusal of a later term was adopted).
            MajorityMessage::PreVote { .. } | MajorityMessage::PreVoteReply { .. } => {}
            MajorityMessage::Vote { held, .. } => self.handle_vote(from, held, now),
            MajorityMessage::VoteReply {
                granted,
                held,
                conditional,
                ..
            } => self.handle_vote_reply(from, granted, conditional, held, now),
            MajorityMessage::State {
                seq, round, state, ..
            } => {
                self.hear_leader(&from, now);
                if let Some(held) = self.held.filter(|h| h.term == term && h.seq >= seq) {
                    // Behind what it holds of this leader already: never go back.
                    let ack = MajorityMessage::Ack {
                        term,
                        held: Some(held.seq),
                        round,
                    };
                    return self.send(from, ack);
                }
                self.held = Some(Position { term, seq });
                self.amnesiac = false;
                self.actions.push_back(MajorityAction::Follow {
                    term,
                    leader: from.clone(),
                    state,
                });
                let ack = MajorityMessage::Ack {
                    term,
                    held: Some(seq),
                    round,
                };
                self.send(from, ack);
            }
            MajorityMessage::Append {
                seq,
                round,
                broadcast,
                ..
            } => {
                self.hear_leader(&from, now);
                let held = match self.held {
                    Some(held) if held.term == term && held.seq.checked_add(1) == Some(seq) => {
                        self.held = Some(Position { term, seq });
                        self.actions
                            .push_back(MajorityAction::Apply { term, broadcast });
                        Some(seq)
                    }
                    // Already applied (the state it got was sent after this broadcast).
                    Some(held) if held.term == term && held.seq >= seq => Some(held.seq),
                    // A gap, or no state of this leader: ask for it.
                    _ => None,
                };
                self.send(from, MajorityMessage::Ack { term, held, round });
            }
            MajorityMessage::Heartbeat { seq, round, .. } => {
                self.hear_leader(&from, now);
                // Behind the broadcasts sent before this heartbeat: one was lost; ask for the
                // state.
                let held = self
                    .held
                    .filter(|h| h.term == term && h.seq >= seq)
                    .map(|h| h.seq);
                self.send(from, MajorityMessage::Ack { term, held, round });
            }
            MajorityMessage::Ack { held, round, .. } => self.handle_ack(from, held, round, now),
            MajorityMessage::TimeoutNow { .. } => {
                if self.is_voter(&self.me)
                    && !self.is_leader()
                    && self.may_stand()
                    && self.durable.term < u64::MAX - 1
                {
                    self.lose_leader();
                    self.stand(now, true);
                }
            }
        }
    }

    fn handle_pre_vote(&mut self, from: NodeName, term: u64, held: Option<Position>, now: Instant) {
        // A pre-vote binds nothing: a voter that lost its memory grants it as it would vote.
        let eligible =
            term > self.durable.term && self.is_voter(&self.me) && self.would_vote_for(held);
        let granted = eligible && !self.hears_leader(now);
        if granted && from < self.me && matches!(self.role, Role::PreCandidate { .. }) {
            // Two voters asking each other would each win the pre-vote and split the vote: the
            // one later by name backs off, and asks again a heartbeat later should the other
            // not win (it may lack voters this one reaches).
            self.lose_leader();
            self.stand_at = Some(now + self.config.heartbeat);
        }
        if eligible
            && !granted
            && matches!(self.role, Role::Follower { .. })
            && let Some(peer) = self.connected.get_mut(&from)
        {
            peer.deferred_pre_vote = Some((term, held));
        }
        let reply = MajorityMessage::PreVoteReply {
            term: if granted { term } else { self.durable.term },
            granted,
            held: self.held,
        };
        self.send(from, reply);
    }

    /// Answers again the pre-votes refused only because this node still heard the leader it
    /// has just lost (each is judged anew).
    fn grant_deferred_pre_votes(&mut self, now: Instant) {
        let deferred: Vec<(NodeName, u64, Option<Position>)> = self
            .connected
            .iter_mut()
            .filter_map(|(name, peer)| {
                let (term, held) = peer.deferred_pre_vote.take()?;
                Some((name.clone(), term, held))
            })
            .collect();
        for (from, term, held) in deferred {
            self.handle_pre_vote(from, term, held, now);
        }
    }

    fn handle_pre_vote_granted(&mut self, from: NodeName, term: u64, now: Instant) {
        if self.durable.term.checked_add(1) != Some(term) || !self.is_voter(&from) {
            return;
        }
        if let Role::PreCandidate { granted } = &mut self.role {
            granted.insert(from);
            if granted.len() >= quorum(self.config.voters.len()) {
                self.stand(now, false);
            }
        }
    }

    fn handle_vote(&mut self, from: NodeName, held: Option<Position>, now: Instant) {
        let granted = self.is_voter(&self.me)
            && self.durable.voted_for.as_ref().is_none_or(|v| *v == from)
            && self.would_vote_for(held);
        let conditional = granted && self.amnesiac;
        if granted {
            if self.durable.voted_for.is_none() {
                self.durable.voted_for = Some(from.clone());
                self.actions
                    .push_back(MajorityAction::Persist(self.durable.clone()));
            }
            // It may win: give it time before standing.
            self.reset_timer(now);
        }
        let reply = MajorityMessage::VoteReply {
            term: self.durable.term,
            granted,
            held: self.held,
            conditional,
        };
        self.send(from, reply);
    }

    /// A voter's answer in this term (rule 2): a firm vote counts as it comes; the votes of
    /// voters that lost their memory count once every voter has answered in this term and none
    /// holds more than this node. An answer in this term is final: its voter took the term,
    /// so it takes no state of an earlier leader from then on, and holds no more than it said
    /// until this term's leader gives it more.
    fn handle_vote_reply(
        &mut self,
        from: NodeName,
        granted: bool,
        conditional: bool,
        held: Option<Position>,
        now: Instant,
    ) {
        if !self.is_voter(&from) {
            return;
        }
        let need = quorum(self.config.voters.len());
        let mine = self.held;
        let voters = &self.config.voters;
        let Role::Candidate {
            granted: firm,
            conditional: maybe,
            answered,
            ..
        } = &mut self.role
        else {
            return;
        };
        answered.insert(from.clone(), held);
        match (granted, conditional) {
            (true, false) => {
                firm.insert(from);
            }
            (true, true) => {
                maybe.insert(from);
            }
            (false, _) => {}
        }
        let everyone_answered = voters
            .iter()
            .filter(|voter| **voter != self.me)
            .all(|voter| answered.get(voter).is_some_and(|told| *told <= mine));
        if firm.len() >= need || (everyone_answered && firm.len() + maybe.len() >= need) {
            self.lead(now);
        }
    }

    /// Whether every other voter has told this node, in this life, that it holds at most
    /// `held`: a voter that lost its memory votes (conditionally), grants pre-votes and stands
    /// only then, so as not to spend its vote on a candidate that cannot count it. What it was
    /// told may have been overtaken since: only answers in a candidate's term count (rule 2).
    fn told_at_most(&self, held: Option<Position>) -> bool {
        self.config
            .voters
            .iter()
            .filter(|v| **v != self.me)
            .all(|voter| {
                matches!(
                    self.connected.get(voter),
                    Some(Peer {
                        held: Some(told),
                        ..
                    }) if held >= *told
                )
            })
    }

    fn handle_ack(&mut self, from: NodeName, held: Option<u64>, round: u64, now: Instant) {
        let voter = self.is_voter(&from);
        let term = self.durable.term;
        let Role::Leader(leading) = &mut self.role else {
            return;
        };
        if held.is_some() {
            leading.awaiting_state.remove(&from);
        } else if leading
            .awaiting_state
            .get(&from)
            .is_none_or(|sent_in| round > *sent_in)
        {
            // It lacks the state, and none is on its way.
            leading.awaiting_state.insert(from.clone(), leading.round);
            self.actions.push_back(MajorityAction::Elected {
                term,
                joined: Some(from.clone()),
            });
        }
        // A round not sent yet (a broken peer, or an answer from another term) answers nothing.
        let round = if round <= leading.round { round } else { 0 };
        if voter {
            let sent_at = leading.sent_at(round);
            let answer = leading.answers.entry(from).or_insert(Answer {
                seq: 0,
                round: 0,
                sent_at: now,
                holds_state: false,
            });
            answer.holds_state |= held.is_some();
            if let Some(seq) = held {
                // A member cannot hold more than was sent.
                answer.seq = answer.seq.max(seq.min(leading.seq));
            }
            if round >= answer.round {
                answer.round = round;
                if let Some(sent_at) = sent_at {
                    answer.sent_at = sent_at;
                }
            }
            self.advance(now);
        }
    }

    /// Whether this node would vote for a candidate that holds `held` (rule 2).
    /// A voter that lost its memory cannot compare by itself: it goes by what the others told
    /// it, and its vote is then only conditional ([`handle_vote`](Self::handle_vote)).
    fn would_vote_for(&self, held: Option<Position>) -> bool {
        if !self.amnesiac {
            return held >= self.held;
        }
        self.told_at_most(held)
    }

    /// Whether this node heard a live leader within the election timeout (rule 3).
    fn hears_leader(&self, now: Instant) -> bool {
        match &self.role {
            Role::Leader(_) => true,
            Role::Follower {
                leader: Some(_),
                heard: Some(heard),
            } => now < *heard + self.config.election_timeout,
            _ => false,
        }
    }

    /// On the leader: whether a quorum (itself included) answered a round sent within `within`.
    fn heard_quorum_within(&self, now: Instant, within: Duration) -> bool {
        let Role::Leader(leading) = &self.role else {
            return false;
        };
        let since = now.checked_sub(within);
        let heard = leading
            .answers
            .values()
            .filter(|answer| since.is_none_or(|since| answer.sent_at >= since))
            .count();
        heard + 1 >= quorum(self.config.voters.len())
    }

    /// Rule 2: whether this voter took part in a term in an earlier life and waits for a
    /// leader's state, not standing and voting only conditionally meanwhile. Normally a leader
    /// gives it within a round trip; while a majority of the voters lost their memory and a
    /// voter is missing, no leader can be elected to give it.
    pub fn waits_for_state(&self) -> bool {
        !self.may_stand()
    }

    /// Rule 2: a voter that lost its memory cannot tell what it lacks, so it does not stand
    /// (unless every other voter told it it holds nothing): it waits for a leader's state.
    fn may_stand(&self) -> bool {
        !self.amnesiac || self.would_vote_for(None)
    }

    fn pre_vote(&mut self, now: Instant) {
        self.reset_timer(now);
        if !self.may_stand() || self.durable.term >= u64::MAX - 1 {
            return;
        }
        self.role = Role::PreCandidate {
            granted: BTreeSet::from([self.me.clone()]),
        };
        if quorum(self.config.voters.len()) <= 1 {
            return self.stand(now, false);
        }
        let request = MajorityMessage::PreVote {
            term: self.durable.term + 1,
            held: self.held,
        };
        self.send_to_voters(&request);
    }

    /// Raises the term and asks for votes.
    fn stand(&mut self, now: Instant, handover: bool) {
        self.reset_timer(now);
        self.durable.term += 1;
        self.durable.voted_for = Some(self.me.clone());
        self.actions
            .push_back(MajorityAction::Persist(self.durable.clone()));
        // Its own vote is conditional too if it lost its memory: it stood on what it was told.
        let (granted, conditional) = if self.amnesiac {
            (BTreeSet::new(), BTreeSet::from([self.me.clone()]))
        } else {
            (BTreeSet::from([self.me.clone()]), BTreeSet::new())
        };
        self.role = Role::Candidate {
            granted,
            conditional,
            answered: BTreeMap::new(),
            since: now,
            handover,
        };
        if quorum(self.config.voters.len()) <= 1 {
            return self.lead(now);
        }
        let request = MajorityMessage::Vote {
            term: self.durable.term,
            held: self.held,
            handover,
        };
        self.send_to_voters(&request);
    }

    fn lead(&mut self, now: Instant) {
        let Role::Candidate {
            granted,
            conditional,
            since,
            handover,
            ..
        } = &self.role
        else {
            return;
        };
        // Rule 8: the votes answer a request sent when it stood, as a round would.
        let lease = self.config.lease();
        let serve_from = (lease.is_some() && !handover).then(|| now + self.config.election_timeout);
        let lease_until = lease.map(|lease| *since + lease);
        let term = self.durable.term;
        // A vote answers a request sent when the node stood.
        let answers = granted
            .iter()
            .chain(conditional)
            .filter(|voter| **voter != self.me)
            .map(|voter| {
                let answer = Answer {
                    seq: 0,
                    round: 0,
                    sent_at: *since,
                    holds_state: false,
                };
                (voter.clone(), answer)
            })
            .collect();
        self.stand_at = None;
        self.role = Role::Leader(Leading {
            seq: 0,
            round: 0,
            committed: 0,
            confirmed: 0,
            sent: VecDeque::new(),
            answers,
            awaiting_state: BTreeMap::new(),
            next_heartbeat: now + self.config.heartbeat,
            serve_from,
            state_held: false,
            lease_until,
        });
        self.held = Some(Position { term, seq: 0 });
        self.amnesiac = false;
        self.actions
            .push_back(MajorityAction::Elected { term, joined: None });
        // A quorum of one holds its state already.
        self.advance(now);
    }

    /// Starts a round: a heartbeat to every member.
    fn heartbeat(&mut self, now: Instant) {
        if let Role::Leader(leading) = &mut self.role {
            leading.next_heartbeat = now + self.config.heartbeat;
        }
        self.send_round(now);
    }

    /// Starts a round: a heartbeat message to every member.
    fn send_round(&mut self, now: Instant) {
        let term = self.durable.term;
        let Role::Leader(leading) = &mut self.role else {
            return;
        };
        leading.start_round(now);
        let heartbeat = MajorityMessage::Heartbeat {
            term,
            seq: leading.seq,
            round: leading.round,
        };
        self.send_to_all(&heartbeat);
    }

    /// This node's greeting.
    fn hello(&self) -> MajorityMessage<S, B> {
        MajorityMessage::Hello {
            term: self.durable.term,
            held: self.held,
            voters: self.config.voters.clone(),
            leases_with: self.config.leases_with(),
        }
    }

    /// Rule 7: `peer` was started with `voters` and `leases_with`, not this node's: abstain
    /// while it is linked.
    fn refuse(&mut self, peer: NodeName, voters: Vec<NodeName>, leases_with: Option<Duration>) {
        self.refused.insert(peer.clone());
        self.lose_leader();
        self.stand_at = None;
        self.actions.push_back(MajorityAction::Refused {
            node: peer,
            voters,
            leases_with,
        });
    }

    /// Stops leading (check-quorum failed, or a resignation).
    fn step_down(&mut self, now: Instant) {
        self.lose_leader();
        self.reset_timer(now);
    }

    /// A later term: adopt it, unvoted, following no one yet.
    fn adopt_term(&mut self, term: u64, now: Instant) {
        let was_following = matches!(self.role, Role::Follower { .. });
        self.lose_leader();
        self.durable.term = term;
        self.durable.voted_for = None;
        self.actions
            .push_back(MajorityAction::Persist(self.durable.clone()));
        if !was_following {
            // A leader or candidate that fell behind waits a full timeout before standing.
            self.reset_timer(now);
        }
    }

    /// Forgets the leader known (this node, or the one followed), telling the runtime, and
    /// follows no one.
    fn lose_leader(&mut self) {
        let lost = match &self.role {
            Role::Leader(_) => Some(self.me.clone()),
            Role::Follower { leader, .. } => leader.clone(),
            _ => None,
        };
        if let Some(leader) = lost {
            self.actions.push_back(MajorityAction::LeaderLost {
                term: self.durable.term,
                leader,
            });
        }
        self.role = Role::Follower {
            leader: None,
            heard: None,
        };
    }

    /// The leader of this term spoke.
    fn hear_leader(&mut self, leader: &NodeName, now: Instant) {
        match &mut self.role {
            Role::Follower {
                leader: Some(known),
                heard,
            } if known == leader => *heard = Some(now),
            _ => {
                self.role = Role::Follower {
                    leader: Some(leader.clone()),
                    heard: Some(now),
                };
            }
        }
        self.reset_timer(now);
    }

    /// Answers a message of an earlier term with this node's, so that its sender catches up.
    fn answer_stale(&mut self, from: NodeName, message: &MajorityMessage<S, B>) {
        let term = self.durable.term;
        let reply = match message {
            MajorityMessage::Vote { .. } => MajorityMessage::VoteReply {
                term,
                granted: false,
                held: self.held,
                conditional: false,
            },
            // The round is of another term: no answer to any round of this one.
            MajorityMessage::State { .. }
            | MajorityMessage::Append { .. }
            | MajorityMessage::Heartbeat { .. } => MajorityMessage::Ack {
                term,
                held: None,
                round: 0,
            },
            MajorityMessage::Hello { .. } => self.hello(),
            // A reply or an answer of an earlier term needs none.
            _ => return,
        };
        self.send(from, reply);
    }

    /// On the leader: what a quorum holds and has answered, told once it serves and then when
    /// it grows (rules 5 and 8); the wait for earlier leases ends when `now` passed it.
    fn advance(&mut self, now: Instant) {
        let need = quorum(self.config.voters.len());
        let term = self.durable.term;
        let Role::Leader(leading) = &mut self.role else {
            return;
        };
        let served = leading.serves();
        if leading.serve_from.is_some_and(|at| at <= now) {
            leading.serve_from = None;
        }
        let nth_highest = |mut values: Vec<u64>| {
            values.sort_unstable_by(|a, b| b.cmp(a));
            values.get(need - 1).copied().unwrap_or(0)
        };
        let seqs = leading.answers.values().map(|a| a.seq);
        let committed = nth_highest(seqs.chain([leading.seq]).collect());
        let rounds = leading.answers.values().map(|a| a.round);
        let confirmed = nth_highest(rounds.chain([leading.round]).collect());
        let holders = leading.answers.values().filter(|a| a.holds_state).count() + 1;
        if confirmed > leading.confirmed
            && let Some(lease) = self.config.lease()
            && let Some(sent_at) = leading.sent_at(confirmed)
        {
            let until = sent_at + lease;
            leading.lease_until = Some(leading.lease_until.map_or(until, |was| was.max(until)));
        }
        let grew = committed > leading.committed || confirmed > leading.confirmed;
        leading.committed = leading.committed.max(committed);
        leading.confirmed = leading.confirmed.max(confirmed);
        leading.state_held |= holders >= need;
        if leading.serves() && (grew || !served) {
            self.actions.push_back(MajorityAction::Progress {
                term,
                committed: leading.committed,
                confirmed: leading.confirmed,
            });
        }
    }

    fn is_voter(&self, node: &NodeName) -> bool {
        self.config.voters.contains(node)
    }

    /// How long a voter waits to stand after its leader's link closed (or, leading, its
    /// quorum's links): its rank, by name, among the voters still connected, in heartbeat
    /// intervals. By name, not by list position: lists in other orders are the same list
    /// (rule 7), and must rank the voters alike.
    fn rank_delay(&self) -> Duration {
        let rank = self
            .config
            .voters
            .iter()
            .filter(|v| **v < self.me && self.connected.contains_key(*v))
            .count();
        self.config.heartbeat * u32::try_from(rank).unwrap_or(u32::MAX)
    }

    /// Draws the next stand time in `[t, 2t)` (voters only).
    fn reset_timer(&mut self, now: Instant) {
        if !self.is_voter(&self.me) {
            self.stand_at = None;
            return;
        }
        // xorshift64*: enough to spread the voters' timeouts.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let draw = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let t = self.config.election_timeout;
        self.stand_at = Some(now + t + t.mul_f64(fraction));
    }

    fn send(&mut self, to: NodeName, message: MajorityMessage<S, B>) {
        self.actions.push_back(MajorityAction::Send { to, message });
    }

    fn send_to_all(&mut self, message: &MajorityMessage<S, B>) {
        let peers: Vec<NodeName> = self.connected.keys().cloned().collect();
        for peer in peers {
            self.send(peer, message.clone());
        }
    }

    fn send_to_voters(&mut self, message: &MajorityMessage<S, B>) {
        let voters: Vec<NodeName> = self
            .connected
            .keys()
            .filter(|peer| self.is_voter(peer))
            .cloned()
            .collect();
        for voter in voters {
            self.send(voter, message.clone());
        }
    }
}

/// FNV-1a of `text`: mixes a node's name into its timer seed, so that two voters given one
/// seed still draw apart.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether two lists name the same voters, in any order.
fn same_voters(theirs: &[NodeName], ours: &[NodeName]) -> bool {
    theirs.iter().collect::<BTreeSet<_>>() == ours.iter().collect::<BTreeSet<_>>()
}

fn term_of<S, B>(message: &MajorityMessage<S, B>) -> u64 {
    match message {
        MajorityMessage::Hello { term, .. }
        | MajorityMessage::PreVote { term, .. }
        | MajorityMessage::PreVoteReply { term, .. }
        | MajorityMessage::Vote { term, .. }
        | MajorityMessage::VoteReply { term, .. }
        | MajorityMessage::State { term, .. }
        | MajorityMessage::Append { term, .. }
        | MajorityMessage::Heartbeat { term, .. }
        | MajorityMessage::Ack { term, .. }
        | MajorityMessage::TimeoutNow { term } => *term,
    }
}

fn held_of<S, B>(message: &MajorityMessage<S, B>) -> Option<Option<Position>> {
    match message {
        MajorityMessage::Hello { held, .. }
        | MajorityMessage::PreVote { held, .. }
        | MajorityMessage::PreVoteReply { held, .. }
        | MajorityMessage::Vote { held, .. }
        | MajorityMessage::VoteReply { held, .. } => Some(*held),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    const T: Duration = Duration::from_millis(100);
    const BEAT: Duration = Duration::from_millis(20);

    type Machine = Majority<u32, u32>;

    fn name(i: usize) -> NodeName {
        NodeName::new(format!("n{i}")).unwrap()
    }

    /// Voters n0..n{count}, linked as `links` says, every message delivered at once and in
    /// order; the clock moves only when a test says.
    struct Net {
        now: Instant,
        nodes: Vec<Machine>,
        disks: Vec<Durable>,
        links: BTreeSet<(usize, usize)>,
        /// Every action seen, per node, for the tests to look at.
        seen: Vec<Vec<MajorityAction<u32, u32>>>,
    }

    impl Net {
        fn new(count: usize) -> Self {
            Self::linked(count, false)
        }

        /// As [`Net::new`], every node with leases (rule 8).
        fn with_leases(count: usize) -> Self {
            Self::linked(count, true)
        }

        fn linked(count: usize, leases: bool) -> Self {
            let voters: Vec<usize> = (0..count).collect();
            let mut net = Self::unlinked(&vec![&voters[..]; count]);
            for node in &mut net.nodes {
                node.config.leases = leases;
            }
            for a in 0..count {
                for b in a + 1..count {
                    net.link(a, b, true);
                }
            }
            net
        }

        /// Node `i` started with the voters `voters[i]`; no links yet.
        fn unlinked(voters: &[&[usize]]) -> Self {
            let now = Instant::now();
            let count = voters.len();
            let nodes = voters
                .iter()
                .enumerate()
                .map(|(i, list)| {
                    let config = MajorityConfig {
                        voters: list.iter().map(|&v| name(v)).collect(),
                        election_timeout: T,
                        heartbeat: BEAT,
                        leases: false,
                    };
                    Majority::new(name(i), config, Durable::default(), now, i as u64)
                })
                .collect();
            Self {
                now,
                nodes,
                disks: vec![Durable::default(); count],
                links: BTreeSet::new(),
                seen: vec![Vec::new(); count],
            }
        }

        /// Links `a` and `b`, `a` counting `b` and greeting it before `b` counts `a`: what `a`
        /// sends meanwhile goes unheard, as in a runtime that tells each end of a link-up
        /// apart from the messages on it.
        fn link_first_at(&mut self, a: usize, b: usize) {
            let now = self.now;
            self.links.insert((a, b));
            self.links.insert((b, a));
            self.nodes[a].handle_node_up(name(b), now);
            self.run();
            self.nodes[b].handle_node_up(name(a), now);
            self.run();
        }

        fn link(&mut self, a: usize, b: usize, up: bool) {
            let now = self.now;
            if up {
                self.links.insert((a, b));
                self.links.insert((b, a));
                self.nodes[a].handle_node_up(name(b), now);
                self.nodes[b].handle_node_up(name(a), now);
            } else {
                self.links.remove(&(a, b));
                self.links.remove(&(b, a));
                self.nodes[a].handle_node_down(&name(b), now);
                self.nodes[b].handle_node_down(&name(a), now);
            }
            self.run();
        }

        /// Cuts `a` and `b` apart, only `a` seeing its link close (a runtime that drops a link
        /// it finds silent, while the other end has yet to find out).
        fn close_seen_by(&mut self, a: usize, b: usize) {
            self.links.remove(&(a, b));
            self.links.remove(&(b, a));
            let now = self.now;
            self.nodes[a].handle_node_down(&name(b), now);
            self.run();
        }

        /// Carries out every action until none is left.
        fn run(&mut self) {
            let mut queue: VecDeque<(usize, usize, MajorityMessage<u32, u32>)> = VecDeque::new();
            loop {
                let mut idle = true;
                for i in 0..self.nodes.len() {
                    while let Some(action) = self.nodes[i].poll_action() {
                        idle = false;
                        match &action {
                            MajorityAction::Persist(durable) => self.disks[i] = durable.clone(),
                            MajorityAction::Send { to, message } => {
                                let to = to.as_str()[1..].parse().unwrap();
                                if self.links.contains(&(i, to)) {
                                    queue.push_back((i, to, message.clone()));
                                }
                            }
                            MajorityAction::Elected { joined, .. } => {
                                self.send_state(i, joined.clone());
                            }
                            _ => {}
                        }
                        self.seen[i].push(action);
                    }
                }
                match queue.pop_front() {
                    Some((from, to, message)) => {
                        let now = self.now;
                        self.nodes[to].handle_message(name(from), message, now);
                    }
                    None if idle => return,
                    None => {}
                }
            }
        }

        /// Lets `by` pass, firing each timer at its time.
        fn pass(&mut self, by: Duration) {
            let until = self.now + by;
            while let Some(next) = self
                .nodes
                .iter()
                .filter_map(Majority::poll_timeout)
                .filter(|at| *at <= until)
                .min()
            {
                self.now = next;
                for node in &mut self.nodes {
                    if node.poll_timeout().is_some_and(|at| at <= next) {
                        node.handle_timeout(next);
                    }
                }
                self.run();
            }
            self.now = until;
        }

        /// Node `i`, elected, hands its state to `joined`, or to every member.
        fn send_state(&mut self, i: usize, joined: Option<NodeName>) {
            let to: Vec<NodeName> = match joined {
                Some(node) => vec![node],
                None => self.nodes[i].connected().cloned().collect(),
            };
            for peer in to {
                self.nodes[i].send_state(peer, 7).unwrap();
            }
        }

        /// The messages node `i` has queued, taken instead of delivered (its other actions are
        /// carried out as `run` does).
        fn take_sends(&mut self, i: usize) -> Vec<(usize, MajorityMessage<u32, u32>)> {
            let mut sends = Vec::new();
            while let Some(action) = self.nodes[i].poll_action() {
                match action {
                    MajorityAction::Persist(durable) => self.disks[i] = durable,
                    MajorityAction::Send { to, message } => {
                        sends.push((to.as_str()[1..].parse().unwrap(), message));
                    }
                    MajorityAction::Elected { joined, .. } => self.send_state(i, joined),
                    other => self.seen[i].push(other),
                }
            }
            sends
        }

        /// Delivers `message` from `from` to `to`, and `to`'s answers to `from` back (what `to`
        /// sends anyone else is dropped).
        fn exchange(&mut self, from: usize, to: usize, message: MajorityMessage<u32, u32>) {
            let now = self.now;
            self.nodes[to].handle_message(name(from), message, now);
            for (back, answer) in self.take_sends(to) {
                if back == from {
                    self.nodes[from].handle_message(name(to), answer, now);
                }
            }
        }

        /// Whom `node` handed over to, if it did.
        fn handover_from(&self, node: usize) -> Option<NodeName> {
            self.seen[node].iter().find_map(|action| match action {
                MajorityAction::Send {
                    to,
                    message: MajorityMessage::TimeoutNow { .. },
                } => Some(to.clone()),
                _ => None,
            })
        }

        /// Every node but `node`, in order.
        fn others(&self, node: usize) -> Vec<usize> {
            (0..self.nodes.len()).filter(|&i| i != node).collect()
        }

        fn leaders(&self) -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&i| self.nodes[i].is_leader())
                .collect()
        }

        /// Passes time until one leader, then returns it.
        fn elect(&mut self) -> usize {
            for _ in 0..100 {
                if let [leader] = self.leaders()[..] {
                    return leader;
                }
                self.pass(BEAT);
            }
            let seen: Vec<_> = self
                .nodes
                .iter()
                .map(|n| (n.term(), n.leader().cloned(), &n.role))
                .collect();
            panic!("no leader: {seen:?}");
        }
    }

    #[test]
    fn a_new_cluster_elects_one_leader_whose_state_every_member_takes() {
        let mut net = Net::new(3);
        let leader = net.elect();
        assert_eq!(net.nodes[leader].term(), 1);
        for i in 0..3 {
            assert_eq!(net.nodes[i].leader(), Some(&name(leader)));
            assert!(net.disks[i].term == 1, "every term change is persisted");
        }
        let followed = net.seen.iter().flatten();
        let follows = followed.filter(|a| matches!(a, MajorityAction::Follow { state: 7, .. }));
        assert_eq!(follows.count(), 2);
    }

    #[test]
    fn a_vote_is_persisted_before_it_is_sent() {
        let mut net = Net::new(3);
        let leader = net.elect();
        for (i, seen) in net.seen.iter().enumerate().filter(|(i, _)| *i != leader) {
            let persisted = seen.iter().position(|a| {
                matches!(a, MajorityAction::Persist(d) if d.voted_for.as_ref() == Some(&name(leader)))
            });
            let sent = seen.iter().position(|a| {
                matches!(
                    a,
                    MajorityAction::Send {
                        message: MajorityMessage::VoteReply { granted: true, .. },
                        ..
                    }
                )
            });
            if let Some(sent) = sent {
                assert!(persisted.unwrap() < sent, "n{i}");
            }
        }
    }

    #[test]
    fn a_new_cluster_with_one_voter_missing_elects_with_the_other_two() {
        let mut net = Net::new(3);
        net.link(0, 2, false);
        net.link(1, 2, false);
        let leader = net.elect();
        assert_ne!(leader, 2);
    }

    #[test]
    fn a_node_back_from_a_cut_cannot_depose_a_healthy_leader() {
        let mut net = Net::new(3);
        let leader = net.elect();
        let other = (0..3).find(|&i| i != leader).unwrap();
        let cut = (0..3).find(|&i| i != leader && i != other).unwrap();
        net.link(leader, cut, false);
        net.link(other, cut, false);
        let term = net.nodes[leader].term();
        // The cut node stands again and again, alone: pre-votes only, its term stays.
        net.pass(T * 10);
        assert_eq!(net.nodes[cut].term(), term, "pre-votes raise no term");
        net.link(leader, cut, true);
        net.link(other, cut, true);
        // Its timer fires before the leader's next heartbeat: it asks again, and both the
        // leader and the follower that hears it refuse.
        let due = net.nodes[cut].poll_timeout().unwrap();
        net.nodes[cut].handle_timeout(due);
        net.run();
        net.pass(T * 3);
        assert_eq!(net.leaders(), vec![leader]);
        assert_eq!(net.nodes[leader].term(), term, "no election happened");
    }

    #[test]
    fn a_leader_that_loses_its_quorum_stops_leading_at_once_or_within_one_timeout() {
        // Links closed: at once.
        let mut net = Net::new(3);
        let leader = net.elect();
        for i in net.others(leader) {
            net.link(leader, i, false);
        }
        assert!(!net.nodes[leader].is_leader());
        // Links up but silent (its followers paused): within one election timeout.
        let mut net = Net::new(3);
        let leader = net.elect();
        let heard = net.now;
        let silent = net.links.clone();
        net.links.clear();
        net.pass(T + BEAT);
        assert!(
            !net.nodes[leader].is_leader(),
            "still leading {:?} after",
            net.now - heard
        );
        assert!(
            net.seen[leader]
                .iter()
                .any(|a| matches!(a, MajorityAction::LeaderLost { .. }))
        );
        net.links = silent;
        // The same with reads confirmed more often than the heartbeat: a confirmation round is
        // no heartbeat, and check-quorum still runs on time.
        let mut net = Net::new(3);
        let leader = net.elect();
        net.links.clear();
        let cut = net.now;
        while net.now < cut + T + BEAT * 2 && net.nodes[leader].is_leader() {
            let now = net.now;
            net.nodes[leader].confirm(now).unwrap();
            net.pass(BEAT / 2);
        }
        assert!(
            !net.nodes[leader].is_leader(),
            "frequent confirmations kept a cut-off leader leading"
        );
    }

    #[test]
    fn an_answer_to_a_round_not_yet_started_confirms_nothing() {
        let mut net = Net::new(3);
        let leader = net.elect();
        let (_, confirmed) = net.nodes[leader].progress().unwrap();
        let term = net.nodes[leader].term();
        let voter = (leader + 1) % 3;
        for from in [voter, (leader + 2) % 3] {
            let forged = MajorityMessage::Ack {
                term,
                held: Some(0),
                round: u64::MAX,
            };
            let now = net.now;
            net.nodes[leader].handle_message(name(from), forged, now);
        }
        let (_, after) = net.nodes[leader].progress().unwrap();
        assert_eq!(
            after, confirmed,
            "a round never sent was counted as answered"
        );
    }

    #[test]
    fn a_node_whose_term_ran_ahead_does_not_block_the_election_etcd_9586() {
        // `ahead` holds less than `rest` but its term ran ahead (it stood and its vote requests
        // were lost) while connected; the leader is gone. `ahead` refuses `rest`'s pre-votes
        // of a lower term, `rest` refuses `ahead` for its stale state: only because a refusal
        // carries the refuser's term does `rest` adopt it and win the next round.
        let mut net = Net::new(3);
        let leader = net.elect();
        let ahead = (0..3).find(|&i| i != leader).unwrap();
        let rest = (0..3).find(|&i| i != ahead && i != leader).unwrap();
        net.link(leader, ahead, false);
        net.link(rest, ahead, false);
        net.nodes[leader].broadcast(1, net.now).unwrap();
        net.run();
        net.link(rest, ahead, true);
        net.link(leader, rest, false);
        let term = net.nodes[rest].term();
        net.nodes[ahead].durable.term = term + 5;
        net.pass(T * 20);
        assert_eq!(net.leaders(), vec![rest], "the up-to-date node leads");
        assert!(net.nodes[rest].term() > term + 5);
    }

    #[test]
    fn a_resigning_leader_hands_over_at_once_despite_stickiness() {
        // Five voters: the successor needs votes of two that still heard the leader.
        let mut net = Net::new(5);
        let leader = net.elect();
        let term = net.nodes[leader].term();
        net.nodes[leader].resign(net.now);
        net.run();
        let leaders = net.leaders();
        assert_eq!(leaders.len(), 1, "a new leader without any time passing");
        assert_ne!(leaders[0], leader);
        assert_eq!(net.nodes[leaders[0]].term(), term + 1);
    }

    #[test]
    fn a_lease_lets_the_leader_answer_reads_alone_until_its_quorum_was_silent_that_long() {
        let mut net = Net::with_leases(3);
        let leader = net.elect();
        assert!(!net.nodes[leader].lease_holds(net.now), "no reads before t");
        assert_eq!(
            net.nodes[leader].progress(),
            None,
            "nothing served before t"
        );
        net.pass(T);
        assert!(net.nodes[leader].progress().is_some());
        assert!(net.nodes[leader].lease_holds(net.now));
        // The followers fall silent (hung), their links still up: the round a quorum answered
        // last was sent at most a heartbeat before.
        net.links.clear();
        let lease = net.nodes[leader].config().lease().unwrap();
        let silent_since = net.now;
        net.pass(lease - BEAT - Duration::from_millis(1));
        assert!(
            net.nodes[leader].lease_holds(net.now),
            "kept by the last rounds answered"
        );
        net.pass(BEAT + Duration::from_millis(1));
        assert_eq!(net.now, silent_since + lease);
        assert!(
            net.nodes[leader].is_leader(),
            "leading still (check-quorum waits t)"
        );
        assert!(
            !net.nodes[leader].lease_holds(net.now),
            "no read a lease after the last"
        );
    }

    #[test]
    fn a_leader_elected_while_an_earlier_lease_may_hold_serves_nothing_until_it_ended() {
        let mut net = Net::with_leases(3);
        let old = net.elect();
        net.pass(T);
        assert!(net.nodes[old].lease_holds(net.now));
        // Each follower drops its link to the leader, which has yet to find out: they elect one
        // of them at once (rule 6) while the old leader still holds its lease.
        for follower in net.others(old) {
            net.close_seen_by(follower, old);
        }
        let mut elected_within_lease = false;
        for _ in 0..(2 * T).as_millis() {
            net.pass(Duration::from_millis(1));
            let now = net.now;
            let old_reads = net.nodes[old].lease_holds(now);
            let new_serves: Vec<usize> = net
                .others(old)
                .into_iter()
                .filter(|&i| net.nodes[i].progress().is_some())
                .collect();
            elected_within_lease |= old_reads && !net.leaders().is_empty();
            assert!(
                !old_reads || new_serves.is_empty(),
                "n{new_serves:?} serves while n{old} may still answer reads alone"
            );
        }
        assert!(
            elected_within_lease,
            "the case needs a successor elected within the lease"
        );
        let new = net
            .others(old)
            .into_iter()
            .find(|&i| net.nodes[i].is_leader());
        let new = new.expect("a successor");
        assert!(
            net.nodes[new].progress().is_some(),
            "it serves once t passed"
        );
    }

    #[test]
    fn a_successor_answers_nothing_until_a_quorum_holds_its_state_with_uncommitted_writes() {
        let mut net = Net::with_leases(5);
        let old = net.elect();
        net.pass(T);
        let others = net.others(old);
        let (f, rest) = (others[0], others[1..].to_vec());
        // A broadcast reaches f alone: not committed (its caller is told the leader was lost).
        for &x in &rest {
            net.links.remove(&(old, x));
        }
        let now = net.now;
        net.nodes[old].broadcast(99, now).unwrap();
        net.run();
        let old_term = net.nodes[old].term();
        assert_eq!(
            net.nodes[f].held(),
            Some(Position {
                term: old_term,
                seq: 1
            })
        );
        // The leader shuts down and hands over to f, the furthest along; two others vote for it.
        net.nodes[old].resign(now);
        let handover = net
            .take_sends(old)
            .into_iter()
            .find(|(to, m)| *to == f && matches!(m, MajorityMessage::TimeoutNow { .. }));
        let (_, handover) = handover.expect("a handover to f");
        net.nodes[f].handle_message(name(old), handover, now);
        for (to, vote) in net.take_sends(f) {
            if rest[..2].contains(&to) && matches!(vote, MajorityMessage::Vote { .. }) {
                net.exchange(f, to, vote);
            }
        }
        assert!(net.nodes[f].is_leader(), "f won by the handover");
        // Its state, with the broadcast no quorum held, has reached no one: were f cut off now,
        // the others would elect one of them without it. So it answers nothing yet.
        let states = net.take_sends(f);
        assert!(!net.nodes[f].lease_holds(net.now), "no read alone");
        assert_eq!(net.nodes[f].progress(), None, "no reply at all");
        // Two voters take its state: with f, a quorum holds it.
        for (to, state) in states {
            if rest[..2].contains(&to) && matches!(state, MajorityMessage::State { .. }) {
                net.exchange(f, to, state);
            }
        }
        assert!(
            net.nodes[f].progress().is_some(),
            "it serves once a quorum holds its state"
        );
        assert!(
            net.nodes[f].lease_holds(net.now),
            "and reads alone (a handover's)"
        );
    }

    #[test]
    fn with_leases_a_leader_hands_over_only_once_it_serves_and_its_successor_serves_at_once() {
        let mut net = Net::with_leases(3);
        let leader = net.elect();
        net.nodes[leader].resign(net.now);
        net.run();
        assert_eq!(
            net.handover_from(leader),
            None,
            "within an earlier lease: no handover"
        );

        let mut net = Net::with_leases(3);
        let leader = net.elect();
        net.pass(T);
        net.nodes[leader].resign(net.now);
        net.run();
        assert!(net.handover_from(leader).is_some());
        let leaders = net.leaders();
        assert_eq!(leaders.len(), 1, "a successor without any time passing");
        let successor = leaders[0];
        assert_ne!(successor, leader);
        assert!(net.nodes[successor].progress().is_some(), "serving at once");
        assert!(
            net.nodes[successor].lease_holds(net.now),
            "its votes start its lease"
        );
    }

    #[test]
    fn a_leader_hands_over_to_the_earliest_by_name_among_the_voters_furthest_along() {
        let mut net = Net::new(3);
        let leader = net.elect();
        net.pass(T);
        net.nodes[leader].resign(net.now);
        net.run();
        // Both followers hold as much: the earlier by name is the one that stands first by rank
        // should it see the leader's link close before the handover arrives (rule 6).
        let first_by_rank = name(net.others(leader)[0]);
        assert_eq!(net.handover_from(leader), Some(first_by_rank));
    }

    #[test]
    fn a_follower_that_sees_its_leaders_link_close_stands_without_waiting_for_its_timeout() {
        let mut net = Net::new(3);
        let leader = net.elect();
        for i in net.others(leader) {
            net.link(leader, i, false);
        }
        // The first ranked stands at once; the next one heartbeat later.
        net.pass(BEAT);
        let leaders: Vec<usize> = net.leaders().into_iter().filter(|&i| i != leader).collect();
        assert_eq!(
            leaders.len(),
            1,
            "a new leader within one heartbeat, not {T:?}"
        );
    }

    #[test]
    fn voters_listed_in_other_orders_still_stand_one_at_a_time() {
        // Each node lists itself first: ranked by its own list, every survivor would stand at
        // once and split the vote.
        let mut net = Net::unlinked(&[&[0, 1, 2], &[1, 2, 0], &[2, 0, 1]]);
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            net.link(a, b, true);
        }
        let leader = net.elect();
        for i in net.others(leader) {
            net.link(leader, i, false);
        }
        net.pass(BEAT);
        let leaders: Vec<usize> = net.leaders().into_iter().filter(|&i| i != leader).collect();
        assert_eq!(leaders.len(), 1, "a new leader within one heartbeat");
    }

    #[test]
    fn a_voter_met_while_standing_is_asked_at_once_not_after_a_timeout() {
        // The two followers are not linked yet (one just restarted) when the leader resigns:
        // the successor's vote request and the other's pre-vote go unheard.
        let mut net = Net::new(3);
        let leader = net.elect();
        let [f1, f2] = net.others(leader)[..] else {
            unreachable!("three nodes")
        };
        net.link(f1, f2, false);
        // The leader resigns and stops: what it sends still arrives, nothing reaches it.
        net.nodes[leader].resign(net.now);
        net.links.remove(&(f1, leader));
        net.links.remove(&(f2, leader));
        net.run();
        net.link(leader, f1, false);
        net.link(leader, f2, false);
        // The follower not asked stands by rank, and asks no one it can reach.
        net.pass(BEAT / 2);
        assert!(net.leaders().is_empty());
        // Their link comes up: whoever stands asks the other as soon as they greet.
        net.link(f1, f2, true);
        net.pass(BEAT);
        assert_eq!(
            net.leaders().len(),
            1,
            "a new leader within one heartbeat, not after a timeout of {T:?} or more"
        );
    }

    #[test]
    fn a_leader_whose_voters_links_closed_stands_again_as_soon_as_one_is_back() {
        // The successor wins with its resigning leader's vote before it is linked to the
        // other follower; the resigned leader then stops, and the winner's quorum is gone.
        let mut net = Net::new(3);
        let leader = net.elect();
        let followers = net.others(leader);
        net.link(followers[0], followers[1], false);
        net.nodes[leader].resign(net.now);
        net.run();
        let [successor] = net.leaders()[..] else {
            panic!("a handover: {:?}", net.leaders());
        };
        let other = followers.into_iter().find(|&i| i != successor).unwrap();
        net.link(leader, successor, false);
        net.link(leader, other, false);
        net.pass(BEAT / 2);
        assert!(net.leaders().is_empty(), "no quorum is linked");
        // The successor holds the later position: only it can win, and it stands at once.
        net.link(successor, other, true);
        net.pass(BEAT);
        assert_eq!(
            net.leaders(),
            vec![successor],
            "a new leader within one heartbeat, not after a timeout of {T:?} or more"
        );
    }

    #[test]
    fn a_pre_vote_refused_while_its_leader_lived_is_granted_once_its_link_closes() {
        let mut net = Net::new(3);
        let leader = net.elect();
        let followers = net.others(leader);
        let (first, last) = (followers[0], followers[1]);
        // The leader crashes; the first ranked sees the close first and stands at once, while
        // the other still hears the leader and refuses it.
        net.link(leader, first, false);
        net.pass(Duration::ZERO);
        assert!(net.leaders().iter().all(|&i| i == leader));
        net.link(leader, last, false);
        net.pass(BEAT / 2);
        assert_eq!(
            net.leaders(),
            vec![first],
            "a new leader once the close is seen, not a heartbeat later"
        );
    }

    #[test]
    fn two_voters_standing_when_they_meet_do_not_split_the_vote() {
        // The leader crashes while its followers are not linked to each other: each ranks first
        // among the voters it reaches, stands at once, and asks no one.
        let mut net = Net::new(3);
        let leader = net.elect();
        let followers = net.others(leader);
        net.link(followers[0], followers[1], false);
        for &follower in &followers {
            net.link(leader, follower, false);
        }
        net.pass(BEAT / 2);
        assert!(net.leaders().is_empty());
        // They meet and ask each other: one backs off, the other wins.
        net.link(followers[0], followers[1], true);
        net.pass(BEAT);
        assert_eq!(
            net.leaders().len(),
            1,
            "no split vote, no timeout of {T:?} or more"
        );
    }

    #[test]
    fn a_voter_that_backed_off_for_one_that_cannot_win_asks_again_a_heartbeat_later() {
        // Five voters, two of them gone: of the three left, only the middle one by name reaches
        // both others, so only it can win.
        let mut net = Net::new(5);
        let leader = net.elect();
        let gone = (0..5).find(|&i| i != leader).unwrap();
        let left: Vec<usize> = (0..5).filter(|&i| i != leader && i != gone).collect();
        let (first, middle, last) = (left[0], left[1], left[2]);
        net.link(first, middle, false);
        net.link(first, last, false);
        for i in net.others(gone) {
            net.link(gone, i, false);
        }
        for i in net.others(leader) {
            net.link(leader, i, false);
        }
        net.pass(BEAT * 3 / 2);
        assert!(net.leaders().is_empty());
        // The first meets the middle one, which grants its pre-vote and backs off; the first
        // cannot reach the last.
        net.link(first, middle, true);
        net.pass(BEAT * 2);
        assert_eq!(
            net.leaders(),
            vec![middle],
            "a leader within two heartbeats, not after a timeout of {T:?} or more"
        );
    }

    #[test]
    fn a_voter_that_lost_its_memory_neither_stands_nor_votes_until_it_has_the_state() {
        let mut net = Net::new(3);
        let leader = net.elect();
        net.nodes[leader].broadcast(1, net.now).unwrap();
        net.run();
        let restarted = (0..3).find(|&i| i != leader).unwrap();
        let durable = net.disks[restarted].clone();
        let config = net.nodes[restarted].config.clone();
        net.link(leader, restarted, false);
        let other = (0..3).find(|&i| i != leader && i != restarted).unwrap();
        net.link(other, restarted, false);
        net.nodes[restarted] = Majority::new(name(restarted), config, durable, net.now, 99);
        // Back, but only with `other`, which holds the write; the leader is gone.
        net.link(leader, other, false);
        net.link(other, restarted, true);
        net.pass(T * 20);
        assert!(
            net.leaders().is_empty(),
            "no quorum can prove it holds every acknowledged write"
        );
        assert!(net.nodes[restarted].waits_for_state());
        assert!(!net.nodes[other].waits_for_state(), "it holds the state");
        // The old leader comes back: it and `other` hold the write; one of them leads, and the
        // restarted voter gets the state.
        net.link(leader, other, true);
        net.link(leader, restarted, true);
        net.pass(T * 20);
        let new_leader = net.elect();
        assert_ne!(new_leader, restarted);
        assert!(net.nodes[restarted].held().is_some());
        assert!(!net.nodes[restarted].waits_for_state());
    }

    /// Restarts node `i` with what its disk holds: its term and vote, no state.
    fn restart(net: &mut Net, i: usize) {
        for other in net.others(i) {
            net.link(i, other, false);
        }
        let config = net.nodes[i].config.clone();
        net.nodes[i] = Majority::new(
            name(i),
            config,
            net.disks[i].clone(),
            net.now,
            50 + i as u64,
        );
    }

    #[test]
    fn a_majority_restarted_together_elects_the_voter_that_kept_the_state_once_all_are_back() {
        let mut net = Net::new(3);
        let leader = net.elect();
        net.nodes[leader].broadcast(1, net.now).unwrap();
        net.run();
        let kept = (0..3).find(|&i| i != leader).unwrap();
        let also_restarted = (0..3).find(|&i| i != leader && i != kept).unwrap();
        let held = net.nodes[kept].held();
        assert!(held.is_some());
        restart(&mut net, leader);
        restart(&mut net, also_restarted);
        // Back with the holder, but not with each other: one of them may hold more.
        net.link(leader, kept, true);
        net.link(also_restarted, kept, true);
        net.pass(T * 20);
        assert!(
            net.leaders().is_empty(),
            "a voter that said nothing may hold more"
        );
        assert!(net.nodes[leader].waits_for_state());
        // All three linked: each has told the others what it holds; the holder is elected.
        net.link(leader, also_restarted, true);
        net.pass(T * 20);
        assert_eq!(net.elect(), kept);
        for i in 0..3 {
            assert!(!net.nodes[i].waits_for_state(), "n{i}");
        }
    }

    #[test]
    fn a_voter_that_lost_its_memory_votes_for_no_one_behind_what_another_voter_holds() {
        // n0 leads and its write reaches n1 but not n2; then n0 restarts without it.
        let mut net = Net::new(3);
        let leader = net.elect();
        let (holder, behind) = match leader {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        net.link(leader, behind, false);
        net.nodes[leader].broadcast(1, net.now).unwrap();
        net.run();
        assert!(net.nodes[holder].held() > net.nodes[behind].held());
        restart(&mut net, leader);
        for other in net.others(leader) {
            net.link(leader, other, true);
        }
        net.link(holder, behind, true);
        // Asked by `behind`, the restarted voter refuses: the holder told it it is further.
        // Asked by the holder, it grants.
        let term = net.nodes[behind].term() + 1;
        for (asker, grants) in [(behind, false), (holder, true)] {
            let asked = MajorityMessage::PreVote {
                term,
                held: net.nodes[asker].held(),
            };
            net.nodes[leader].handle_message(name(asker), asked, net.now);
            let answers: Vec<bool> = net
                .take_sends(leader)
                .into_iter()
                .filter_map(|(to, message)| match message {
                    MajorityMessage::PreVoteReply { granted, .. } if to == asker => Some(granted),
                    _ => None,
                })
                .collect();
            assert_eq!(answers, vec![grants], "asked by n{asker}");
        }
    }

    /// Links `from` and `to`, `to`'s greeting reaching `from` while what `from` sends `to` (its
    /// greeting, and what it sends once greeted: a leader's state) is held back on the way.
    fn link_holding_back(net: &mut Net, from: usize, to: usize) -> Vec<MajorityMessage<u32, u32>> {
        let now = net.now;
        net.nodes[from].handle_node_up(name(to), now);
        net.nodes[to].handle_node_up(name(from), now);
        let mut held_back: Vec<_> = net
            .take_sends(from)
            .into_iter()
            .filter(|(at, _)| *at == to)
            .map(|(_, message)| message)
            .collect();
        for (at, message) in net.take_sends(to) {
            assert_eq!(at, from);
            net.nodes[from].handle_message(name(to), message, now);
        }
        held_back.extend(
            net.take_sends(from)
                .into_iter()
                .filter(|(at, _)| *at == to)
                .map(|(_, message)| message),
        );
        held_back
    }

    /// Delivers what [`link_holding_back`] held back, and opens the link to what follows.
    fn deliver_held_back(
        net: &mut Net,
        from: usize,
        to: usize,
        held_back: Vec<MajorityMessage<u32, u32>>,
    ) {
        for message in held_back {
            let now = net.now;
            net.nodes[to].handle_message(name(from), message, now);
        }
        net.links.insert((from, to));
        net.links.insert((to, from));
        net.run();
    }

    /// Why the votes of voters that lost their memory count only with every voter's answer in
    /// the candidate's term: a word given earlier can be overtaken. Five voters; W reaches a
    /// quorum (the leader, b, c) while d and e lag. b and c restart and hear from d and e that
    /// they lag; then e gets W from the leader (its state, delayed on their link) without
    /// telling them, and the leader restarts too. Three voters hold nothing, e holds W, d lacks
    /// it: were the restarted to vote on what they were told, d would be elected, and W, held
    /// by a running voter, lost.
    #[test]
    fn a_report_overtaken_by_a_delayed_state_cannot_elect_a_voter_without_an_acknowledged_write() {
        let mut net = Net::new(5);
        let l = net.elect();
        let others = net.others(l);
        let (b, c, d, e) = (others[0], others[1], others[2], others[3]);
        net.link(l, d, false);
        net.link(l, e, false);
        net.nodes[l].broadcast(1, net.now).unwrap();
        net.run();
        let w = net.nodes[l].held().unwrap();
        assert_eq!(
            net.nodes[l].progress().map(|p| p.0),
            Some(w.seq),
            "W committed"
        );
        // The leader and e link again; what the leader sends e (its greeting, then its state
        // with W) is held back on the way.
        let held_back = link_holding_back(&mut net, l, e);
        assert!(
            held_back
                .iter()
                .any(|m| matches!(m, MajorityMessage::State { seq, .. } if *seq == w.seq))
        );
        restart(&mut net, b);
        restart(&mut net, c);
        for (x, y) in [(b, c), (b, d), (b, e), (c, d), (c, e)] {
            net.link(x, y, true);
        }
        assert!(net.nodes[e].held() < Some(w), "e told b and c it lacks W");
        deliver_held_back(&mut net, l, e, held_back);
        assert_eq!(net.nodes[e].held(), Some(w), "e holds W from now on");
        restart(&mut net, l);
        for x in net.others(l) {
            net.link(l, x, true);
        }
        assert!(net.nodes[d].held() < Some(w));
        // d's timer fires first.
        net.nodes[d].stand_at = Some(net.now);
        let now = net.now;
        net.nodes[d].handle_timeout(now);
        net.run();
        net.pass(T * 20);
        // Every voter answered d in its term: e with W, so the others' votes do not count for
        // d. e, which holds W, is elected instead, every voter answering it.
        assert_eq!(net.elect(), e);
    }

    /// As above, with what every voter said before being "nothing": d and e never held a
    /// state; e says so to the restarted b and c, then gets W; the leader restarts. b and c,
    /// told by every other voter that it holds nothing, must not elect d (which holds nothing)
    /// on that word: their votes count only with e's answer, which holds W.
    #[test]
    fn a_word_of_holding_nothing_overtaken_by_a_delayed_state_elects_no_one_without_the_write() {
        let mut net = Net::new(5);
        let (d, e) = (3, 4);
        for x in [d, e] {
            for y in net.others(x) {
                net.link(x, y, false);
            }
        }
        let l = net.elect();
        assert!(l != d && l != e);
        let rest: Vec<usize> = [0, 1, 2].into_iter().filter(|&i| i != l).collect();
        let (b, c) = (rest[0], rest[1]);
        net.nodes[l].broadcast(1, net.now).unwrap();
        net.run();
        let w = net.nodes[l].held().unwrap();
        assert_eq!(
            net.nodes[l].progress().map(|p| p.0),
            Some(w.seq),
            "W committed"
        );
        // d and e, which hold nothing, learn the term from b.
        net.link(d, e, true);
        net.link(d, b, true);
        net.link(e, b, true);
        net.link(d, b, false);
        net.link(e, b, false);
        assert_eq!(net.nodes[e].term(), net.nodes[l].term());
        // The leader and e link; what the leader sends e is held back on the way.
        let held_back = link_holding_back(&mut net, l, e);
        assert!(
            held_back
                .iter()
                .any(|m| matches!(m, MajorityMessage::State { seq, .. } if *seq == w.seq))
        );
        restart(&mut net, b);
        restart(&mut net, c);
        for (x, y) in [(b, c), (b, d), (b, e), (c, d), (c, e)] {
            net.link(x, y, true);
        }
        assert_eq!(net.nodes[e].held(), None, "e told b and c it holds nothing");
        deliver_held_back(&mut net, l, e, held_back);
        assert_eq!(net.nodes[e].held(), Some(w), "e holds W from now on");
        restart(&mut net, l);
        for x in net.others(l) {
            net.link(l, x, true);
        }
        let before: Vec<Option<Position>> = net.nodes.iter().map(Majority::held).collect();
        net.nodes[d].stand_at = Some(net.now);
        let now = net.now;
        net.nodes[d].handle_timeout(now);
        net.run();
        for leader in net.leaders() {
            assert!(
                before[leader] >= Some(w),
                "n{leader} elected holding {:?}, without W, which the running e held",
                before[leader]
            );
        }
        net.pass(T * 20);
        assert_eq!(
            net.elect(),
            e,
            "e, which holds W, is elected once all answer"
        );
    }

    #[test]
    fn nodes_of_two_voter_lists_that_meet_abstain_until_the_other_list_is_gone() {
        // n0, n1 hold `n0, n1, n2`; n2, n3, n4 hold `n2, n3, n4`: disjoint quorums.
        let (first, second): (&[usize], &[usize]) = (&[0, 1, 2], &[2, 3, 4]);
        let mut net = Net::unlinked(&[first, first, second, second, second]);
        let within = |a: usize, b: usize| (a < 2) == (b < 2);
        let pairs: Vec<(usize, usize)> = (0..5)
            .flat_map(|a| (a + 1..5).map(move |b| (a, b)))
            .collect();
        for &(a, b) in pairs.iter().filter(|(a, b)| within(*a, *b)) {
            net.link(a, b, true);
        }
        // Apart they are two clusters: a leader each.
        net.pass(T * 20);
        let leaders = net.leaders();
        assert_eq!(leaders.len(), 2, "{leaders:?}");
        assert!(leaders[0] < 2 && leaders[1] >= 2, "{leaders:?}");

        // Met, no one leads, follows, stands or votes, however long they wait.
        for &(a, b) in pairs.iter().filter(|(a, b)| !within(*a, *b)) {
            net.link(a, b, true);
        }
        let terms: Vec<u64> = net.nodes.iter().map(Majority::term).collect();
        net.pass(T * 50);
        assert_eq!(net.leaders(), Vec::<usize>::new());
        for (i, node) in net.nodes.iter().enumerate() {
            assert!(node.abstains(), "n{i}");
            assert_eq!(node.leader(), None, "n{i}");
            assert_eq!(node.term(), terms[i], "n{i} stood or voted");
            assert_eq!(node.poll_timeout(), None, "n{i}");
            let other_list = |peer: &NodeName| (i < 2) != (peer.as_str() < "n2");
            assert!(node.refused().iter().all(other_list), "n{i}");
            let refused =
                |a: &MajorityAction<u32, u32>| matches!(a, MajorityAction::Refused { .. });
            assert!(net.seen[i].iter().any(refused), "n{i} was not told");
        }
        let now = net.now;
        assert_eq!(net.nodes[2].broadcast(1, now), Err(NotLeader));

        // The second list's nodes leave: the first list's elect again, among themselves.
        for &(a, b) in pairs.iter().filter(|(a, b)| !within(*a, *b)) {
            net.link(a, b, false);
        }
        net.pass(T * 20);
        let leaders = net.leaders();
        assert_eq!(leaders.len(), 2, "{leaders:?}");
        assert!(net.nodes.iter().all(|node| !node.abstains()));
    }

    #[test]
    fn both_ends_of_a_link_learn_the_others_voters_whichever_counted_the_other_first() {
        // n0, n1, n2 hold `n0, n1, n2`; n3, n4 hold `n2, n3, n4`; the only link across is
        // n2–n3, and n2's greeting reaches n3 before n3 counts n2.
        let (first, second): (&[usize], &[usize]) = (&[0, 1, 2], &[2, 3, 4]);
        let mut net = Net::unlinked(&[first, first, first, second, second]);
        for (a, b) in [(0, 1), (0, 2), (1, 2), (3, 4)] {
            net.link(a, b, true);
        }
        net.link_first_at(2, 3);
        assert_eq!(net.nodes[2].refused(), &BTreeSet::from([name(3)]));
        assert_eq!(net.nodes[3].refused(), &BTreeSet::from([name(2)]));
        // n0 and n1 are a quorum of their list with no link to the other: they may elect. The
        // second list's n4 alone is no quorum of its own, with n3 abstaining.
        net.pass(T * 20);
        let leaders = net.leaders();
        assert!(matches!(leaders[..], [] | [0] | [1]), "{leaders:?}");

        // Two nodes of one list, the same way round: each greeted once more, no one refused.
        let mut net = Net::unlinked(&[first, first, first]);
        net.link(0, 1, true);
        net.link_first_at(2, 0);
        net.link_first_at(1, 2);
        net.elect();
        assert!(net.nodes.iter().all(|node| !node.abstains()));
        assert!(net.nodes.iter().all(|node| node.held().is_some()));
    }

    #[test]
    fn a_node_with_another_lease_setting_stops_the_election_while_it_is_linked() {
        // n0 and n1 with leases; n2 without, or with leases of another election timeout.
        let others: [fn(&mut MajorityConfig); 2] = [
            |config| config.leases = false,
            |config| config.election_timeout = T * 2,
        ];
        for other in others {
            let voters: &[usize] = &[0, 1, 2];
            let mut net = Net::unlinked(&[voters; 3]);
            for node in &mut net.nodes {
                node.config.leases = true;
            }
            other(&mut net.nodes[2].config);
            for (a, b) in [(0, 1), (0, 2), (1, 2)] {
                net.link(a, b, true);
            }
            net.pass(T * 20);
            assert_eq!(net.leaders(), Vec::<usize>::new());
            assert_eq!(net.nodes[0].refused(), &BTreeSet::from([name(2)]));
            assert_eq!(net.nodes[1].refused(), &BTreeSet::from([name(2)]));
            assert_eq!(net.nodes[2].refused(), &BTreeSet::from([name(0), name(1)]));
            let told = net.seen[0].iter().any(|action| {
                matches!(action, MajorityAction::Refused { node, leases_with, .. }
                    if *node == name(2) && *leases_with == net.nodes[2].config.leases_with())
            });
            assert!(told, "n0 was not told what n2 runs with");

            // n2 leaves: n0 and n1 elect, and serve.
            net.link(0, 2, false);
            net.link(1, 2, false);
            net.pass(T * 20);
            let leader = net.leaders()[..] == [0] || net.leaders()[..] == [1];
            assert!(leader, "{:?}", net.leaders());
        }

        // Without leases the election timeouts may differ; a worker's setting is its own (it
        // never leads).
        let voters: &[usize] = &[0, 1, 2];
        let mut net = Net::unlinked(&[voters; 4]);
        net.nodes[2].config.election_timeout = T * 2;
        net.nodes[3].config.leases = true;
        for (a, b) in [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)] {
            net.link(a, b, true);
        }
        net.pass(T * 20);
        assert!(net.nodes.iter().all(|node| !node.abstains()));
        assert_eq!(net.leaders().len(), 1);
        assert!(net.nodes[3].leader().is_some(), "the worker follows");
    }

    #[test]
    fn nothing_a_peer_says_before_its_greeting_is_heard() {
        // n1 (voters n1, n2, n3) counts n0, whose greeting it did not hear; n0 leads a list of
        // its own and its state arrives first. n1 must not follow it, nor take its term, before
        // it has judged n0's voters.
        let config = MajorityConfig {
            voters: vec![name(1), name(2), name(3)],
            election_timeout: T,
            heartbeat: BEAT,
            leases: false,
        };
        let now = Instant::now();
        let mut node: Machine = Majority::new(name(1), config, Durable::default(), now, 1);
        node.handle_node_up(name(0), now);
        let state = MajorityMessage::State {
            term: 1,
            seq: 0,
            round: 0,
            state: 7,
        };
        node.handle_message(name(0), state, now);
        assert_eq!((node.term(), node.leader(), node.held()), (0, None, None));
        let hello = MajorityMessage::Hello {
            term: 1,
            held: Some(Position { term: 1, seq: 0 }),
            voters: vec![name(0)],
            leases_with: None,
        };
        node.handle_message(name(0), hello, now);
        assert_eq!(node.refused(), &BTreeSet::from([name(0)]));
        assert_eq!((node.term(), node.leader()), (0, None));
    }

    #[test]
    fn a_voter_list_in_another_order_is_the_same_list() {
        let mut net = Net::unlinked(&[&[0, 1, 2], &[2, 1, 0], &[1, 0, 2]]);
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            net.link(a, b, true);
        }
        net.elect();
        assert!(net.nodes.iter().all(|node| !node.abstains()));
    }

    #[test]
    fn extreme_terms_and_numbers_from_a_peer_neither_panic_nor_move_anything_backwards() {
        let mut net = Net::new(3);
        let leader = net.elect();
        let follower = (0..3).find(|&i| i != leader).unwrap();
        let term = net.nodes[leader].term();
        let now = net.now;
        // A term with no successor is ignored.
        let hello = MajorityMessage::Hello {
            term: u64::MAX,
            held: None,
            voters: net.nodes[follower].voters().to_vec(),
            leases_with: None,
        };
        net.nodes[follower].handle_message(name(leader), hello, now);
        assert_eq!(net.nodes[follower].term(), term);
        // A state at the last number, then a broadcast past it: no overflow.
        let state = MajorityMessage::State {
            term,
            seq: u64::MAX,
            round: u64::MAX,
            state: 1,
        };
        net.nodes[follower].handle_message(name(leader), state, now);
        let append = MajorityMessage::Append {
            term,
            seq: 0,
            round: 0,
            broadcast: 1,
        };
        net.nodes[follower].handle_message(name(leader), append, now);
        // An answer claiming more than was sent commits nothing unsent.
        let ack = MajorityMessage::Ack {
            term,
            held: Some(u64::MAX),
            round: 0,
        };
        net.nodes[leader].handle_message(name(follower), ack, now);
        assert_eq!(net.nodes[leader].progress().unwrap().0, 0);
        // An older state of the same leader never takes a follower back.
        let mut net = Net::new(3);
        let leader = net.elect();
        net.nodes[leader].broadcast(1, net.now).unwrap();
        net.run();
        let follower = (0..3).find(|&i| i != leader).unwrap();
        let term = net.nodes[leader].term();
        let stale = MajorityMessage::State {
            term,
            seq: 0,
            round: 0,
            state: 7,
        };
        let now = net.now;
        net.nodes[follower].handle_message(name(leader), stale, now);
        assert_eq!(net.nodes[follower].held(), Some(Position { term, seq: 1 }));
    }

    /// A state a voter ignored while it abstained (rule 7) goes again once the voter answers a
    /// later round without it: otherwise, with the third voter gone, the leader would lead on
    /// its answers (check-quorum holds) and never serve.
    #[test]
    fn a_state_a_voter_ignored_while_it_abstained_goes_again() {
        let mut net = Net::unlinked(&[&[0, 1, 2], &[0, 1, 2], &[0, 1, 2], &[1, 3]]);
        net.link(1, 3, true);
        assert!(net.nodes[1].abstains());
        net.link(0, 1, true);
        net.link(0, 2, true);
        net.link(1, 2, true);
        assert!(!net.nodes[0].abstains() && !net.nodes[2].abstains());
        // n0 stands; n2 grants, n1 (abstaining) ignores.
        net.now += 2 * T;
        let now = net.now;
        net.nodes[0].handle_timeout(now);
        let mut to_n2 = net.take_sends(0);
        for _ in 0..2 {
            for (to, message) in std::mem::take(&mut to_n2) {
                if to == 2 {
                    net.exchange(0, 2, message);
                } else {
                    net.nodes[to].handle_message(name(0), message, now);
                    net.take_sends(to);
                }
            }
            to_n2 = net.take_sends(0);
        }
        assert!(net.nodes[0].is_leader(), "n0 won with n2's vote");
        // Its State reaches n1, which abstains and ignores it; n2's is lost with its link.
        for (to, message) in to_n2 {
            if to == 1 {
                assert!(matches!(message, MajorityMessage::State { .. }));
                net.nodes[1].handle_message(name(0), message, now);
            }
        }
        // n2's link to n0 drops, seen at first by n2 only (n0 finds it silent later).
        net.close_seen_by(2, 0);
        net.link(1, 2, false);
        assert!(net.nodes[0].is_leader());
        // n1's other-list peer goes: it heeds n0 again.
        net.link(1, 3, false);
        assert!(!net.nodes[1].abstains());
        net.pass(T / 2);
        let now = net.now;
        net.nodes[0].handle_node_down(&name(2), now);
        net.run();
        net.pass(20 * T);
        assert!(net.nodes[0].is_leader(), "n0 still leads (n1 answers it)");
        assert_eq!(net.nodes[1].leader(), Some(&name(0)));
        assert_eq!(
            net.nodes[1].held().map(|h| h.term),
            Some(net.nodes[0].term()),
            "n1 got n0's state again"
        );
        assert!(net.nodes[0].progress().is_some(), "n0 serves with n1");
    }

    #[test]
    fn a_single_voter_with_a_worker_serves_with_or_without_leases() {
        for leases in [false, true] {
            let mut net = Net::unlinked(&[&[0], &[0]]);
            for node in &mut net.nodes {
                node.config.leases = leases;
            }
            net.link(0, 1, true);
            let leader = net.elect();
            assert_eq!(leader, 0);
            net.pass(T + BEAT);
            assert!(net.nodes[0].progress().is_some(), "leases {leases}");
            let now = net.now;
            let round = net.nodes[0].confirm(now).unwrap();
            assert_eq!(net.nodes[0].progress().unwrap().1, round);
            net.nodes[0].broadcast(1, now).unwrap();
            net.run();
            assert_eq!(net.nodes[0].progress().unwrap().0, 1);
            assert_eq!(
                net.nodes[1].held().map(|h| h.seq),
                Some(1),
                "the worker follows"
            );
            assert_eq!(net.nodes[0].lease_holds(net.now), leases);
        }
    }
}

//! The roster: a cluster member that reports its own welcome and every join and leave, with the
//! member list after it, to a channel. `gen-cluster node --member KIND` runs one and prints what it reports; it is
//! the smallest useful [`ClusterServer`].

use tokio::sync::mpsc;

use crate::{ClusterContext, ClusterServer, ExitReason, Flow, Member, Membership, Pid, ReplyTo};

/// What changed in the member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosterEvent {
    /// This member is in (`handle_welcomed`).
    Welcomed,
    /// A member joined through this member (`handle_join`).
    Joined,
    /// A member joined through another member (`handle_node_joined`).
    NodeJoined,
    /// A member left (`handle_leave`).
    Left,
}

impl RosterEvent {
    /// Its name in the CLI's output: `welcomed`, `joined`, `node_joined`, `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcomed => "welcomed",
            Self::Joined => "joined",
            Self::NodeJoined => "node_joined",
            Self::Left => "left",
        }
    }
}

/// A change of the member list, as the roster saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterChange {
    /// What happened.
    pub event: RosterEvent,
    /// The member concerned (this one, for `welcomed`).
    pub member: Member,
    /// Why it left (for `left`).
    pub reason: Option<ExitReason>,
    /// The members after the change, grouped by kind.
    pub members: Vec<(String, Vec<Pid>)>,
}

/// A member that sends a [`RosterChange`] for each join and leave.
#[derive(Debug)]
pub struct Roster {
    changes: mpsc::UnboundedSender<RosterChange>,
}

impl Roster {
    /// A roster reporting to `changes`.
    pub fn new(changes: mpsc::UnboundedSender<RosterChange>) -> Self {
        Self { changes }
    }

    fn report(
        &self,
        event: RosterEvent,
        member: &Member,
        reason: Option<&ExitReason>,
        members: &Membership,
    ) {
        let members = grouped(members);
        let _ = self.changes.send(RosterChange {
            event,
            member: member.clone(),
            reason: reason.cloned(),
            members,
        });
    }
}

impl ClusterServer for Roster {
    type Call = ();
    /// The members, grouped by kind.
    type Reply = Vec<(String, Vec<Pid>)>;
    type Cast = ();
    type Info = ();

    async fn handle_welcomed(
        &mut self,
        members: &Membership,
        ctx: &mut ClusterContext<Self>,
    ) -> Flow {
        if let Some(me) = members.member(ctx.pid()) {
            self.report(RosterEvent::Welcomed, me, None, members);
        }
        Flow::Continue
    }

    async fn handle_join(
        &mut self,
        joining: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.report(RosterEvent::Joined, joining, None, members);
        Flow::Continue
    }

    async fn handle_node_joined(
        &mut self,
        joined: &Member,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.report(RosterEvent::NodeJoined, joined, None, members);
        Flow::Continue
    }

    async fn handle_leave(
        &mut self,
        left: &Member,
        members: &Membership,
        reason: &ExitReason,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        self.report(RosterEvent::Left, left, Some(reason), members);
        Flow::Continue
    }

    async fn handle_call(
        &mut self,
        _: (),
        from: ReplyTo<Self::Reply>,
        members: &Membership,
        _: &mut ClusterContext<Self>,
    ) -> Flow {
        from.reply(grouped(members));
        Flow::Continue
    }
}

/// The members' pids grouped by kind, as owned data to send.
fn grouped(members: &Membership) -> Vec<(String, Vec<Pid>)> {
    members
        .by_kind()
        .into_iter()
        .map(|(kind, pids)| (kind.to_string(), pids))
        .collect()
}

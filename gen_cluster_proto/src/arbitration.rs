//! One connection per pair of nodes. When both nodes dial each other at once, or a node restarts
//! under the same name while its earlier life still looks connected, several connections to one
//! peer overlap. At each decision point of a handshake — both come after the peer has proved the
//! cluster secret, so nothing a peer merely claims decides anything — the runtime asks
//! [`arbitrate`] what to do with it, given the other connection it already holds for that peer:
//!
//! 1. A later incarnation of the peer replaces an earlier one — unless the earlier one's link is
//!    alive (heard from lately): then two live processes claim one name, and the later one is
//!    refused with [`Refusal::NameClash`] (a restarted node whose earlier link has not yet gone
//!    silent is let in once it has). An earlier incarnation is refused.
//! 2. An established connection wins over a new one from the same life.
//! 3. Two connections of the same life that are both proven and not yet established — this
//!    node's dial meeting the peer's dial, each accepted by the other side and waiting for its
//!    dialer's last word — are decided by one rule both nodes apply alike: the connection dialed
//!    by the node with the smaller name wins.
//!
//! The decision points: the acceptor, once the dialer's proof verified (its answer is the
//! Confirm or a refusal); the initiator, once the acceptor's proof verified (its answer is Ready
//! or a refusal). The acceptor establishes only on Ready, so for a crossing pair the two
//! initiators decide, each seeing the other's connection as accepted-and-waiting: rule 3 gives
//! them the same winner.

use crate::handshake::Refusal;
use crate::{Incarnation, NodeName};

/// Where a handshake that asks for a decision stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Acceptor, after verifying the dialer's proof.
    ResponseVerified,
    /// Initiator, after verifying the acceptor's proof.
    ConfirmVerified,
}

/// The other connection this node holds for the same peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Other {
    /// Established.
    Up {
        /// The peer's incarnation on it.
        incarnation: Incarnation,
        /// Whether the peer spoke on it lately (within half the failure detector's deadline).
        heard_lately: bool,
    },
    /// Dialed by the peer, proven, accepted by this node, waiting for the peer's Ready.
    Accepted {
        /// The peer's incarnation on it.
        incarnation: Incarnation,
    },
}

impl Other {
    fn incarnation(self) -> Incarnation {
        match self {
            Other::Up { incarnation, .. } | Other::Accepted { incarnation } => incarnation,
        }
    }
}

/// What to do with the handshake that asked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Go on; there is no other connection.
    Proceed,
    /// Go on, and close the other connection (it lost, or belongs to the peer's earlier life).
    ProceedReplacing,
    /// Refuse this handshake; the other connection stays.
    Refuse(Refusal),
}

/// Decides the fate of a handshake at `step` with the proven peer `peer_name` (life
/// `peer_incarnation`), given the `other` connection this node (`local`) holds for that peer.
pub fn arbitrate(
    local: &NodeName,
    peer_name: &NodeName,
    peer_incarnation: Incarnation,
    step: Step,
    other: Option<Other>,
) -> Verdict {
    let Some(other) = other else {
        return Verdict::Proceed;
    };
    if peer_incarnation > other.incarnation() {
        if let Other::Up {
            heard_lately: true, ..
        } = other
        {
            return Verdict::Refuse(Refusal::NameClash {
                node: peer_name.clone(),
            });
        }
        return Verdict::ProceedReplacing;
    }
    if peer_incarnation < other.incarnation() {
        return Verdict::Refuse(Refusal::StaleIncarnation);
    }
    let duplicate = Verdict::Refuse(Refusal::Duplicate {
        node: local.clone(),
    });
    match (other, step) {
        (Other::Up { .. }, _) => duplicate,
        // A second dial from the same life while the first waits for its Ready: the first wins.
        (Other::Accepted { .. }, Step::ResponseVerified) => duplicate,
        // This node's dial meets the peer's: the one dialed by the smaller name wins.
        (Other::Accepted { .. }, Step::ConfirmVerified) if local < peer_name => {
            Verdict::ProceedReplacing
        }
        (Other::Accepted { .. }, Step::ConfirmVerified) => duplicate,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    const INC: Incarnation = Incarnation(5);

    fn refused(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Refuse(Refusal::Duplicate { .. }))
    }

    #[test]
    fn a_lone_handshake_proceeds() {
        for step in [Step::ResponseVerified, Step::ConfirmVerified] {
            let v = arbitrate(&name("a"), &name("b"), INC, step, None);
            assert_eq!(v, Verdict::Proceed);
        }
    }

    #[test]
    fn a_restarted_peer_replaces_its_earlier_life_and_not_the_reverse() {
        for step in [Step::ResponseVerified, Step::ConfirmVerified] {
            let earlier = Other::Up {
                incarnation: Incarnation(INC.0 - 1),
                heard_lately: false,
            };
            let v = arbitrate(&name("a"), &name("b"), INC, step, Some(earlier));
            assert_eq!(v, Verdict::ProceedReplacing);
            let later = Other::Accepted {
                incarnation: Incarnation(INC.0 + 1),
            };
            let v = arbitrate(&name("a"), &name("b"), INC, step, Some(later));
            assert_eq!(v, Verdict::Refuse(Refusal::StaleIncarnation));
        }
    }

    #[test]
    fn an_established_connection_is_never_replaced_by_the_same_life() {
        for step in [Step::ResponseVerified, Step::ConfirmVerified] {
            for (local, peer) in [("a", "b"), ("b", "a")] {
                let up = Other::Up {
                    incarnation: INC,
                    heard_lately: true,
                };
                let v = arbitrate(&name(local), &name(peer), INC, step, Some(up));
                assert!(refused(&v), "{v:?}");
            }
        }
    }

    #[test]
    fn a_later_life_of_a_name_whose_link_is_alive_is_refused_as_a_clash() {
        for step in [Step::ResponseVerified, Step::ConfirmVerified] {
            let live = Other::Up {
                incarnation: Incarnation(INC.0 - 1),
                heard_lately: true,
            };
            let v = arbitrate(&name("a"), &name("b"), INC, step, Some(live));
            assert_eq!(v, Verdict::Refuse(Refusal::NameClash { node: name("b") }));
        }
    }

    #[test]
    fn a_second_dial_from_one_life_waits_behind_the_first() {
        let accepted = Other::Accepted { incarnation: INC };
        let v = arbitrate(
            &name("a"),
            &name("b"),
            INC,
            Step::ResponseVerified,
            Some(accepted),
        );
        assert!(refused(&v));
    }

    /// Both nodes of a crossing dial reach their dial's Confirm while holding the peer's dial,
    /// accepted and waiting: they must keep the same connection, the smaller name's dial.
    #[test]
    fn crossing_dials_keep_the_connection_dialed_by_the_smaller_name_on_both_sides() {
        for (x, y) in [("a", "b"), ("b", "a")] {
            let (x, y) = (name(x), name(y));
            let accepted = Some(Other::Accepted { incarnation: INC });
            let at_x = arbitrate(&x, &y, INC, Step::ConfirmVerified, accepted);
            let at_y = arbitrate(&y, &x, INC, Step::ConfirmVerified, accepted);
            let x_keeps_own = at_x == Verdict::ProceedReplacing;
            let y_keeps_own = at_y == Verdict::ProceedReplacing;
            assert!(x_keeps_own != y_keeps_own, "exactly one dial survives");
            assert_eq!(x_keeps_own, x < y, "the smaller name's dial survives");
            assert!(refused(if x_keeps_own { &at_y } else { &at_x }));
        }
    }
}

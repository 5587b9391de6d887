//! One connection per pair of nodes. When both nodes dial each other at once, or a node restarts
//! under the same name while its earlier life still looks connected, several handshakes to one
//! peer overlap. At each decision point of a handshake the runtime asks [`arbitrate`] what to do
//! with it, given the other connection it already holds for that peer (if any). Both nodes apply
//! the same rule to the same pair of connections, so they keep the same one:
//!
//! 1. A later incarnation of the peer replaces an earlier one; an earlier one is refused.
//! 2. An established connection wins; so does one whose initiator has already sent its proof
//!    (the peer may have established it already).
//! 3. Between two connections still handshaking, the one dialed by the node with the smaller
//!    name wins.
//!
//! The decision points: the acceptor has read a Hello; the initiator has read a Challenge; the
//! acceptor has verified the initiator's proof.

use crate::handshake::Refusal;
use crate::{Incarnation, NodeName};

/// Where a handshake that asks for a decision stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Acceptor, after reading the peer's Hello.
    HelloReceived,
    /// Initiator, after reading the peer's Challenge.
    ChallengeReceived,
    /// Acceptor, after verifying the peer's proof.
    ResponseVerified,
}

/// How far the other connection to the same peer has come.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Progress {
    /// This node accepted it and sent its Challenge.
    Challenged,
    /// This node dialed it and sent its proof.
    Proved,
    /// Handshake complete.
    Established,
}

/// The other connection this node holds for the same peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Other {
    /// How far it has come.
    pub progress: Progress,
    /// Whether this node dialed it.
    pub dialed_by_us: bool,
    /// The peer's incarnation on it.
    pub incarnation: Incarnation,
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

/// Decides the fate of a handshake at `step` with the peer `peer_name` (life `peer_incarnation`),
/// given the `other` connection this node (`local`) holds for that peer.
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
    if peer_incarnation > other.incarnation {
        return Verdict::ProceedReplacing;
    }
    if peer_incarnation < other.incarnation {
        return Verdict::Refuse(Refusal::StaleIncarnation);
    }
    let committed = match other.progress {
        Progress::Established => true,
        // A proved connection is final for a new Hello; against a connection this node accepted
        // earlier, it is decided by the name rule (both sides then hold both connections).
        Progress::Proved => step == Step::HelloReceived,
        Progress::Challenged => false,
    };
    if committed {
        return Verdict::Refuse(Refusal::Duplicate {
            node: local.clone(),
        });
    }
    let this_dialed_by_us = step == Step::ChallengeReceived;
    if this_dialed_by_us == other.dialed_by_us {
        // Two connections dialed the same way (say, through two addresses): keep the first.
        return Verdict::Refuse(Refusal::Duplicate {
            node: local.clone(),
        });
    }
    let dialer_of_this = if this_dialed_by_us { local } else { peer_name };
    let dialer_of_other = if other.dialed_by_us { local } else { peer_name };
    if dialer_of_this < dialer_of_other {
        Verdict::ProceedReplacing
    } else {
        Verdict::Refuse(Refusal::Duplicate {
            node: local.clone(),
        })
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

    fn other(progress: Progress, dialed_by_us: bool) -> Option<Other> {
        Some(Other {
            progress,
            dialed_by_us,
            incarnation: INC,
        })
    }

    #[test]
    fn a_lone_handshake_proceeds() {
        let v = arbitrate(&name("a"), &name("b"), INC, Step::HelloReceived, None);
        assert_eq!(v, Verdict::Proceed);
    }

    #[test]
    fn a_restarted_peer_replaces_its_earlier_life_and_not_the_reverse() {
        let held = |incarnation| {
            Some(Other {
                progress: Progress::Established,
                dialed_by_us: true,
                incarnation,
            })
        };
        let earlier_life_held = held(Incarnation(INC.0 - 1));
        let v = arbitrate(
            &name("a"),
            &name("b"),
            INC,
            Step::HelloReceived,
            earlier_life_held,
        );
        assert_eq!(v, Verdict::ProceedReplacing);
        let later_life_held = held(Incarnation(INC.0 + 1));
        let v = arbitrate(
            &name("a"),
            &name("b"),
            INC,
            Step::HelloReceived,
            later_life_held,
        );
        assert_eq!(v, Verdict::Refuse(Refusal::StaleIncarnation));
    }

    #[test]
    fn an_established_connection_is_never_replaced_by_the_same_life() {
        for step in [
            Step::HelloReceived,
            Step::ChallengeReceived,
            Step::ResponseVerified,
        ] {
            for dialed in [true, false] {
                let v = arbitrate(
                    &name("a"),
                    &name("b"),
                    INC,
                    step,
                    other(Progress::Established, dialed),
                );
                assert!(matches!(v, Verdict::Refuse(Refusal::Duplicate { .. })));
            }
        }
    }

    #[test]
    fn a_hello_never_displaces_a_connection_whose_proof_was_sent() {
        let v = arbitrate(
            &name("b"),
            &name("a"),
            INC,
            Step::HelloReceived,
            other(Progress::Proved, true),
        );
        assert!(matches!(v, Verdict::Refuse(Refusal::Duplicate { .. })));
    }

    /// Simulates both nodes of a crossing dial meeting the other connection at every pair of
    /// steps: they must keep the same connection (the one dialed by the smaller name).
    #[test]
    fn crossing_dials_keep_the_connection_dialed_by_the_smaller_name_on_both_sides() {
        for (small, large) in [("a", "b"), ("b", "a")] {
            let (a, b) = (name(small), name(large));
            // On node a: its own dial (Challenge received) meets b's dial (already Challenged).
            let at_a = arbitrate(
                &a,
                &b,
                INC,
                Step::ChallengeReceived,
                other(Progress::Challenged, false),
            );
            // On node b: its own dial meets a's dial likewise.
            let at_b = arbitrate(
                &b,
                &a,
                INC,
                Step::ChallengeReceived,
                other(Progress::Challenged, false),
            );
            let a_keeps_own = at_a == Verdict::ProceedReplacing;
            let b_keeps_own = at_b == Verdict::ProceedReplacing;
            assert!(a_keeps_own != b_keeps_own, "exactly one dial survives");
            assert_eq!(a_keeps_own, a < b, "the smaller name's dial survives");
            // The other order on node a: a's proved dial meets the response on b's dial.
            let at_a_late = arbitrate(
                &a,
                &b,
                INC,
                Step::ResponseVerified,
                other(Progress::Proved, true),
            );
            assert_eq!(at_a_late == Verdict::ProceedReplacing, b < a);
        }
    }

    #[test]
    fn two_dials_the_same_way_keep_the_first() {
        let v = arbitrate(
            &name("a"),
            &name("b"),
            INC,
            Step::ChallengeReceived,
            other(Progress::Proved, true),
        );
        assert!(matches!(v, Verdict::Refuse(Refusal::Duplicate { .. })));
    }
}

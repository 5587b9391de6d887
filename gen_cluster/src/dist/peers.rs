//! The peer table: for each peer node, the proven handshake about to become its link, or the
//! established link. It decides, with the arbitration rule of `gen_cluster_proto::arbitration`,
//! which of several connections to one peer survives — only for peers that have proved the
//! cluster secret: a handshake is recorded here only once its peer's proof verified, so nothing
//! an unauthenticated peer says can displace a link or keep a real peer out. It records links,
//! and removes them, handing what the link held to the caller's report of the loss (the table
//! itself fails no call and fires no monitor).
//!
//! One mutex guards the table. A link's loss is reported, and a new link announced, while it is
//! held: so a peer's down is always told before a later connection to it is told up, even when
//! the peer redials the moment it sees the old link fail. Lock order: peers, then a link's state,
//! then the watchers' lists, then the process table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gen_cluster_proto::arbitration::{self, Other, Step, Verdict};
use gen_cluster_proto::handshake::{Identity, Refusal};
use gen_cluster_proto::{NodeId, NodeName};
use rustc_hash::FxHashMap as HashMap;
use tokio_util::sync::CancellationToken;

use crate::dist::PeerInfo;
use crate::dist::link::{LastHeard, LinkState, PeerLink};
use crate::dist::queue::FrameQueue;
use crate::lock;

/// Every peer of one node, proven and about to be linked, or up.
#[derive(Debug)]
pub(crate) struct PeerTable {
    local: NodeName,
    inner: Mutex<Peers>,
}

#[derive(Debug, Default)]
struct Peers {
    by_id: HashMap<NodeId, PeerEntry>,
    next_conn: u64,
    /// Set at shutdown: no link may be established after it.
    closed: bool,
}

#[derive(Debug)]
enum PeerEntry {
    Proven(Proven),
    Up(Arc<PeerLink>),
}

/// A handshake whose peer proved the secret and that this node decided to keep: accepted and
/// waiting for the dialer's Ready, or this node's dial, established the moment after.
#[derive(Debug)]
struct Proven {
    conn: u64,
    name: NodeName,
    accepted: bool,
    incarnation: gen_cluster_proto::Incarnation,
    cancel: CancellationToken,
}

impl PeerTable {
    /// The table of the node `local`.
    pub(crate) fn new(local: NodeName) -> Self {
        Self {
            local,
            inner: Mutex::default(),
        }
    }

    /// A number for a new connection, for the table and the logs.
    pub(crate) fn new_conn_id(&self) -> u64 {
        let mut peers = lock(&self.inner);
        peers.next_conn += 1;
        peers.next_conn
    }

    /// The established link to the node `id`.
    pub(crate) fn link_to(&self, id: NodeId) -> Option<Arc<PeerLink>> {
        match lock(&self.inner).by_id.get(&id) {
            Some(PeerEntry::Up(link)) => Some(Arc::clone(link)),
            _ => None,
        }
    }

    /// Whether `peer` is connected (by name, not only by id).
    pub(crate) fn is_connected(&self, peer: &NodeName) -> bool {
        self.link_to(peer.id())
            .is_some_and(|link| &link.name == peer)
    }

    /// The connected peers, by name.
    pub(crate) fn list(&self) -> Vec<PeerInfo> {
        let mut list: Vec<PeerInfo> = self
            .links()
            .iter()
            .map(|link| PeerInfo {
                name: link.name.clone(),
                incarnation: link.incarnation,
                addr: link.addr.clone(),
                hidden: link.hidden,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The established links.
    pub(crate) fn links(&self) -> Vec<Arc<PeerLink>> {
        lock(&self.inner)
            .by_id
            .values()
            .filter_map(|entry| match entry {
                PeerEntry::Up(link) => Some(Arc::clone(link)),
                PeerEntry::Proven(_) => None,
            })
            .collect()
    }

    /// Refuses every link from now on (at shutdown) and returns the established ones, to say
    /// goodbye on. A handshake in progress can no longer establish its link.
    pub(crate) fn close(&self) -> Vec<Arc<PeerLink>> {
        lock(&self.inner).closed = true;
        self.links()
    }

    /// Decides whether handshake `conn` with the proven `peer` may go on at `step` (see
    /// [`arbitration`]); if so, records it and cancels a proven handshake it replaces. An
    /// established link it replaces (an earlier life of the peer, or the losing side of a
    /// crossing dial) is removed and closed, and what it held handed to `report_replaced`,
    /// under the table's lock: its loss is told before the new link's up.
    pub(crate) fn arbitrate(
        &self,
        conn: u64,
        peer: &Identity,
        step: Step,
        cancel: &CancellationToken,
        clash_window: Duration,
        report_replaced: impl FnOnce(&Arc<PeerLink>, LinkState),
    ) -> Result<(), Refusal> {
        let id = peer.name.id();
        let mut peers = lock(&self.inner);
        let (other, other_name) = match peers.by_id.get(&id) {
            Some(PeerEntry::Proven(p)) => {
                let incarnation = p.incarnation;
                // This node's own dial, a moment from being established, counts as up.
                let other = match p.accepted {
                    true => Other::Accepted { incarnation },
                    false => Other::Up {
                        incarnation,
                        heard_lately: false,
                    },
                };
                (Some(other), &p.name)
            }
            Some(PeerEntry::Up(link)) => (
                Some(Other::Up {
                    incarnation: link.incarnation,
                    heard_lately: link.heard_within(clash_window),
                }),
                &link.name,
            ),
            None => (None, &peer.name),
        };
        if *other_name != peer.name {
            return Err(Refusal::IdCollision);
        }
        let replaced =
            match arbitration::arbitrate(&self.local, &peer.name, peer.incarnation, step, other) {
                Verdict::Refuse(refusal) => return Err(refusal),
                Verdict::Proceed => None,
                Verdict::ProceedReplacing => peers.by_id.remove(&id),
            };
        let proven = Proven {
            conn,
            name: peer.name.clone(),
            accepted: step == Step::ResponseVerified,
            incarnation: peer.incarnation,
            cancel: cancel.clone(),
        };
        peers.by_id.insert(id, PeerEntry::Proven(proven));
        match replaced {
            Some(PeerEntry::Proven(proven)) => proven.cancel.cancel(),
            Some(PeerEntry::Up(link)) => {
                if let Some(state) = link.close() {
                    report_replaced(&link, state);
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Forgets handshake `conn` if it is still the one recorded for `peer` (it failed).
    pub(crate) fn abandon(&self, conn: u64, peer: NodeId) {
        let mut peers = lock(&self.inner);
        if matches!(peers.by_id.get(&peer), Some(PeerEntry::Proven(p)) if p.conn == conn) {
            peers.by_id.remove(&peer);
        }
    }

    /// Turns handshake `conn` into an established link, if it is still the one recorded for the
    /// peer, and `announce`s it; `None` if another connection won meanwhile.
    pub(crate) fn establish(
        &self,
        conn: u64,
        peer: &Identity,
        version: u16,
        queue: FrameQueue,
        heard: LastHeard,
        announce: impl FnOnce(&PeerLink),
    ) -> Option<Arc<PeerLink>> {
        let id = peer.name.id();
        let mut peers = lock(&self.inner);
        let current = matches!(peers.by_id.get(&id), Some(PeerEntry::Proven(p)) if p.conn == conn);
        if !current || peers.closed {
            return None;
        }
        let link = Arc::new(PeerLink::new(peer, version, queue, heard));
        peers.by_id.insert(id, PeerEntry::Up(Arc::clone(&link)));
        announce(&link);
        Some(link)
    }

    /// Establishes a link to `peer` as an accepted handshake does, for the tests of the parts
    /// that hold links; returns it and the receiving end of its frame queue.
    #[cfg(test)]
    #[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    pub(crate) fn connect_for_tests(
        &self,
        peer: &Identity,
    ) -> (
        Arc<PeerLink>,
        tokio::sync::mpsc::UnboundedReceiver<crate::dist::queue::Outgoing>,
    ) {
        let conn = self.new_conn_id();
        let cancel = CancellationToken::new();
        self.arbitrate(
            conn,
            peer,
            Step::ResponseVerified,
            &cancel,
            Duration::ZERO,
            |_, _| {},
        )
        .unwrap();
        let (queue, frames) = FrameQueue::new(peer.name.clone(), 1 << 20, 1 << 20);
        let heard = LastHeard::now();
        let link = self
            .establish(
                conn,
                peer,
                gen_cluster_proto::handshake::SUPPORTED_VERSIONS.max,
                queue,
                heard,
                |_| {},
            )
            .unwrap();
        (link, frames)
    }

    /// Removes `link` from the table (if it is still the one recorded) and closes it; the first
    /// time only, hands what it held to `report`, still under the table's lock. Returns whether
    /// this call closed it: a link's loss is reported once.
    pub(crate) fn remove(&self, link: &Arc<PeerLink>, report: impl FnOnce(LinkState)) -> bool {
        let mut peers = lock(&self.inner);
        if matches!(peers.by_id.get(&link.id), Some(PeerEntry::Up(l)) if Arc::ptr_eq(l, link)) {
            peers.by_id.remove(&link.id);
        }
        match link.close() {
            Some(state) => {
                report(state);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use gen_cluster_proto::Incarnation;

    fn identity(name: &str, incarnation: u64) -> Identity {
        Identity {
            name: NodeName::new(name).unwrap(),
            incarnation: Incarnation(incarnation),
            listen: format!("{name}:1"),
            hidden: false,
        }
    }

    fn heard() -> LastHeard {
        LastHeard::now()
    }

    /// Establishes the proven handshake `conn` with `peer`, speaking the latest version.
    fn establish(table: &PeerTable, conn: u64, peer: &Identity) -> Option<Arc<PeerLink>> {
        let version = gen_cluster_proto::handshake::SUPPORTED_VERSIONS.max;
        table.establish(conn, peer, version, queue(peer), heard(), |_| {})
    }

    fn queue(peer: &Identity) -> FrameQueue {
        FrameQueue::new(peer.name.clone(), 1 << 20, 1 << 20).0
    }

    /// A table of node `a` with `peer` established on connection 1.
    fn with_link(peer: &Identity) -> (PeerTable, Arc<PeerLink>) {
        let table = PeerTable::new(NodeName::new("a").unwrap());
        let (link, _) = table.connect_for_tests(peer);
        (table, link)
    }

    #[test]
    fn an_established_link_is_listed_and_found_by_id_and_name() {
        let b = identity("b", 1);
        let (table, link) = with_link(&b);
        assert!(Arc::ptr_eq(&table.link_to(b.name.id()).unwrap(), &link));
        assert!(table.is_connected(&b.name));
        assert_eq!(table.list()[0].name, b.name);
    }

    #[test]
    fn a_second_connection_from_the_same_life_is_refused_while_one_is_up() {
        let b = identity("b", 1);
        let (table, _) = with_link(&b);
        let conn = table.new_conn_id();
        let cancel = CancellationToken::new();
        let refused = table.arbitrate(
            conn,
            &b,
            Step::ResponseVerified,
            &cancel,
            Duration::ZERO,
            |_, _| {},
        );
        assert!(
            matches!(refused, Err(Refusal::Duplicate { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn a_later_life_replaces_the_link_and_hands_it_back() {
        let b1 = identity("b", 1);
        let (table, old) = with_link(&b1);
        let b2 = identity("b", 2);
        let conn = table.new_conn_id();
        let mut replaced = None;
        let cancel = CancellationToken::new();
        table
            .arbitrate(
                conn,
                &b2,
                Step::ResponseVerified,
                &cancel,
                Duration::ZERO,
                |link, _| replaced = Some(Arc::clone(link)),
            )
            .unwrap();
        assert!(
            Arc::ptr_eq(&replaced.unwrap(), &old),
            "the old link is handed over"
        );
        assert!(
            table.link_to(b2.name.id()).is_none(),
            "the new one is still handshaking"
        );
        assert!(
            !table.remove(&old, |_| {}),
            "the old link's loss was reported by its replacement, once"
        );
        let new = establish(&table, conn, &b2).unwrap();
        assert_eq!(new.incarnation, Incarnation(2));
    }

    #[test]
    fn removing_a_replaced_link_leaves_its_successor_in_place() {
        let b1 = identity("b", 1);
        let (table, old) = with_link(&b1);
        let b2 = identity("b", 2);
        let conn = table.new_conn_id();
        let cancel = CancellationToken::new();
        table
            .arbitrate(
                conn,
                &b2,
                Step::ResponseVerified,
                &cancel,
                Duration::ZERO,
                |_, _| {},
            )
            .unwrap();
        establish(&table, conn, &b2).unwrap();
        table.remove(&old, |_| {});
        assert_eq!(
            table.link_to(b2.name.id()).unwrap().incarnation,
            Incarnation(2)
        );
    }

    #[test]
    fn a_handshake_that_lost_is_not_established_and_an_abandoned_one_is_forgotten() {
        let table = PeerTable::new(NodeName::new("a").unwrap());
        let b = identity("b", 1);
        let (first, second) = (table.new_conn_id(), table.new_conn_id());
        let first_cancel = CancellationToken::new();
        table
            .arbitrate(
                first,
                &b,
                Step::ResponseVerified,
                &first_cancel,
                Duration::ZERO,
                |_, _| {},
            )
            .unwrap();
        // A later life arrives on another connection: the first is cancelled and cannot finish.
        let b2 = identity("b", 2);
        let second_cancel = CancellationToken::new();
        table
            .arbitrate(
                second,
                &b2,
                Step::ResponseVerified,
                &second_cancel,
                Duration::ZERO,
                |_, _| {},
            )
            .unwrap();
        assert!(first_cancel.is_cancelled());
        assert!(establish(&table, first, &b).is_none());
        table.abandon(second, b2.name.id());
        assert!(establish(&table, second, &b2).is_none());
    }

    #[test]
    fn a_links_loss_is_reported_before_a_new_connection_to_the_peer_is_announced() {
        let b = identity("b", 1);
        let (table, old) = with_link(&b);
        let table = Arc::new(table);
        let told = Arc::new(Mutex::new(Vec::new()));
        let (inside, reporting) = std::sync::mpsc::channel();
        let redial = {
            let (table, told, b) = (Arc::clone(&table), Arc::clone(&told), b.clone());
            std::thread::spawn(move || {
                // The peer redials the moment the old link's loss is being reported.
                reporting.recv().unwrap();
                let conn = table.new_conn_id();
                let cancel = CancellationToken::new();
                table
                    .arbitrate(
                        conn,
                        &b,
                        Step::ResponseVerified,
                        &cancel,
                        Duration::ZERO,
                        |_, _| {},
                    )
                    .unwrap();
                table.establish(
                    conn,
                    &b,
                    gen_cluster_proto::handshake::SUPPORTED_VERSIONS.max,
                    queue(&b),
                    heard(),
                    |_| lock(&told).push("up"),
                );
            })
        };
        table.remove(&old, |_| {
            inside.send(()).unwrap();
            // A window in which an unguarded table would let the new link be announced first.
            std::thread::sleep(std::time::Duration::from_millis(50));
            lock(&told).push("down");
        });
        redial.join().unwrap();
        assert_eq!(*lock(&told), vec!["down", "up"]);
    }

    #[test]
    fn a_crossing_dial_keeps_the_smaller_names_connection_on_both_nodes() {
        let (a, b) = (identity("a", 1), identity("b", 1));
        let at_a = PeerTable::new(a.name.clone());
        let at_b = PeerTable::new(b.name.clone());
        // Each node has accepted the other's dial (proven, waiting for its Ready)...
        let (a_accepts, b_accepts) = (CancellationToken::new(), CancellationToken::new());
        let (in_a, in_b) = (at_a.new_conn_id(), at_b.new_conn_id());
        at_a.arbitrate(
            in_a,
            &b,
            Step::ResponseVerified,
            &a_accepts,
            Duration::ZERO,
            |_, _| {},
        )
        .unwrap();
        at_b.arbitrate(
            in_b,
            &a,
            Step::ResponseVerified,
            &b_accepts,
            Duration::ZERO,
            |_, _| {},
        )
        .unwrap();
        // ...when its own dial's Confirm verifies.
        let cancel = CancellationToken::new();
        let a_dial = at_a.arbitrate(
            at_a.new_conn_id(),
            &b,
            Step::ConfirmVerified,
            &cancel,
            Duration::ZERO,
            |_, _| {},
        );
        let b_dial = at_b.arbitrate(
            at_b.new_conn_id(),
            &a,
            Step::ConfirmVerified,
            &cancel,
            Duration::ZERO,
            |_, _| {},
        );
        assert!(a_dial.is_ok(), "a's dial (the smaller name's) wins on a");
        assert!(a_accepts.is_cancelled(), "and a drops b's dial");
        assert!(
            matches!(b_dial, Err(Refusal::Duplicate { .. })),
            "b drops its own dial"
        );
        assert!(!b_accepts.is_cancelled(), "and keeps waiting for a's Ready");
    }

    #[test]
    fn no_link_is_established_once_the_table_is_closed() {
        let b = identity("b", 1);
        let table = PeerTable::new(NodeName::new("a").unwrap());
        let conn = table.new_conn_id();
        let cancel = CancellationToken::new();
        table
            .arbitrate(
                conn,
                &b,
                Step::ResponseVerified,
                &cancel,
                Duration::ZERO,
                |_, _| {},
            )
            .unwrap();
        assert!(table.close().is_empty());
        assert!(establish(&table, conn, &b).is_none());
    }
}

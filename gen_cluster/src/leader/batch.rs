//! The `majority` machine's messages waiting to leave an instance, per peer. The instance sends
//! what several of its messages produced as one message per peer: once its mailbox is drained
//! ([`Server::handle_drained`](crate::Server::handle_drained)), after [`MAX_HANDLED`] messages
//! handled without a drain, before it ends, or as soon as a peer's batch would pass
//! [`BATCH_BYTES`]. A leader also keeps at most one batch unanswered per member (Raft's
//! pipelining with a window of one): what it produces meanwhile leaves as one batch once the
//! member answers, or once the unanswered batch is a heartbeat interval old (a member that
//! dropped it — it did not count this node yet — is not waited for longer). So under load a
//! leader's broadcasts leave in batches the size of what a round trip brings, and a member
//! answers each batch once; idle, every message leaves when it is produced. A leader holds the
//! batches of the members that do not vote (workers) until a quorum's answer moves its progress
//! (a broadcast committed, a round confirmed), and sends them then, before the replies that
//! progress releases: a worker's copy counts toward no quorum, so its sends stay off the path
//! from a write to its quorum, and a worker whose caller made the write gets the write and the
//! reply in one read. A worker's batch is held a heartbeat interval at most (a quorum of one
//! moves its progress only with a broadcast, not with a heartbeat). An answer still
//! waiting is replaced by a later one that says all it said
//! ([`MajorityMessage::supersedes`]). A peer's link lost drops what waits for it (the machine
//! starts again with the peer when a link is back).
//!
//! Cost: per message queued, one pass over it that counts its encoded size (no output).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gen_cluster_proto::NodeName;
use gen_cluster_proto::majority::MajorityMessage;
use serde::Serialize;

/// A peer's batch leaves before it passes this many encoded bytes (a larger message leaves
/// alone): under a link's fragment, with room for the frame's header, so a batch is never cut
/// into fragments that smaller frames to other destinations may pass.
pub(crate) const BATCH_BYTES: usize = gen_cluster_proto::wire::MAX_FRAGMENT - 1024;

/// After this many messages handled without the mailbox drained, every batch leaves: a member
/// busy without a pause still answers its leader.
pub(crate) const MAX_HANDLED: usize = 64;

/// The batches waiting, by peer.
pub(crate) struct Outgoing<S, B> {
    batches: BTreeMap<NodeName, Batch<S, B>>,
    /// When the batch each peer has not answered yet was sent.
    unanswered: BTreeMap<NodeName, Instant>,
    handled: usize,
}

struct Batch<S, B> {
    messages: Vec<MajorityMessage<S, B>>,
    bytes: usize,
    /// When its first message was queued.
    since: Instant,
}

impl<S: Serialize, B: Serialize> Outgoing<S, B> {
    pub(crate) fn new() -> Self {
        Self {
            batches: BTreeMap::new(),
            unanswered: BTreeMap::new(),
            handled: 0,
        }
    }

    /// Queues `message` for `to`; returns the batch that must leave first (noted as sent at
    /// `now`), if adding `message` would have passed [`BATCH_BYTES`].
    pub(crate) fn push(
        &mut self,
        to: NodeName,
        message: MajorityMessage<S, B>,
        now: Instant,
    ) -> Option<Vec<MajorityMessage<S, B>>> {
        let batch = self.batches.entry(to.clone()).or_insert_with(|| Batch {
            messages: Vec::new(),
            bytes: 0,
            since: now,
        });
        if let Some(last) = batch.messages.last_mut()
            && message.supersedes(last)
        {
            *last = message;
            return None;
        }
        let size = postcard::experimental::serialized_size(&message).unwrap_or(BATCH_BYTES);
        let full = (!batch.messages.is_empty() && batch.bytes + size > BATCH_BYTES)
            .then(|| std::mem::take(&mut batch.messages));
        if full.is_some() {
            batch.bytes = 0;
            batch.since = now;
            self.unanswered.insert(to, now);
        }
        batch.messages.push(message);
        batch.bytes += size;
        full
    }

    /// Counts one message handled; whether every batch must now leave ([`MAX_HANDLED`]).
    pub(crate) fn handled(&mut self) -> bool {
        self.handled += 1;
        self.handled >= MAX_HANDLED
    }

    /// A message came from `from`: the batch it had not answered is answered.
    pub(crate) fn answered(&mut self, from: &NodeName) {
        self.unanswered.remove(from);
    }

    /// The link to `peer` is lost: what waits for it is dropped.
    pub(crate) fn forget(&mut self, peer: &NodeName) {
        self.batches.remove(peer);
        self.unanswered.remove(peer);
    }

    /// The batches to send now, by peer, noted as sent at `now`: every one, or with
    /// `window: Some(heartbeat)` (this node leads) those of peers that answered the batch
    /// before or let it grow a heartbeat old, but not those of the peers `held` names until
    /// they are a heartbeat old themselves.
    pub(crate) fn take_ready(
        &mut self,
        now: Instant,
        window: Option<Duration>,
        held: impl Fn(&NodeName) -> bool,
    ) -> Vec<(NodeName, Vec<MajorityMessage<S, B>>)> {
        self.handled = 0;
        let unanswered = &mut self.unanswered;
        let ready: Vec<(NodeName, Vec<MajorityMessage<S, B>>)> = self
            .batches
            .extract_if(.., |peer, batch| match (window, unanswered.get(peer)) {
                (Some(window), _) if held(peer) && now < batch.since + window => false,
                (Some(window), Some(sent)) => now >= *sent + window,
                _ => true,
            })
            .map(|(peer, batch)| (peer, batch.messages))
            .collect();
        for (peer, _) in &ready {
            unanswered.insert(peer.clone(), now);
        }
        ready
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    type Message = MajorityMessage<(), Vec<u8>>;

    fn peer() -> NodeName {
        NodeName::new("b").unwrap()
    }

    fn append(seq: u64, bytes: usize) -> Message {
        MajorityMessage::Append {
            term: 1,
            seq,
            round: seq,
            broadcast: vec![0; bytes],
        }
    }

    fn ack(term: u64, held: u64) -> Message {
        MajorityMessage::Ack {
            term,
            held: Some(held),
            round: held,
        }
    }

    #[test]
    fn a_later_answer_of_the_same_term_replaces_the_one_waiting() {
        let mut outgoing = Outgoing::new();
        for held in 1..=10 {
            assert!(
                outgoing
                    .push(peer(), ack(3, held), Instant::now())
                    .is_none()
            );
        }
        outgoing.push(peer(), ack(4, 1), Instant::now());
        let all = outgoing.take_ready(Instant::now(), None, |_| false);
        assert_eq!(all, vec![(peer(), vec![ack(3, 10), ack(4, 1)])]);
        assert!(
            outgoing
                .take_ready(Instant::now(), None, |_| false)
                .is_empty(),
            "taken once"
        );
    }

    #[test]
    fn broadcasts_are_kept_in_order_and_a_batch_leaves_before_it_passes_its_bound() {
        let mut outgoing = Outgoing::new();
        let size = BATCH_BYTES / 4;
        let mut left = Vec::new();
        for seq in 1..=10 {
            if let Some(batch) = outgoing.push(peer(), append(seq, size), Instant::now()) {
                let bytes: usize = batch
                    .iter()
                    .map(|m| postcard::experimental::serialized_size(m).unwrap())
                    .sum();
                assert!(bytes <= BATCH_BYTES, "{bytes}");
                left.extend(batch);
            }
        }
        left.extend(
            outgoing
                .take_ready(Instant::now(), None, |_| false)
                .into_iter()
                .flat_map(|(_, batch)| batch),
        );
        assert_eq!(
            left,
            (1..=10).map(|seq| append(seq, size)).collect::<Vec<_>>()
        );
        // A message above the bound alone still leaves, alone.
        outgoing.push(peer(), append(11, 1), Instant::now());
        let batch = outgoing
            .push(peer(), append(12, BATCH_BYTES * 2), Instant::now())
            .unwrap();
        assert_eq!(batch, vec![append(11, 1)]);
    }

    #[test]
    fn a_leader_keeps_one_batch_unanswered_per_member_for_at_most_a_heartbeat() {
        let heartbeat = Duration::from_millis(100);
        let window = Some(heartbeat);
        let start = Instant::now();
        let mut outgoing = Outgoing::new();
        outgoing.push(peer(), append(1, 1), Instant::now());
        assert_eq!(
            outgoing.take_ready(start, window, |_| false).len(),
            1,
            "none unanswered"
        );
        outgoing.push(peer(), append(2, 1), Instant::now());
        outgoing.push(peer(), append(3, 1), Instant::now());
        assert!(
            outgoing.take_ready(start, window, |_| false).is_empty(),
            "1 is unanswered"
        );
        assert_eq!(
            outgoing.take_ready(start, None, |_| false),
            vec![(peer(), vec![append(2, 1), append(3, 1)])],
            "not leading: no window"
        );
        outgoing.push(peer(), append(4, 1), Instant::now());
        outgoing.answered(&peer());
        assert_eq!(
            outgoing.take_ready(start, window, |_| false).len(),
            1,
            "answered"
        );
        outgoing.push(peer(), append(5, 1), Instant::now());
        assert!(
            outgoing
                .take_ready(start + heartbeat / 2, window, |_| false)
                .is_empty()
        );
        assert_eq!(
            outgoing
                .take_ready(start + heartbeat, window, |_| false)
                .len(),
            1,
            "unanswered for a heartbeat: not waited for longer"
        );
        outgoing.push(peer(), append(6, 1), Instant::now());
        outgoing.forget(&peer());
        assert!(
            outgoing.take_ready(start, window, |_| false).is_empty(),
            "dropped with the link"
        );
        outgoing.push(peer(), append(7, 1), Instant::now());
        assert_eq!(
            outgoing.take_ready(start, window, |_| false).len(),
            1,
            "a new link waits for nothing"
        );
        outgoing.answered(&peer());
        outgoing.push(peer(), append(8, BATCH_BYTES), start);
        let full = outgoing.push(peer(), append(9, 1), start);
        assert!(
            full.is_some(),
            "a batch that would pass its bound leaves at once"
        );
        assert!(
            outgoing.take_ready(start, window, |_| false).is_empty(),
            "and counts as the batch unanswered"
        );
    }

    #[test]
    fn a_held_peers_batch_waits_until_released_or_a_heartbeat_old() {
        let heartbeat = Duration::from_millis(100);
        let window = Some(heartbeat);
        let worker = NodeName::new("worker").unwrap();
        let is_worker = |peer: &NodeName| *peer == worker;
        let mut outgoing = Outgoing::new();
        let at = Instant::now();
        for seq in 1..=3 {
            outgoing.push(peer(), append(seq, 1), at);
            outgoing.push(worker.clone(), append(seq, 1), at);
        }
        let all = || (1..=3).map(|seq| append(seq, 1)).collect::<Vec<_>>();
        assert_eq!(
            outgoing.take_ready(at, window, is_worker),
            vec![(peer(), all())],
            "the voter's batch leaves, the worker's waits"
        );
        assert_eq!(
            outgoing.take_ready(at, window, |_| false),
            vec![(worker.clone(), all())],
            "released whole"
        );
        outgoing.answered(&worker);
        outgoing.push(worker.clone(), append(4, 1), at);
        assert!(
            outgoing
                .take_ready(at + heartbeat / 2, window, is_worker)
                .is_empty()
        );
        assert_eq!(
            outgoing.take_ready(at + heartbeat, window, is_worker),
            vec![(worker.clone(), vec![append(4, 1)])],
            "held a heartbeat at most"
        );
        outgoing.answered(&worker);
        outgoing.push(worker.clone(), append(5, 1), at);
        assert_eq!(
            outgoing.take_ready(at, None, is_worker).len(),
            1,
            "not leading: nothing held"
        );
    }

    #[test]
    fn every_batch_leaves_after_the_most_messages_handled_without_a_drain() {
        let mut outgoing: Outgoing<(), Vec<u8>> = Outgoing::new();
        let counted: Vec<bool> = (0..MAX_HANDLED).map(|_| outgoing.handled()).collect();
        assert_eq!(counted.iter().filter(|due| **due).count(), 1);
        assert!(counted[MAX_HANDLED - 1]);
        outgoing.take_ready(Instant::now(), None, |_| false);
        assert!(!outgoing.handled(), "the count starts again");
    }
}

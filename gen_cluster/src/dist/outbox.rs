//! What a link's writer sends next. Frames go in the order they were queued, except that a frame
//! too large to send whole goes as fragments (`gen_cluster_proto::wire::fragment`), and between
//! two of its fragments a small frame to *another* destination may pass it — and pass the frames
//! held behind it, unless one of them goes to the same destination or is a control frame: a
//! large message no longer holds up heartbeats and small calls to other processes, nor looks
//! like silence to the peer. Everything else waits behind it, in order: frames to the same
//! destination (so one process's messages to another keep their order) and control frames
//! (monitors, links, exits, replies keep their order with the messages around them, whose
//! destinations they do not name). Pings, their answers and requests for heartbeats keep no order
//! with the rest and pass everything (a failure detector starting behind a large message would
//! not hear the heartbeats it asked for).
//! One large frame is sent at a time.
//!
//! Sans-IO: the writer pushes what it takes from the queue and asks for the next fragment; the
//! outbox appends what may be written now to the writer's buffer. The writer stops taking from
//! the queue while [`HOLD_BYTES`] or more are held, so what waits beyond that keeps its room in
//! the link's bounded queue. Cost: one copy of each frame into the buffer, as before; a large
//! frame is copied a fragment at a time; a frame that finds frames held compares its lane with
//! theirs.

use std::collections::VecDeque;

use gen_cluster_proto::wire::{self, Dest, Header, LENGTH_PREFIX, MAX_FRAGMENT};
use rustc_hash::{FxHashMap, FxHasher};

/// Which frames a frame keeps its order with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// A message to one destination (by a hash of its pid or name).
    To(u64),
    /// Anything else: monitors, links, exits, replies, goodbyes.
    Control,
    /// A frame that keeps no order with any other but its like (pings, their answers, requests
    /// for heartbeats): it passes everything, so that a round trip measured behind a large
    /// message is the link's, not the message's, and heartbeats asked for come at once.
    Unordered,
}

impl Lane {
    /// The lane of a frame with `header`.
    pub(crate) fn of(header: &Header<'_>) -> Self {
        match header {
            Header::Send { to } | Header::Cast { to } | Header::Call { to, .. } => Lane::to(to),
            Header::Ping { .. } | Header::Pong { .. } | Header::Heartbeats { .. } => {
                Lane::Unordered
            }
            _ => Lane::Control,
        }
    }

    /// The lane of messages to `to`.
    pub(crate) fn to(to: &Dest<'_>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = FxHasher::default();
        match to {
            Dest::Pid(pid) => (0u8, pid).hash(&mut hasher),
            Dest::Name(name) => (1u8, name).hash(&mut hasher),
        }
        Lane::To(hasher.finish())
    }

    /// Whether a frame of this lane may go before one of lane `other` queued earlier: a
    /// message, before a message to another destination; an unordered frame, before anything.
    fn may_pass(self, other: Lane) -> bool {
        match (self, other) {
            (Lane::Unordered, _) => true,
            (Lane::To(a), Lane::To(b)) => a != b,
            _ => false,
        }
    }
}

/// How many bytes of frames held behind a large one make the writer stop taking more.
pub(crate) const HOLD_BYTES: usize = 256 * 1024;

/// The frames a writer has taken and not yet sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// The large frame being sent in fragments, and how much of its body has gone.
    stream: Option<(Vec<u8>, usize, Lane)>,
    /// Frames waiting behind it, in order.
    held: VecDeque<(Vec<u8>, Lane)>,
    /// Their size in bytes.
    held_bytes: usize,
    /// How many of them each lane has.
    held_lanes: FxHashMap<Lane, usize>,
}

impl Outbox {
    /// Takes a frame (length prefix included) of lane `lane`; appends to `out` what may be
    /// written now.
    pub(crate) fn push(&mut self, frame: Vec<u8>, lane: Lane, out: &mut Vec<u8>) {
        let Some((_, _, streaming)) = &self.stream else {
            return self.start(frame, lane, out);
        };
        let passes = !is_large(&frame)
            && lane.may_pass(*streaming)
            && (lane == Lane::Unordered
                || !self.held_lanes.contains_key(&lane)
                    && !self.held_lanes.contains_key(&Lane::Control));
        if passes {
            out.extend_from_slice(&frame);
        } else {
            self.held_bytes += frame.len();
            *self.held_lanes.entry(lane).or_default() += 1;
            self.held.push_back((frame, lane));
        }
    }

    /// Appends to `out` the next fragment of the large frame in flight, if any, and — once it
    /// is sent — the frames that waited behind it.
    pub(crate) fn next_fragment(&mut self, out: &mut Vec<u8>) {
        let Some((frame, sent, _)) = &mut self.stream else {
            return;
        };
        let body = &frame[LENGTH_PREFIX..];
        *sent = wire::fragment(body, *sent, out);
        if *sent < body.len() {
            return;
        }
        self.stream = None;
        while self.stream.is_none() {
            let Some((frame, lane)) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= frame.len();
            if let Some(count) = self.held_lanes.get_mut(&lane) {
                *count -= 1;
                if *count == 0 {
                    self.held_lanes.remove(&lane);
                }
            }
            self.start(frame, lane, out);
        }
    }

    /// Whether a large frame is being sent.
    pub(crate) fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether [`HOLD_BYTES`] or more wait behind the large frame in flight.
    pub(crate) fn is_full(&self) -> bool {
        self.held_bytes >= HOLD_BYTES
    }

    /// Whether everything taken has been sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.stream.is_none() && self.held.is_empty()
    }

    /// Sends a small frame now, or starts sending a large one in fragments.
    fn start(&mut self, frame: Vec<u8>, lane: Lane, out: &mut Vec<u8>) {
        if is_large(&frame) {
            self.stream = Some((frame, 0, lane));
        } else {
            out.extend_from_slice(&frame);
        }
    }
}

fn is_large(frame: &[u8]) -> bool {
    frame.len() - LENGTH_PREFIX > MAX_FRAGMENT
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use gen_cluster_proto::{Incarnation, NodeId, Pid};

    fn pid(local: u64) -> Pid {
        Pid {
            node: NodeId(1),
            incarnation: Incarnation(1),
            local,
        }
    }

    fn cast(to: u64, size: usize) -> (Vec<u8>, Lane) {
        let header = Header::Cast {
            to: Dest::Pid(pid(to)),
        };
        let frame = wire::encode(&header, Some(&vec![7u8; size]), usize::MAX >> 1).unwrap();
        (frame, Lane::of(&header))
    }

    fn control() -> (Vec<u8>, Lane) {
        let header = Header::Heartbeat;
        (wire::encode_header(&header, 1024).unwrap(), Lane::Control)
    }

    /// The frames in `wire`, reassembled: (destination local id or 0 for control, body size).
    fn delivered(wire: &[u8]) -> Vec<(u64, usize)> {
        let (mut rest, mut pieces, mut out) = (wire, wire::Reassembly::default(), Vec::new());
        let handle = |body: &[u8], out: &mut Vec<(u64, usize)>| {
            let (header, payload) = wire::decode(body).unwrap();
            match header {
                Header::Cast { to: Dest::Pid(p) } => {
                    let message: Vec<u8> = postcard::from_bytes(payload).unwrap();
                    out.push((p.local, message.len()))
                }
                _ => out.push((0, 0)),
            }
        };
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(
                len <= wire::MAX_WIRE_FRAME,
                "no frame on the wire is larger"
            );
            let body = &rest[4..4 + len];
            match wire::decode(body).unwrap() {
                (Header::Fragment { left }, piece) => {
                    if let Some(body) = pieces.add(piece, left, usize::MAX).unwrap() {
                        handle(&body, &mut out);
                    }
                }
                _ => handle(body, &mut out),
            }
            rest = &rest[4 + len..];
        }
        out
    }

    /// Runs the outbox as the writer does: every frame pushed, one fragment a turn.
    fn send_all(frames: Vec<(Vec<u8>, Lane)>) -> Vec<u8> {
        let (mut outbox, mut wire) = (Outbox::default(), Vec::new());
        let mut frames = frames.into_iter();
        loop {
            match frames.next() {
                Some((frame, lane)) => outbox.push(frame, lane, &mut wire),
                None if outbox.is_empty() => return wire,
                None => {}
            }
            outbox.next_fragment(&mut wire);
        }
    }

    #[test]
    fn small_frames_go_in_order_at_once() {
        let wire = send_all(vec![cast(1, 10), control(), cast(2, 10)]);
        assert_eq!(delivered(&wire), [(1, 10), (0, 0), (2, 10)]);
    }

    #[test]
    fn other_destinations_pass_a_large_message_and_its_own_do_not() {
        let big = 3 * MAX_FRAGMENT;
        let wire = send_all(vec![cast(1, big), cast(2, 5), cast(1, 6), cast(3, 7)]);
        // 2 passes; 1's second message waits for its first; 3 passes both.
        let got = delivered(&wire);
        let first_of = |to| got.iter().position(|&(dest, _)| dest == to).unwrap();
        assert!(first_of(2) < first_of(1), "{got:?}");
        assert!(first_of(3) < first_of(1), "{got:?}");
        assert_eq!(
            got.iter()
                .filter(|(d, _)| *d == 1)
                .map(|&(_, n)| n > 100)
                .collect::<Vec<_>>(),
            [true, false],
            "one destination's messages keep their order: {got:?}"
        );
    }

    #[test]
    fn nothing_passes_a_held_control_frame() {
        let big = 3 * MAX_FRAGMENT;
        let wire = send_all(vec![cast(1, big), control(), cast(2, 5)]);
        assert_eq!(delivered(&wire), [(1, big), (0, 0), (2, 5)]);
    }

    #[test]
    fn a_pong_passes_a_large_message_and_a_held_control_frame() {
        let big = 3 * MAX_FRAGMENT;
        let pong = wire::encode_header(&Header::Pong { sent: 7 }, 1024).unwrap();
        let pong = (pong, Lane::of(&Header::Pong { sent: 7 }));
        let wire = send_all(vec![cast(1, big), control(), pong]);
        // The pong (a control-like frame, shown as (0, 0)) arrives first.
        assert_eq!(delivered(&wire), [(0, 0), (1, big), (0, 0)]);
    }

    #[test]
    fn held_bytes_are_counted_until_the_large_frame_is_sent() {
        let (mut outbox, mut wire) = (Outbox::default(), Vec::new());
        let (big, lane) = cast(1, 2 * MAX_FRAGMENT);
        outbox.push(big, lane, &mut wire);
        while !outbox.is_full() {
            let (frame, lane) = cast(1, 1024);
            outbox.push(frame, lane, &mut wire);
        }
        while outbox.is_streaming() {
            outbox.next_fragment(&mut wire);
        }
        assert!(outbox.is_empty() && !outbox.is_full());
    }

    #[test]
    fn control_frames_wait_behind_a_large_message() {
        let wire = send_all(vec![cast(1, 2 * MAX_FRAGMENT), control()]);
        assert_eq!(delivered(&wire), [(1, 2 * MAX_FRAGMENT), (0, 0)]);
    }

    #[test]
    fn two_large_messages_go_one_after_the_other() {
        let big = 2 * MAX_FRAGMENT;
        let wire = send_all(vec![cast(1, big), cast(2, big)]);
        assert_eq!(delivered(&wire), [(1, big), (2, big)]);
    }
}

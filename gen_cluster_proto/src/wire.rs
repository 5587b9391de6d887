//! Frames of an established connection. A frame on the wire is a 4-byte big-endian length, then
//! a postcard-encoded [`Header`], then — for the kinds that carry one — the message payload up to
//! the end of the frame. The payload is the user's message, postcard-encoded by the runtime
//! straight into the frame buffer, and handed to the destination still encoded: the server that
//! owns the message type decodes it, so this layer never needs to know user types.
//!
//! A frame whose body is larger than [`MAX_FRAGMENT`] goes on the wire as a run of
//! [`Header::Fragment`] frames, each carrying the next piece of its body, so that other frames —
//! heartbeats, messages to other processes — can pass between them, and no frame on the wire is
//! larger than [`MAX_WIRE_FRAME`]. One message is fragmented at a time; the receiver reassembles
//! it ([`Reassembly`], up to the message size cap) and handles it as if it had arrived whole.
//!
//! Decoding is for untrusted bytes: [`decode`] never panics, borrows instead of allocating, and
//! rejects trailing bytes after kinds that carry no payload. The size cap is checked before any
//! decoding, by the framing layer (the runtime's length-delimited reader) on receive and by
//! [`encode`] on send.

use serde::{Deserialize, Serialize};

use crate::{ExitReason, Pid};

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// The default cap on one message's frame size (prefix excluded): 8 MiB. A peer announcing a
/// larger frame, or fragments adding up to more, is disconnected.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// The largest frame body sent whole; a larger one is sent as fragments of at most this many
/// bytes of it. 64 KiB: a fragment takes 26 ms on a 20 Mbit/s link, so heartbeats and small
/// messages wait at most that long behind a large message.
pub const MAX_FRAGMENT: usize = 64 * 1024;

/// The largest frame body on the wire: a whole frame of [`MAX_FRAGMENT`] bytes, or a fragment's
/// header and its piece.
pub const MAX_WIRE_FRAME: usize = MAX_FRAGMENT + 16;

/// Where a message goes on the receiving node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Dest<'a> {
    /// A process by its pid.
    Pid(Pid),
    /// A process by its locally registered name on the receiving node.
    Name(&'a str),
}

/// Why a remote call got no reply from the remote side.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallRefusal {
    /// No process with that pid (or that name) on the receiving node.
    NoProc,
    /// The process ended, or dropped the caller's reply handle, without replying.
    NoReply,
    /// The process could not decode the request as its call type; the text says why.
    BadRequest(String),
}

/// What a frame says; the payload, when there is one, follows it in the same frame.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Header<'a> {
    /// Sent when the link has been idle, so the peer's failure detector hears from us.
    Heartbeat,
    /// The sender is closing the connection on purpose (a leave, not a crash).
    Goodbye {
        /// Why it leaves.
        reason: ExitReason,
    },
    /// A plain message for the destination's `handle_info`. Payload follows.
    Send {
        /// The receiving process.
        #[serde(borrow)]
        to: Dest<'a>,
    },
    /// A one-way request for the destination's `handle_cast`. Payload follows.
    Cast {
        /// The receiving process.
        #[serde(borrow)]
        to: Dest<'a>,
    },
    /// A request for the destination's `handle_call`. Payload follows.
    Call {
        /// The receiving process.
        #[serde(borrow)]
        to: Dest<'a>,
        /// Chosen by the caller's node; the reply carries it back.
        reference: u64,
    },
    /// The reply to a call. Payload (the reply value) follows.
    Reply {
        /// The call's reference.
        reference: u64,
    },
    /// A call that will get no reply.
    ReplyRefused {
        /// The call's reference.
        reference: u64,
        /// Why.
        refusal: CallRefusal,
    },
    /// `watcher` (on the sender) monitors `target` (on the receiver).
    Monitor {
        /// Chosen by the watcher's node; the DOWN carries it back.
        reference: u64,
        /// The watching process.
        watcher: Pid,
        /// The watched process.
        target: Pid,
    },
    /// Cancels a monitor.
    Demonitor {
        /// The monitor's reference.
        reference: u64,
        /// The watched process.
        target: Pid,
    },
    /// A monitored process ended (or did not exist).
    Down {
        /// The monitor's reference.
        reference: u64,
        /// The process that ended.
        target: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// `from` (on the sender) links to `to` (on the receiver).
    Link {
        /// The process that asked for the link.
        from: Pid,
        /// The other end.
        to: Pid,
    },
    /// Removes a link.
    Unlink {
        /// The process that removes the link.
        from: Pid,
        /// The other end.
        to: Pid,
    },
    /// `from` ended and was linked to `to`.
    Exit {
        /// The process that ended.
        from: Pid,
        /// The linked process on the receiver.
        to: Pid,
        /// Why `from` ended.
        reason: ExitReason,
    },
    /// The next piece of a frame body too large to send whole. Payload (the piece) follows.
    Fragment {
        /// The bytes of the body still to come after this piece: 0 on the last piece. The first
        /// piece's announces the body's size, which the receiver checks against its cap at once
        /// and every later piece against.
        left: u32,
    },
    /// Asks the receiver to answer `Pong` with `sent`, to measure the round trip.
    Ping {
        /// The sender's clock when it sent this, opaque to the receiver.
        sent: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s `sent`.
        sent: u64,
    },
    /// The sender watches (`on`) or stops watching this link: the receiver sends a heartbeat
    /// whenever it has sent nothing for its heartbeat interval, or stops.
    Heartbeats {
        /// Whether heartbeats are asked for.
        on: bool,
    },
}

impl Header<'_> {
    /// Whether a payload follows this header in its frame.
    pub fn carries_payload(&self) -> bool {
        matches!(
            self,
            Self::Send { .. }
                | Self::Cast { .. }
                | Self::Call { .. }
                | Self::Reply { .. }
                | Self::Fragment { .. }
        )
    }
}

/// A frame that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes are not a valid frame (a peer bug or an attack): close the connection.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A header kind without payload was followed by extra bytes.
    #[error("malformed frame: {0} trailing bytes after a header that carries no payload")]
    TrailingBytes(usize),
    /// The frame would exceed the frame size cap; send a smaller message or raise the cap on
    /// every node.
    #[error("frame of {size} bytes exceeds the {limit}-byte frame limit")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The payload could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Decodes the body of one frame (length prefix already removed): its header, and its payload
/// (empty for kinds that carry none).
pub fn decode(frame: &[u8]) -> Result<(Header<'_>, &[u8]), WireError> {
    let (header, rest) = postcard::take_from_bytes::<Header<'_>>(frame)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if !header.carries_payload() && !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok((header, rest))
}

/// Encodes one frame, length prefix included, with `payload` postcard-encoded after the header.
/// Fails if the frame would exceed `limit` bytes.
pub fn encode<P: Serialize + ?Sized>(
    header: &Header<'_>,
    payload: Option<&P>,
    limit: usize,
) -> Result<Vec<u8>, WireError> {
    debug_assert_eq!(header.carries_payload(), payload.is_some());
    // Room for a header and a small payload, so that small frames never reallocate.
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&[0; LENGTH_PREFIX]);
    let mut buf = postcard::to_extend(header, buf).map_err(|e| WireError::Encode(e.to_string()))?;
    if let Some(payload) = payload {
        buf = postcard::to_extend(payload, buf).map_err(|e| WireError::Encode(e.to_string()))?;
    }
    seal(buf, limit)
}

/// Encodes a frame that carries no payload.
pub fn encode_header(header: &Header<'_>, limit: usize) -> Result<Vec<u8>, WireError> {
    encode::<()>(header, None, limit)
}

/// Appends to `out` the frames that carry `body` (a frame body larger than [`MAX_FRAGMENT`])
/// from byte `from` on: one fragment of at most [`MAX_FRAGMENT`] bytes. Returns where the next
/// fragment starts; the body is sent when that is its length.
pub fn fragment(body: &[u8], from: usize, out: &mut Vec<u8>) -> usize {
    let to = (from + MAX_FRAGMENT).min(body.len());
    let mut header = [0u8; 8];
    // A body is at most a frame, whose size fits the u32 length prefix.
    let left = u32::try_from(body.len() - to).unwrap_or(u32::MAX);
    let header = postcard::to_slice(&Header::Fragment { left }, &mut header)
        .expect("a fragment header fits in 8 bytes");
    // At most MAX_WIRE_FRAME: it fits the prefix.
    let size = (header.len() + to - from) as u32;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&body[from..to]);
    to
}

/// The most a [`Reassembly`] allocates before the pieces arrive.
const MAX_PREALLOCATION: usize = 1024 * 1024;

/// A frame body being put back together from its fragments, for one connection.
#[derive(Debug, Default)]
pub struct Reassembly {
    body: Vec<u8>,
    /// The size the first fragment announced; 0 between bodies.
    size: usize,
}

impl Reassembly {
    /// Adds the fragment `piece`, after which `left` bytes are still to come; returns the body
    /// once whole. The first fragment announces the body's size: larger than `limit`, or a later
    /// fragment that does not match what was announced, is a malformed stream.
    pub fn add(
        &mut self,
        piece: &[u8],
        left: u32,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, WireError> {
        let left = left as usize;
        if self.size == 0 {
            let size = piece.len().saturating_add(left);
            if size > limit {
                return Err(WireError::TooLarge { size, limit });
            }
            // Grows as the pieces arrive: one small fragment does not commit the whole size.
            self.body = Vec::with_capacity(size.min(MAX_PREALLOCATION));
            self.size = size;
        }
        if self.body.len() + piece.len() + left != self.size {
            return Err(WireError::Malformed(
                "a fragment disagrees with the size its body announced".into(),
            ));
        }
        self.body.extend_from_slice(piece);
        if left > 0 {
            return Ok(None);
        }
        self.size = 0;
        Ok(Some(std::mem::take(&mut self.body)))
    }
}

/// Writes the length prefix of a buffer that starts with [`LENGTH_PREFIX`] placeholder bytes,
/// after checking the body against `limit`.
pub fn seal(mut buf: Vec<u8>, limit: usize) -> Result<Vec<u8>, WireError> {
    let size = buf.len() - LENGTH_PREFIX;
    let prefix = u32::try_from(size)
        .ok()
        .filter(|_| size <= limit)
        .ok_or(WireError::TooLarge { size, limit })?;
    buf[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::{Incarnation, NodeId};
    use proptest::prelude::*;

    fn pid(node: u64, local: u64) -> Pid {
        Pid {
            node: NodeId(node),
            incarnation: Incarnation(7),
            local,
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix must cover the body");
        &frame[4..]
    }

    #[test]
    fn a_large_body_goes_as_fragments_that_reassemble_to_it() {
        let body: Vec<u8> = (0..(2 * MAX_FRAGMENT + 7)).map(|i| i as u8).collect();
        let (mut wire, mut from) = (Vec::new(), 0);
        while from < body.len() {
            from = fragment(&body, from, &mut wire);
        }
        let mut rest = &wire[..];
        let mut reassembly = Reassembly::default();
        let mut announced = Vec::new();
        let mut whole = None;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len <= MAX_WIRE_FRAME);
            let (header, piece) = decode(&rest[4..4 + len]).unwrap();
            let Header::Fragment { left } = header else {
                panic!("a fragment, got {header:?}")
            };
            announced.push(left as usize);
            assert!(whole.is_none(), "nothing follows the last piece");
            whole = reassembly.add(piece, left, DEFAULT_MAX_FRAME).unwrap();
            rest = &rest[4 + len..];
        }
        assert_eq!(whole, Some(body));
        assert_eq!(announced, [MAX_FRAGMENT + 7, 7, 0]);
    }

    #[test]
    fn fragments_that_disagree_with_their_announced_size_or_the_cap_are_refused() {
        let piece = [0u8; 10];
        let mut reassembly = Reassembly::default();
        assert_eq!(
            reassembly.add(&piece, 100, 50),
            Err(WireError::TooLarge {
                size: 110,
                limit: 50
            })
        );
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.add(&piece, 20, 1000), Ok(None));
        assert!(
            matches!(
                reassembly.add(&piece, 20, 1000),
                Err(WireError::Malformed(_))
            ),
            "a second piece that does not shrink what is left"
        );
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.add(&piece, 10, 1000), Ok(None));
        assert_eq!(reassembly.add(&piece, 0, 1000), Ok(Some(vec![0; 20])));
        assert_eq!(
            reassembly.add(&piece, 0, 1000),
            Ok(Some(vec![0; 10])),
            "the next body starts afresh"
        );
    }

    #[test]
    fn a_call_round_trips_with_its_payload() {
        let header = Header::Call {
            to: Dest::Name("echo"),
            reference: 42,
        };
        let frame = encode(&header, Some(&("hello", 5u32)), DEFAULT_MAX_FRAME).unwrap();
        let (decoded, payload) = decode(body(&frame)).unwrap();
        assert_eq!(decoded, header);
        let value: (String, u32) = postcard::from_bytes(payload).unwrap();
        assert_eq!(value, ("hello".to_string(), 5));
    }

    #[test]
    fn trailing_bytes_after_a_payloadless_header_are_refused() {
        let mut frame = encode_header(&Header::Heartbeat, DEFAULT_MAX_FRAME).unwrap();
        frame.push(0);
        assert_eq!(decode(&frame[4..]), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn an_oversized_frame_is_refused_at_encode() {
        let big = vec![0u8; 100];
        let err = encode(
            &Header::Send {
                to: Dest::Pid(pid(1, 1)),
            },
            Some(&big),
            50,
        )
        .unwrap_err();
        assert!(matches!(err, WireError::TooLarge { limit: 50, .. }));
    }

    #[test]
    fn an_empty_frame_is_malformed() {
        assert!(matches!(decode(&[]), Err(WireError::Malformed(_))));
    }

    fn arb_reason() -> impl Strategy<Value = ExitReason> {
        prop_oneof![
            Just(ExitReason::Normal),
            Just(ExitReason::Shutdown),
            Just(ExitReason::Killed),
            Just(ExitReason::NoProc),
            Just(ExitReason::NoConnection),
            ".{0,40}".prop_map(ExitReason::Error),
        ]
    }

    fn arb_pid() -> impl Strategy<Value = Pid> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(n, i, l)| Pid {
            node: NodeId(n),
            incarnation: Incarnation(i),
            local: l,
        })
    }

    proptest! {
        #[test]
        fn every_header_round_trips(
            kind in 0u8..15, a in arb_pid(), b in arb_pid(), r in any::<u64>(),
            reason in arb_reason(), name in "[a-z]{0,20}", payload in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let to = if r % 2 == 0 { Dest::Pid(a) } else { Dest::Name(&name) };
            let header = match kind {
                0 => Header::Heartbeat,
                1 => Header::Goodbye { reason },
                2 => Header::Send { to },
                3 => Header::Cast { to },
                4 => Header::Call { to, reference: r },
                5 => Header::Reply { reference: r },
                6 => Header::ReplyRefused { reference: r, refusal: CallRefusal::BadRequest(name.clone()) },
                7 => Header::Monitor { reference: r, watcher: a, target: b },
                8 => Header::Demonitor { reference: r, target: b },
                9 => Header::Down { reference: r, target: b, reason },
                10 => Header::Link { from: a, to: b },
                11 => Header::Ping { sent: r },
                12 => Header::Pong { sent: r },
                13 => Header::Heartbeats { on: r % 2 == 0 },
                _ => Header::Exit { from: a, to: b, reason },
            };
            let carried = header.carries_payload().then_some(&payload);
            let frame = encode(&header, carried, DEFAULT_MAX_FRAME).unwrap();
            let (decoded, rest) = decode(body(&frame)).unwrap();
            prop_assert_eq!(&decoded, &header);
            if let Some(p) = carried {
                prop_assert_eq!(postcard::from_bytes::<Vec<u8>>(rest).unwrap(), p.clone());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}

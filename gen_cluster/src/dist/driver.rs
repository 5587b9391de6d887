//! Runs one established link as two tasks, both inside a `link{peer}` span:
//!
//! - the **reader** decodes frames straight into the destination mailbox (payloads stay encoded,
//!   sliced from the received buffer without copying), puts fragments of a large frame back
//!   together, hands control frames to the watchers and replies to their calls; every byte that
//!   arrives (not every whole frame) counts as hearing the peer;
//! - the **writer** drains the link's queue, coalescing queued frames into one write and sending
//!   large ones in fragments (see `outbox`), and runs the failure detector
//!   (`gen_cluster_proto::liveness`): heartbeats when idle, down after the silent deadline. Each
//!   write must make progress within that deadline, so a peer that stops reading cannot wedge it,
//!   while a slow link that keeps taking bytes is not taken for a dead one.
//!
//! When either task ends, the link is taken down once, with the reason of whichever ended first.
//! The reader ends on the link's own token, not the node's shutdown: a node that shuts down
//! first lets its processes' exits and its goodbye go out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gen_cluster_proto::ExitReason;
use gen_cluster_proto::NodeName;
use gen_cluster_proto::handshake::Established;
use gen_cluster_proto::liveness::{Liveness, LivenessAction};
use gen_cluster_proto::wire::{self, CallRefusal, Header, WireError};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use crate::clock::{Epoch, now};
use crate::dist::Dist;
use crate::dist::handshake::Frames;
use crate::dist::link::PeerLink;
use crate::dist::outbox::{Lane, Outbox};
use crate::dist::queue::{FrameQueue, Outgoing, RemoteReply};
use crate::error::CallError;
use crate::events::DownReason;
use crate::process::signal::{Payload, ReplyRoute, Signal};
use crate::transport::{ReadHalf, WriteHalf};

/// A link just established, not yet running.
pub(crate) struct NewLink {
    link: Arc<PeerLink>,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
}

impl NewLink {
    /// The peer's name.
    pub(crate) fn peer(&self) -> &NodeName {
        &self.link.name
    }
}

/// Turns the proven handshake `conn` with `peer` into an established (and announced) link,
/// unless another connection to the same peer won meanwhile or the node is shutting down.
pub(crate) fn establish(dist: &Dist, conn: u64, peer: &Established) -> Option<NewLink> {
    let peer = &peer.peer;
    let (queue, outgoing) = FrameQueue::new(peer.name.clone(), dist.config.max_frame);
    let announce = |link: &PeerLink| {
        dist.events
            .node_up(&link.name, link.incarnation, &link.addr)
    };
    let Some(link) = dist.peers.establish(conn, peer, queue, announce) else {
        tracing::debug!(peer = %peer.name, "handshake completed but another connection won");
        return None;
    };
    Some(NewLink { link, outgoing })
}

/// Runs an established link: its writer, and its reader, which takes the link down when either
/// ends.
pub(crate) fn run(dist: &Arc<Dist>, new: NewLink, mut frames: Frames, write: WriteHalf) {
    let NewLink { link, outgoing } = new;
    // Larger messages come in fragments; the reader's buffer never grows past one.
    frames
        .decoder_mut()
        .set_max_frame_length(wire::MAX_WIRE_FRAME);
    let last_heard = frames.get_ref().last_heard();
    let span = tracing::info_span!("link", peer = %link.name);
    let writer = dist.tasks.spawn(
        span.clone(),
        write_loop(
            Arc::clone(dist),
            Arc::clone(&link),
            outgoing,
            write,
            Arc::clone(&last_heard),
        ),
    );
    let tasks = dist.tasks.clone();
    let dist = Arc::clone(dist);
    tasks.spawn(span, async move {
        let reason = tokio::select! {
            reason = read_loop(&dist, &link, frames) => reason,
            _ = link.cancelled() => DownReason::LocalShutdown,
        };
        link.note_down_reason(reason.clone());
        link.cancel();
        let _ = writer.await;
        dist.take_down(&link, reason);
    });
}

/// Reads frames until the connection ends or breaks the protocol; returns why. Fragments of a
/// large frame are put back together (up to the link's message size cap) and the frame handled
/// as if it had come whole.
async fn read_loop(dist: &Dist, link: &PeerLink, mut frames: Frames) -> DownReason {
    let mut pieces: Vec<u8> = Vec::new();
    loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(error)) => return DownReason::ConnectionLost(error.to_string()),
            None => return DownReason::ConnectionLost("closed by peer".into()),
        };
        let frame = match wire::decode(&frame) {
            Ok((Header::Fragment { last }, piece)) => {
                if pieces.len() + piece.len() > dist.config.max_frame {
                    let error = WireError::TooLarge {
                        size: pieces.len() + piece.len(),
                        limit: dist.config.max_frame,
                    };
                    return protocol_error(link, error);
                }
                pieces.extend_from_slice(piece);
                if !last {
                    continue;
                }
                Bytes::from(std::mem::take(&mut pieces))
            }
            Ok(_) => frame,
            Err(error) => return protocol_error(link, error),
        };
        match handle_frame(dist, link, &frame) {
            Ok(None) => {}
            Ok(Some(reason)) => return reason,
            Err(error) => return protocol_error(link, error),
        }
    }
}

fn protocol_error(link: &PeerLink, error: WireError) -> DownReason {
    tracing::warn!(peer = %link.name, %error, "peer sent a malformed frame; disconnecting");
    DownReason::ProtocolError(error)
}

/// Handles one whole frame from the peer; a goodbye ends the link.
fn handle_frame(
    dist: &Dist,
    link: &PeerLink,
    frame: &Bytes,
) -> Result<Option<DownReason>, WireError> {
    let (header, payload) = wire::decode(frame)?;
    let payload = || Payload::Encoded(frame.slice_ref(payload));
    match header {
        Header::Heartbeat => {}
        Header::Goodbye { reason } => return Ok(Some(DownReason::Left(reason))),
        Header::Send { to } => {
            let signal = Signal::Info {
                payload: payload(),
                from: link.id,
            };
            let _ = dist.processes.deliver_to(to, signal);
        }
        Header::Cast { to } => {
            let _ = dist.processes.deliver_to(to, Signal::Cast(payload()));
        }
        Header::Call { to, reference } => {
            let reply = ReplyRoute::Remote(RemoteReply::new(link.queue.clone(), reference));
            let call = Signal::Call {
                request: payload(),
                reply,
            };
            if let Err(Signal::Call { reply, .. }) = dist.processes.deliver_to(to, call) {
                reply.refuse(CallRefusal::NoProc);
            }
        }
        Header::Reply { reference } => link.finish_call(reference, Ok(payload())),
        Header::ReplyRefused { reference, refusal } => {
            link.finish_call(reference, Err(CallError::from(refusal)))
        }
        header @ (Header::Monitor { .. }
        | Header::Demonitor { .. }
        | Header::Down { .. }
        | Header::Link { .. }
        | Header::Unlink { .. }
        | Header::Exit { .. }) => dist.watchers.inbound(link, header),
        // A fragment inside a reassembled frame.
        Header::Fragment { .. } => {
            return Err(WireError::Malformed(
                "a fragment within a fragmented frame".into(),
            ));
        }
        _ => {
            tracing::warn!(peer = %link.name, "peer sent a frame kind this version does not handle");
        }
    }
    Ok(None)
}

/// How many queued frames the writer takes at once.
const WRITE_BATCH: usize = 256;

/// A frame queued within this long of the previous write is part of a burst: the writer lets the
/// other ready tasks queue theirs first and sends them together.
const COALESCE_WINDOW: Duration = Duration::from_micros(50);

/// The most bytes the writer gathers for one write (small frames coalesced in a burst).
const WRITE_BUFFER: usize = 256 * 1024;

/// Writes what is queued — large frames in fragments, with frames to other destinations passing
/// between them (see `outbox`) — heartbeats when idle, and declares the peer down when it has
/// been silent too long; on its own failure, records why and stops the link.
async fn write_loop(
    dist: Arc<Dist>,
    link: Arc<PeerLink>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    mut write: WriteHalf,
    last_heard: Arc<AtomicU64>,
) {
    let config = dist.config.liveness;
    let deadline = config.down_after;
    let mut detector = Liveness::new(config, now());
    let mut last_write = now() - COALESCE_WINDOW;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut outbox = Outbox::default();
    let mut goodbye = None;
    let heartbeat =
        wire::encode_header(&Header::Heartbeat, wire::DEFAULT_MAX_FRAME).unwrap_or_default();
    let outcome: Result<(), DownReason> = async {
        loop {
            if link.is_cancelled() {
                return Ok(());
            }
            if outbox.is_streaming() || goodbye.is_some() {
                // A large frame is going out: take what is queued meanwhile without waiting.
                while batch.len() < WRITE_BATCH {
                    match queue.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
            } else {
                let wake = tokio::time::Instant::from_std(detector.poll_timeout());
                tokio::select! {
                    biased;
                    _ = link.cancelled() => return Ok(()),
                    received = queue.recv_many(&mut batch, WRITE_BATCH) => {
                        if received == 0 {
                            return Ok(());
                        }
                        // In a burst, let the tasks that are ready run first: tokio runs a woken
                        // task next, so the writer would otherwise send each caller's frame on
                        // its own. On an idle link, write at once: the yield costs a driver poll.
                        if now().saturating_duration_since(last_write) < COALESCE_WINDOW {
                            tokio::task::yield_now().await;
                            while batch.len() < WRITE_BATCH {
                                match queue.try_recv() {
                                    Ok(item) => batch.push(item),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            buffer.clear();
            let mut taken = 0;
            for item in &mut batch {
                if buffer.len() >= WRITE_BUFFER || goodbye.is_some() {
                    break;
                }
                taken += 1;
                match std::mem::replace(item, Outgoing::Goodbye(ExitReason::Normal)) {
                    Outgoing::Frame(frame, lane) => outbox.push(frame, lane, &mut buffer),
                    Outgoing::Goodbye(reason) => {
                        let header = Header::Goodbye {
                            reason: reason.clone(),
                        };
                        let frame = wire::encode_header(&header, wire::DEFAULT_MAX_FRAME)
                            .unwrap_or_default();
                        outbox.push(frame, Lane::Control, &mut buffer);
                        goodbye = Some(reason);
                    }
                }
            }
            batch.drain(..taken);
            outbox.next_fragment(&mut buffer);
            if !buffer.is_empty() {
                write_all(&mut write, &buffer, deadline).await?;
                last_write = now();
                detector.handle_sent(last_write);
            }
            if buffer.capacity() > 4 * WRITE_BUFFER {
                buffer = Vec::with_capacity(64 * 1024);
            }
            if let Some(reason) = &goodbye
                && outbox.is_empty()
            {
                let _ = tokio::time::timeout(deadline, write.shutdown()).await;
                tracing::debug!(%reason, "said goodbye");
                return Err(DownReason::LocalShutdown);
            }
            detector.handle_heard(dist.epoch.load(&last_heard));
            match detector.poll(now()) {
                Some(LivenessAction::SendHeartbeat) => {
                    write_all(&mut write, &heartbeat, deadline).await?
                }
                Some(LivenessAction::Down { silent_for }) => {
                    return Err(DownReason::Unresponsive { silent_for });
                }
                None => {}
            }
        }
    }
    .await;
    if let Err(reason) = outcome {
        link.note_down_reason(reason);
        link.cancel();
    }
}

/// Writes `bytes`; each write must make progress within `deadline` (a slow link that keeps
/// taking bytes is not a dead one).
async fn write_all(
    write: &mut WriteHalf,
    mut bytes: &[u8],
    deadline: Duration,
) -> Result<(), DownReason> {
    while !bytes.is_empty() {
        match tokio::time::timeout(deadline, write.write(bytes)).await {
            Ok(Ok(0)) => return Err(DownReason::ConnectionLost("wrote nothing".into())),
            Ok(Ok(written)) => bytes = &bytes[written..],
            Ok(Err(error)) => return Err(DownReason::ConnectionLost(error.to_string())),
            Err(_) => {
                return Err(DownReason::Unresponsive {
                    silent_for: deadline,
                });
            }
        }
    }
    Ok(())
}

/// The receiving half of a link, noting when bytes last arrived: any bytes, so that a large
/// frame still streaming in counts as the peer being heard.
pub(crate) struct Heard {
    read: ReadHalf,
    epoch: Epoch,
    last: Arc<AtomicU64>,
}

impl Heard {
    /// `read`, noting arrivals on `epoch`'s clock.
    pub(crate) fn new(read: ReadHalf, epoch: Epoch) -> Self {
        Self {
            read,
            epoch,
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Where the moment of the last arrival is kept.
    fn last_heard(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.last)
    }
}

impl AsyncRead for Heard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.epoch.store(&self.last, now());
        }
        polled
    }
}

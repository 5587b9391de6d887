//! Runs one established link as two tasks, both inside a `link{peer}` span:
//!
//! - the **reader** decodes frames straight into the destination mailbox (payloads stay encoded,
//!   sliced from the received buffer without copying), puts fragments of a large frame back
//!   together, hands control frames to the watchers and replies to their calls; every byte that
//!   arrives (not every whole frame) counts as hearing the peer;
//! - the **writer** drains the link's queue, coalescing queued frames into one write and sending
//!   large ones in fragments (see `outbox`), and runs the failure detector
//!   (`gen_cluster_proto::liveness`): heartbeats when idle if the peer asked for them, down after
//!   the silent deadline if this node watches the peer. Between members of this version both
//!   are off until the cluster view says which peers this node watches (a few, on the monitor
//!   ring); a link to a hidden node, or to a peer of an older version, watches and heartbeats
//!   both ways. A write that makes no progress on a watched link waits while the peer is still
//!   heard (back-pressure: it reads slowly) and fails once the peer is silent too, so a dead
//!   peer cannot wedge the writer and a slow one is not taken for dead; on a link this node does
//!   not watch it waits until the peer's watchers declare it down (the view then closes the
//!   link).
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
use gen_cluster_proto::handshake::{
    Established, HEARTBEATS_ON_REQUEST_VERSION, ROUND_TRIP_VERSION,
};
use gen_cluster_proto::liveness::{Liveness, LivenessAction, LivenessConfig};
use gen_cluster_proto::wire::{self, CallRefusal, Header, WireError};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use crate::clock::{Epoch, now};
use crate::dist::Dist;
use crate::dist::handshake::Frames;
use crate::dist::link::{LastHeard, PeerLink};
use crate::dist::outbox::{Lane, Outbox};
use crate::dist::queue::{FrameQueue, Outgoing, RemoteReply};
use crate::error::CallError;
use crate::events::DownReason;
use crate::process::signal::{Payload, ReplyRoute, Signal};
use crate::process::table::Placement;
use crate::telemetry::LinkCounters;
use crate::transport::{ReadHalf, WriteHalf};

/// A link just established, not yet running.
pub(crate) struct NewLink {
    link: Arc<PeerLink>,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    /// What the peer's version has.
    features: Features,
}

/// What a link's peer understands.
#[derive(Clone, Copy, Debug)]
struct Features {
    /// It answers pings.
    pings: bool,
    /// It heartbeats on request, and the link is between two members: the failure detector
    /// starts quiet, and the view turns it on for the peers this node watches.
    quiet: bool,
}

impl NewLink {
    /// The peer's name.
    pub(crate) fn peer(&self) -> &NodeName {
        &self.link.name
    }
}

/// Turns the proven handshake `conn` with `peer` into an established (and announced) link,
/// unless another connection to the same peer won meanwhile or the node is shutting down.
pub(crate) fn establish(
    dist: &Dist,
    conn: u64,
    peer: &Established,
    heard: Arc<AtomicU64>,
) -> Option<NewLink> {
    let features = Features {
        pings: peer.version >= ROUND_TRIP_VERSION,
        quiet: peer.version >= HEARTBEATS_ON_REQUEST_VERSION
            && !peer.peer.hidden
            && !dist.local.hidden,
    };
    let version = peer.version;
    let peer = &peer.peer;
    let config = &dist.config;
    let (queue, outgoing) =
        FrameQueue::new(peer.name.clone(), config.max_frame, config.send_queue_bytes);
    let announce = |link: &PeerLink| {
        if link.hidden {
            tracing::debug!(peer = %link.name, "hidden node connected");
        } else {
            dist.events
                .node_up(&link.name, link.incarnation, &link.addr)
        }
    };
    let heard = LastHeard::new(heard, dist.epoch);
    let Some(link) = dist
        .peers
        .establish(conn, peer, version, queue, heard, announce)
    else {
        tracing::debug!(peer = %peer.name, "handshake completed but another connection won");
        return None;
    };
    Some(NewLink {
        link,
        outgoing,
        features,
    })
}

/// Runs an established link: its writer, and its reader, which takes the link down when either
/// ends.
pub(crate) fn run(dist: &Arc<Dist>, new: NewLink, mut frames: Frames, write: WriteHalf) {
    let NewLink {
        link,
        outgoing,
        features,
    } = new;
    // Larger messages come in fragments; the reader's buffer never grows past one.
    frames
        .decoder_mut()
        .set_max_frame_length(wire::MAX_WIRE_FRAME);
    let last_heard = frames.get_ref().last_heard();
    let span = tracing::info_span!("link", peer = %link.name);
    let counters = Arc::new(LinkCounters::new(link.name.as_str()));
    let writer = dist.tasks.spawn(
        span.clone(),
        write_loop(
            Arc::clone(dist),
            Arc::clone(&link),
            outgoing,
            write,
            Arc::clone(&last_heard),
            Arc::clone(&counters),
            features,
        ),
    );
    let tasks = dist.tasks.clone();
    let dist = Arc::clone(dist);
    tasks.spawn(span, async move {
        let reason = tokio::select! {
            reason = read_loop(&dist, &link, frames, &counters) => reason,
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
async fn read_loop(
    dist: &Dist,
    link: &PeerLink,
    mut frames: Frames,
    counters: &LinkCounters,
) -> DownReason {
    let mut reassembly = wire::Reassembly::default();
    let last_heard = frames.get_ref().last_heard();
    loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(error)) => return DownReason::ConnectionLost(error.to_string()),
            None => return DownReason::ConnectionLost("closed by peer".into()),
        };
        counters
            .received_bytes
            .increment((wire::LENGTH_PREFIX + frame.len()) as u64);
        let frame = match wire::decode(&frame) {
            Ok((Header::Fragment { left }, piece)) => {
                match reassembly.add(piece, left, dist.config.max_frame) {
                    Ok(Some(body)) => Bytes::from(body),
                    Ok(None) => continue,
                    Err(error) => return protocol_error(link, error),
                }
            }
            Ok(_) => frame,
            Err(error) => return protocol_error(link, error),
        };
        // Frames as the peer queued them: a message that came in fragments counts once, as
        // the sender counts it.
        counters.received_frames.increment(1);
        match handle_frame(dist, link, &frame, &last_heard, counters).await {
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
async fn handle_frame(
    dist: &Dist,
    link: &PeerLink,
    frame: &Bytes,
    last_heard: &AtomicU64,
    counters: &LinkCounters,
) -> Result<Option<DownReason>, WireError> {
    let (header, payload) = wire::decode(frame)?;
    let payload = || Payload::Encoded(frame.slice_ref(payload));
    match header {
        Header::Heartbeat => {}
        Header::Heartbeats { on } => {
            link.queue.switch(Outgoing::Heartbeats(on));
        }
        Header::Ping { sent } => {
            link.queue.send_header(&Header::Pong { sent });
        }
        Header::Pong { sent } => {
            if let Some(round_trip) = dist.epoch.since(now(), sent) {
                counters.round_trip.record(round_trip.as_secs_f64());
            }
        }
        Header::Goodbye { reason } => return Ok(Some(DownReason::Left(reason))),
        Header::Send { to } => {
            let signal = Signal::Info {
                payload: payload(),
                from: link.id,
            };
            let _ = deliver(dist, to, signal, last_heard).await;
        }
        Header::Cast { to } => {
            let _ = deliver(dist, to, Signal::Cast(payload()), last_heard).await;
        }
        Header::Call { to, reference } => {
            let reply = ReplyRoute::Remote(RemoteReply::new(link.queue.clone(), reference));
            let call = Signal::Call {
                request: payload(),
                reply,
            };
            if let Err(Signal::Call { reply, .. }) = deliver(dist, to, call, last_heard).await {
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

/// Puts a message from the peer in its process's mailbox. A bounded mailbox may have no place
/// for it yet: the reader then waits, reading nothing more from the peer — TCP flow control
/// slows the peer's senders — and meanwhile tells the failure detector the peer is heard: this
/// node is the slow one, not the peer.
async fn deliver(
    dist: &Dist,
    to: wire::Dest<'_>,
    signal: Signal,
    last_heard: &AtomicU64,
) -> Result<(), Signal> {
    let waiting = match dist.processes.deliver_to(to, signal) {
        Placement::Done(delivered) => return delivered,
        Placement::Waiting(waiting) => waiting.place(),
    };
    tokio::pin!(waiting);
    let every = dist.config.liveness.heartbeat_interval;
    loop {
        dist.epoch.store(last_heard, now());
        tokio::select! {
            delivered = &mut waiting => return delivered,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// How often a link measures its round trip (a `Ping` the peer answers with a `Pong`).
const PING_EVERY: Duration = Duration::from_secs(1);

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
    counters: Arc<LinkCounters>,
    features: Features,
) {
    let config = dist.config.liveness;
    let deadline = config.down_after;
    let silence = Silence {
        dist: &dist,
        link: &link,
        last_heard: &last_heard,
        config,
    };
    let mut detector = match features.quiet {
        true => Liveness::quiet(config, now()),
        false => Liveness::new(config, now()),
    };
    let mut next_ping = now();
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
                // A large frame is going out: take what is queued meanwhile without waiting,
                // unless enough already waits behind it (then the rest stay queued, holding
                // their room, and their senders are held back).
                while batch.len() < WRITE_BATCH && !outbox.is_full() {
                    match queue.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
            } else {
                let wake = detector.poll_timeout().map(tokio::time::Instant::from_std);
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
                    _ = sleep_until(wake) => {}
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
                    Outgoing::Frame(frame, lane, charge) => {
                        link.queue.release(charge);
                        outbox.push(frame, lane, &mut buffer)
                    }
                    // A peer of an older version knows no such frame (it would take it for a
                    // protocol error), and its link watches and heartbeats both ways anyway.
                    Outgoing::Watch(_) if !features.quiet => {}
                    Outgoing::Watch(on) => {
                        detector.set_watching(on, now());
                        let header = Header::Heartbeats { on };
                        if let Ok(frame) = wire::encode_header(&header, wire::DEFAULT_MAX_FRAME) {
                            outbox.push(frame, Lane::of(&header), &mut buffer);
                        }
                    }
                    Outgoing::Heartbeats(on) => detector.set_heartbeats(on),
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
                write_all(&mut write, &buffer, &silence, detector.watching()).await?;
                counters.sent_frames.increment(taken as u64);
                counters.sent_bytes.increment(buffer.len() as u64);
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
                    write_all(&mut write, &heartbeat, &silence, detector.watching()).await?;
                    counters.sent_frames.increment(1);
                    counters.sent_bytes.increment(heartbeat.len() as u64);
                }
                Some(LivenessAction::Down { silent_for }) => {
                    return Err(DownReason::Unresponsive { silent_for });
                }
                None => {}
            }
            let at = now();
            // The round trip is measured on the links the failure detector watches.
            if features.pings && detector.watching() && at >= next_ping {
                next_ping = at + PING_EVERY;
                let ping = Header::Ping {
                    sent: dist.epoch.stamp(at),
                };
                if let Ok(ping) = wire::encode_header(&ping, wire::DEFAULT_MAX_FRAME) {
                    write_all(&mut write, &ping, &silence, detector.watching()).await?;
                    counters.sent_frames.increment(1);
                    counters.sent_bytes.increment(ping.len() as u64);
                }
            }
        }
    }
    .await;
    if let Err(reason) = outcome {
        link.note_down_reason(reason);
        link.cancel();
    }
}

/// How long the peer has been silent, for a write that waits: the write fails only if the peer
/// is silent too.
struct Silence<'a> {
    dist: &'a Dist,
    link: &'a PeerLink,
    last_heard: &'a AtomicU64,
    config: LivenessConfig,
}

/// Writes `bytes`. A write that makes no progress is back-pressure while the peer is still
/// heard (it reads slowly, or its processes' mailboxes are full): it waits. On a `watched` link
/// it fails once the peer has also been silent for the failure detector's deadline: a peer that
/// stopped reading and talking cannot wedge the writer. On another link, where silence is no
/// sign, it waits until the link is closed (its watchers declared the peer down).
async fn write_all(
    write: &mut WriteHalf,
    mut bytes: &[u8],
    silence: &Silence<'_>,
    watched: bool,
) -> Result<(), DownReason> {
    let deadline = silence.config.down_after;
    while !bytes.is_empty() {
        let written = tokio::select! {
            biased;
            _ = silence.link.cancelled() => return Err(DownReason::LocalShutdown),
            written = tokio::time::timeout(silence.config.heartbeat_interval, write.write(bytes)) => written,
        };
        match written {
            Ok(Ok(0)) => return Err(DownReason::ConnectionLost("wrote nothing".into())),
            Ok(Ok(written)) => bytes = &bytes[written..],
            Ok(Err(error)) => return Err(DownReason::ConnectionLost(error.to_string())),
            Err(_) if !watched => {}
            Err(_) => {
                let heard = silence.dist.epoch.load(silence.last_heard);
                let silent_for = now().saturating_duration_since(heard);
                if silent_for >= deadline {
                    return Err(DownReason::Unresponsive { silent_for });
                }
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
    /// The failure detector's clock: arrivals, and the moments the reader waits on a full
    /// local mailbox (this node's slowness is not the peer's silence).
    last: Arc<AtomicU64>,
    /// Arrivals only: whether the peer itself spoke lately.
    read_at: Arc<AtomicU64>,
}

impl Heard {
    /// `read`, noting arrivals on `epoch`'s clock.
    pub(crate) fn new(read: ReadHalf, epoch: Epoch) -> Self {
        Self {
            read,
            epoch,
            last: Arc::new(AtomicU64::new(0)),
            read_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Where the failure detector's clock is kept: the last arrival, or the last moment the
    /// reader waited on a full local mailbox.
    pub(crate) fn last_heard(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.last)
    }

    /// Where the moment bytes last arrived is kept.
    pub(crate) fn last_read(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.read_at)
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
            let at = now();
            self.epoch.store(&self.last, at);
            self.epoch.store(&self.read_at, at);
        }
        polled
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! Runs one established link as two tasks, both inside a `link{peer,conn}` span:
//!
//! - the **reader** decodes frames straight into the destination mailbox (payloads stay encoded,
//!   sliced from the received buffer without copying), hands control frames to the watchers and
//!   replies to their calls, and notes when the peer was last heard;
//! - the **writer** drains the link's queue, coalescing every queued frame into one write, and
//!   runs the failure detector (`gen_cluster_proto::liveness`): heartbeats when idle, down after
//!   the silent deadline. Every write has the same deadline, so a peer that stops reading cannot
//!   wedge it.
//!
//! When either task ends, the link is taken down once, with the reason of whichever ended first.
//! The reader ends on the link's own token, not the node's shutdown: a node that shuts down
//! first lets its processes' exits and its goodbye go out.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::StreamExt;
use gen_cluster_proto::NodeName;
use gen_cluster_proto::handshake::Established;
use gen_cluster_proto::liveness::{Liveness, LivenessAction};
use gen_cluster_proto::wire::{self, CallRefusal, Header};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::clock::now;
use crate::dist::Dist;
use crate::dist::handshake::Frames;
use crate::dist::link::PeerLink;
use crate::dist::queue::{FrameQueue, Outgoing, RemoteReply};
use crate::error::CallError;
use crate::events::DownReason;
use crate::process::signal::{Payload, ReplyRoute, Signal};
use crate::transport::WriteHalf;

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
    frames
        .decoder_mut()
        .set_max_frame_length(dist.config.max_frame);
    let last_heard = Arc::new(AtomicU64::new(0));
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
            reason = read_loop(&dist, &link, frames, &last_heard) => reason,
            _ = link.cancelled() => DownReason::LocalShutdown,
        };
        link.note_down_reason(reason.clone());
        link.cancel();
        let _ = writer.await;
        dist.take_down(&link, reason);
    });
}

/// Reads frames until the connection ends or breaks the protocol; returns why.
async fn read_loop(
    dist: &Dist,
    link: &PeerLink,
    mut frames: Frames,
    last_heard: &AtomicU64,
) -> DownReason {
    loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(error)) => return DownReason::ConnectionLost(error.to_string()),
            None => return DownReason::ConnectionLost("closed by peer".into()),
        };
        dist.epoch.store(last_heard, now());
        let (header, payload) = match wire::decode(&frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(peer = %link.name, %error, "peer sent a malformed frame; disconnecting");
                return DownReason::ProtocolError(error);
            }
        };
        let payload = || Payload::Encoded(frame.slice_ref(payload));
        match header {
            Header::Heartbeat => {}
            Header::Goodbye { reason } => return DownReason::Left(reason),
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
            _ => {
                tracing::warn!(peer = %link.name, "peer sent a frame kind this version does not handle");
            }
        }
    }
}

/// How many queued frames the writer takes at once.
const WRITE_BATCH: usize = 256;

/// A frame queued within this long of the previous write is part of a burst: the writer lets the
/// other ready tasks queue theirs first and sends them together.
const COALESCE_WINDOW: Duration = Duration::from_micros(50);

/// Writes what is queued, heartbeats when idle, and declares the peer down when it has been
/// silent too long; on its own failure, records why and stops the link.
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
    let heartbeat =
        wire::encode_header(&Header::Heartbeat, wire::DEFAULT_MAX_FRAME).unwrap_or_default();
    let outcome: Result<(), DownReason> = async {
        loop {
            let wake = tokio::time::Instant::from_std(detector.poll_timeout());
            tokio::select! {
                biased;
                _ = link.cancelled() => return Ok(()),
                received = queue.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        return Ok(());
                    }
                    // In a burst, let the tasks that are ready run first: tokio runs a woken task
                    // next, so the writer would otherwise send each caller's frame on its own.
                    // On an idle link, write at once: the yield costs a driver poll.
                    if now().saturating_duration_since(last_write) < COALESCE_WINDOW {
                        tokio::task::yield_now().await;
                        while batch.len() < WRITE_BATCH {
                            match queue.try_recv() {
                                Ok(item) => batch.push(item),
                                Err(_) => break,
                            }
                        }
                    }
                    buffer.clear();
                    let mut goodbye = None;
                    for item in batch.drain(..) {
                        match item {
                            Outgoing::Frame(frame) => buffer.extend_from_slice(&frame),
                            Outgoing::Goodbye(reason) => {
                                goodbye = Some(reason);
                                break;
                            }
                        }
                    }
                    if let Some(reason) = &goodbye {
                        let frame = wire::encode_header(&Header::Goodbye { reason: reason.clone() }, wire::DEFAULT_MAX_FRAME)
                            .unwrap_or_default();
                        buffer.extend_from_slice(&frame);
                    }
                    write_all(&mut write, &buffer, deadline).await?;
                    last_write = now();
                    detector.handle_sent(last_write);
                    if let Some(reason) = goodbye {
                        let _ = tokio::time::timeout(deadline, write.shutdown()).await;
                        tracing::debug!(%reason, "said goodbye");
                        return Err(DownReason::LocalShutdown);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            detector.handle_heard(dist.epoch.load(&last_heard));
            match detector.poll(now()) {
                Some(LivenessAction::SendHeartbeat) => write_all(&mut write, &heartbeat, deadline).await?,
                Some(LivenessAction::Down { silent_for }) => return Err(DownReason::Unresponsive { silent_for }),
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

async fn write_all(
    write: &mut WriteHalf,
    bytes: &[u8],
    deadline: Duration,
) -> Result<(), DownReason> {
    match tokio::time::timeout(deadline, write.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(DownReason::ConnectionLost(error.to_string())),
        Err(_) => Err(DownReason::Unresponsive {
            silent_for: deadline,
        }),
    }
}

//! Drives connections for a [`Node`]: accepts and dials, runs the handshake machine of
//! `gen_cluster_proto::handshake` over the stream with a deadline, asks the node to arbitrate
//! duplicates, and then runs each established link as two tasks:
//!
//! - the **reader** decodes frames straight into the destination mailbox (payloads stay encoded,
//!   sliced from the received buffer without copying) and notes when the peer was last heard;
//! - the **writer** drains the link's queue, coalescing every queued frame into one write, and
//!   runs the failure detector (`gen_cluster_proto::liveness`): heartbeats when idle, down after
//!   the silent deadline. Every write has the same deadline, so a peer that stops reading cannot
//!   wedge it.
//!
//! When either task ends, the link is taken down once, with the reason of whichever ended first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gen_cluster_proto::NodeName;
use gen_cluster_proto::arbitration::Step;
use gen_cluster_proto::handshake::{
    self, HandshakeError, HandshakeFailure, Identity, MAX_HANDSHAKE_FRAME, Refusal,
};
use gen_cluster_proto::liveness::{Liveness, LivenessAction};
use gen_cluster_proto::wire::{self, CallRefusal, Header};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectError, HandshakeFailed};
use crate::events::{DownReason, NodeEvent};
use crate::node::{Node, Outgoing, PeerLink};
use crate::process::{Payload, ReplyRoute, Signal};
use crate::transport::{ReadHalf, Transport, WriteHalf};

type Frames = FramedRead<ReadHalf, LengthDelimitedCodec>;

/// Accepts connections until the node shuts down; each handshake runs in its own task, at most
/// `pending` at once (connections beyond that are closed at once, so silent dialers cannot starve
/// real peers).
pub(crate) async fn accept_loop<T: Transport>(
    node: Node,
    transport: Arc<T>,
    mut listener: T::Listener,
    pending: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            accepted = transport.accept(&mut listener) => accepted,
        };
        match accepted {
            Ok((read, write, remote)) => match Arc::clone(&pending).try_acquire_owned() {
                Ok(permit) => {
                    let node = node.clone();
                    node.inner.link_tasks.clone().spawn(async move {
                        run_acceptor(node, read, write, remote).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%remote, "too many handshakes in progress; connection dropped")
                }
            },
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run_acceptor(node: Node, read: ReadHalf, mut write: WriteHalf, remote: String) {
    let conn = node.new_conn_id();
    let cancel = node.inner.shutdown.child_token();
    let deadline = node.inner.config.handshake_timeout;
    let mut frames = handshake_frames(read);
    let mut peer_id = None;
    let outcome = tokio::time::timeout(
        deadline,
        accept_handshake(&node, conn, &cancel, &mut frames, &mut write, &mut peer_id),
    )
    .await
    .unwrap_or(Err(HandshakeFailed::Timeout(deadline)));
    match outcome {
        Ok(peer) => start_link(&node, conn, peer, frames, write),
        Err(error) => {
            if let Some(id) = peer_id {
                node.abandon(conn, id);
            }
            metrics::counter!("gen_cluster_handshake_failures_total", "role" => "acceptor")
                .increment(1);
            match &error {
                HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::Duplicate {
                    ..
                }))
                | HandshakeFailed::Superseded => {
                    tracing::debug!(%remote, "duplicate connection refused")
                }
                // Discovery lists this node among the others; its dial is expected.
                HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::SelfConnect)) => {
                    tracing::debug!(%remote, "connection from this node itself refused")
                }
                _ => {
                    tracing::warn!(%remote, %error, "incoming connection dropped: handshake failed")
                }
            }
        }
    }
}

async fn accept_handshake(
    node: &Node,
    conn: u64,
    cancel: &CancellationToken,
    frames: &mut Frames,
    write: &mut WriteHalf,
    peer_id: &mut Option<gen_cluster_proto::NodeId>,
) -> Result<Identity, HandshakeFailed> {
    let machine = handshake::accept(node.handshake_config(), nonce());
    let hello = next_frame(frames, cancel).await?;
    let hello = fail_with_notice(machine.handle(&hello), write).await?;
    *peer_id = Some(hello.peer().name.id());
    if let Err(refusal) = node.arbitrate(conn, hello.peer(), Step::HelloReceived, cancel) {
        return Err(send_notice(hello.refuse(refusal), write).await);
    }
    let (machine, challenge) = hello.admit();
    write_frame(write, &challenge).await?;
    let response = next_frame(frames, cancel).await?;
    let verified = fail_with_notice(machine.handle(&response), write).await?;
    if let Err(refusal) = node.arbitrate(conn, verified.peer(), Step::ResponseVerified, cancel) {
        return Err(send_notice(verified.refuse(refusal), write).await);
    }
    let (established, confirm) = verified.confirm();
    write_frame(write, &confirm).await?;
    Ok(established.peer)
}

/// Dials `addr` and runs the handshake as initiator.
pub(crate) async fn dial(node: &Node, addr: &str) -> Result<NodeName, ConnectError> {
    if node.is_shutting_down() {
        return Err(ConnectError::ShuttingDown);
    }
    let config = &node.inner.config;
    let (read, mut write) = tokio::time::timeout(
        config.connect_timeout,
        node.inner.dialer.dial(addr.to_string()),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        addr: addr.into(),
        after: config.connect_timeout,
    })?
    .map_err(|source| ConnectError::Io {
        addr: addr.into(),
        source,
    })?;
    let conn = node.new_conn_id();
    let cancel = node.inner.shutdown.child_token();
    let mut frames = handshake_frames(read);
    let mut peer = None;
    let mut events = node.subscribe();
    let outcome = tokio::time::timeout(
        config.handshake_timeout,
        dial_handshake(node, conn, &cancel, &mut frames, &mut write, &mut peer),
    )
    .await
    .unwrap_or(Err(HandshakeFailed::Timeout(config.handshake_timeout)));
    match outcome {
        Ok(identity) => {
            let name = identity.name.clone();
            start_link(node, conn, identity, frames, write);
            Ok(name)
        }
        Err(error) => {
            if let Some(peer) = &peer {
                node.abandon(conn, peer.name.id());
            }
            metrics::counter!("gen_cluster_handshake_failures_total", "role" => "initiator")
                .increment(1);
            // Another connection to the same node may have won: then we are, or are about to
            // be, connected to it.
            let winner = match (&error, peer) {
                (HandshakeFailed::Superseded, Some(peer)) => Some(peer.name),
                (
                    HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::Duplicate {
                        ..
                    })),
                    Some(peer),
                ) => Some(peer.name),
                (
                    HandshakeFailed::Protocol(HandshakeError::RefusedByPeer(Refusal::Duplicate {
                        node,
                    })),
                    _,
                ) => Some(node.clone()),
                _ => None,
            };
            match winner {
                Some(name)
                    if await_up(node, &mut events, &name, config.handshake_timeout).await =>
                {
                    Ok(name)
                }
                _ => Err(ConnectError::Handshake {
                    addr: addr.into(),
                    source: error,
                }),
            }
        }
    }
}

/// Waits until `name` is connected, at most `timeout`.
async fn await_up(
    node: &Node,
    events: &mut broadcast::Receiver<NodeEvent>,
    name: &NodeName,
    timeout: Duration,
) -> bool {
    let up = async {
        loop {
            if node.is_connected(name) {
                return;
            }
            if let Err(broadcast::error::RecvError::Closed) = events.recv().await {
                return std::future::pending().await;
            }
        }
    };
    tokio::time::timeout(timeout, up).await.is_ok()
}

async fn dial_handshake(
    node: &Node,
    conn: u64,
    cancel: &CancellationToken,
    frames: &mut Frames,
    write: &mut WriteHalf,
    peer: &mut Option<Identity>,
) -> Result<Identity, HandshakeFailed> {
    let (machine, hello) = handshake::initiate(node.handshake_config(), nonce());
    write_frame(write, &hello).await?;
    let challenge = next_frame(frames, cancel).await?;
    let received = fail_with_notice(machine.handle(&challenge), write).await?;
    *peer = Some(received.peer().clone());
    if let Err(refusal) = node.arbitrate(conn, received.peer(), Step::ChallengeReceived, cancel) {
        return Err(send_notice(received.refuse(refusal), write).await);
    }
    let (machine, response) = received.proceed();
    write_frame(write, &response).await?;
    let confirm = next_frame(frames, cancel).await?;
    let established = fail_with_notice(machine.handle(&confirm), write).await?;
    Ok(established.peer)
}

/// Runs an established connection. Its tasks stop on their own token, not the node's shutdown
/// token: a node that shuts down first lets its processes' exits and its goodbye go out.
fn start_link(node: &Node, conn: u64, peer: Identity, frames: Frames, write: WriteHalf) {
    let mut frames = frames;
    let (out, queue) = mpsc::unbounded_channel();
    let Some(link) = node.establish(conn, &peer, out, CancellationToken::new()) else {
        tracing::debug!(peer = %peer.name, "handshake completed but another connection won");
        return;
    };
    frames
        .decoder_mut()
        .set_max_frame_length(node.inner.config.max_frame);
    let last_heard = Arc::new(AtomicU64::new(0));
    let writer = node.inner.link_tasks.spawn(write_loop(
        node.clone(),
        Arc::clone(&link),
        queue,
        write,
        Arc::clone(&last_heard),
    ));
    let node = node.clone();
    node.inner.link_tasks.clone().spawn(async move {
        let reason = tokio::select! {
            reason = read_loop(&node, &link, frames, &last_heard) => reason,
            _ = link.cancel.cancelled() => DownReason::LocalShutdown,
        };
        link.note_down_reason(reason.clone());
        link.cancel.cancel();
        let _ = writer.await;
        node.take_down(&link, reason);
    });
}

async fn read_loop(
    node: &Node,
    link: &Arc<PeerLink>,
    mut frames: Frames,
    last_heard: &AtomicU64,
) -> DownReason {
    loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(error)) => return DownReason::ConnectionLost(error.to_string()),
            None => return DownReason::ConnectionLost("closed by peer".into()),
        };
        last_heard.store(
            now().saturating_duration_since(node.inner.epoch).as_nanos() as u64,
            Ordering::Relaxed,
        );
        let (header, payload) = match wire::decode(&frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(peer = %link.name, %error, "peer sent a malformed frame; disconnecting");
                return DownReason::ProtocolError(error.to_string());
            }
        };
        let payload = || Payload::Remote(frame.slice_ref(payload));
        match header {
            Header::Heartbeat => {}
            Header::Goodbye { reason } => return DownReason::Left(reason),
            Header::Send { to } => {
                let _ = node.deliver_to_dest(to, Signal::Info(payload()));
            }
            Header::Cast { to } => {
                let _ = node.deliver_to_dest(to, Signal::Cast(payload()));
            }
            Header::Call { to, reference } => {
                let reply = ReplyRoute::Remote {
                    link: Arc::clone(link),
                    reference,
                };
                if let Err(Signal::Call { reply, .. }) = node.deliver_to_dest(
                    to,
                    Signal::Call {
                        request: payload(),
                        reply,
                    },
                ) {
                    reply.refuse(CallRefusal::NoProc);
                }
            }
            Header::Reply { reference } => link.finish_call(reference, Ok(payload())),
            Header::ReplyRefused { reference, refusal } => {
                link.finish_call(reference, Err(crate::node::call_error_of(refusal)))
            }
            Header::Monitor {
                reference,
                watcher,
                target,
            } => node.handle_monitor(link, reference, watcher, target),
            Header::Demonitor { reference, target } => node.handle_demonitor(reference, target),
            Header::Down {
                reference,
                target,
                reason,
            } => node.handle_down(link, reference, target, reason),
            Header::Link { from, to } => node.handle_link(link, from, to),
            Header::Unlink { from, to } => node.handle_unlink(link, from, to),
            Header::Exit { from, to, reason } => node.handle_exit(link, from, to, reason),
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

async fn write_loop(
    node: Node,
    link: Arc<PeerLink>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    mut write: WriteHalf,
    last_heard: Arc<AtomicU64>,
) {
    let config = node.inner.config.liveness;
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
                _ = link.cancel.cancelled() => return Ok(()),
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
                        tracing::debug!(peer = %link.name, %reason, "said goodbye");
                        return Err(DownReason::LocalShutdown);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let heard = node.inner.epoch + Duration::from_nanos(last_heard.load(Ordering::Relaxed));
            detector.handle_heard(heard);
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
        link.cancel.cancel();
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

fn handshake_frames(read: ReadHalf) -> Frames {
    FramedRead::new(
        read,
        LengthDelimitedCodec::builder()
            .max_frame_length(MAX_HANDSHAKE_FRAME)
            .new_codec(),
    )
}

async fn next_frame(
    frames: &mut Frames,
    cancel: &CancellationToken,
) -> Result<Bytes, HandshakeFailed> {
    tokio::select! {
        _ = cancel.cancelled() => Err(HandshakeFailed::Superseded),
        frame = frames.next() => match frame {
            Some(Ok(frame)) => Ok(frame.freeze()),
            Some(Err(error)) => Err(HandshakeFailed::Io(error.to_string())),
            None => Err(HandshakeFailed::Io("connection closed during the handshake".into())),
        },
    }
}

async fn write_frame(write: &mut WriteHalf, body: &[u8]) -> Result<(), HandshakeFailed> {
    let len =
        u32::try_from(body.len()).map_err(|_| HandshakeFailed::Io("frame too large".into()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    write
        .write_all(&frame)
        .await
        .map_err(|error| HandshakeFailed::Io(error.to_string()))
}

/// On failure, sends the machine's notice to the peer (best effort) and returns the error.
async fn fail_with_notice<T>(
    step: Result<T, HandshakeFailure>,
    write: &mut WriteHalf,
) -> Result<T, HandshakeFailed> {
    match step {
        Ok(next) => Ok(next),
        Err(failure) => Err(send_notice(failure, write).await),
    }
}

async fn send_notice(failure: HandshakeFailure, write: &mut WriteHalf) -> HandshakeFailed {
    if let Some(notice) = &failure.notice {
        let _ = write_frame(write, notice).await;
        let _ = write.shutdown().await;
    }
    HandshakeFailed::Protocol(failure.error)
}

/// The runtime's clock: tokio's, so that paused and simulated time drive the protocol machines.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn nonce() -> handshake::Nonce {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    nonce
}

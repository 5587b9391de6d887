//! The handshake of one connection, on either side, over the sans-IO typestate machine of
//! `gen_cluster_proto::handshake`: this module reads and writes its frames with the configured
//! deadline, asks the peer table to arbitrate at each decision point, sends the machine's refusal
//! notice when it fails, and hands an established connection to the link driver.
//!
//! [`dial`] is the initiator's side, from dial to link; the acceptor's side is [`accept`], run by
//! the listener for each incoming connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gen_cluster_proto::arbitration::Step;
use gen_cluster_proto::handshake::{
    self, HandshakeError, HandshakeFailure, Identity, MAX_HANDSHAKE_FRAME, Refusal,
};
use gen_cluster_proto::{NodeId, NodeName};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::dist::Dist;
use crate::dist::driver;
use crate::error::{ConnectError, HandshakeFailed};
use crate::events::{DownReason, NodeEvent};
use crate::transport::{ReadHalf, WriteHalf};

/// Frames read from a connection: handshake frames first (capped small), then link frames.
pub(crate) type Frames = FramedRead<ReadHalf, LengthDelimitedCodec>;

/// Dials `addr` and runs the handshake as initiator; returns the peer's name once the link is
/// up, or once another connection to the same peer has won and is up.
pub(crate) async fn dial(dist: &Arc<Dist>, addr: &str) -> Result<NodeName, ConnectError> {
    if dist.tasks.is_stopping() {
        return Err(ConnectError::ShuttingDown);
    }
    let config = &dist.config;
    let (read, mut write) =
        tokio::time::timeout(config.connect_timeout, dist.dialer.dial(addr.to_string()))
            .await
            .map_err(|_| ConnectError::Timeout {
                addr: addr.into(),
                after: config.connect_timeout,
            })?
            .map_err(|source| ConnectError::Io {
                addr: addr.into(),
                source,
            })?;
    let conn = dist.peers.new_conn_id();
    let cancel = dist.tasks.child_token();
    let mut frames = handshake_frames(read);
    let mut peer = None;
    let mut events = dist.events.subscribe();
    let outcome = tokio::time::timeout(
        config.handshake_timeout,
        initiate(dist, conn, &cancel, &mut frames, &mut write, &mut peer),
    )
    .await
    .unwrap_or(Err(HandshakeFailed::Timeout(config.handshake_timeout)));
    let error = match outcome {
        Ok(identity) => {
            let name = identity.name.clone();
            driver::start(dist, conn, identity, frames, write);
            return Ok(name);
        }
        Err(error) => error,
    };
    if let Some(peer) = &peer {
        dist.peers.abandon(conn, peer.name.id());
    }
    metrics::counter!("gen_cluster_handshake_failures_total", "role" => "initiator").increment(1);
    // Another connection to the same node may have won: then we are, or are about to be,
    // connected to it.
    let winner = match (&error, peer) {
        (HandshakeFailed::Superseded, Some(peer)) => Some(peer.name),
        (
            HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::Duplicate { .. })),
            Some(peer),
        ) => Some(peer.name),
        (
            HandshakeFailed::Protocol(HandshakeError::RefusedByPeer(Refusal::Duplicate { node })),
            _,
        ) => Some(node.clone()),
        _ => None,
    };
    match winner {
        Some(name) if await_up(dist, &mut events, &name, config.handshake_timeout).await => {
            Ok(name)
        }
        _ => Err(ConnectError::Handshake {
            addr: addr.into(),
            source: error,
        }),
    }
}

/// Runs the acceptor's side of a new connection from `remote`, and its link if it succeeds.
pub(crate) async fn accept(dist: Arc<Dist>, read: ReadHalf, mut write: WriteHalf, remote: String) {
    let conn = dist.peers.new_conn_id();
    let cancel = dist.tasks.child_token();
    let deadline = dist.config.handshake_timeout;
    let mut frames = handshake_frames(read);
    let mut peer_id = None;
    let outcome = tokio::time::timeout(
        deadline,
        respond(&dist, conn, &cancel, &mut frames, &mut write, &mut peer_id),
    )
    .await
    .unwrap_or(Err(HandshakeFailed::Timeout(deadline)));
    let error = match outcome {
        Ok(peer) => return driver::start(&dist, conn, peer, frames, write),
        Err(error) => error,
    };
    if let Some(id) = peer_id {
        dist.peers.abandon(conn, id);
    }
    metrics::counter!("gen_cluster_handshake_failures_total", "role" => "acceptor").increment(1);
    match &error {
        HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::Duplicate { .. }))
        | HandshakeFailed::Superseded => tracing::debug!(%remote, "duplicate connection refused"),
        // Discovery lists this node among the others; its dial is expected.
        HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::SelfConnect)) => {
            tracing::debug!(%remote, "connection from this node itself refused")
        }
        _ => tracing::warn!(%remote, %error, "incoming connection dropped: handshake failed"),
    }
}

/// The acceptor's steps: Hello in, Challenge out, Response in, Confirm out.
async fn respond(
    dist: &Dist,
    conn: u64,
    cancel: &CancellationToken,
    frames: &mut Frames,
    write: &mut WriteHalf,
    peer_id: &mut Option<NodeId>,
) -> Result<Identity, HandshakeFailed> {
    let machine = handshake::accept(dist.handshake_config(), clock::nonce());
    let hello = next_frame(frames, cancel).await?;
    let hello = fail_with_notice(machine.handle(&hello), write).await?;
    *peer_id = Some(hello.peer().name.id());
    if let Err(refusal) = arbitrate(dist, conn, hello.peer(), Step::HelloReceived, cancel) {
        return Err(send_notice(hello.refuse(refusal), write).await);
    }
    let (machine, challenge) = hello.admit();
    write_frame(write, &challenge).await?;
    let response = next_frame(frames, cancel).await?;
    let verified = fail_with_notice(machine.handle(&response), write).await?;
    if let Err(refusal) = arbitrate(dist, conn, verified.peer(), Step::ResponseVerified, cancel) {
        return Err(send_notice(verified.refuse(refusal), write).await);
    }
    let (established, confirm) = verified.confirm();
    write_frame(write, &confirm).await?;
    Ok(established.peer)
}

/// The initiator's steps: Hello out, Challenge in, Response out, Confirm in.
async fn initiate(
    dist: &Dist,
    conn: u64,
    cancel: &CancellationToken,
    frames: &mut Frames,
    write: &mut WriteHalf,
    peer: &mut Option<Identity>,
) -> Result<Identity, HandshakeFailed> {
    let (machine, hello) = handshake::initiate(dist.handshake_config(), clock::nonce());
    write_frame(write, &hello).await?;
    let challenge = next_frame(frames, cancel).await?;
    let received = fail_with_notice(machine.handle(&challenge), write).await?;
    *peer = Some(received.peer().clone());
    if let Err(refusal) = arbitrate(dist, conn, received.peer(), Step::ChallengeReceived, cancel) {
        return Err(send_notice(received.refuse(refusal), write).await);
    }
    let (machine, response) = received.proceed();
    write_frame(write, &response).await?;
    let confirm = next_frame(frames, cancel).await?;
    let established = fail_with_notice(machine.handle(&confirm), write).await?;
    Ok(established.peer)
}

/// Asks the peer table whether the handshake may go on; a link it replaces (an earlier life of
/// the peer) is stopped and its loss reported at once, before the new one can come up.
fn arbitrate(
    dist: &Dist,
    conn: u64,
    peer: &Identity,
    step: Step,
    cancel: &CancellationToken,
) -> Result<(), Refusal> {
    dist.peers
        .arbitrate(conn, peer, step, cancel, |replaced, state| {
            let reason = replaced.note_down_reason(DownReason::Restarted);
            replaced.cancel();
            dist.report_down(replaced, state, reason);
        })
}

/// Waits until `name` is connected, at most `timeout`.
async fn await_up(
    dist: &Dist,
    events: &mut broadcast::Receiver<NodeEvent>,
    name: &NodeName,
    timeout: Duration,
) -> bool {
    let up = async {
        loop {
            if dist.peers.is_connected(name) {
                return;
            }
            if let Err(broadcast::error::RecvError::Closed) = events.recv().await {
                return std::future::pending().await;
            }
        }
    };
    tokio::time::timeout(timeout, up).await.is_ok()
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
            Some(Err(error)) => Err(HandshakeFailed::Io(error)),
            None => Err(HandshakeFailed::Closed),
        },
    }
}

async fn write_frame(write: &mut WriteHalf, body: &[u8]) -> Result<(), HandshakeFailed> {
    // The machine's frames are at most MAX_HANDSHAKE_FRAME bytes.
    let len = u32::try_from(body.len()).map_err(|_| {
        HandshakeFailed::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ))
    })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    write.write_all(&frame).await.map_err(HandshakeFailed::Io)
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

//! The handshake of one connection, on either side, over the sans-IO typestate machine of
//! `gen_cluster_proto::handshake` (whose module docs give the order of checks): this module reads
//! and writes its frames with deadlines, asks the peer table to arbitrate once the peer has proved
//! the secret, sends the machine's refusal notice when it fails, and hands an established
//! connection to the link driver.
//!
//! [`dial`] is the initiator's side, from dial to link; the acceptor's side is [`accept`], run by
//! the listener for each incoming connection with its place in the admission pool. Until the
//! dialer has proved the secret the acceptor touches no table: it answers, or drops the
//! connection, and nothing else. Over TLS, each side also refuses, once the secret is proved and
//! before the table hears of it, a peer whose certificate is not valid for the name it claims.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gen_cluster_proto::NodeName;
use gen_cluster_proto::arbitration::Step;
use gen_cluster_proto::handshake::{
    self, HandshakeError, HandshakeFailure, Identity, MAX_HANDSHAKE_FRAME, Refusal,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::dist::Dist;
use crate::dist::admission::Ticket;
use crate::dist::driver::{self, Heard};
use crate::error::{ConnectError, HandshakeFailed};
use crate::events::{DownReason, NodeEvent};
use crate::telemetry;
use crate::transport::{Connection, Opening, PeerCertificate, WriteHalf};

/// Frames read from a connection: handshake frames first (capped small), then link frames.
pub(crate) type Frames = FramedRead<Heard, LengthDelimitedCodec>;

/// Dials `addr` and runs the handshake as initiator; returns the peer's name once the link is
/// up, or once another connection to the same peer has won and is up.
pub(crate) async fn dial(dist: &Arc<Dist>, addr: &str) -> Result<NodeName, ConnectError> {
    if dist.tasks.is_stopping() {
        return Err(ConnectError::ShuttingDown);
    }
    let config = &dist.config;
    let Connection {
        read,
        mut write,
        certificate,
    } = connect(dist, addr).await?;
    let conn = dist.peers.new_conn_id();
    let cancel = dist.tasks.child_token();
    let mut frames = handshake_frames(Heard::new(read, dist.epoch));
    let mut proven = None;
    let mut events = dist.events.subscribe();
    let outcome = tokio::time::timeout(
        config.handshake_timeout,
        initiate(
            dist,
            conn,
            &cancel,
            &mut frames,
            &mut write,
            certificate.as_ref(),
            &mut proven,
        ),
    )
    .await
    .unwrap_or(Err(HandshakeFailed::Timeout(config.handshake_timeout)));
    let error = match outcome {
        Ok(link) => {
            let name = link.peer().clone();
            count("initiator", None);
            driver::run(dist, link, frames, write);
            return Ok(name);
        }
        Err(error) => error,
    };
    count("initiator", Some(&error));
    if let Some(peer) = &proven {
        dist.peers.abandon(conn, peer.name.id());
    }
    // Another connection to the same node may have won: then we are, or are about to be,
    // connected to it.
    let winner = match (&error, proven) {
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

/// How often a dial starts a fresh connection attempt beside the ones pending.
const FRESH_ATTEMPT_EVERY: Duration = Duration::from_millis(50);

/// How long a fresh attempt is kept: long enough for a connection over a slow path, short enough
/// that the attempts pending at once stay few (this over [`FRESH_ATTEMPT_EVERY`], besides the
/// first).
const FRESH_ATTEMPT_LIFE: Duration = Duration::from_millis(400);

/// Opens a connection to `addr` within the node's `connect_timeout`. The address is looked up
/// once, then dialed. A connection attempt whose first packet a cut path swallowed is retried by
/// the kernel only after 1, 2, 4 s…, so a path that comes back would wait for that: besides the
/// first attempt (kept for the whole timeout, for slow paths), a fresh one starts every
/// [`FRESH_ATTEMPT_EVERY`], each kept for [`FRESH_ATTEMPT_LIFE`]; the first to connect wins and
/// the others are dropped. Each attempt tries the addresses looked up in order until one
/// connects; an attempt that fails on all of them (refused, no route) ends the dial with its
/// last error: the answer is in.
async fn connect(dist: &Dist, addr: &str) -> Result<Connection, ConnectError> {
    let timeout = dist.config.connect_timeout;
    let deadline = Instant::now() + timeout;
    let timed_out = || ConnectError::Timeout {
        addr: addr.into(),
        after: timeout,
    };
    let targets = match tokio::time::timeout_at(deadline, dist.dialer.resolve(addr.into())).await {
        Ok(Ok(targets)) => targets,
        Ok(Err(source)) => {
            return Err(ConnectError::Lookup {
                addr: addr.into(),
                source,
            });
        }
        Err(_) => return Err(timed_out()),
    };
    let attempt = |life: Duration| tokio::time::timeout(life, dial_first(dist, &targets));
    let mut attempts = futures::stream::FuturesUnordered::new();
    attempts.push(attempt(timeout));
    let mut fresh =
        tokio::time::interval_at(Instant::now() + FRESH_ATTEMPT_EVERY, FRESH_ATTEMPT_EVERY);
    fresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let opening = loop {
        tokio::select! {
            Some(outcome) = attempts.next() => match outcome {
                Ok(Ok(opening)) => break opening,
                Ok(Err(source)) => return Err(ConnectError::Io { addr: addr.into(), source }),
                // A fresh attempt's time is up; the others go on.
                Err(_) => {}
            },
            _ = fresh.tick() => attempts.push(attempt(FRESH_ATTEMPT_LIFE)),
            _ = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        }
    };
    // The one connection kept is opened (for TLS: its TLS handshake), the others dropped.
    drop(attempts);
    match tokio::time::timeout_at(deadline, opening).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => {
            let source = HandshakeFailed::Transport(source);
            count("initiator", Some(&source));
            Err(ConnectError::Handshake {
                addr: addr.into(),
                source,
            })
        }
        Err(_) => Err(timed_out()),
    }
}

/// Dials `targets` (never empty) in order: the first connection made, or the last error.
async fn dial_first(dist: &Dist, targets: &[String]) -> io::Result<Opening> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to dial");
    for target in targets {
        match dist.dialer.dial(target.clone()).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Runs the acceptor's side of a new connection from `remote`: `opening` readies it (for TLS,
/// the TLS handshake), then the handshake runs, holding `ticket` (its place in the admission
/// pool) until the dialer proves the secret, and its link if it succeeds. Opening and proving
/// have `auth_timeout` each: a TLS handshake costs a round trip more than the proof, and a slow
/// path should not fail for it.
pub(crate) async fn accept(
    dist: Arc<Dist>,
    opening: impl Future<Output = io::Result<Connection>>,
    remote: String,
    ticket: Ticket,
) {
    let auth_timeout = dist.config.auth_timeout;
    let mut evicted = std::pin::pin!(ticket.evicted());
    let opened = tokio::select! {
        _ = &mut evicted => Err(HandshakeFailed::Evicted),
        opened = tokio::time::timeout(auth_timeout, opening) => match opened {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(HandshakeFailed::Transport(error)),
            Err(_) => Err(HandshakeFailed::Timeout(auth_timeout)),
        },
    };
    let Connection {
        read,
        mut write,
        certificate,
    } = match opened {
        Ok(connection) => connection,
        Err(error) => return report_refused(&dist, &remote, &Caller::default(), &error),
    };
    let auth_deadline = Instant::now() + auth_timeout;
    let conn = dist.peers.new_conn_id();
    let cancel = dist.tasks.child_token();
    let mut frames = handshake_frames(Heard::new(read, dist.epoch));
    let mut caller = Caller::default();
    let accepting = Accepting {
        conn,
        cancel: &cancel,
        auth_deadline,
        certificate: certificate.as_ref(),
    };
    let outcome = tokio::select! {
        _ = evicted => Err(HandshakeFailed::Evicted),
        outcome = respond(&dist, accepting, &mut frames, &mut write, ticket, &mut caller) => outcome,
    };
    let error = match outcome {
        Ok(established) => {
            let heard = frames.get_ref().last_read();
            match driver::establish(&dist, conn, &established, heard) {
                Some(link) => {
                    count("acceptor", None);
                    driver::run(&dist, link, frames, write);
                }
                None => count("acceptor", Some(&HandshakeFailed::Superseded)),
            }
            return;
        }
        Err(error) => error,
    };
    if let (true, Some(name)) = (caller.proven, &caller.name) {
        dist.peers.abandon(conn, name.id());
    }
    report_refused(&dist, &remote, &caller, &error);
}

/// Counts and logs (held back to one line a second per cause) an incoming connection that did
/// not become a link.
fn report_refused(dist: &Dist, remote: &str, caller: &Caller, error: &HandshakeFailed) {
    count("acceptor", Some(error));
    let cause = match error {
        // A connection that lost to another one to the same node, or this node's own dial of
        // itself (discovery lists it among the others): expected.
        HandshakeFailed::Protocol(
            HandshakeError::RefusedPeer(Refusal::Duplicate { .. } | Refusal::SelfConnect)
            | HandshakeError::RefusedByPeer(Refusal::Duplicate { .. }),
        )
        | HandshakeFailed::Superseded => {
            tracing::debug!(%remote, %error, "incoming connection closed");
            return;
        }
        HandshakeFailed::Evicted => "evicted",
        HandshakeFailed::Timeout(_) => "timeout",
        HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::BadProof)) => "bad proof",
        HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::NameClash { .. })) => {
            "name clash"
        }
        HandshakeFailed::Protocol(HandshakeError::RefusedPeer(Refusal::Uncertified { .. })) => {
            "certificate name"
        }
        HandshakeFailed::Protocol(_) => "protocol",
        HandshakeFailed::Transport(_) => "transport",
        HandshakeFailed::Unrecognized => "not a gen_cluster handshake",
        HandshakeFailed::Closed | HandshakeFailed::Io(_) => "connection",
    };
    // The name the dialer gave (unproven unless it got past the proof), to tell who it is.
    let peer = caller
        .name
        .as_ref()
        .map_or("(no name given)", NodeName::as_str);
    if let Some(held_back) = dist.throttle.allow(cause) {
        let error = crate::error::with_causes(error);
        tracing::warn!(%remote, %peer, %error, held_back, "incoming connection dropped: handshake failed");
    }
}

/// Counts a handshake of `role` by its outcome: `None` for success, else the error.
fn count(role: &'static str, error: Option<&HandshakeFailed>) {
    use HandshakeError::{RefusedByPeer, RefusedPeer};
    let outcome = match error {
        None => "ok",
        Some(HandshakeFailed::Protocol(RefusedPeer(refusal) | RefusedByPeer(refusal))) => {
            match refusal {
                Refusal::BadProof => "bad_cookie",
                Refusal::WrongCluster { .. } => "other_cluster",
                Refusal::Uncertified { .. } => "uncertified",
                Refusal::Duplicate { .. } | Refusal::SelfConnect => "superseded",
                _ => "other",
            }
        }
        Some(HandshakeFailed::Timeout(_)) => "timeout",
        Some(HandshakeFailed::Evicted) => "evicted",
        Some(HandshakeFailed::Superseded) => "superseded",
        Some(HandshakeFailed::Transport(_) | HandshakeFailed::Unrecognized) => "transport",
        Some(_) => "other",
    };
    metrics::counter!(telemetry::HANDSHAKES, "role" => role, "outcome" => outcome).increment(1);
}

/// What the acceptor's steps work with besides the connection.
struct Accepting<'a> {
    conn: u64,
    cancel: &'a CancellationToken,
    /// When the dialer must have proved the secret.
    auth_deadline: Instant,
    /// The dialer's certificate, over TLS.
    certificate: Option<&'a PeerCertificate>,
}

/// What an acceptor has learned of the dialer so far.
#[derive(Default)]
struct Caller {
    /// The name it gave in its Hello (a claim until `proven`).
    name: Option<NodeName>,
    /// Whether it proved the secret as that node, and the peer table holds its handshake.
    proven: bool,
}

/// The acceptor's steps: Hello in, Challenge out, Response in (the dialer's proof: only now does
/// the peer table hear of it), Confirm out, Ready in.
async fn respond(
    dist: &Dist,
    accepting: Accepting<'_>,
    frames: &mut Frames,
    write: &mut WriteHalf,
    ticket: Ticket,
    caller: &mut Caller,
) -> Result<handshake::Established, HandshakeFailed> {
    let config = &dist.config;
    let started = Instant::now();
    let Accepting {
        conn,
        cancel,
        auth_deadline,
        certificate,
    } = accepting;
    let machine = handshake::accept(dist.handshake_config(), clock::nonce());
    let unproven = async {
        let hello = next_frame(frames, cancel).await?;
        let hello = fail_with_notice(machine.handle(&hello), write).await?;
        caller.name = Some(hello.peer().name.clone());
        ticket.greeted();
        let (machine, challenge) = hello.admit();
        write_frame(write, &challenge).await?;
        let response = next_frame(frames, cancel).await?;
        fail_with_notice(machine.handle(&response), write).await
    };
    let verified = tokio::time::timeout_at(auth_deadline, unproven)
        .await
        .unwrap_or(Err(HandshakeFailed::Timeout(config.auth_timeout)))?;
    drop(ticket);
    let checked = certified(certificate, verified.peer())
        .and_then(|()| arbitrate(dist, conn, verified.peer(), Step::ResponseVerified, cancel));
    if let Err(refusal) = checked {
        return Err(send_notice(verified.refuse(refusal), write).await);
    }
    caller.proven = true;
    let (machine, confirm) = verified.confirm();
    let rest = config.handshake_timeout.saturating_sub(started.elapsed());
    let proved = async {
        write_frame(write, &confirm).await?;
        let ready = next_frame(frames, cancel).await?;
        fail_with_notice(machine.handle(&ready), write).await
    };
    tokio::time::timeout(rest, proved)
        .await
        .unwrap_or(Err(HandshakeFailed::Timeout(config.handshake_timeout)))
}

/// The initiator's steps: Hello out, Challenge in, Response out, Confirm in (the acceptor's
/// proof: only now does the peer table hear of it), then the link established and Ready out.
async fn initiate(
    dist: &Arc<Dist>,
    conn: u64,
    cancel: &CancellationToken,
    frames: &mut Frames,
    write: &mut WriteHalf,
    certificate: Option<&PeerCertificate>,
    proven: &mut Option<Identity>,
) -> Result<driver::NewLink, HandshakeFailed> {
    let (machine, hello) = handshake::initiate(dist.handshake_config(), clock::nonce());
    write_frame(write, &hello).await?;
    let challenge = next_frame(frames, cancel).await?;
    let (machine, response) = fail_with_notice(machine.handle(&challenge), write).await?;
    // Over TLS, no proof of the secret goes to a node whose certificate does not name it.
    if let Err(refusal) = certified(certificate, machine.peer()) {
        return Err(send_notice(machine.refuse(refusal), write).await);
    }
    write_frame(write, &response).await?;
    let confirm = next_frame(frames, cancel).await?;
    let verified = fail_with_notice(machine.handle(&confirm), write).await?;
    *proven = Some(verified.peer().clone());
    if let Err(refusal) = arbitrate(dist, conn, verified.peer(), Step::ConfirmVerified, cancel) {
        return Err(send_notice(verified.refuse(refusal), write).await);
    }
    let (established, ready) = verified.ready();
    // Superseded between the decision and now, or the node is shutting down: closing the
    // connection tells the acceptor, which waits for Ready.
    let heard = frames.get_ref().last_heard();
    let link =
        driver::establish(dist, conn, &established, heard).ok_or(HandshakeFailed::Superseded)?;
    write_frame(write, &ready).await?;
    Ok(link)
}

/// Over TLS, whether the peer's certificate is valid for the name it proved the secret as.
fn certified(certificate: Option<&PeerCertificate>, peer: &Identity) -> Result<(), Refusal> {
    match certificate {
        Some(certificate) if !certificate.certifies(&peer.name) => Err(Refusal::Uncertified {
            node: peer.name.clone(),
        }),
        _ => Ok(()),
    }
}

/// Asks the peer table whether the handshake with the proven `peer` may go on; a link it
/// replaces (an earlier life of the peer) is stopped and its loss reported at once, before the
/// new one can come up.
fn arbitrate(
    dist: &Dist,
    conn: u64,
    peer: &Identity,
    step: Step,
    cancel: &CancellationToken,
) -> Result<(), Refusal> {
    // A link whose peer spoke within half the failure detector's deadline is alive (a live peer
    // sends at least a heartbeat per interval, and its interval is far below the deadline): a
    // later life of its name is a clash.
    let clash_window = dist.config.liveness.down_after / 2;
    dist.peers
        .arbitrate(conn, peer, step, cancel, clash_window, |replaced, state| {
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

fn handshake_frames(read: Heard) -> Frames {
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
            // No handshake frame is that long: a TLS record, an HTTP request...
            Some(Err(error)) if error.get_ref().is_some_and(|e| e.is::<LengthDelimitedCodecError>()) => {
                Err(HandshakeFailed::Unrecognized)
            }
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

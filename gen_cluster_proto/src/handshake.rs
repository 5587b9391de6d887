//! The connection handshake as a typestate machine: each state is a type, consumed by the input
//! that moves it on, so a failed handshake cannot be continued and a step cannot be skipped.
//!
//! ```text
//! initiator                                  acceptor
//!   initiate ── Hello(versions, cluster, identity, nonce_i) ──▶ AwaitHello::handle
//!                                                 (magic, cluster, version, self-connect)
//!   AwaitChallenge::handle ◀── Challenge(version, cluster, identity, nonce_a) ── admit
//!   (cluster, version, self-connect)
//!           ── Response(proof_i) ──▶ AwaitResponse::handle   (proof_i checked: ResponseVerified,
//!                                                             the runtime decides)
//!   AwaitConfirm::handle ◀── Confirm(proof_a) ── confirm
//!   (proof_a checked: ConfirmVerified,
//!    the runtime decides)
//!   ready ── Ready ──▶ AwaitReady::handle
//!   → Established                                             → Established
//! ```
//!
//! **The order of checks.** Before a side has verified its peer's proof it checks only what the
//! peer's own bytes say about the protocol (magic, cluster name, version) and that the peer is
//! not itself; it consults no table and changes no state, so an unauthenticated dialer or a fake
//! listener can only be refused or ignored. Each side decides whether to keep the connection
//! only once the peer has proved the secret: the acceptor after the Response (its answer is the
//! Confirm, or a refusal), the initiator after the Confirm (its answer is Ready, or a refusal).
//! The acceptor's connection is established only when Ready arrives, so the initiator's decision
//! — which may prefer a connection crossing this one — is the last word, and neither side ever
//! announces a connection the other drops.
//!
//! Each proof is HMAC-SHA256 keyed by the cluster secret over a transcript of everything both
//! sides said (version, cluster, both identities, both nonces) and a label naming the role, so the
//! secret never crosses the wire, a proof cannot be replayed on another connection or reflected
//! back, and it is checked in constant time. The initiator proves first, so an unauthenticated
//! dialer learns nothing about the secret. Nonces are supplied by the caller (fresh random bytes
//! in the runtime, fixed ones in tests).
//!
//! Every failure comes as a [`HandshakeFailure`]: the error, and — where the peer deserves to
//! know why — a [`Refusal`] notice to send before closing.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Incarnation, NodeName};

/// The largest handshake frame accepted, in bytes: handshake messages are small, and a peer that
/// has not proved anything yet gets no more.
pub const MAX_HANDSHAKE_FRAME: usize = 2048;

/// The protocol versions this build speaks: 4 to 7 (version 1 decided on peers' unproven claims, and
/// had no Ready; version 2 had no hidden nodes and keyed its proofs with the secret itself;
/// version 3's view records had no lost links and its registries no `Sync`).
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange { min: 4, max: 7 };

/// The first version whose links carry `Ping` and `Pong` (see `wire::Header`): a link of an
/// older version sends none.
pub const ROUND_TRIP_VERSION: u16 = 5;

/// The first version whose members heartbeat only when their peer asks (`wire::Header::Heartbeats`,
/// see `liveness`): a link of an older version heartbeats both ways all the time.
pub const HEARTBEATS_ON_REQUEST_VERSION: u16 = 6;

/// The first version whose links carry the cluster view's record changes
/// (`view::ViewMessage::Changes`): a link of an older version is sent whole records.
pub const RECORD_CHANGES_VERSION: u16 = 7;

/// The first bytes of every Hello, so that a stray client of another protocol is told apart
/// from a peer of another version.
pub const MAGIC: [u8; 4] = *b"GCRS";

/// Fresh random bytes that make each handshake's transcript unique.
pub type Nonce = [u8; 32];

type Proof = [u8; 32];

/// An inclusive range of protocol versions.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionRange {
    /// Oldest version spoken.
    pub min: u16,
    /// Newest version spoken.
    pub max: u16,
}

impl VersionRange {
    /// The newest version both ranges contain, if any.
    pub fn negotiate(self, other: VersionRange) -> Option<u16> {
        let best = self.max.min(other.max);
        (best >= self.min.max(other.min)).then_some(best)
    }
}

/// Who a node is, as told in the handshake.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// The node's name.
    pub name: NodeName,
    /// Which life of the node this is.
    pub incarnation: Incarnation,
    /// The address the node listens on, so peers can tell others how to reach it (at most 255
    /// bytes).
    pub listen: String,
    /// A hidden node (a tool or a client) is not a member: its peers do not report it up or
    /// down, do not tell others of it, and leave it out of elections and names.
    pub hidden: bool,
}

/// What every handshake of one node needs.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// The cluster's name; a peer of another cluster is refused.
    pub cluster: String,
    /// The shared cluster secret (the cookie).
    pub secret: Vec<u8>,
    /// This node.
    pub local: Identity,
    /// The versions this node speaks (normally [`SUPPORTED_VERSIONS`]).
    pub versions: VersionRange,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("cluster", &self.cluster)
            .field("secret", &"<redacted>")
            .field("local", &self.local)
            .field("versions", &self.versions)
            .finish()
    }
}

/// Why a side refuses a handshake, told to the other side before closing.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The nodes belong to different clusters.
    #[error("cluster name mismatch: this node is in cluster {expected:?}")]
    WrongCluster {
        /// The refusing node's cluster.
        expected: String,
    },
    /// No protocol version in common.
    #[error("no common protocol version: this node speaks {supported:?}")]
    IncompatibleVersion {
        /// What the refusing node speaks.
        supported: VersionRange,
    },
    /// The proof of the cluster secret was wrong: the cookies differ.
    #[error(
        "authentication failed: the cluster secrets (cookies) differ; give every node the same \
         cookie (GEN_CLUSTER_COOKIE or --cookie-file for the CLI)"
    )]
    BadProof,
    /// The nodes are already connected (or connecting on a connection that wins).
    #[error("{node} is already connected to this node")]
    Duplicate {
        /// The refusing node (not authenticated: check that it is connected).
        node: NodeName,
    },
    /// The peer is an earlier life of a node whose later life is already connected.
    #[error("stale incarnation: a newer start of this node is connected")]
    StaleIncarnation,
    /// A node dialed itself.
    #[error("a node cannot connect to itself")]
    SelfConnect,
    /// The peer's name hashes to the id of another connected node; rename one of them.
    #[error("node id collision with another connected node; rename one of them")]
    IdCollision,
    /// A live node of the same name, in an earlier life, is connected to the refusing node:
    /// two processes claim one name.
    #[error(
        "name clash: a live node named {node} is already connected; give one of the two processes \
         another name (a restarted node is let in once its earlier connection has gone silent)"
    )]
    NameClash {
        /// The name claimed twice.
        node: NodeName,
    },
    /// The peer's TLS certificate is not valid for the name it claims (the refusing node names
    /// the peer).
    #[error(
        "the TLS certificate presented is not valid for the node name {node}: \
         give that node a certificate whose DNS names include its node name"
    )]
    Uncertified {
        /// The name the certificate does not certify.
        node: NodeName,
    },
}

/// Why a handshake failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer sent bytes that are not a handshake message of this protocol.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// The peer sent a valid message at the wrong step.
    #[error("unexpected handshake message: expected {expected}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
    },
    /// This side refuses the peer.
    #[error("refused the peer: {0}")]
    RefusedPeer(Refusal),
    /// The peer refused this side.
    #[error("the peer refused us: {0}")]
    RefusedByPeer(Refusal),
}

/// A failed handshake: the error, and the notice to send the peer (if any) before closing.
#[derive(Debug)]
pub struct HandshakeFailure {
    /// What went wrong.
    pub error: HandshakeError,
    /// An encoded frame body to send before closing, telling the peer why.
    pub notice: Option<Vec<u8>>,
}

impl HandshakeFailure {
    fn silent(error: HandshakeError) -> Self {
        Self {
            error,
            notice: None,
        }
    }

    fn refusing(refusal: Refusal) -> Self {
        Self {
            notice: Some(encode(&Message::Refused {
                reason: refusal.clone(),
            })),
            error: HandshakeError::RefusedPeer(refusal),
        }
    }
}

/// Which side of the connection a node played.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Dialed the connection.
    Initiator,
    /// Accepted it.
    Acceptor,
}

/// A completed handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// The authenticated peer.
    pub peer: Identity,
    /// The negotiated protocol version.
    pub version: u16,
    /// Which side this node played.
    pub role: Role,
}

#[derive(Serialize, Deserialize, Debug)]
enum Message {
    Hello {
        magic: [u8; 4],
        versions: VersionRange,
        cluster: String,
        identity: Identity,
        nonce: Nonce,
    },
    Challenge {
        version: u16,
        cluster: String,
        identity: Identity,
        nonce: Nonce,
    },
    Response {
        proof: Proof,
    },
    Confirm {
        proof: Proof,
    },
    Ready,
    Refused {
        reason: Refusal,
    },
}

/// Starts a handshake as the dialing side: returns the state and the Hello frame body to send.
pub fn initiate(config: HandshakeConfig, nonce: Nonce) -> (AwaitChallenge, Vec<u8>) {
    let hello = encode(&Message::Hello {
        magic: MAGIC,
        versions: config.versions,
        cluster: config.cluster.clone(),
        identity: config.local.clone(),
        nonce,
    });
    (AwaitChallenge { config, nonce }, hello)
}

/// Starts a handshake as the accepting side.
pub fn accept(config: HandshakeConfig, nonce: Nonce) -> AwaitHello {
    AwaitHello { config, nonce }
}

/// Initiator: Hello sent, waiting for the acceptor's Challenge.
#[derive(Debug)]
pub struct AwaitChallenge {
    config: HandshakeConfig,
    nonce: Nonce,
}

impl AwaitChallenge {
    /// Handles the acceptor's answer to the Hello: returns the state and the Response frame
    /// body (this side's proof) to send.
    pub fn handle(self, frame: &[u8]) -> Result<(AwaitConfirm, Vec<u8>), HandshakeFailure> {
        let Message::Challenge {
            version,
            cluster,
            identity,
            nonce,
        } = decode(frame, "Challenge")?
        else {
            unreachable!("decode checks the kind")
        };
        if cluster != self.config.cluster {
            return Err(HandshakeFailure::refusing(Refusal::WrongCluster {
                expected: self.config.cluster,
            }));
        }
        if !(self.config.versions.min..=self.config.versions.max).contains(&version) {
            return Err(HandshakeFailure::refusing(Refusal::IncompatibleVersion {
                supported: self.config.versions,
            }));
        }
        if let Some(refusal) = same_name(&self.config.local, &identity) {
            return Err(HandshakeFailure::refusing(refusal));
        }
        let transcript = Transcript {
            version,
            cluster: &self.config.cluster,
            initiator: &self.config.local,
            acceptor: &identity,
            initiator_nonce: &self.nonce,
            acceptor_nonce: &nonce,
        };
        let response = encode(&Message::Response {
            proof: transcript.proof(&self.config.secret, INITIATOR_LABEL),
        });
        let expected = transcript.mac(&self.config.secret, ACCEPTOR_LABEL);
        let await_confirm = AwaitConfirm {
            established: Established {
                peer: identity,
                version,
                role: Role::Initiator,
            },
            expected,
        };
        Ok((await_confirm, response))
    }
}

/// Initiator: proof sent, waiting for the acceptor's proof.
#[derive(Debug)]
pub struct AwaitConfirm {
    established: Established,
    expected: Hmac<Sha256>,
}

impl AwaitConfirm {
    /// The acceptor as it claims to be (not yet proven).
    pub fn peer(&self) -> &Identity {
        &self.established.peer
    }

    /// Refuses the acceptor before sending this side's proof (a claim the transport
    /// disproves): returns the notice to send.
    pub fn refuse(self, refusal: Refusal) -> HandshakeFailure {
        HandshakeFailure::refusing(refusal)
    }

    /// Checks the acceptor's proof.
    pub fn handle(self, frame: &[u8]) -> Result<ConfirmVerified, HandshakeFailure> {
        let Message::Confirm { proof } = decode(frame, "Confirm")? else {
            unreachable!("decode checks the kind")
        };
        self.expected
            .verify_slice(&proof)
            .map_err(|_| HandshakeFailure::refusing(Refusal::BadProof))?;
        Ok(ConfirmVerified {
            established: self.established,
        })
    }
}

/// Initiator: the acceptor proved the secret and accepted; the runtime decides whether to keep
/// this connection.
#[derive(Debug)]
pub struct ConfirmVerified {
    established: Established,
}

impl ConfirmVerified {
    /// The authenticated acceptor.
    pub fn peer(&self) -> &Identity {
        &self.established.peer
    }

    /// Keeps the connection: returns it and the Ready frame body to send.
    pub fn ready(self) -> (Established, Vec<u8>) {
        (self.established, encode(&Message::Ready))
    }

    /// Drops the connection (another one to the same peer wins): returns the notice to send.
    pub fn refuse(self, refusal: Refusal) -> HandshakeFailure {
        HandshakeFailure::refusing(refusal)
    }
}

/// Acceptor: waiting for the dialer's Hello.
#[derive(Debug)]
pub struct AwaitHello {
    config: HandshakeConfig,
    nonce: Nonce,
}

impl AwaitHello {
    /// Handles the dialer's Hello: checks the protocol, the cluster name and the version.
    pub fn handle(self, frame: &[u8]) -> Result<HelloReceived, HandshakeFailure> {
        let Message::Hello {
            magic,
            versions,
            cluster,
            identity,
            nonce,
        } = decode(frame, "Hello")?
        else {
            unreachable!("decode checks the kind")
        };
        if magic != MAGIC {
            return Err(HandshakeFailure::silent(HandshakeError::Malformed(
                "bad magic bytes".into(),
            )));
        }
        if cluster != self.config.cluster {
            return Err(HandshakeFailure::refusing(Refusal::WrongCluster {
                expected: self.config.cluster,
            }));
        }
        let Some(version) = self.config.versions.negotiate(versions) else {
            return Err(HandshakeFailure::refusing(Refusal::IncompatibleVersion {
                supported: self.config.versions,
            }));
        };
        if let Some(refusal) = same_name(&self.config.local, &identity) {
            return Err(HandshakeFailure::refusing(refusal));
        }
        Ok(HelloReceived {
            config: self.config,
            nonce: self.nonce,
            peer_nonce: nonce,
            peer: identity,
            version,
        })
    }
}

/// The refusal of a peer that gives this node's own name: this node reached itself (discovery
/// lists it among the others) if it is this life at this address, else another process claims
/// the name.
fn same_name(local: &Identity, peer: &Identity) -> Option<Refusal> {
    if peer.name != local.name {
        return None;
    }
    let itself = peer.incarnation == local.incarnation && peer.listen == local.listen;
    Some(match itself {
        true => Refusal::SelfConnect,
        false => Refusal::NameClash {
            node: peer.name.clone(),
        },
    })
}

/// Acceptor: the dialer's Hello is well formed; it has proved nothing yet.
#[derive(Debug)]
pub struct HelloReceived {
    config: HandshakeConfig,
    nonce: Nonce,
    peer_nonce: Nonce,
    peer: Identity,
    version: u16,
}

impl HelloReceived {
    /// The dialer, as it claims to be (for logs only: nothing it claims is proved yet).
    pub fn peer(&self) -> &Identity {
        &self.peer
    }

    /// Goes on: returns the state and the Challenge frame body to send.
    pub fn admit(self) -> (AwaitResponse, Vec<u8>) {
        let challenge = encode(&Message::Challenge {
            version: self.version,
            cluster: self.config.cluster.clone(),
            identity: self.config.local.clone(),
            nonce: self.nonce,
        });
        (AwaitResponse { hello: self }, challenge)
    }
}

/// Acceptor: Challenge sent, waiting for the dialer's proof.
#[derive(Debug)]
pub struct AwaitResponse {
    hello: HelloReceived,
}

impl AwaitResponse {
    /// Checks the dialer's proof of the secret.
    pub fn handle(self, frame: &[u8]) -> Result<ResponseVerified, HandshakeFailure> {
        let Message::Response { proof } = decode(frame, "Response")? else {
            unreachable!("decode checks the kind")
        };
        let h = &self.hello;
        let transcript = Transcript {
            version: h.version,
            cluster: &h.config.cluster,
            initiator: &h.peer,
            acceptor: &h.config.local,
            initiator_nonce: &h.peer_nonce,
            acceptor_nonce: &h.nonce,
        };
        transcript
            .mac(&h.config.secret, INITIATOR_LABEL)
            .verify_slice(&proof)
            .map_err(|_| HandshakeFailure::refusing(Refusal::BadProof))?;
        let confirm = transcript.proof(&h.config.secret, ACCEPTOR_LABEL);
        Ok(ResponseVerified {
            established: Established {
                peer: self.hello.peer,
                version: self.hello.version,
                role: Role::Acceptor,
            },
            confirm,
        })
    }
}

/// Acceptor: the dialer proved the secret; the runtime decides whether to accept it.
#[derive(Debug)]
pub struct ResponseVerified {
    established: Established,
    confirm: Proof,
}

impl ResponseVerified {
    /// The authenticated dialer.
    pub fn peer(&self) -> &Identity {
        &self.established.peer
    }

    /// Accepts the dialer: returns the state and the Confirm frame body (this side's proof) to
    /// send. The connection is established when the dialer's Ready arrives.
    pub fn confirm(self) -> (AwaitReady, Vec<u8>) {
        let confirm = encode(&Message::Confirm {
            proof: self.confirm,
        });
        let await_ready = AwaitReady {
            established: self.established,
        };
        (await_ready, confirm)
    }

    /// Refuses the dialer (another connection to it wins, or it is an earlier life).
    pub fn refuse(self, refusal: Refusal) -> HandshakeFailure {
        HandshakeFailure::refusing(refusal)
    }
}

/// Acceptor: Confirm sent, waiting for the dialer's decision.
#[derive(Debug)]
pub struct AwaitReady {
    established: Established,
}

impl AwaitReady {
    /// The authenticated dialer.
    pub fn peer(&self) -> &Identity {
        &self.established.peer
    }

    /// Handles the dialer's decision: Ready establishes the connection; a refusal (it kept
    /// another connection to this node) fails it.
    pub fn handle(self, frame: &[u8]) -> Result<Established, HandshakeFailure> {
        let Message::Ready = decode(frame, "Ready")? else {
            unreachable!("decode checks the kind")
        };
        Ok(self.established)
    }
}

const INITIATOR_LABEL: &[u8] = b"gen_cluster v1 initiator proof";
const ACCEPTOR_LABEL: &[u8] = b"gen_cluster v1 acceptor proof";

#[derive(Serialize)]
struct Transcript<'a> {
    version: u16,
    cluster: &'a str,
    initiator: &'a Identity,
    acceptor: &'a Identity,
    initiator_nonce: &'a Nonce,
    acceptor_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], label: &[u8]) -> Hmac<Sha256> {
        // Keyed with the secret's hash, not the secret: HMAC pads short keys with zero bytes,
        // so "abc" and "abc\0" would otherwise prove each other.
        let key = Sha256::digest(secret);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .expect("HMAC accepts keys of any length");
        mac.update(label);
        mac.update(&postcard::to_allocvec(self).expect("a transcript always serializes"));
        mac
    }

    fn proof(&self, secret: &[u8], label: &[u8]) -> Proof {
        self.mac(secret, label).finalize().into_bytes().into()
    }
}

fn encode(message: &Message) -> Vec<u8> {
    postcard::to_allocvec(message).expect("handshake messages always serialize")
}

fn decode(frame: &[u8], expected: &'static str) -> Result<Message, HandshakeFailure> {
    if frame.len() > MAX_HANDSHAKE_FRAME {
        return Err(HandshakeFailure::silent(HandshakeError::Malformed(
            format!(
                "{} bytes exceed the {MAX_HANDSHAKE_FRAME}-byte handshake frame limit",
                frame.len()
            ),
        )));
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(frame)
        .map_err(|e| HandshakeFailure::silent(HandshakeError::Malformed(e.to_string())))?;
    if !rest.is_empty() {
        return Err(HandshakeFailure::silent(HandshakeError::Malformed(
            format!("{} trailing bytes", rest.len()),
        )));
    }
    if message
        .identity()
        .is_some_and(|identity| identity.listen.len() > 255)
    {
        return Err(HandshakeFailure::silent(HandshakeError::Malformed(
            "listen address longer than 255 bytes".into(),
        )));
    }
    match (&message, expected) {
        (Message::Refused { reason }, _) => Err(HandshakeFailure::silent(
            HandshakeError::RefusedByPeer(reason.clone()),
        )),
        (Message::Hello { .. }, "Hello")
        | (Message::Challenge { .. }, "Challenge")
        | (Message::Response { .. }, "Response")
        | (Message::Confirm { .. }, "Confirm")
        | (Message::Ready, "Ready") => Ok(message),
        _ => Err(HandshakeFailure::silent(HandshakeError::Unexpected {
            expected,
        })),
    }
}

impl Message {
    fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Hello { identity, .. } | Self::Challenge { identity, .. } => Some(identity),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(name: &str, cluster: &str, secret: &[u8]) -> HandshakeConfig {
        HandshakeConfig {
            cluster: cluster.into(),
            secret: secret.to_vec(),
            local: Identity {
                name: NodeName::new(name).unwrap(),
                incarnation: Incarnation(1),
                listen: format!("127.0.0.1:{}", name.len()),
                hidden: false,
            },
            versions: SUPPORTED_VERSIONS,
        }
    }

    /// Runs a whole handshake between two configs; returns each side's outcome.
    fn run(
        initiator: HandshakeConfig,
        acceptor: HandshakeConfig,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        let (await_challenge, hello) = initiate(initiator, [1; 32]);
        let hello_received = match accept(acceptor, [2; 32]).handle(&hello) {
            Ok(h) => h,
            Err(f) => {
                let notice = f.notice.expect("a refusal tells the peer");
                let peer_side = await_challenge.handle(&notice).map(|_| unreachable!());
                return (peer_side.map_err(|f| f.error), Err(f.error));
            }
        };
        let (await_response, challenge) = hello_received.admit();
        let (await_confirm, response) = match await_challenge.handle(&challenge) {
            Ok(next) => next,
            Err(f) => {
                return (
                    Err(f.error),
                    Err(HandshakeError::Malformed("aborted".into())),
                );
            }
        };
        let (await_ready, confirm) = match await_response.handle(&response) {
            Ok(verified) => verified.confirm(),
            Err(f) => {
                let notice = f.notice.expect("a refusal tells the peer");
                return (
                    await_confirm
                        .handle(&notice)
                        .map(|_| unreachable!())
                        .map_err(|f| f.error),
                    Err(f.error),
                );
            }
        };
        match await_confirm.handle(&confirm) {
            Ok(verified) => {
                let (ini, ready) = verified.ready();
                (Ok(ini), await_ready.handle(&ready).map_err(|f| f.error))
            }
            Err(f) => (
                Err(f.error),
                Err(HandshakeError::Malformed("aborted".into())),
            ),
        }
    }

    #[test]
    fn same_secret_and_cluster_establish_both_sides() {
        let (i, a) = run(config("a", "c", b"secret"), config("b", "c", b"secret"));
        let i = i.unwrap();
        let a = a.unwrap();
        assert_eq!(i.peer.name.as_str(), "b");
        assert_eq!(a.peer.name.as_str(), "a");
        assert_eq!((i.role, a.role), (Role::Initiator, Role::Acceptor));
        assert_eq!(i.version, SUPPORTED_VERSIONS.max);
    }

    #[test]
    fn an_initiator_that_keeps_another_connection_refuses_after_the_confirm() {
        let (await_challenge, hello) = initiate(config("a", "c", b"s"), [1; 32]);
        let (await_response, challenge) = accept(config("b", "c", b"s"), [2; 32])
            .handle(&hello)
            .unwrap()
            .admit();
        let (await_confirm, response) = await_challenge.handle(&challenge).unwrap();
        let (await_ready, confirm) = await_response.handle(&response).unwrap().confirm();
        let verified = await_confirm.handle(&confirm).unwrap();
        assert_eq!(verified.peer().name.as_str(), "b", "known, and proved");
        let node = verified.peer().name.clone();
        let failure = verified.refuse(Refusal::Duplicate { node: node.clone() });
        let error = await_ready
            .handle(&failure.notice.unwrap())
            .unwrap_err()
            .error;
        assert_eq!(
            error,
            HandshakeError::RefusedByPeer(Refusal::Duplicate { node })
        );
    }

    #[test]
    fn a_wrong_secret_is_refused_and_the_dialer_is_told() {
        let (i, a) = run(config("a", "c", b"secret"), config("b", "c", b"other"));
        assert_eq!(a, Err(HandshakeError::RefusedPeer(Refusal::BadProof)));
        assert_eq!(i, Err(HandshakeError::RefusedByPeer(Refusal::BadProof)));
    }

    #[test]
    fn another_clusters_name_is_refused_at_hello() {
        let (i, a) = run(config("a", "one", b"s"), config("b", "two", b"s"));
        assert!(matches!(
            a,
            Err(HandshakeError::RefusedPeer(Refusal::WrongCluster { .. }))
        ));
        assert!(matches!(
            i,
            Err(HandshakeError::RefusedByPeer(Refusal::WrongCluster { .. }))
        ));
    }

    #[test]
    fn a_node_dialing_itself_is_refused() {
        let (_, a) = run(config("a", "c", b"s"), config("a", "c", b"s"));
        assert_eq!(a, Err(HandshakeError::RefusedPeer(Refusal::SelfConnect)));
    }

    #[test]
    fn another_process_with_the_name_of_the_node_it_dials_is_a_clash() {
        let mut other = config("a", "c", b"s");
        other.local.incarnation = Incarnation(2);
        let (i, a) = run(other, config("a", "c", b"s"));
        let clash = Refusal::NameClash {
            node: NodeName::new("a").unwrap(),
        };
        assert_eq!(a, Err(HandshakeError::RefusedPeer(clash.clone())));
        assert_eq!(i, Err(HandshakeError::RefusedByPeer(clash)));
    }

    #[test]
    fn versions_negotiate_to_the_newest_common_one() {
        let a = VersionRange { min: 1, max: 3 };
        assert_eq!(a.negotiate(VersionRange { min: 2, max: 5 }), Some(3));
        assert_eq!(a.negotiate(VersionRange { min: 4, max: 5 }), None);
    }

    #[test]
    fn disjoint_versions_are_refused() {
        let mut old = config("a", "c", b"s");
        old.versions = VersionRange { min: 0, max: 0 };
        let (i, a) = run(old, config("b", "c", b"s"));
        assert!(matches!(
            a,
            Err(HandshakeError::RefusedPeer(
                Refusal::IncompatibleVersion { .. }
            ))
        ));
        assert!(i.is_err());
    }

    #[test]
    fn a_proof_from_one_connection_fails_on_another() {
        let (await_challenge, hello) = initiate(config("a", "c", b"s"), [1; 32]);
        let (await_response, challenge) = accept(config("b", "c", b"s"), [2; 32])
            .handle(&hello)
            .unwrap()
            .admit();
        let (_, response) = await_challenge.handle(&challenge).unwrap();
        assert!(await_response.handle(&response).is_ok());
        // The same Response replayed against a handshake with a fresh acceptor nonce.
        let (other, _) = accept(config("b", "c", b"s"), [3; 32])
            .handle(&hello)
            .unwrap()
            .admit();
        let failure = other.handle(&response).unwrap_err();
        assert_eq!(
            failure.error,
            HandshakeError::RefusedPeer(Refusal::BadProof)
        );
    }

    #[test]
    fn a_message_at_the_wrong_step_fails_the_handshake() {
        let (_, hello) = initiate(config("a", "c", b"s"), [1; 32]);
        let (await_challenge, _) = initiate(config("x", "c", b"s"), [1; 32]);
        let failure = await_challenge.handle(&hello).unwrap_err();
        assert_eq!(
            failure.error,
            HandshakeError::Unexpected {
                expected: "Challenge"
            }
        );
    }

    #[test]
    fn a_secret_with_trailing_zero_bytes_is_another_secret() {
        let (i, a) = run(config("a", "c", b"abc"), config("b", "c", b"abc\0"));
        assert!(
            i.is_err() || a.is_err(),
            "HMAC's zero padding must not make them equal"
        );
    }

    #[test]
    fn trailing_bytes_fail_the_handshake() {
        let (_, mut hello) = initiate(config("a", "c", b"s"), [1; 32]);
        hello.push(0);
        let failure = accept(config("b", "c", b"s"), [2; 32])
            .handle(&hello)
            .unwrap_err();
        assert!(matches!(failure.error, HandshakeError::Malformed(_)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_establish_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(hello) = accept(config("b", "c", b"s"), [2; 32]).handle(&bytes) {
                let (await_response, _) = hello.admit();
                prop_assert!(await_response.handle(&bytes).is_err());
            }
            let (await_challenge, _) = initiate(config("a", "c", b"s"), [1; 32]);
            if let Ok((await_confirm, _)) = await_challenge.handle(&bytes) {
                prop_assert!(await_confirm.handle(&bytes).is_err());
            }
        }

        #[test]
        fn handshakes_succeed_exactly_when_secrets_and_clusters_match(
            s1 in proptest::collection::vec(any::<u8>(), 0..8),
            s2 in proptest::collection::vec(any::<u8>(), 0..8),
            c1 in "[ab]", c2 in "[ab]",
        ) {
            let (i, a) = run(config("a", &c1, &s1), config("b", &c2, &s2));
            let should = s1 == s2 && c1 == c2;
            prop_assert_eq!(i.is_ok(), should);
            prop_assert_eq!(a.is_ok(), should);
        }
    }
}

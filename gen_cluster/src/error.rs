//! The errors of the runtime: one `#[non_exhaustive]` enum per kind of operation, each variant
//! saying whose fault it is (the caller's input, the peer, the network, this machine) and what to
//! do about it. Errors of the services live beside them (`LeaderCallError`, `DiscoverError`).

use std::path::PathBuf;
use std::time::Duration;

use gen_cluster_proto::ExitReason;
use gen_cluster_proto::handshake::HandshakeError;
use gen_cluster_proto::wire::{CallRefusal, WireError};

use crate::config::ConfigError;

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartNodeError {
    /// The configuration was refused (the caller's input).
    #[error("invalid node configuration")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound (this machine: in use, or not an address here).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listener is bound to any address and this host has no default route to tell which
    /// address other nodes reach it at (this machine: set `advertise`, e.g. `--advertise
    /// 10.0.0.5:4370`, or listen on one address).
    #[error(
        "listening on {bound}, the address other nodes should dial is unknown (no default route): set advertise (--advertise HOST:PORT) or listen on one address"
    )]
    NoAdvertisedAddress {
        /// The bound address.
        bound: String,
        /// Why no route was found.
        source: std::io::Error,
    },
    /// The node's own services could not start (a bug: report it).
    #[error("the node's services could not start")]
    Services(#[source] StartError),
}

/// A connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address did not answer in time (the network, or nothing listens there).
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// How long it waited.
        after: Duration,
    },
    /// The address names a host that could not be looked up (not in DNS or `/etc/hosts`, or
    /// the resolver failed): check the name, or give an IP address.
    #[error("cannot look up the host of {addr}")]
    Lookup {
        /// The address.
        addr: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The address refused or failed the connection.
    #[error("cannot connect to {addr}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The handshake failed: wrong cookie, another cluster, incompatible version…
    #[error("handshake with {addr} failed")]
    Handshake {
        /// The address.
        addr: String,
        /// What failed.
        source: HandshakeFailed,
    },
    /// This node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// `error` and its causes, each after a colon: the whole story for a log line.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

impl ConnectError {
    /// Whether the address turned out to be this node's own.
    pub fn reached_self(&self) -> bool {
        use gen_cluster_proto::handshake::Refusal;
        matches!(
            self,
            ConnectError::Handshake {
                source: HandshakeFailed::Protocol(
                    HandshakeError::RefusedPeer(Refusal::SelfConnect)
                        | HandshakeError::RefusedByPeer(Refusal::SelfConnect)
                ),
                ..
            }
        )
    }
}

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The local name is already registered (the caller's input: pick another name).
    #[error("the name {0:?} is already registered on this node")]
    NameTaken(String),
    /// `init` returned an error or panicked.
    #[error("init failed: {0}")]
    InitFailed(ExitReason),
    /// This node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// An election's settings cannot run (the caller's input: the reason says what to change).
    #[error("the election's settings are invalid: {0}")]
    BadElectionConfig(String),
    /// An election's files in its data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A cluster member's seed node could not be reached.
    #[error("cannot reach the seed")]
    SeedUnreachable(#[source] ConnectError),
    /// A cluster member's seed is connected, but no member holds the cluster's rally name there:
    /// the seed's node runs no member of this cluster.
    #[error("no member holds {rally:?} on the seed's cluster")]
    NoRallyHolder {
        /// The rally name looked for.
        rally: String,
    },
}

/// A file an election keeps in its data directory (its incarnation, or a voter's term) cannot
/// be used: this machine's disk, an operator's edit, or a missing setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The data directory given is empty: it would be the working directory, which is rarely
    /// meant and changes with how the node is started.
    #[error(
        "the data directory is empty; give a directory, or none to draw the incarnation at random"
    )]
    EmptyDataDir,
    /// A voter of a `majority` election was given no data directory: its term and vote must
    /// survive a restart, or it could vote twice in one term.
    #[error(
        "a voter of a majority election needs a data directory to keep its term and vote in; give one"
    )]
    NoDataDir,
    /// The file does not hold what it should.
    #[error(
        "the election file {0} is corrupt; restore it, or remove it to start this node anew (a \
         voter then starts as a new one: do that only while a quorum of the other voters runs)"
    )]
    Corrupt(PathBuf),
    /// The file holds the largest incarnation or term there is: no later one can follow it.
    #[error(
        "the election file {0} holds the largest number there is, which no later incarnation or \
         term can follow; restore it, or remove it to start this node anew"
    )]
    Exhausted(PathBuf),
    /// The file or its directory cannot be read or written.
    #[error("cannot keep the election file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout. The request may still be handled.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No such process (or it belongs to an earlier life of its node).
    #[error("no such process")]
    NoProc,
    /// The process's node is not connected, or the connection was lost during the call: the
    /// request may or may not have been handled.
    #[error("the process's node is not connected")]
    NodeDown,
    /// The process ended, or dropped the reply handle, without replying.
    #[error("the process ended or dropped the call without replying")]
    NoReply,
    /// The process could not decode the request: the caller and the callee disagree on the
    /// message type. The text is the callee's.
    #[error("the process could not decode the request: {0}")]
    BadRequest(String),
    /// The reply could not be decoded as the expected type.
    #[error("cannot decode the reply: {0}")]
    BadReply(DecodeError),
    /// The request could not be encoded, or is larger than the frame limit (the caller's input).
    #[error(transparent)]
    Encode(#[from] WireError),
}

impl From<CallRefusal> for CallError {
    fn from(refusal: CallRefusal) -> Self {
        match refusal {
            CallRefusal::NoProc => CallError::NoProc,
            CallRefusal::BadRequest(why) => CallError::BadRequest(why),
            _ => CallError::NoReply,
        }
    }
}

/// A message could not be decoded as the type its receiver expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A local sender moved a value of another type (sender and receiver disagree on the type).
    #[error("expected a message of type {expected}")]
    WrongType {
        /// The type the receiver expected.
        expected: &'static str,
    },
    /// The bytes from a peer do not decode as the expected type.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// The bytes from a peer decode as the expected type with bytes left over: the peer's type
    /// is another version of it (a field added, say). Give both nodes the same version.
    #[error("message decoded with {0} bytes left over: the peer sends another version of its type")]
    TrailingBytes(usize),
}

/// A one-way message could not be sent. (A message sent to a process that does not exist is
/// dropped without error, as in Erlang: use a monitor to learn of its end.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The process's node is not connected.
    #[error("the process's node is not connected")]
    NodeDown,
    /// No room now in the process's bounded mailbox, or in the queue to its node (from a
    /// `try_` send only; the others wait for room). Nothing was sent: retry later, or wait.
    #[error("the process's mailbox or the queue to its node is full; nothing was sent")]
    Busy,
    /// The message could not be encoded, or is larger than the frame limit (the caller's input).
    #[error(transparent)]
    Encode(#[from] WireError),
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailed {
    /// The protocol failed or a side refused: see the inner error for whose fault it is.
    #[error(transparent)]
    Protocol(#[from] HandshakeError),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The connection failed during the handshake (the network).
    #[error("connection failed during the handshake")]
    Io(#[source] std::io::Error),
    /// The transport refused the connection before the handshake (for TLS: the TLS handshake
    /// failed; the cause says why and what to check).
    #[error("the transport refused the connection")]
    Transport(#[source] std::io::Error),
    /// The peer sent what no gen_cluster handshake sends: not a gen_cluster node, or a TLS
    /// node reaching a plaintext one.
    #[error(
        "the peer does not speak the gen_cluster handshake: not a gen_cluster node, or one with \
         TLS while this one has none (configure tls on every node of the cluster, or on none)"
    )]
    Unrecognized,
    /// The handshake did not complete in time (a slow or silent peer).
    #[error("handshake not completed within {0:?}")]
    Timeout(Duration),
    /// Another connection to the same node won.
    #[error("another connection to the same node won")]
    Superseded,
    /// The connection had not proved the secret when its place among the pending ones was
    /// taken by a newer connection (the limits of pending handshakes were reached).
    #[error("dropped to make room for a newer connection before it proved the secret")]
    Evicted,
}

//! The errors of the runtime, one enum per kind of operation, each variant saying what happened
//! and what to do about it.

use std::time::Duration;

use gen_cluster_proto::ExitReason;
use gen_cluster_proto::handshake::HandshakeError;
use gen_cluster_proto::wire::WireError;

use crate::config::ConfigError;

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartNodeError {
    /// The configuration was refused.
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A connection to a peer could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address did not answer in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// How long it waited.
        after: Duration,
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
    /// An election's incarnation file cannot be read or written.
    #[error("{0}")]
    Incarnation(String),
}

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The local name is already registered.
    #[error("the name {0:?} is already registered on this node")]
    NameTaken(String),
    /// `init` returned an error or panicked.
    #[error("init failed: {0}")]
    InitFailed(ExitReason),
    /// This node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// An election's incarnation file cannot be read or written.
    #[error("{0}")]
    Incarnation(String),
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
    /// message type.
    #[error("the process could not decode the request: {0}")]
    BadRequest(String),
    /// The reply could not be decoded as the expected type.
    #[error("cannot decode the reply: {0}")]
    BadReply(String),
    /// The request could not be encoded, or is larger than the frame limit.
    #[error(transparent)]
    Encode(#[from] WireError),
}

/// A one-way message could not be sent. (A message sent to a process that does not exist is
/// dropped without error, as in Erlang: use a monitor to learn of its end.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The process's node is not connected.
    #[error("the process's node is not connected")]
    NodeDown,
    /// The message could not be encoded, or is larger than the frame limit.
    #[error(transparent)]
    Encode(#[from] WireError),
}

/// Why a handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailed {
    /// The protocol failed or a side refused: see the inner error.
    #[error(transparent)]
    Protocol(#[from] HandshakeError),
    /// The connection failed or closed during the handshake.
    #[error("connection failed during the handshake: {0}")]
    Io(String),
    /// The handshake did not complete in time.
    #[error("handshake not completed within {0:?}")]
    Timeout(Duration),
    /// Another connection to the same node won.
    #[error("another connection to the same node won")]
    Superseded,
}

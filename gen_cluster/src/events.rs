//! Node events: a peer came up, a peer went down and why. Subscribers get them through
//! [`Node::subscribe`](crate::Node::subscribe); the CLI prints them.

use std::time::Duration;

use gen_cluster_proto::{ExitReason, Incarnation, NodeName};

/// Something that happened to this node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection to a peer was established and authenticated.
    NodeUp {
        /// The peer.
        peer: NodeName,
        /// Which life of the peer.
        incarnation: Incarnation,
        /// The address the peer listens on.
        addr: String,
    },
    /// The connection to a peer ended; monitors of its processes have fired.
    NodeDown {
        /// The peer.
        peer: NodeName,
        /// Which life of the peer.
        incarnation: Incarnation,
        /// Why.
        reason: DownReason,
    },
}

/// Why a peer is down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer said goodbye: a clean leave, not a crash.
    Left(ExitReason),
    /// The connection was reset or closed without a goodbye: a crash or a network failure.
    ConnectionLost(String),
    /// Nothing was heard from the peer within the failure detector's deadline: hung, stopped
    /// or cut off.
    Unresponsive {
        /// How long it had been silent.
        silent_for: Duration,
    },
    /// The peer sent bytes that break the protocol.
    ProtocolError(String),
    /// A newer life of the peer connected.
    Restarted,
    /// This node is shutting down.
    LocalShutdown,
    /// This node dropped the connection ([`Node::disconnect`](crate::Node::disconnect)).
    Disconnected,
}

impl DownReason {
    /// A short machine-friendly name: `left`, `connection_lost`, `unresponsive`,
    /// `protocol_error`, `restarted`, `local_shutdown`, `disconnected`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Left(_) => "left",
            Self::ConnectionLost(_) => "connection_lost",
            Self::Unresponsive { .. } => "unresponsive",
            Self::ProtocolError(_) => "protocol_error",
            Self::Restarted => "restarted",
            Self::LocalShutdown => "local_shutdown",
            Self::Disconnected => "disconnected",
        }
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Left(reason) => write!(f, "left ({reason})"),
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::Unresponsive { silent_for } => {
                write!(f, "unresponsive: silent for {} ms", silent_for.as_millis())
            }
            Self::ProtocolError(why) => write!(f, "protocol error: {why}"),
            Self::Restarted => f.write_str("restarted"),
            Self::LocalShutdown => f.write_str("local shutdown"),
            Self::Disconnected => f.write_str("disconnected by this node"),
        }
    }
}

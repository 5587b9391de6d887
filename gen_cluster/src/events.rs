//! Node events: a peer came up, a peer went down and why. Subscribers get them through
//! [`Node::subscribe`](crate::Node::subscribe); the CLI prints them. The [`EventBus`] is where the
//! distribution layer reports them: one call counts the metric, writes the log line and tells
//! every subscriber. Dial failures of the discovery loop and of the cluster view's dialing are
//! logged here too, each cause once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gen_cluster_proto::reconcile::DiscoveryEvent;
use gen_cluster_proto::wire::WireError;
use gen_cluster_proto::{ExitReason, Incarnation, NodeName};
use tokio::sync::broadcast;

use crate::throttle::Throttle;
use crate::{lock, telemetry};

/// How many events a slow subscriber may fall behind before it misses some (it then gets
/// `Lagged` and should recheck what it tracks).
const EVENT_BUFFER: usize = 1024;

/// How many peers the reconnect count remembers.
const LINKED_REMEMBERED: usize = 4096;

/// Where node events are published.
#[derive(Clone, Debug)]
pub(crate) struct EventBus {
    node: NodeName,
    sender: broadcast::Sender<NodeEvent>,
    /// The peers linked at some time in this node's life, to count reconnects: at most
    /// [`LINKED_REMEMBERED`], then forgotten all at once (a reconnect is then counted as a first
    /// link), so that peers coming and going under new names do not grow it.
    linked_before: Arc<Mutex<HashSet<NodeName>>>,
}

impl EventBus {
    /// The bus of the node `node`.
    pub(crate) fn new(node: NodeName) -> Self {
        Self {
            node,
            sender: broadcast::channel(EVENT_BUFFER).0,
            linked_before: Arc::default(),
        }
    }

    /// The events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.sender.subscribe()
    }

    /// A peer's connection was established and authenticated.
    pub(crate) fn node_up(&self, peer: &NodeName, incarnation: Incarnation, addr: &str) {
        metrics::counter!(telemetry::NODE_UP).increment(1);
        let mut linked_before = lock(&self.linked_before);
        if linked_before.len() >= LINKED_REMEMBERED {
            linked_before.clear();
        }
        if !linked_before.insert(peer.clone()) {
            metrics::counter!(telemetry::RECONNECTS).increment(1);
        }
        drop(linked_before);
        tracing::info!(node = %self.node, %peer, %addr, "node up");
        let _ = self.sender.send(NodeEvent::NodeUp {
            peer: peer.clone(),
            incarnation,
            addr: addr.to_string(),
        });
    }

    /// A peer's connection ended (called once per connection).
    pub(crate) fn node_down(&self, peer: &NodeName, incarnation: Incarnation, reason: DownReason) {
        metrics::counter!(telemetry::NODE_DOWN, "reason" => reason.kind()).increment(1);
        match reason {
            DownReason::Left(_) | DownReason::LocalShutdown | DownReason::Disconnected => {
                tracing::info!(node = %self.node, %peer, %reason, "node down")
            }
            _ => tracing::warn!(node = %self.node, %peer, %reason, "node down"),
        }
        let _ = self.sender.send(NodeEvent::NodeDown {
            peer: peer.clone(),
            incarnation,
            reason,
        });
    }
}

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
    ProtocolError(WireError),
    /// A newer life of the peer connected.
    Restarted,
    /// This node is shutting down.
    LocalShutdown,
    /// This node dropped the connection ([`Node::disconnect`](crate::Node::disconnect)).
    Disconnected,
    /// Most of the peer's watchers lost it (it is hung, stopped or cut off from them): this node,
    /// which does not watch it, closed its link too.
    Unreachable,
}

impl DownReason {
    /// A short machine-friendly name: `left`, `connection_lost`, `unresponsive`,
    /// `protocol_error`, `restarted`, `local_shutdown`, `disconnected`, `unreachable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Left(_) => "left",
            Self::ConnectionLost(_) => "connection_lost",
            Self::Unresponsive { .. } => "unresponsive",
            Self::ProtocolError(_) => "protocol_error",
            Self::Restarted => "restarted",
            Self::LocalShutdown => "local_shutdown",
            Self::Disconnected => "disconnected",
            Self::Unreachable => "unreachable",
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
            Self::Unreachable => f.write_str("unreachable: lost by most of its watchers"),
        }
    }
}

/// Says why a peer cannot be dialed: at `warn` the first time for each cause (until the peer is
/// connected again), at `debug` on every retry after, and at `debug` only when another dialer of
/// this node warns of the same address (`said_elsewhere`). Used by discovery and by the cluster
/// view's dialing alike. Discovery's addresses come from outside and may be any number, so its
/// warnings also pass `throttle`: one a second, each with the count held back at `debug`.
pub(crate) fn report_connect_failed(
    event: &DiscoveryEvent,
    said_elsewhere: bool,
    throttle: Option<&Throttle>,
) {
    if let DiscoveryEvent::ConnectFailed {
        addr,
        error,
        retry_in,
        new_cause,
    } = event
    {
        let retry_in_ms = retry_in.as_millis() as u64;
        let warn = *new_cause && !said_elsewhere;
        let held_back = match throttle {
            Some(throttle) if warn => throttle.allow("cannot connect to a discovered peer"),
            _ => Some(0),
        };
        if let (true, Some(held_back)) = (warn, held_back) {
            tracing::warn!(%addr, %error, retry_in_ms, held_back, "cannot connect; retrying (said once per cause)");
        } else {
            tracing::debug!(%addr, %error, retry_in_ms, "dial failed again");
        }
    }
}

//! The distribution layer: how this node's processes reach other nodes. It accepts and dials
//! connections ([`listener`], [`handshake`]), proves both sides hold the cluster secret, keeps one
//! link per peer ([`peers`]), and runs each link ([`driver`]): a reader that decodes frames into
//! mailboxes, a writer that drains the link's [`queue`], and the failure detector.
//!
//! It is handed the parts it works on ([`Dist`]: the process table, the watchers, the peer table,
//! the event bus, the task trackers) and never names the node façade, as quinn's connection driver
//! never names its endpoint. The protocols themselves (frames, handshake, arbitration, liveness)
//! are sans-IO machines in `gen_cluster_proto`; this layer only moves their bytes and runs their
//! timers.

use std::sync::Arc;

use gen_cluster_proto::handshake::{HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use gen_cluster_proto::{Incarnation, NodeName};

use crate::clock::Epoch;
use crate::config::NodeConfig;
use crate::events::{DownReason, EventBus};
use crate::process::table::ProcessTable;
use crate::process::watch::Watchers;
use crate::tasks::Tasks;
use crate::throttle::Throttle;
use crate::transport::Dialer;

pub(crate) mod admission;
pub(crate) mod driver;
pub(crate) mod handshake;
pub(crate) mod link;
pub(crate) mod listener;
pub(crate) mod outbox;
pub(crate) mod peers;
pub(crate) mod queue;

use link::{LinkState, PeerLink};
use peers::PeerTable;

/// A peer as seen by [`Node::peers`](crate::Node::peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its name.
    pub name: NodeName,
    /// Its life.
    pub incarnation: Incarnation,
    /// Where it listens.
    pub addr: String,
    /// Whether it is a hidden node (a tool or a client: no member, not reported up or down).
    pub hidden: bool,
}

/// What the distribution layer works on: this node's identity and settings, and the parts it
/// reads and changes. Shared by the listener, every handshake and every link driver.
pub(crate) struct Dist {
    /// This node as peers see it.
    pub(crate) local: Identity,
    pub(crate) config: Arc<NodeConfig>,
    /// The origin of the links' `last heard` stamps.
    pub(crate) epoch: Epoch,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) processes: Arc<ProcessTable>,
    pub(crate) watchers: Arc<Watchers>,
    pub(crate) events: EventBus,
    pub(crate) tasks: Tasks,
    pub(crate) dialer: Box<dyn Dialer>,
    /// Holds back log lines that peers could multiply.
    pub(crate) throttle: Throttle,
}

impl Dist {
    /// The handshake machine's settings for a new connection.
    pub(crate) fn handshake_config(&self) -> HandshakeConfig {
        HandshakeConfig {
            cluster: self.config.cluster.clone(),
            secret: self.config.cookie.clone(),
            local: self.local.clone(),
            versions: SUPPORTED_VERSIONS,
        }
    }

    /// Takes `link` down: stops its tasks and, the first time only, reports its loss (see
    /// [`report_down`](Self::report_down)) with the first reason recorded on the link.
    pub(crate) fn take_down(&self, link: &Arc<PeerLink>, reason: DownReason) {
        let reason = link.note_down_reason(reason);
        link.cancel();
        self.peers
            .remove(link, |state| self.report_down(link, state, reason));
    }

    /// Reports the loss of `link`, whose state was just taken out of it: fails its calls, fires
    /// the monitors and links on its processes with `noconnection`, tells subscribers. Called by
    /// the peer table under its lock, so that the loss is told before any later connection to
    /// the same peer is told up. Cost: O(watch lists) to forget the peer's watchers.
    pub(crate) fn report_down(&self, link: &PeerLink, mut state: LinkState, reason: DownReason) {
        state.fail_calls();
        self.watchers.peer_down(link, state);
        if link.hidden {
            tracing::debug!(peer = %link.name, %reason, "hidden node disconnected");
        } else {
            self.events.node_down(&link.name, link.incarnation, reason);
        }
    }
}

//! What a node is made of: [`Node`] is a handle on one [`Kernel`], which holds the node's named
//! parts as plain data — its identity and settings, the process table, the watchers, the peer
//! table, the router, the global-name service, the cluster view, the event bus, the task trackers and the
//! distribution layer's share of all these. Behaviour lives in the parts; the façade in
//! `node.rs` only forwards to them.

use std::sync::Arc;

use gen_cluster_proto::{Incarnation, NodeId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::dist::Dist;
use crate::dist::peers::PeerTable;
use crate::events::EventBus;
use crate::names::GlobalNames;
use crate::process::table::ProcessTable;
use crate::process::watch::Watchers;
use crate::router::Router;
use crate::tasks::Tasks;
use crate::view::{ClusterView, Undiscovered};

/// A running node. Cheap to clone: every clone is the same node.
///
/// A node runs until [`shutdown`](Node::shutdown) is awaited: dropping every handle does not stop
/// it (its processes and links hold handles of their own), so call `shutdown` before the end.
#[derive(Clone)]
#[must_use = "a node runs until shutdown() is awaited"]
pub struct Node(pub(crate) Arc<Kernel>);

/// The parts of one node. The distribution layer's share (`dist`) holds the same process table,
/// watchers, peer table, event bus and trackers, not copies: it is handed them so that it never
/// needs the kernel itself.
pub(crate) struct Kernel {
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) listen_addr: String,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) processes: Arc<ProcessTable>,
    pub(crate) watchers: Arc<Watchers>,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) router: Router,
    pub(crate) globals: GlobalNames,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    /// Cancelled once the view service has said that this node leaves.
    pub(crate) view_left: CancellationToken,
    /// Where the view service learns the addresses discovery no longer finds.
    pub(crate) undiscovered: Arc<Undiscovered>,
    pub(crate) events: EventBus,
    pub(crate) tasks: Tasks,
    pub(crate) dist: Arc<Dist>,
}

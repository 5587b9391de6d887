//! # gen_cluster
//!
//! Clusters of Erlang-style processes across machines. A [`Node`] listens, connects to peers over
//! authenticated connections, and runs processes: tasks with a mailbox and a [`Server`] behaviour
//! (`init`, `handle_call`, `handle_cast`, `handle_info`, `terminate`), addressed by a [`Pid`] that
//! works the same on every node. Calls, casts and plain sends reach local processes by moving the
//! value and remote ones as one encoded frame; monitors and links work across nodes, and a lost
//! node fires every monitor on its processes with [`ExitReason::NoConnection`].
//!
//! ```no_run
//! use std::time::Duration;
//! use gen_cluster::{Flow, Node, NodeConfig, NodeName, ReplyTo, Context, Server};
//!
//! struct Counter(u64);
//!
//! impl Server for Counter {
//!     type Call = u64;
//!     type Reply = u64;
//!     type Cast = ();
//!     type Info = ();
//!     async fn handle_call(&mut self, add: u64, from: ReplyTo<u64>, _: &mut Context<Self>) -> Flow {
//!         self.0 += add;
//!         from.reply(self.0);
//!         Flow::Continue
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Node::start(NodeConfig::new(NodeName::new("a")?, "cookie")).await?;
//! let b = Node::start(NodeConfig::new(NodeName::new("b")?, "cookie")).await?;
//! a.connect(b.listen_addr()).await?;
//! let counter = b.spawn(Counter(0)).await?;
//! assert_eq!(a.call(&counter, 5, Duration::from_secs(1)).await?, 5);
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! Bottom to top; a module uses only the ones on its own line or above it, and nothing below the
//! façade names it (a test keeps it so).
//!
//! - `clock`, `config`, `error`, `events` (the event bus), `tasks` (the task trackers),
//!   `transport` ([`Tcp`], [`MemoryNetwork`]) — the ground floor.
//! - `process` — the [`Server`] behaviour and what a process is made of: `signal` (what a
//!   mailbox carries), `table` (pids, slots, local names, delivery), `watch` (monitors, links,
//!   exit fan-out), `run` (the task of one process, [`Context`]), `handle` ([`ServerRef`],
//!   [`ReplyTo`], [`Mailbox`]).
//! - `dist` — the distribution layer: `queue` (a link's frame queue), `link` (one peer's link and
//!   what is tracked on it), `peers` (the peer table and arbitration), `handshake`, `listener`,
//!   `driver` (a link's reader, writer and failure detector).
//! - `router` — a target to a local mailbox, a peer's link, or nowhere; calls wait here.
//! - `names` — the global-name service ([`GlobalNames`]).
//! - `view` — the cluster view service ([`ClusterView`], `node.view()`).
//! - `kernel` — [`Node`] and the parts it holds, as data; `node` — the façade, the one `impl Node`.
//! - Services, built from a `&Node` with its public API only: `cluster` ([`Clustered`], the
//!   gen_cluster behaviour), `leader` ([`Leader`], gen_leader), `discovery` ([`Discovery`],
//!   [`Epmd::register`]), [`services`] (echo, roster, the global dictionary).
//!
//! ## Who drives what
//!
//! Every task runs on the node's tracker inside a span naming it, and ends at shutdown:
//!
//! - `listener` — accepts connections; one `accept{remote}` task per handshake, bounded.
//! - `link{peer,conn}` — two per link: the reader (frames into mailboxes, control frames to the
//!   watchers, replies to the callers) and the writer (the queue to the socket, heartbeats, the
//!   failure detector). Whichever ends first takes the link down, once.
//! - `proc{pid}` — one per process: its behaviour, one signal at a time.
//! - `names` — the global-name service, owner of the registry machine.
//! - `view` — the cluster view service, owner of the view machine; it dials new members.
//! - `leader{election}` — per election instance, node events and timers into the instance.
//! - `discovery` — per discovery source, the reconcile loop and its dials; `epmd` — a
//!   registration held open.
//!
//! The protocols themselves (wire format, handshake, arbitration of duplicate connections,
//! failure detection, registry, membership, election, reconcile) are sans-IO state machines in
//! the `gen_cluster_proto` crate; this crate only moves their bytes and runs their timers.

#![deny(missing_docs)]

mod clock;
mod cluster;
mod config;
mod discovery;
mod dist;
mod error;
mod events;
mod kernel;
mod leader;
mod names;
mod node;
mod process;
mod router;
pub mod services;
pub mod settings;
mod tasks;
pub mod telemetry;
mod throttle;
mod transport;
mod view;

pub use cluster::{
    ClusterContext, ClusterInfo, ClusterServer, Clustered, Member, MemberConfig, Membership, Seed,
    rally_name,
};
pub use config::{ConfigError, MIN_FORGET_GONE_AFTER, NodeConfig};
pub use discovery::{
    Discover, DiscoverError, Discovery, DiscoveryEvent, Dns, DnsA, DnsConfigError, DnsSrv, Epmd,
    HostType, ReconcileConfig, StaticPeers,
};
pub use dist::PeerInfo;
pub use error::{
    CallError, ConnectError, DataDirError, DecodeError, HandshakeFailed, SendError, StartError,
    StartNodeError,
};
pub use events::{DownReason, NodeEvent};
pub use gen_cluster_proto::liveness::LivenessConfig;
pub use gen_cluster_proto::{ExitReason, Incarnation, NodeId, NodeName, Pid};
pub use kernel::Node;
pub use leader::{
    ElectionId, ElectionMode, Failback, Fence, Leader, LeaderCallError, LeaderConfig, LeaderFlow,
    LeaderReplyTo, LeaderServer, LeaderStatus, StaleTerm, instance_name,
};
pub use names::{GlobalNames, RegisterError};
pub use process::{Context, Flow, Info, Mailbox, Message, MonitorRef, ReplyTo, Server, ServerRef};
pub use transport::{
    Connection, MemoryNetwork, MemoryTransport, PeerCertificate, ReadHalf, Side, Tcp, Tls,
    TlsError, TlsFiles, Transport, WriteHalf,
};
pub use view::{ClusterView, KnownNode, NodeState};

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical section
/// in this crate leaves the data consistent).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

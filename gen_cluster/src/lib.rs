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
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`transport`] — how bytes move ([`Tcp`]; TLS and simulated transports plug in here).
//! - `connection` — per connection: the handshake with a deadline, then a reader task that decodes
//!   into mailboxes and a writer task that coalesces frames and runs the failure detector.
//! - [`node`] — identity, process table, connection table, node-down handling.
//! - [`process`] — the [`Server`] behaviour, its run loop, [`ServerRef`], [`ReplyTo`],
//!   [`Mailbox`].
//! - `registry` — the global name service every node runs (`Node::register_global`, …); the
//!   names and the clash rule live in `gen_cluster_proto::registry`.
//! - [`cluster`] — the gen_cluster behaviour ([`ClusterServer`]): members, join/leave callbacks,
//!   the rally name.
//! - [`leader`] — the gen_leader behaviour ([`LeaderServer`]): one leader among candidate
//!   nodes, leader calls, the merge of a stepped-down leader's state.
//! - [`discovery`] — [`Discover`] sources and the reconcile loop that keeps the node connected to
//!   what they find.
//! - [`services`] — servers every node can run (the echo diagnostics server).
//! - [`config`], [`events`], [`error`].
//!
//! The protocols themselves (wire format, handshake, arbitration of duplicate connections,
//! failure detection) are sans-IO state machines in the `gen_cluster_proto` crate; this crate
//! only moves their bytes and runs their timers.

#![deny(missing_docs)]

pub mod cluster;
pub mod config;
mod connection;
pub mod discovery;
pub mod error;
pub mod events;
pub mod leader;
pub mod node;
pub mod process;
mod registry;
pub mod services;
pub mod transport;

pub use cluster::{
    ClusterContext, ClusterInfo, ClusterServer, Clustered, Member, MemberConfig, Membership, Seed,
};
pub use config::NodeConfig;
pub use discovery::{
    Discover, DiscoverError, Discovery, DiscoveryEvent, Dns, DnsA, DnsSrv, Epmd, HostType,
    ReconcileConfig, StaticPeers,
};
pub use error::{CallError, ConnectError, HandshakeFailed, SendError, StartError, StartNodeError};
pub use events::{DownReason, NodeEvent};
pub use gen_cluster_proto::liveness::LivenessConfig;
pub use gen_cluster_proto::registry::RegisterError;
pub use gen_cluster_proto::{ExitReason, Incarnation, NodeId, NodeName, Pid};
pub use leader::{
    ElectionId, Leader, LeaderCallError, LeaderConfig, LeaderFlow, LeaderReplyTo, LeaderServer,
    LeaderStatus,
};
pub use node::{Node, PeerInfo};
pub use process::{Context, Flow, Info, Mailbox, Message, MonitorRef, ReplyTo, Server, ServerRef};
pub use transport::{Tcp, Transport};

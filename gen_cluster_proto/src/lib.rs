//! The sans-IO core of gen_cluster: every protocol the runtime speaks, as plain data and state
//! machines that take inputs (bytes, `now`, decisions) and return outputs (bytes to send, actions,
//! deadlines). Nothing here owns a socket, spawns a task, reads the clock or draws randomness: the
//! `gen_cluster` crate feeds these machines and carries out what they return, which is what lets
//! the tests drive any interleaving deterministically.
//!
//! # Layout
//!
//! - [`ids`] — node names, node ids, incarnations and process ids ([`Pid`]).
//! - [`exit`] — why a process or a connection ended ([`ExitReason`]).
//! - [`wire`] — the frames of an established connection: header + trailing payload, bounded size,
//!   a decoder that never panics and rejects trailing bytes.
//! - [`handshake`] — the typestate handshake: version negotiation, cluster name check, and mutual
//!   challenge–response proof of the cluster secret (HMAC-SHA256, constant-time compare).
//! - [`arbitration`] — the rule that leaves exactly one connection per pair of nodes when both dial
//!   at once, or when a node restarts under the same name.
//! - [`election`] — leader election among candidate nodes (gen_leader's priority mode).
//! - [`epmd`] — the requests and replies of Erlang's port-mapper daemon, for EPMD discovery.
//! - [`membership`] — the member list of a cluster of processes, and its join/leave events.
//! - [`reconcile`] — the discovery reconcile loop: refresh, backoff with jitter, reconnects.
//! - [`registry`] — global names: who holds what, and the rule that settles a clash after a heal.
//! - [`liveness`] — the per-connection failure detector: heartbeats when idle, down after a silent
//!   deadline.
//! - [`monitor_ring`] — who watches whom: each member watches a few others on a ring, so
//!   heartbeats grow with the number of nodes, not its square.
//! - [`view`] — the cluster view: every node of the cluster learned transitively, its state, the
//!   nodes to dial for a full mesh, and the fully connected groups the services act on.

#![deny(missing_docs)]

pub mod arbitration;
pub mod election;
pub mod epmd;
pub mod exit;
pub mod handshake;
pub mod ids;
pub mod liveness;
pub mod majority;
pub mod membership;
pub mod monitor_ring;
pub mod reconcile;
pub mod registry;
pub mod view;
pub mod wire;

pub use exit::ExitReason;
pub use ids::{Incarnation, InvalidNodeName, NodeId, NodeName, Pid};

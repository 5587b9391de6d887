//! The node's metrics, through the `metrics` facade: every name, with its kind, labels and help,
//! is in [`METRICS`] (the README's table, the dashboard and the alert rules are checked against
//! it). Counters are recorded where things happen, with handles made once per link so that a
//! frame costs an atomic add (the round trip too: a ping each second); gauges of state (nodes
//! by view state, links, queues, names, processes, mailboxes) are sampled once a second by the
//! task `start` runs, from the node's tables, in O(nodes + links + processes). Without a
//! recorder installed every call is a no-op. The CLI serves them over HTTP
//! (`gen-cluster node --http`); an application installs the recorder it likes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dist::peers::PeerTable;
use crate::names::GlobalNames;
use crate::process::table::ProcessTable;
use crate::tasks::Tasks;
use crate::view::ClusterView;
use gen_cluster_proto::view::NodeState;

/// What a metric measures over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One metric the node exports.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// Its name, prefixed `gen_cluster_`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it counts.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Nodes this node knows, by view state (`up`, `unreachable`, `down`, `left`).
pub const NODES: &str = "gen_cluster_nodes";
/// Links up.
pub const LINKS_UP: &str = "gen_cluster_links_up";
/// Bytes of messages waiting in a link's send queue.
pub const SEND_QUEUE_BYTES: &str = "gen_cluster_send_queue_bytes";
/// The most bytes of messages a link's send queue holds (`NodeConfig::send_queue_bytes`).
pub const SEND_QUEUE_BOUND: &str = "gen_cluster_send_queue_bound_bytes";
/// Bytes sent on a link.
pub const SENT_BYTES: &str = "gen_cluster_sent_bytes_total";
/// Frames sent on a link.
pub const SENT_FRAMES: &str = "gen_cluster_sent_frames_total";
/// Bytes received on a link.
pub const RECEIVED_BYTES: &str = "gen_cluster_received_bytes_total";
/// Frames received on a link.
pub const RECEIVED_FRAMES: &str = "gen_cluster_received_frames_total";
/// The link's round trip, measured once a second.
pub const PEER_ROUND_TRIP: &str = "gen_cluster_peer_round_trip_seconds";
/// Handshakes, by role and outcome.
pub const HANDSHAKES: &str = "gen_cluster_handshakes_total";
/// Links established.
pub const NODE_UP: &str = "gen_cluster_node_up_total";
/// Links lost, by reason.
pub const NODE_DOWN: &str = "gen_cluster_node_down_total";
/// Links established again to a node this node was linked to before.
pub const RECONNECTS: &str = "gen_cluster_reconnects_total";
/// Whether this node follows a leader in an election (0 or 1).
pub const LEADER_PRESENT: &str = "gen_cluster_leader_present";
/// Changes to a new leader this node follows (a change to none does not count).
pub const LEADER_CHANGES: &str = "gen_cluster_leader_changes_total";
/// The term (majority) or round (priority) of the leader this node follows.
pub const LEADER_TERM: &str = "gen_cluster_leader_term";
/// Leader calls made through this node, by outcome.
pub const LEADER_CALLS: &str = "gen_cluster_leader_calls_total";
/// Global names this node knows.
pub const GLOBAL_NAMES: &str = "gen_cluster_global_names";
/// Processes running on this node.
pub const PROCESSES: &str = "gen_cluster_processes";
/// Signals waiting in the longest mailbox of this node.
pub const MAILBOX_LONGEST: &str = "gen_cluster_mailbox_longest";
/// Signals waiting in all the mailboxes of this node.
pub const MAILBOX_WAITING: &str = "gen_cluster_mailbox_waiting";
/// Members of a cluster of processes this node's member sees, by kind.
pub const MEMBERS: &str = "gen_cluster_members";
/// Discovery rounds, by outcome.
pub const DISCOVERY_ROUNDS: &str = "gen_cluster_discovery_rounds_total";

/// Addresses discovery found.
pub const DISCOVERED: &str = "gen_cluster_discovery_discovered_total";
/// Discovered addresses connected.
pub const DISCOVERY_CONNECTED: &str = "gen_cluster_discovery_connected_total";
/// Addresses discovery no longer finds.
pub const DISCOVERY_REMOVED: &str = "gen_cluster_discovery_removed_total";
/// Discovery rounds that failed (the last answer is kept).
pub const DISCOVERY_ROUND_FAILURES: &str = "gen_cluster_discovery_failures_total";
/// Dials of discovered addresses that failed.
pub const DISCOVERY_CONNECT_FAILURES: &str = "gen_cluster_discovery_connect_failures_total";
/// Registrations in an EPMD that failed.
pub const EPMD_REGISTER_FAILURES: &str = "gen_cluster_epmd_register_failures_total";

/// Every metric the node exports.
pub const METRICS: &[Metric] = &[
    metric(
        NODES,
        Kind::Gauge,
        &["state"],
        "nodes this node knows, by view state",
    ),
    metric(LINKS_UP, Kind::Gauge, &[], "links up"),
    metric(
        SEND_QUEUE_BYTES,
        Kind::Gauge,
        &["peer"],
        "bytes of messages waiting in the link's send queue",
    ),
    metric(
        SEND_QUEUE_BOUND,
        Kind::Gauge,
        &[],
        "the most bytes of messages a link's send queue holds",
    ),
    metric(
        SENT_BYTES,
        Kind::Counter,
        &["peer"],
        "bytes sent on the link",
    ),
    metric(
        SENT_FRAMES,
        Kind::Counter,
        &["peer"],
        "frames sent on the link (messages and control frames; a message sent in fragments counts once)",
    ),
    metric(
        RECEIVED_BYTES,
        Kind::Counter,
        &["peer"],
        "bytes received on the link",
    ),
    metric(
        RECEIVED_FRAMES,
        Kind::Counter,
        &["peer"],
        "frames received on the link (a message that came in fragments counts once)",
    ),
    metric(
        PEER_ROUND_TRIP,
        Kind::Histogram,
        &["peer"],
        "the link's round trip (a ping the peer answers, once a second, on the links this node watches and those to hidden nodes), in seconds",
    ),
    metric(
        HANDSHAKES,
        Kind::Counter,
        &["role", "outcome"],
        "handshakes by role (initiator, acceptor) and outcome (ok, bad_cookie, other_cluster, \
         timeout, evicted: refused by admission, transport: TLS or not a gen_cluster peer, \
         uncertified, superseded, other)",
    ),
    metric(NODE_UP, Kind::Counter, &[], "links established"),
    metric(
        NODE_DOWN,
        Kind::Counter,
        &["reason"],
        "links lost, by reason",
    ),
    metric(
        RECONNECTS,
        Kind::Counter,
        &[],
        "links established again to a node linked before",
    ),
    metric(
        LEADER_PRESENT,
        Kind::Gauge,
        &["election"],
        "1 while this node follows a leader in the election",
    ),
    metric(
        LEADER_CHANGES,
        Kind::Counter,
        &["election"],
        "changes to a new leader followed by this node (a failover counts one)",
    ),
    metric(
        LEADER_TERM,
        Kind::Gauge,
        &["election"],
        "the term (majority) or round (priority) of the leader followed",
    ),
    metric(
        LEADER_CALLS,
        Kind::Counter,
        &["election", "outcome"],
        "leader calls made through this node, by outcome",
    ),
    metric(
        GLOBAL_NAMES,
        Kind::Gauge,
        &[],
        "global names this node knows",
    ),
    metric(
        PROCESSES,
        Kind::Gauge,
        &[],
        "processes running on this node",
    ),
    metric(
        MAILBOX_LONGEST,
        Kind::Gauge,
        &[],
        "signals (messages, notices) waiting in the longest mailbox of this node",
    ),
    metric(
        MAILBOX_WAITING,
        Kind::Gauge,
        &[],
        "signals waiting in all the mailboxes of this node",
    ),
    metric(
        MEMBERS,
        Kind::Gauge,
        &["cluster", "kind"],
        "members of the cluster of processes, by kind, as this node's member sees them",
    ),
    metric(
        DISCOVERY_ROUNDS,
        Kind::Counter,
        &["outcome"],
        "discovery rounds, by outcome (ok, failed)",
    ),
    metric(DISCOVERED, Kind::Counter, &[], "addresses discovery found"),
    metric(
        DISCOVERY_CONNECTED,
        Kind::Counter,
        &[],
        "discovered addresses connected",
    ),
    metric(
        DISCOVERY_REMOVED,
        Kind::Counter,
        &[],
        "addresses discovery no longer finds",
    ),
    metric(
        DISCOVERY_ROUND_FAILURES,
        Kind::Counter,
        &[],
        "discovery rounds that failed (the last answer is kept)",
    ),
    metric(
        DISCOVERY_CONNECT_FAILURES,
        Kind::Counter,
        &[],
        "dials of discovered addresses that failed",
    ),
    metric(
        EPMD_REGISTER_FAILURES,
        Kind::Counter,
        &[],
        "registrations in an EPMD that failed",
    ),
];

/// How often the gauges of state are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Gives every metric its help text (for the recorder to export).
pub fn describe() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// What the sampler reads.
pub(crate) struct Sampled {
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) processes: Arc<ProcessTable>,
    pub(crate) globals: GlobalNames,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    /// The bound of every link's send queue, in bytes.
    pub(crate) send_queue_bound: usize,
}

/// Samples the gauges of state every [`SAMPLE_EVERY`] until the node stops.
pub(crate) fn start(tasks: &Tasks, sampled: Sampled) {
    describe();
    let stopping = tasks.clone();
    tasks.spawn(tracing::info_span!("telemetry"), async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queues = Vec::new();
        loop {
            tokio::select! {
                _ = stopping.stopping() => return,
                _ = every.tick() => sample(&sampled, &mut queues),
            }
        }
    });
}

/// Sets the gauges; `queues` holds the peers whose queue gauge was set, to zero the ones gone.
fn sample(sampled: &Sampled, queues: &mut Vec<String>) {
    let view = sampled.view.borrow().clone();
    for state in [
        NodeState::Up,
        NodeState::Unreachable,
        NodeState::Down,
        NodeState::Left,
    ] {
        let count = view.nodes.iter().filter(|node| node.state == state).count();
        metrics::gauge!(NODES, "state" => state.to_string()).set(count as f64);
    }
    metrics::gauge!(SEND_QUEUE_BOUND).set(sampled.send_queue_bound as f64);
    let links = sampled.peers.links();
    metrics::gauge!(LINKS_UP).set(links.len() as f64);
    let mut now = Vec::with_capacity(links.len());
    for link in &links {
        let peer = link.name.to_string();
        metrics::gauge!(SEND_QUEUE_BYTES, "peer" => peer.clone())
            .set(link.queue.queued_bytes() as f64);
        now.push(peer);
    }
    for gone in queues.iter().filter(|peer| !now.contains(peer)) {
        metrics::gauge!(SEND_QUEUE_BYTES, "peer" => gone.clone()).set(0.0);
    }
    *queues = now;
    metrics::gauge!(GLOBAL_NAMES).set(sampled.globals.len() as f64);
    metrics::gauge!(PROCESSES).set(sampled.processes.len() as f64);
    let (longest, waiting) = sampled.processes.mailbox_lengths();
    metrics::gauge!(MAILBOX_LONGEST).set(longest as f64);
    metrics::gauge!(MAILBOX_WAITING).set(waiting as f64);
}

/// A link's counters, made once when it comes up.
pub(crate) struct LinkCounters {
    pub(crate) sent_bytes: metrics::Counter,
    pub(crate) sent_frames: metrics::Counter,
    pub(crate) received_bytes: metrics::Counter,
    pub(crate) received_frames: metrics::Counter,
    pub(crate) round_trip: metrics::Histogram,
}

impl LinkCounters {
    pub(crate) fn new(peer: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "peer" => peer.to_string());
        Self {
            sent_bytes: counter(SENT_BYTES),
            sent_frames: counter(SENT_FRAMES),
            received_bytes: counter(RECEIVED_BYTES),
            received_frames: counter(RECEIVED_FRAMES),
            round_trip: metrics::histogram!(PEER_ROUND_TRIP, "peer" => peer.to_string()),
        }
    }
}

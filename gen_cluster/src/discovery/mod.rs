//! Node discovery: a [`Discover`] implementation says which nodes to be connected to, and the
//! reconcile loop keeps this node connected to them. The loop drives the sans-IO
//! `gen_cluster_proto::reconcile` machine (refresh, backoff with jitter, reconnect on drop): it
//! runs discovery and each dial in tasks of their own with deadlines, so that a slow resolver or
//! a hung peer never stops it, and feeds back their outcomes and the node's down events. The loop
//! has no mailbox: nothing sent to the node can stop it.

use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gen_cluster_proto::NodeName;
use gen_cluster_proto::reconcile::{ReconcileAction, Reconciler};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{broadcast, mpsc};

pub use gen_cluster_proto::reconcile::{DiscoveryEvent, ReconcileConfig};

use crate::Node;
use crate::NodeState;
use crate::clock::{self, now};
use crate::error::{ConnectError, with_causes};
use crate::events::NodeEvent;
use crate::telemetry;
use crate::throttle::Throttle;

mod dns;
mod epmd;

pub use dns::{Dns, DnsA, DnsConfigError, DnsSrv, HostType};
pub use epmd::Epmd;

/// The longest one discovery round may take before it counts as failed.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A source of node addresses (`host:port`) to be connected to. This node's own address may be
/// among them: it is recognized at the handshake and skipped.
pub trait Discover: Send + Sync + 'static {
    /// The addresses now, or why they cannot be had (the last good answer is kept).
    fn peers(&self) -> impl Future<Output = Result<Vec<String>, DiscoverError>> + Send;
}

/// Discovery failed this round.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("discovery failed: {0}")]
pub struct DiscoverError(pub String);

/// A fixed list of addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticPeers(pub Vec<String>);

impl Discover for StaticPeers {
    async fn peers(&self) -> Result<Vec<String>, DiscoverError> {
        Ok(self.0.clone())
    }
}

enum Outcome {
    Discovered(Result<Vec<String>, String>),
    Dialed(String, Result<NodeName, ConnectError>),
}

/// Events of one discovery loop kept for a subscriber that has not read them yet; an older
/// one is dropped (the subscriber sees `Lagged`) rather than grow without bound.
const EVENT_BACKLOG: usize = 1024;

/// A running discovery loop: subscribe to its [`DiscoveryEvent`]s. Dropping it does not stop
/// the loop, which runs until the node shuts down.
#[derive(Debug)]
pub struct Discovery {
    first: broadcast::Receiver<DiscoveryEvent>,
}

impl Discovery {
    /// Keeps `node` connected to what `discover` finds, as `config` says, until the node shuts
    /// down. The loop runs in a `discovery` task of the node.
    pub fn start<D: Discover>(node: &Node, discover: D, config: ReconcileConfig) -> Discovery {
        let machine = Reconciler::new(config, clock::seed(), now());
        let (announce, first) = broadcast::channel(EVENT_BACKLOG);
        let node_events = node.subscribe();
        let task = reconcile(
            node.clone(),
            Arc::new(discover),
            machine,
            node_events,
            announce,
        );
        node.spawn_task(tracing::info_span!("discovery"), task);
        Discovery { first }
    }

    /// Every event since discovery started.
    pub fn into_events(self) -> broadcast::Receiver<DiscoveryEvent> {
        self.first
    }

    /// The events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DiscoveryEvent> {
        self.first.resubscribe()
    }
}

async fn reconcile<D: Discover>(
    node: Node,
    discover: Arc<D>,
    mut machine: Reconciler,
    mut node_events: broadcast::Receiver<NodeEvent>,
    announce: broadcast::Sender<DiscoveryEvent>,
) {
    let (outcomes, mut results) = mpsc::unbounded_channel();
    // Which address each connected peer was dialed at.
    let mut dialed: FxHashMap<NodeName, String> = FxHashMap::default();
    let throttle = Throttle::default();
    loop {
        while let Some(action) = machine.poll(now()) {
            match action {
                ReconcileAction::Discover => {
                    let (discover, outcomes) = (Arc::clone(&discover), outcomes.clone());
                    let discovering = async move {
                        let found =
                            match tokio::time::timeout(DISCOVER_TIMEOUT, discover.peers()).await {
                                Ok(found) => found.map_err(|e| e.0),
                                Err(_) => Err(format!("no answer within {DISCOVER_TIMEOUT:?}")),
                            };
                        let _ = outcomes.send(Outcome::Discovered(found));
                    };
                    spawn_until_shutdown(&node, tracing::info_span!("discover"), discovering);
                }
                ReconcileAction::Connect(addr) => {
                    let (dialer, outcomes) = (node.clone(), outcomes.clone());
                    let span = tracing::info_span!("dial", %addr);
                    let dialing = async move {
                        let result = dialer.connect(&addr).await;
                        let _ = outcomes.send(Outcome::Dialed(addr, result));
                    };
                    spawn_until_shutdown(&node, span, dialing);
                }
                ReconcileAction::Event(event) => {
                    if let DiscoveryEvent::Removed(addr) = &event {
                        node.forget_address(addr);
                    }
                    report(&event, &node, &throttle);
                    let _ = announce.send(event);
                }
            }
        }
        let wake = machine.poll_timeout();
        tokio::select! {
            _ = node.shutting_down() => return,
            Some(outcome) = results.recv() => match outcome {
                Outcome::Discovered(found) => {
                    let outcome = if found.is_ok() { "ok" } else { "failed" };
                    metrics::counter!(telemetry::DISCOVERY_ROUNDS, "outcome" => outcome).increment(1);
                    machine.handle_discovered(now(), found);
                }
                Outcome::Dialed(addr, Ok(peer)) => {
                    machine.handle_connected(&addr);
                    dialed.insert(peer, addr);
                }
                Outcome::Dialed(addr, Err(error)) if error.reached_self() => {
                    tracing::debug!(%addr, "discovered this node itself; skipped");
                    machine.handle_self(now(), &addr);
                }
                Outcome::Dialed(addr, Err(error)) => machine.handle_connect_failed(now(), &addr, with_causes(&error)),
            },
            event = node_events.recv() => match event {
                Ok(NodeEvent::NodeDown { peer, .. }) => {
                    if let Some(addr) = dialed.remove(&peer) {
                        machine.handle_disconnected(now(), &addr);
                    }
                }
                Ok(_) => {}
                // Too many events to keep up with: whichever were down events, the connection
                // table still tells.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    dialed.retain(|peer, addr| {
                        let up = node.is_connected(peer);
                        if !up {
                            machine.handle_disconnected(now(), addr);
                        }
                        up
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = sleep_until(wake) => {}
        }
    }
}

/// Runs `task` in a task of the node, dropped when the node shuts down: a lookup or a dial
/// still waiting on a slow server would otherwise hold the shutdown until its deadline.
fn spawn_until_shutdown(
    node: &Node,
    span: tracing::Span,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let stopping = node.clone();
    node.spawn_task(span, async move {
        tokio::select! {
            _ = stopping.shutting_down() => {}
            () = task => {}
        }
    });
}

async fn sleep_until(wake: Option<std::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Tells the operator of `event`; the warnings of failed dials pass `throttle` (this loop's).
fn report(event: &DiscoveryEvent, node: &Node, throttle: &Throttle) {
    match event {
        DiscoveryEvent::Discovered(addr) => {
            metrics::counter!(telemetry::DISCOVERED).increment(1);
            tracing::info!(%addr, "peer discovered");
        }
        DiscoveryEvent::Connected(addr) => {
            metrics::counter!(telemetry::DISCOVERY_CONNECTED).increment(1);
            tracing::info!(%addr, "discovered peer connected");
        }
        DiscoveryEvent::Removed(addr) => {
            metrics::counter!(telemetry::DISCOVERY_REMOVED).increment(1);
            tracing::info!(%addr, "peer no longer discovered");
        }
        DiscoveryEvent::DiscoveryFailed(error) => {
            metrics::counter!(telemetry::DISCOVERY_ROUND_FAILURES).increment(1);
            tracing::warn!(%error, "discovery failed; keeping the last answer");
        }
        DiscoveryEvent::TooManyPeers { kept } => {
            tracing::warn!(
                kept,
                "discovery gave more addresses than are kept; only the first are dialed (check the name server or EPMD)"
            );
        }
        DiscoveryEvent::ConnectFailed { addr, .. } => {
            metrics::counter!(telemetry::DISCOVERY_CONNECT_FAILURES).increment(1);
            crate::events::report_connect_failed(
                event,
                dialed_as_member(node, addr),
                Some(throttle),
            );
        }
    }
}

/// Whether the cluster view dials `addr` too, as a member's address (and says itself why it
/// cannot connect): a seed that became a member is one peer, warned of once.
fn dialed_as_member(node: &Node, addr: &str) -> bool {
    let config = node.config();
    config.connect_all
        && !config.hidden
        && node.view().nodes.iter().any(|known| {
            known.addr == addr && known.name != *node.name() && known.state != NodeState::Left
        })
}

/// The last good result of each lookup inside a discovery round (keyed by what was looked up),
/// so that one failing lookup keeps its peer rather than dropping it. Keys not looked up in a
/// round are forgotten, so it holds no more than the last round's keys.
#[derive(Debug)]
pub(crate) struct LastGood<K, V> {
    what: &'static str,
    entries: Mutex<FxHashMap<K, Entry<V>>>,
}

#[derive(Debug)]
struct Entry<V> {
    value: Option<V>,
    error: Option<String>,
}

impl<K: Eq + Hash + Clone + std::fmt::Display, V: Clone> LastGood<K, V> {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            entries: Mutex::new(FxHashMap::default()),
        }
    }

    /// This round's results, failures replaced by their last good value or left out.
    pub(crate) fn settle(
        &self,
        results: impl IntoIterator<Item = (K, Result<V, String>)>,
    ) -> Vec<(K, V)> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = FxHashSet::default();
        let mut settled = Vec::new();
        for (key, result) in results {
            seen.insert(key.clone());
            let entry = entries.entry(key.clone()).or_insert(Entry {
                value: None,
                error: None,
            });
            match result {
                Ok(value) => {
                    if entry.error.take().is_some() {
                        tracing::info!(what = self.what, %key, "lookup answers again");
                    }
                    entry.value = Some(value);
                }
                Err(error) => {
                    if entry.error.as_ref() != Some(&error) {
                        tracing::warn!(what = self.what, %key, %error, kept = entry.value.is_some(), "lookup failed; keeping its last good answer, if any");
                        entry.error = Some(error);
                    }
                }
            }
            if let Some(value) = &entry.value {
                settled.push((key, value.clone()));
            }
        }
        entries.retain(|key, _| seen.contains(key));
        settled
    }
}

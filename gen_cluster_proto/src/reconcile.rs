//! The reconcile loop of node discovery as a state machine: it keeps this node connected to the
//! peers that discovery finds. The runtime asks discovery when told ([`ReconcileAction::Discover`]),
//! dials when told ([`ReconcileAction::Connect`]), and reports back what happened.
//!
//! - Discovery runs at start and then every `refresh_interval` (never again with `None`). An
//!   error keeps the last good answer and is reported once per distinct error, not per round.
//! - Every discovered peer that is not connected is dialed. A failed dial is retried after an
//!   exponential backoff (from `backoff_min`, doubling, capped at `backoff_max`) with ±`jitter`
//!   drawn from a seeded generator, so restarts do not stampede.
//! - A discovered peer whose connection drops is dialed again at once, not at the next refresh,
//!   and for `reconnect_window` its retries come at most `reconnect_max` apart (a restart is
//!   usually short).
//! - A peer no longer discovered is not dialed again; its connection, if any, is left alone.
//! - An address that reached this node itself is tried again after a refresh interval, doubling
//!   up to `backoff_max`, and never reported: addresses change hands.
//! - What discovery finds comes from outside (a name server, an EPMD), so it is bounded: at most
//!   [`MAX_PEERS`] addresses are kept from one answer (the first, in order; the overflow is
//!   reported once), and at most `max_dials` dials run at once, the others waiting their turn.
//!
//! Inputs take `now`; [`Reconciler::poll`] gives the next action, [`Reconciler::poll_timeout`]
//! when to ask again. Costs: O(peers · log peers) per discovery round, O(log peers) per event
//! and per dial.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The most addresses kept from one discovery answer. A name server or EPMD may list any number
/// (a hostile one, hundreds of thousands), and each address kept costs a peer entry and dials;
/// this is well above the clusters this library is made for. A source that builds its addresses
/// from parts (SRV targets times their addresses) may stop one past it: the overflow is told all
/// the same.
pub const MAX_PEERS: usize = 4096;

/// Reconcile settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReconcileConfig {
    /// How often discovery runs again; `None` runs it once. Default 5 s.
    pub refresh_interval: Option<Duration>,
    /// The first retry delay after a failed dial. Default 100 ms.
    pub backoff_min: Duration,
    /// The longest retry delay. Default 10 s.
    pub backoff_max: Duration,
    /// The share of each delay drawn at random, up or down (0 to 1). Default 0.2.
    pub jitter: f64,
    /// For this long after a connected peer drops, retries come at most `reconnect_max` apart,
    /// so that a restarting peer is reconnected soon after it listens again. Default 10 s.
    pub reconnect_window: Duration,
    /// The longest retry delay within `reconnect_window`. Default 40 ms: with jitter, a
    /// restarted peer is reconnected within 50 ms of listening, for at most 25 refused dials a
    /// second while it is down.
    pub reconnect_max: Duration,
    /// The most dials at once; a peer due for a dial waits its turn beyond that. A dial to an
    /// address that drops packets holds a few sockets until the connect timeout, so this bounds
    /// the sockets and the work that addresses from outside can cost. Default 32: refused and
    /// answered dials end in a round trip, so the bound only slows dialing where many addresses
    /// do not answer at all.
    pub max_dials: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Some(Duration::from_secs(5)),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            jitter: 0.2,
            reconnect_window: Duration::from_secs(10),
            reconnect_max: Duration::from_millis(40),
            max_dials: 32,
        }
    }
}

/// What the reconciler wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum ReconcileAction {
    /// Run discovery and report with [`Reconciler::handle_discovered`].
    Discover,
    /// Dial this address and report with `handle_connected` or `handle_connect_failed`.
    Connect(String),
    /// Tell the operator.
    Event(DiscoveryEvent),
}

/// What discovery did, for events and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer appeared in discovery.
    Discovered(String),
    /// A peer disappeared from discovery.
    Removed(String),
    /// A discovered peer was dialed and is connected.
    Connected(String),
    /// Discovery failed; the last good answer stays. Reported once per distinct error.
    DiscoveryFailed(String),
    /// Discovery found more than [`MAX_PEERS`] addresses; the first `kept` are dialed, the rest
    /// left out. Reported once, until an answer fits again.
    TooManyPeers {
        /// How many are kept.
        kept: usize,
    },
    /// A dial failed; it is retried after `retry_in`.
    ConnectFailed {
        /// The address.
        addr: String,
        /// Why.
        error: String,
        /// When it is tried again.
        retry_in: Duration,
        /// Whether `error` is new among the failures of this peer's dials since it was last
        /// connected: a log that says each cause once says the new ones.
        new_cause: bool,
    },
}

#[derive(Debug, Default)]
struct Peer {
    connected: bool,
    failures: u32,
    /// When it is next dialed (its entry in [`Reconciler::due`]); `None` while connected or
    /// being dialed.
    retry_at: Option<Instant>,
    /// When its connection last dropped.
    dropped_at: Option<Instant>,
    /// Why its dials failed since it was last connected (the first few distinct causes).
    causes: Vec<String>,
    /// How many dials in a row reached this node itself.
    self_hits: u32,
}

/// How many distinct causes of failed dials are remembered per peer (a peer failing for more
/// causes than that is reported again for the others).
const MAX_CAUSES: usize = 8;

/// The reconcile loop's state.
#[derive(Debug)]
pub struct Reconciler {
    config: ReconcileConfig,
    backoff: Backoff,
    peers: BTreeMap<String, Peer>,
    /// The peers waiting for a dial, by when it is due: what `poll` takes from, in order.
    due: BTreeSet<(Instant, String)>,
    /// The addresses being dialed (a peer removed meanwhile stays here until its outcome).
    dialing: BTreeSet<String>,
    next_discovery: Option<Instant>,
    discovering: bool,
    last_error: Option<String>,
    /// Whether the last answer was cut to [`MAX_PEERS`] (and said so).
    truncated: bool,
    actions: VecDeque<ReconcileAction>,
}

impl Reconciler {
    /// A reconciler that discovers at once; `seed` drives the jitter.
    pub fn new(config: ReconcileConfig, seed: u64, now: Instant) -> Self {
        Self {
            config,
            backoff: Backoff::new(config.backoff_min, config.jitter, seed),
            peers: BTreeMap::new(),
            due: BTreeSet::new(),
            dialing: BTreeSet::new(),
            next_discovery: Some(now),
            discovering: false,
            last_error: None,
            truncated: false,
            actions: VecDeque::new(),
        }
    }

    /// Discovery answered (`Ok` with the peers' addresses) or failed.
    pub fn handle_discovered(&mut self, now: Instant, result: Result<Vec<String>, String>) {
        self.discovering = false;
        self.next_discovery = self.config.refresh_interval.map(|every| now + every);
        let (found, cut) = match result {
            Ok(found) => {
                self.last_error = None;
                bounded(found)
            }
            Err(error) => {
                if self.last_error.as_ref() != Some(&error) {
                    self.actions.push_back(ReconcileAction::Event(
                        DiscoveryEvent::DiscoveryFailed(error.clone()),
                    ));
                    self.last_error = Some(error);
                }
                return;
            }
        };
        let removed: Vec<String> = self
            .peers
            .keys()
            .filter(|a| !found.contains(*a))
            .cloned()
            .collect();
        for addr in removed {
            self.unschedule(&addr);
            self.peers.remove(&addr);
            self.actions
                .push_back(ReconcileAction::Event(DiscoveryEvent::Removed(addr)));
        }
        for addr in found {
            if !self.peers.contains_key(&addr) {
                self.actions
                    .push_back(ReconcileAction::Event(DiscoveryEvent::Discovered(
                        addr.clone(),
                    )));
                self.peers.insert(addr.clone(), Peer::default());
                self.schedule(&addr, now);
            }
        }
        // Said after the peers it brings, so that a subscriber lagging behind them sees it.
        if cut && !self.truncated {
            self.actions
                .push_back(ReconcileAction::Event(DiscoveryEvent::TooManyPeers {
                    kept: MAX_PEERS,
                }));
        }
        self.truncated = cut;
    }

    /// `addr`, a known peer neither connected nor being dialed, is dialed at `at`.
    fn schedule(&mut self, addr: &str, at: Instant) {
        self.unschedule(addr);
        if self.dialing.contains(addr) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(addr).filter(|peer| !peer.connected) {
            peer.retry_at = Some(at);
            self.due.insert((at, addr.to_string()));
        }
    }

    /// `addr` is not waiting for a dial (any more).
    fn unschedule(&mut self, addr: &str) {
        if let Some(at) = self.peers.get_mut(addr).and_then(|p| p.retry_at.take()) {
            self.due.remove(&(at, addr.to_string()));
        }
    }

    /// The dial of `addr` succeeded.
    pub fn handle_connected(&mut self, addr: &str) {
        self.dialing.remove(addr);
        if self.settle(addr) {
            self.actions
                .push_back(ReconcileAction::Event(DiscoveryEvent::Connected(
                    addr.to_string(),
                )));
        }
    }

    /// `addr` reached this node itself: it is not reported, and dialed again after a refresh
    /// interval (or `backoff_max` if shorter, or without refreshes), doubling at each hit in a
    /// row up to `backoff_max`, with jitter. An address can change hands — a container put back
    /// on its network may get another's old address, and this node a new one — and the node
    /// there then is found within that time; meanwhile a node dials itself about once per
    /// `backoff_max` per address of its own.
    pub fn handle_self(&mut self, now: Instant, addr: &str) {
        let max = self.config.backoff_max;
        let first = self
            .config
            .refresh_interval
            .map_or(max, |every| every.min(max));
        self.dialing.remove(addr);
        self.unschedule(addr);
        let Some(peer) = self.peers.get_mut(addr) else {
            return;
        };
        let hits = peer.self_hits.saturating_add(1);
        *peer = Peer {
            self_hits: hits,
            ..Peer::default()
        };
        let at = now + self.backoff.delay_from(first, hits, max);
        self.schedule(addr, at);
    }

    /// Marks a discovered peer connected; false if it is not discovered.
    fn settle(&mut self, addr: &str) -> bool {
        self.unschedule(addr);
        let Some(peer) = self.peers.get_mut(addr) else {
            return false;
        };
        *peer = Peer {
            connected: true,
            ..Peer::default()
        };
        true
    }

    /// The dial of `addr` failed.
    pub fn handle_connect_failed(&mut self, now: Instant, addr: &str, error: String) {
        self.dialing.remove(addr);
        let (failures, dropped_at, new_cause) = match self.peers.get_mut(addr) {
            Some(peer) => {
                peer.failures = peer.failures.saturating_add(1);
                let new_cause = !peer.causes.contains(&error);
                if new_cause && peer.causes.len() < MAX_CAUSES {
                    peer.causes.push(error.clone());
                }
                (peer.failures, peer.dropped_at, new_cause)
            }
            None => return,
        };
        let cap = match dropped_at {
            Some(at) if now.saturating_duration_since(at) < self.config.reconnect_window => {
                self.config.reconnect_max
            }
            _ => self.config.backoff_max,
        };
        let retry_in = self.backoff.delay(failures, cap);
        self.schedule(addr, now + retry_in);
        self.actions
            .push_back(ReconcileAction::Event(DiscoveryEvent::ConnectFailed {
                addr: addr.to_string(),
                error,
                retry_in,
                new_cause,
            }));
    }

    /// The connection to `addr` dropped: a discovered peer is dialed again at once (unless a
    /// dial of it is under way, whose outcome then decides).
    pub fn handle_disconnected(&mut self, now: Instant, addr: &str) {
        if let Some(peer) = self.peers.get_mut(addr) {
            peer.connected = false;
            peer.dropped_at = Some(now);
            self.schedule(addr, now);
        }
    }

    /// Whether another dial may start now.
    fn may_dial(&self) -> bool {
        self.dialing.len() < self.config.max_dials
    }

    /// When [`poll`](Self::poll) next has something to do, if ever: a dial waiting for its turn
    /// is due when a running one ends, which the runtime reports anyway.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let discovery = self.next_discovery.filter(|_| !self.discovering);
        let retry = self
            .due
            .first()
            .filter(|_| self.may_dial())
            .map(|(at, _)| *at);
        discovery.into_iter().chain(retry).min()
    }

    /// The next action due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<ReconcileAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if !self.discovering && self.next_discovery.is_some_and(|at| at <= now) {
            self.discovering = true;
            return Some(ReconcileAction::Discover);
        }
        if !self.may_dial() || self.due.first().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        let (_, addr) = self.due.pop_first()?;
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.retry_at = None;
        }
        self.dialing.insert(addr.clone());
        Some(ReconcileAction::Connect(addr))
    }
}

/// The first [`MAX_PEERS`] distinct addresses of an answer, in the answer's order, and whether
/// any were left out.
fn bounded(found: Vec<String>) -> (BTreeSet<String>, bool) {
    let mut kept = BTreeSet::new();
    for addr in found {
        if kept.len() == MAX_PEERS && !kept.contains(&addr) {
            return (kept, true);
        }
        kept.insert(addr);
    }
    (kept, false)
}

/// Exponential backoff with jitter drawn from a seeded generator: the delay before retry `n`
/// is `min · 2^(n-1)`, capped, then moved up or down by at most `jitter` of itself.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    jitter: f64,
    rng: u64,
}

impl Backoff {
    /// Delays from `min`, with ±`jitter` (0 to 1) drawn from a generator seeded with `seed`.
    pub fn new(min: Duration, jitter: f64, seed: u64) -> Self {
        Self {
            min,
            jitter: jitter.clamp(0.0, 1.0),
            rng: seed | 1,
        }
    }

    /// The delay before retry number `failures` (from 1), at most `cap` before jitter.
    pub fn delay(&mut self, failures: u32, cap: Duration) -> Duration {
        self.delay_from(self.min, failures, cap)
    }

    /// [`delay`](Self::delay), doubling from `first` instead of the configured minimum.
    pub fn delay_from(&mut self, first: Duration, failures: u32, cap: Duration) -> Duration {
        let base = first
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
            .min(cap);
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 + self.jitter * (2.0 * unit - 1.0))
    }

    /// xorshift64*: small, seeded, good enough for jitter.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn drain(r: &mut Reconciler, now: Instant) -> Vec<ReconcileAction> {
        std::iter::from_fn(|| r.poll(now)).collect()
    }

    fn peers(list: &[&str]) -> Result<Vec<String>, String> {
        Ok(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn discovery_runs_at_start_and_every_peer_found_is_dialed() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 7, t0);
        assert_eq!(drain(&mut r, t0), vec![ReconcileAction::Discover]);
        r.handle_discovered(t0, peers(&["a:1", "b:2"]));
        let actions = drain(&mut r, t0);
        assert!(actions.contains(&ReconcileAction::Connect("a:1".into())));
        assert!(actions.contains(&ReconcileAction::Connect("b:2".into())));
        assert!(
            actions.contains(&ReconcileAction::Event(DiscoveryEvent::Discovered(
                "a:1".into()
            )))
        );
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + Duration::from_secs(5)),
            "next: the refresh"
        );
    }

    #[test]
    fn each_cause_of_a_peers_failed_dials_is_new_once_until_it_connects() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 42, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        let mut fail = |error: &str| {
            r.handle_connect_failed(t0, "a:1", error.into());
            match r.poll(t0) {
                Some(ReconcileAction::Event(DiscoveryEvent::ConnectFailed {
                    new_cause, ..
                })) => new_cause,
                other => panic!("a ConnectFailed event, not {other:?}"),
            }
        };
        assert!(fail("refused"));
        assert!(!fail("refused"));
        assert!(fail("bad cookie"));
        assert!(!fail("bad cookie"));
        assert!(!fail("refused"), "alternating causes are each said once");
        r.handle_connected("a:1");
        r.handle_disconnected(t0, "a:1");
        drain(&mut r, t0);
        r.handle_connect_failed(t0, "a:1", "bad cookie".into());
        let Some(ReconcileAction::Event(DiscoveryEvent::ConnectFailed { new_cause, .. })) =
            r.poll(t0)
        else {
            panic!("a ConnectFailed event")
        };
        assert!(new_cause, "new again after a connection");
    }

    #[test]
    fn failed_dials_back_off_exponentially_with_bounded_jitter_up_to_the_cap() {
        let t0 = Instant::now();
        let config = ReconcileConfig {
            backoff_min: 100 * MS,
            backoff_max: 1000 * MS,
            jitter: 0.2,
            ..Default::default()
        };
        let mut r = Reconciler::new(config, 42, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        let mut now = t0;
        for (failure, base) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            r.handle_connect_failed(now, "a:1", "refused".into());
            let Some(ReconcileAction::Event(DiscoveryEvent::ConnectFailed { retry_in, .. })) =
                r.poll(now)
            else {
                panic!("a ConnectFailed event")
            };
            let (low, high) = (base * 8 / 10, base * 12 / 10);
            assert!(
                retry_in >= Duration::from_millis(low) && retry_in <= Duration::from_millis(high),
                "failure {failure}: {retry_in:?} not within {low}..{high} ms"
            );
            assert_eq!(r.poll(now), None, "nothing before the retry");
            now += retry_in;
            assert_eq!(r.poll(now), Some(ReconcileAction::Connect("a:1".into())));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let delays = |seed| {
            let t0 = Instant::now();
            let mut r = Reconciler::new(ReconcileConfig::default(), seed, t0);
            drain(&mut r, t0);
            r.handle_discovered(t0, peers(&["a:1"]));
            drain(&mut r, t0);
            r.handle_connect_failed(t0, "a:1", "x".into());
            r.poll(t0)
        };
        assert_eq!(delays(9), delays(9));
        assert_ne!(delays(9), delays(10));
    }

    #[test]
    fn a_dropped_connection_is_dialed_again_at_once_and_resets_the_backoff() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        r.handle_connected("a:1");
        assert_eq!(
            drain(&mut r, t0),
            vec![ReconcileAction::Event(DiscoveryEvent::Connected(
                "a:1".into()
            ))]
        );
        let later = t0 + 1000 * MS;
        r.handle_disconnected(later, "a:1");
        assert_eq!(r.poll(later), Some(ReconcileAction::Connect("a:1".into())));
    }

    #[test]
    fn after_a_drop_retries_stay_short_for_the_reconnect_window_then_back_off() {
        let t0 = Instant::now();
        let config = ReconcileConfig {
            reconnect_window: Duration::from_secs(1),
            reconnect_max: 40 * MS,
            jitter: 0.0,
            ..Default::default()
        };
        let mut r = Reconciler::new(config, 3, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        r.handle_connected("a:1");
        drain(&mut r, t0);
        r.handle_disconnected(t0, "a:1");
        let mut now = t0;
        let mut delays = Vec::new();
        while now < t0 + Duration::from_secs(3) {
            assert_eq!(r.poll(now), Some(ReconcileAction::Connect("a:1".into())));
            r.handle_connect_failed(now, "a:1", "refused".into());
            let Some(ReconcileAction::Event(DiscoveryEvent::ConnectFailed { retry_in, .. })) =
                r.poll(now)
            else {
                panic!("a ConnectFailed event")
            };
            delays.push((now - t0, retry_in));
            now += retry_in;
        }
        assert!(
            delays
                .iter()
                .filter(|(at, _)| *at < Duration::from_secs(1))
                .all(|(_, d)| *d <= 40 * MS)
        );
        assert!(
            delays.iter().any(|(_, d)| *d > 40 * MS),
            "after the window the backoff grows again"
        );
    }

    #[test]
    fn this_node_found_by_discovery_is_not_reported_and_dialed_again_only_after_a_while() {
        let t0 = Instant::now();
        let once = ReconcileConfig {
            refresh_interval: None,
            ..ReconcileConfig::default()
        };
        let mut r = Reconciler::new(once, 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["me:1"]));
        drain(&mut r, t0);
        r.handle_self(t0, "me:1");
        assert_eq!(drain(&mut r, t0 + 7000 * MS), vec![]);
        // The address may belong to another node by now: it is tried again.
        let later = t0 + 12_001 * MS;
        assert_eq!(
            drain(&mut r, later),
            vec![ReconcileAction::Connect("me:1".into())]
        );
        // Still this node: about once per backoff_max, however many hits.
        r.handle_self(later, "me:1");
        assert_eq!(drain(&mut r, later + 7000 * MS), vec![]);
    }

    #[test]
    fn a_removed_peer_is_not_dialed_again() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        r.handle_connected("a:1");
        drain(&mut r, t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(drain(&mut r, t1), vec![ReconcileAction::Discover]);
        r.handle_discovered(t1, peers(&[]));
        assert_eq!(
            drain(&mut r, t1),
            vec![ReconcileAction::Event(DiscoveryEvent::Removed(
                "a:1".into()
            ))]
        );
        r.handle_disconnected(t1, "a:1");
        assert_eq!(drain(&mut r, t1 + 1000 * MS), vec![]);
    }

    #[test]
    fn a_discovery_error_keeps_the_last_answer_and_is_reported_once_per_change() {
        let t0 = Instant::now();
        let config = ReconcileConfig {
            refresh_interval: Some(100 * MS),
            ..Default::default()
        };
        let mut r = Reconciler::new(config, 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        r.handle_connected("a:1");
        let mut reports = 0;
        for round in 1..=5u32 {
            let now = t0 + 100 * MS * round;
            drain(&mut r, now);
            let error = if round < 4 { "timeout" } else { "NXDOMAIN" };
            r.handle_discovered(now, Err(error.into()));
            reports += drain(&mut r, now)
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        ReconcileAction::Event(DiscoveryEvent::DiscoveryFailed(_))
                    )
                })
                .count();
        }
        assert_eq!(reports, 2, "one report per distinct error");
        r.handle_disconnected(t0 + 600 * MS, "a:1");
        assert!(
            drain(&mut r, t0 + 600 * MS).contains(&ReconcileAction::Connect("a:1".into())),
            "the last good answer still stands"
        );
    }

    #[test]
    fn an_answer_past_the_bound_is_cut_and_said_once_until_it_fits_again() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 1, t0);
        drain(&mut r, t0);
        let many: Vec<String> = (0..MAX_PEERS + 500)
            .map(|i| format!("10.0.0.1:{i}"))
            .collect();
        let too_many = |actions: &[ReconcileAction]| {
            actions
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        ReconcileAction::Event(DiscoveryEvent::TooManyPeers { .. })
                    )
                })
                .count()
        };
        r.handle_discovered(t0, Ok(many.clone()));
        let actions = drain(&mut r, t0);
        assert_eq!(too_many(&actions), 1);
        assert!(
            actions.contains(&ReconcileAction::Event(DiscoveryEvent::TooManyPeers {
                kept: MAX_PEERS
            }))
        );
        let discovered = |actions: &[ReconcileAction]| {
            actions
                .iter()
                .filter(|a| matches!(a, ReconcileAction::Event(DiscoveryEvent::Discovered(_))))
                .count()
        };
        assert_eq!(discovered(&actions), MAX_PEERS, "the first ones are kept");
        assert!(
            !actions.contains(&ReconcileAction::Event(DiscoveryEvent::Discovered(
                many[MAX_PEERS].clone()
            )))
        );
        let t1 = t0 + Duration::from_secs(5);
        drain(&mut r, t1);
        r.handle_discovered(t1, Ok(many.clone()));
        assert_eq!(too_many(&drain(&mut r, t1)), 0, "said once");
        let t2 = t1 + Duration::from_secs(5);
        drain(&mut r, t2);
        r.handle_discovered(t2, Ok(many[..10].to_vec()));
        drain(&mut r, t2);
        let t3 = t2 + Duration::from_secs(5);
        drain(&mut r, t3);
        r.handle_discovered(t3, Ok(many));
        assert_eq!(
            too_many(&drain(&mut r, t3)),
            1,
            "said again after an answer that fit"
        );
    }

    #[test]
    fn at_most_max_dials_run_at_once_and_the_rest_wait_their_turn() {
        let t0 = Instant::now();
        let config = ReconcileConfig {
            max_dials: 3,
            ..Default::default()
        };
        let mut r = Reconciler::new(config, 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1", "b:1", "c:1", "d:1", "e:1"]));
        let dials = |actions: Vec<ReconcileAction>| -> Vec<String> {
            actions
                .into_iter()
                .filter_map(|a| match a {
                    ReconcileAction::Connect(addr) => Some(addr),
                    _ => None,
                })
                .collect()
        };
        let first = dials(drain(&mut r, t0));
        assert_eq!(first.len(), 3);
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + Duration::from_secs(5)),
            "no wake-up for a dial that waits its turn: only the refresh"
        );
        r.handle_connect_failed(t0, &first[0], "timed out".into());
        let second = dials(drain(&mut r, t0));
        assert_eq!(second.len(), 1, "one ended, one more starts");
        assert!(!first.contains(&second[0]));
        r.handle_connected(&first[1]);
        let third = dials(drain(&mut r, t0));
        assert_eq!(third.len(), 1);
        assert!(!first.contains(&third[0]) && third != second);
        assert_eq!(
            dials(drain(&mut r, t0 + Duration::from_secs(1))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_peer_dropped_and_found_again_while_its_dial_runs_is_not_dialed_twice() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        assert!(drain(&mut r, t0).contains(&ReconcileAction::Connect("a:1".into())));
        let t1 = t0 + Duration::from_secs(5);
        drain(&mut r, t1);
        r.handle_discovered(t1, peers(&[]));
        let t2 = t1 + Duration::from_secs(5);
        drain(&mut r, t2);
        r.handle_discovered(t2, peers(&["a:1"]));
        assert!(!drain(&mut r, t2).contains(&ReconcileAction::Connect("a:1".into())));
        r.handle_connect_failed(t2, "a:1", "refused".into());
        assert!(
            drain(&mut r, t2 + Duration::from_secs(1))
                .contains(&ReconcileAction::Connect("a:1".into())),
            "its outcome schedules the next dial"
        );
    }

    #[test]
    fn a_peer_connected_while_its_dial_runs_is_not_dialed_again_when_the_dial_fails() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(ReconcileConfig::default(), 1, t0);
        drain(&mut r, t0);
        r.handle_discovered(t0, peers(&["a:1"]));
        assert!(drain(&mut r, t0).contains(&ReconcileAction::Connect("a:1".into())));
        // It dialed in meanwhile; this node's own dial then loses the race.
        r.handle_connected("a:1");
        r.handle_connect_failed(t0, "a:1", "superseded".into());
        assert!(
            !drain(&mut r, t0 + Duration::from_secs(20))
                .contains(&ReconcileAction::Connect("a:1".into())),
            "a connected peer is not dialed"
        );
    }

    #[test]
    fn with_no_refresh_interval_discovery_runs_once() {
        let t0 = Instant::now();
        let config = ReconcileConfig {
            refresh_interval: None,
            ..Default::default()
        };
        let mut r = Reconciler::new(config, 1, t0);
        assert_eq!(drain(&mut r, t0), vec![ReconcileAction::Discover]);
        r.handle_discovered(t0, peers(&["a:1"]));
        drain(&mut r, t0);
        r.handle_connected("a:1");
        drain(&mut r, t0);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(drain(&mut r, t0 + Duration::from_secs(3600)), vec![]);
    }
}

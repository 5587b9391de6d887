//! Deterministic simulation of failure detection at scale: the cluster view and the per-link
//! failure detector of every node, in simulated time, over links with seeded random latency.
//! Each node watches the peers its view's monitor ring gives it (its detector on those links
//! watches, and the peer heartbeats on request); nothing else heartbeats. Checked:
//!
//! - an idle cluster sends at most `k` heartbeats per node per interval, whatever its size;
//! - a hung node (it sends and reads nothing, its connections stay open) is declared down by its
//!   watchers, and every other node closes its link to it and holds it unreachable and down;
//! - a watcher that hears a live node late (a slow path) declares it down alone, and no one
//!   follows: one lagging watcher is not a quorum;
//! - while every watcher hears every node in time, no node is declared down;
//! - a crashed node is redialed by every node, and when it is back everyone reconnects;
//! - a mesh forming sends what changed in the records: fewer bytes than sending every changed
//!   record whole (the baseline, in the same run: links of an earlier protocol);
//! - on demand, at 50 to 200 nodes: a cluster joins through one seed, a tenth crash, a
//!   twentieth hang, all come back — within bounds, with the figures printed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gen_cluster_proto::handshake::Identity;
use gen_cluster_proto::liveness::{Liveness, LivenessAction, LivenessConfig};
use gen_cluster_proto::monitor_ring::{MonitorRing, quorum};
use gen_cluster_proto::view::{NodeState, View, ViewAction, ViewMessage};
use gen_cluster_proto::{Incarnation, NodeName};

const MS: Duration = Duration::from_millis(1);
const STEP: Duration = Duration::from_millis(10);
const MONITORS: usize = 5;

/// A name as long as real ones, so that records weigh what they would.
fn name(i: usize) -> NodeName {
    thread_local! {
        /// Each node's name, made once: the simulation asks for names at every step.
        static NAMES: std::cell::RefCell<Vec<NodeName>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    NAMES.with_borrow_mut(|names| {
        while names.len() <= i {
            let j = names.len();
            names.push(NodeName::new(format!("n{j}@host-{j}.example")).unwrap());
        }
        names[i].clone()
    })
}

/// What travels between two nodes.
enum Frame {
    Heartbeat,
    View(ViewMessage),
}

struct InFlight {
    at: Instant,
    from: usize,
    to: usize,
    frame: Frame,
}

struct Sim {
    now: Instant,
    config: LivenessConfig,
    views: Vec<View>,
    lives: Vec<u64>,
    hung: Vec<bool>,
    crashed: Vec<bool>,
    /// Each node's connected peers (both ends list a link).
    links: Vec<BTreeSet<usize>>,
    /// The detector of each end of each link: `detectors[me][peer]`.
    detectors: Vec<Vec<Option<Liveness>>>,
    in_flight: Vec<InFlight>,
    /// Links whose closing a hung node has not noticed yet.
    closed_while_hung: Vec<(usize, usize)>,
    /// Extra latency on the path from one node to another.
    slow_paths: BTreeMap<(usize, usize), Duration>,
    /// The most random latency of a frame.
    jitter: Duration,
    rng: u64,
    /// Every `Down` of a detector: (watcher, watched, when).
    detections: Vec<(usize, usize, Instant)>,
    /// Every link closed because of a view's verdict: (closer, closed, when).
    verdict_cuts: Vec<(usize, usize, Instant)>,
    heartbeats_sent: u64,
    view_messages_sent: u64,
    view_bytes_sent: u64,
    /// Whether the last step sent a view message, or connected two nodes (whose views then
    /// have their digests to send).
    view_sent_last_step: bool,
    next_dial: Instant,
    /// Whether every link speaks a protocol from before record changes.
    whole_records_only: bool,
    /// How often each node dials what its view asks for, and how many of those at once.
    dial_every: Duration,
    dials_at_once: usize,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// `n` nodes, each seeded with node 0, meshed and settled.
    fn meshed(n: usize, seed: u64, jitter: Duration) -> Self {
        Self::started(n, seed, jitter).settled()
    }

    /// `n` nodes, not connected yet.
    fn started(n: usize, seed: u64, jitter: Duration) -> Self {
        let now = Instant::now();
        let config = LivenessConfig {
            monitors: MONITORS,
            ..LivenessConfig::default()
        };
        Sim {
            now,
            config,
            views: (0..n).map(|i| view(i, 1)).collect(),
            lives: vec![1; n],
            hung: vec![false; n],
            crashed: vec![false; n],
            links: vec![BTreeSet::new(); n],
            detectors: (0..n).map(|_| (0..n).map(|_| None).collect()).collect(),
            in_flight: Vec::new(),
            closed_while_hung: Vec::new(),
            slow_paths: BTreeMap::new(),
            jitter,
            rng: seed | 1,
            detections: Vec::new(),
            verdict_cuts: Vec::new(),
            heartbeats_sent: 0,
            view_messages_sent: 0,
            view_bytes_sent: 0,
            view_sent_last_step: false,
            next_dial: now,
            whole_records_only: false,
            dial_every: 500 * MS,
            dials_at_once: usize::MAX,
        }
    }

    /// Connects every node to node 0, and runs until they are meshed and settled.
    fn settled(mut self) -> Self {
        for i in 1..self.views.len() {
            self.connect(i, 0);
        }
        self.run_until(|sim| sim.meshed_all());
        self.run_for(Duration::from_secs(2));
        assert!(self.meshed_all(), "the cluster settles into a full mesh");
        self
    }

    fn random(&mut self, below: u64) -> u64 {
        // xorshift64*: deterministic for a seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % below.max(1)
    }

    fn latency(&mut self, from: usize, to: usize) -> Duration {
        let jitter = self.random(self.jitter.as_millis() as u64 + 1);
        let slow = self
            .slow_paths
            .get(&(from, to))
            .copied()
            .unwrap_or_default();
        MS + Duration::from_millis(jitter) + slow
    }

    fn identity(&self, i: usize) -> Identity {
        Identity {
            name: name(i),
            incarnation: Incarnation(self.lives[i]),
            listen: format!("10.0.0.{i}:4370"),
            hidden: false,
        }
    }

    fn up(&self, i: usize) -> bool {
        !self.hung[i] && !self.crashed[i]
    }

    fn connect(&mut self, a: usize, b: usize) {
        if a == b || self.crashed[a] || self.crashed[b] || !self.link(a, b) {
            return;
        }
        self.view_sent_last_step = true;
        let (ia, ib) = (self.identity(a), self.identity(b));
        self.views[a].handle_up(&ib);
        self.views[b].handle_up(&ia);
        if self.whole_records_only {
            self.views[a].handle_whole_records_only(&name(b));
            self.views[b].handle_whole_records_only(&name(a));
        }
        for (me, peer) in [(a, b), (b, a)] {
            let detector = Liveness::quiet(self.config, self.now);
            self.detectors[me][peer] = Some(detector);
        }
    }

    /// Closes the link: `a` knows at once, `b` when it next runs.
    fn cut(&mut self, a: usize, b: usize) {
        if !self.unlink(a, b) {
            return;
        }
        self.detectors[a][b] = None;
        self.detectors[b][a] = None;
        self.in_flight.retain(|f| pair(f.from, f.to) != pair(a, b));
        self.views[a].handle_down(&name(b));
        if self.up(b) {
            self.views[b].handle_down(&name(a));
        } else if self.hung[b] {
            self.closed_while_hung.push((b, a));
        }
    }

    fn crash(&mut self, i: usize) {
        self.crashed[i] = true;
        let peers: Vec<usize> = self.peers(i);
        for peer in peers {
            self.cut(peer, i);
        }
    }

    fn restart(&mut self, i: usize, seed: usize) {
        self.crashed[i] = false;
        self.lives[i] += 1;
        self.views[i] = view(i, self.lives[i]);
        self.connect(i, seed);
    }

    fn resume(&mut self, i: usize) {
        self.hung[i] = false;
        for (me, peer) in std::mem::take(&mut self.closed_while_hung) {
            if me == i {
                self.views[me].handle_down(&name(peer));
            } else {
                self.closed_while_hung.push((me, peer));
            }
        }
    }

    fn peers(&self, i: usize) -> Vec<usize> {
        self.links[i].iter().copied().collect()
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.links[a].contains(&b)
    }

    /// Links `a` and `b`; whether they were not linked.
    fn link(&mut self, a: usize, b: usize) -> bool {
        self.links[a].insert(b) && self.links[b].insert(a)
    }

    /// Unlinks `a` and `b`; whether they were linked.
    fn unlink(&mut self, a: usize, b: usize) -> bool {
        self.links[a].remove(&b) && self.links[b].remove(&a)
    }

    fn send(&mut self, from: usize, to: usize, frame: Frame) {
        match frame {
            Frame::Heartbeat => self.heartbeats_sent += 1,
            Frame::View(ref message) => {
                self.view_sent_last_step = true;
                self.view_messages_sent += 1;
                let size = postcard::experimental::serialized_size(message).unwrap() as u64;
                self.view_bytes_sent += size;
            }
        }
        let at = self.now + self.latency(from, to);
        if let Some(detector) = &mut self.detectors[from][to] {
            detector.handle_sent(self.now);
        }
        self.in_flight.push(InFlight {
            at,
            from,
            to,
            frame,
        });
    }

    fn step(&mut self) {
        self.now += STEP;
        self.view_sent_last_step = false;
        let n = self.views.len();
        // Detectors first: a node that resumes looks at its clocks before it reads what waited.
        for i in 0..n {
            if !self.up(i) {
                continue;
            }
            let watching: BTreeSet<usize> = self.views[i].watching().iter().map(index).collect();
            for peer in self.peers(i) {
                let watch = watching.contains(&peer);
                self.detectors[i][peer]
                    .as_mut()
                    .unwrap()
                    .set_watching(watch, self.now);
                // The request for heartbeats, as if it arrived at once.
                if let Some(theirs) = &mut self.detectors[peer][i] {
                    theirs.set_heartbeats(watch);
                }
            }
            for peer in self.peers(i) {
                let Some(detector) = &mut self.detectors[i][peer] else {
                    continue;
                };
                match detector.poll(self.now) {
                    Some(LivenessAction::SendHeartbeat) => self.send(i, peer, Frame::Heartbeat),
                    Some(LivenessAction::Down { .. }) => {
                        self.detections.push((i, peer, self.now));
                        self.cut(i, peer);
                    }
                    None => {}
                }
            }
        }
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|f| f.at <= self.now && self.up(f.to));
        self.in_flight = later;
        for InFlight {
            from, to, frame, ..
        } in due
        {
            if !self.linked(from, to) {
                continue;
            }
            if let Some(detector) = &mut self.detectors[to][from] {
                detector.handle_heard(self.now);
            }
            if let Frame::View(message) = frame {
                self.views[to].handle_message(&name(from), message);
            }
        }
        for i in 0..n {
            if !self.up(i) {
                continue;
            }
            self.views[i].flush();
            while let Some(action) = self.views[i].poll_action() {
                match action {
                    ViewAction::Send { to, message } => {
                        let to = index(&to);
                        if self.linked(i, to) {
                            self.send(i, to, Frame::View(message));
                        }
                    }
                    ViewAction::Disconnect(peer) => {
                        let peer = index(&peer);
                        if self.linked(i, peer) {
                            self.verdict_cuts.push((i, peer, self.now));
                            self.cut(i, peer);
                        }
                    }
                    ViewAction::Changed => {}
                }
            }
        }
        // Each node dials what its view asks for twice a second; a dial to a hung or crashed
        // node fails (its handshake would time out).
        if self.now >= self.next_dial {
            self.next_dial = self.now + self.dial_every;
            for i in 0..n {
                if !self.up(i) {
                    continue;
                }
                let targets: Vec<usize> = self.views[i]
                    .to_dial()
                    .map(|(target, _)| index(target))
                    .collect();
                for target in targets.into_iter().take(self.dials_at_once) {
                    if self.up(target) {
                        self.connect(i, target);
                    }
                }
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done`, at most a simulated minute.
    fn run_until(&mut self, done: impl Fn(&Sim) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < Duration::from_secs(60),
                "not done within a simulated minute"
            );
            self.step();
        }
        self.now - start
    }

    fn meshed_all(&self) -> bool {
        let live: Vec<usize> = (0..self.views.len()).filter(|&i| self.up(i)).collect();
        live.iter().all(|&a| {
            self.links[a].iter().filter(|&&b| self.up(b)).count() == live.len() - 1
                && self.views[a].unreachable().is_empty()
        })
    }

    /// Meshed, and no view message sent in the last step or in flight: every view holds what
    /// the others said.
    fn meshed_and_quiet(&self) -> bool {
        !self.view_sent_last_step
            && self.meshed_all()
            && self
                .in_flight
                .iter()
                .all(|f| matches!(f.frame, Frame::Heartbeat))
    }

    /// The nodes that watch `i`, as the ring of every other live node places them.
    fn watchers_of(&self, i: usize) -> Vec<usize> {
        let names: Vec<NodeName> = (0..self.views.len())
            .filter(|&j| j != i && self.up(j))
            .map(name)
            .collect();
        let ring = MonitorRing::new(names, MONITORS);
        ring.watchers_of(&name(i)).into_iter().map(index).collect()
    }
}

fn view(i: usize, life: u64) -> View {
    View::new(name(i), format!("10.0.0.{i}:4370"), Incarnation(life)).with_monitors(MONITORS)
}

fn index(name: &NodeName) -> usize {
    name.as_str()[1..]
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_cluster_sends_k_heartbeats_per_node_per_interval_whatever_its_size() {
    for n in [10, 30, 60] {
        let mut sim = Sim::meshed(n, 7, 20 * MS);
        let (heartbeats, views) = (sim.heartbeats_sent, sim.view_messages_sent);
        let idle = Duration::from_secs(10);
        sim.run_for(idle);
        let per_node_per_second =
            (sim.heartbeats_sent - heartbeats) as f64 / n as f64 / idle.as_secs_f64();
        let intervals_per_second = 1.0 / sim.config.heartbeat_interval.as_secs_f64();
        println!("{n} nodes idle: {per_node_per_second:.1} heartbeats per node per second");
        assert!(
            per_node_per_second <= MONITORS as f64 * intervals_per_second * 1.05,
            "{n} nodes: {per_node_per_second} heartbeats per node per second"
        );
        assert!(per_node_per_second >= MONITORS as f64 * intervals_per_second * 0.5);
        assert_eq!(sim.view_messages_sent, views, "an idle view says nothing");
        assert!(sim.detections.is_empty() && sim.verdict_cuts.is_empty());
    }
}

#[test]
fn a_hung_node_is_declared_down_by_its_watchers_and_everyone_follows() {
    for seed in 1..=5 {
        let n = 30;
        let mut sim = Sim::meshed(n, seed, 20 * MS);
        let hung = sim.random(n as u64) as usize;
        let watchers = sim.watchers_of(hung);
        sim.hung[hung] = true;
        let started = sim.now;
        let took = sim.run_until(|sim| {
            (0..n).filter(|&i| i != hung).all(|i| {
                !sim.linked(i, hung)
                    && sim.views[i].unreachable().contains(&name(hung))
                    && sim.views[i].state(&name(hung)) == Some(NodeState::Down)
            })
        });
        println!("seed {seed}: n{hung} hung, down everywhere after {took:?}");
        assert!(
            took <= sim.config.down_after + 300 * MS,
            "the news of a hang spreads within moments of its detection: {took:?}"
        );
        // Its watchers, and only they, detect it: a quorum of them at least (the rest may
        // hear the verdict before their own deadline).
        let detectors: BTreeSet<usize> = sim.detections.iter().map(|d| d.0).collect();
        assert!(sim.detections.iter().all(|d| d.1 == hung && d.2 >= started));
        assert!(
            detectors.iter().all(|d| watchers.contains(d)),
            "{detectors:?}"
        );
        assert!(detectors.len() >= quorum(watchers.len()), "{detectors:?}");
        // The rest of the cluster stays meshed, and every node dials the hung node again (in
        // vain while it hangs).
        sim.run_for(Duration::from_secs(3));
        assert!(sim.verdict_cuts.iter().all(|cut| cut.1 == hung));
        for i in (0..n).filter(|&i| i != hung) {
            let dials = sim.views[i]
                .to_dial()
                .any(|(target, _)| *target == name(hung));
            assert!(dials, "n{i} does not dial n{hung}");
        }
        // Resumed, it is back in the mesh.
        sim.resume(hung);
        sim.run_until(Sim::meshed_all);
    }
}

#[test]
fn one_lagging_watcher_declares_a_live_node_down_alone() {
    for seed in 1..=5 {
        let n = 20;
        let mut sim = Sim::meshed(n, seed, 20 * MS);
        let node = sim.random(n as u64) as usize;
        let watchers = sim.watchers_of(node);
        let lagging = watchers[sim.random(watchers.len() as u64) as usize];
        // Everything from the node reaches this watcher a second and a half late.
        sim.slow_paths.insert((node, lagging), 1500 * MS);
        let mut cuts_seen = 0;
        for _ in 0..(10_000 / STEP.as_millis()) {
            sim.step();
            for i in (0..n).filter(|&i| i != node) {
                assert!(
                    !sim.views[i].unreachable().contains(&name(node)),
                    "seed {seed}: n{i} holds n{node} unreachable on one watcher's word"
                );
            }
            cuts_seen = sim.verdict_cuts.len();
            assert_eq!(cuts_seen, 0, "seed {seed}: {:?}", sim.verdict_cuts);
        }
        assert!(
            sim.detections
                .iter()
                .any(|&(by, of, _)| by == lagging && of == node),
            "seed {seed}: the lagging watcher did declare it down"
        );
        assert!(
            sim.detections.iter().all(|&(by, _, _)| by == lagging),
            "seed {seed}: no one else did: {:?}",
            sim.detections
        );
        assert_eq!(cuts_seen, 0);
    }
}

#[test]
fn no_node_is_declared_down_while_every_watcher_hears_it_in_time() {
    for seed in 1..=5 {
        // Frames take up to 600 ms: with a heartbeat every 200 ms, a watcher hears each node
        // at least every 800 ms, within the 1 s deadline.
        let mut sim = Sim::meshed(20, seed, 600 * MS);
        sim.run_for(Duration::from_secs(20));
        assert_eq!(sim.detections, [], "seed {seed}");
        assert_eq!(sim.verdict_cuts, [], "seed {seed}");
        assert!(sim.meshed_all());
    }
}

#[test]
fn a_crashed_node_is_redialed_and_rejoins_everyone() {
    let n = 20;
    let mut sim = Sim::meshed(n, 3, 20 * MS);
    let crashed = 7;
    let watchers = sim.watchers_of(crashed);
    sim.crash(crashed);
    sim.run_for(Duration::from_secs(1));
    for i in (0..n).filter(|&i| i != crashed) {
        assert_eq!(sim.views[i].state(&name(crashed)), Some(NodeState::Down));
        let dials = sim.views[i]
            .to_dial()
            .any(|(target, _)| *target == name(crashed));
        assert!(dials, "n{i} does not dial n{crashed}");
    }
    // Back, seeded with a node that is not among its watchers: everyone reaches it.
    let seed = (0..n)
        .find(|i| *i != crashed && !watchers.contains(i))
        .unwrap();
    sim.restart(crashed, seed);
    let took = sim.run_until(Sim::meshed_all);
    println!("a restarted node is meshed again after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_mesh_forming_sends_what_changed_in_the_records_not_whole_records() {
    let n = 40;
    // Each node dials one member per step, as handshakes come one after another.
    let forming = |whole_records_only: bool| {
        let mut sim = Sim::started(n, 5, 20 * MS);
        sim.whole_records_only = whole_records_only;
        sim.dial_every = STEP;
        sim.dials_at_once = 1;
        sim.settled()
    };
    let (changes, whole) = (forming(false), forming(true));
    let per_node = |sim: &Sim| sim.view_bytes_sent as f64 / n as f64;
    println!(
        "{n} nodes seeded with one, meshed: {:.0} view bytes per node ({} messages), whole records \
         only {:.0} ({}): {:.2}x",
        per_node(&changes),
        changes.view_messages_sent,
        per_node(&whole),
        whole.view_messages_sent,
        per_node(&changes) / per_node(&whole),
    );
    assert!(
        per_node(&changes) < per_node(&whole) * 0.8,
        "{} vs {}",
        per_node(&changes),
        per_node(&whole)
    );
}

/// The scenario at the sizes a full mesh of records can be simulated in one process
/// (each node's view holds every record with its links: O(n³) names in all): n nodes join
/// through one seed and converge, then a tenth crash, then a twentieth hang (cut off, their
/// connections open), then the crashed restart and the hung resume. Prints, per size, the
/// simulated times, the messages and bytes per node per second, and the wall time; run on
/// demand (`cargo test --release -p gen_cluster_proto --test monitor_simulation -- --ignored
/// --nocapture`; `SIM_NODES=50,100` picks the sizes).
#[test]
#[ignore = "minutes in a debug build; run on demand in release"]
fn a_cluster_joins_through_one_seed_loses_some_nodes_and_heals_at_scale() {
    let sizes: Vec<usize> = std::env::var("SIM_NODES")
        .unwrap_or_else(|_| "50,100,200".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    for n in sizes {
        let wall = Instant::now();
        let mut sim = Sim::started(n, 11, 20 * MS);
        for i in 1..n {
            sim.connect(i, 0);
        }
        let converged = sim.run_until(Sim::meshed_and_quiet);
        let sent = |sim: &Sim| sim.heartbeats_sent + sim.view_messages_sent;
        let per_node_per_s =
            |messages: u64, over: Duration| messages as f64 / n as f64 / over.as_secs_f64();
        let joining_messages = per_node_per_s(sent(&sim), converged);
        let joining_bytes = per_node_per_s(sim.view_bytes_sent, converged);
        let (before, idle) = (sent(&sim), Duration::from_secs(5));
        sim.run_for(idle);
        let idle_messages = per_node_per_s(sent(&sim) - before, idle);
        assert!(
            idle_messages <= 50.0,
            "{n} nodes idle: {idle_messages:.1} messages per node per second"
        );
        // A tenth crash, a twentieth hang: never node 0, the seed of the restarts.
        let mut picked = BTreeSet::new();
        while picked.len() < n / 10 + n / 20 {
            picked.insert(1 + sim.random(n as u64 - 1) as usize);
        }
        let picked: Vec<usize> = picked.into_iter().collect();
        let (crashed, hung) = picked.split_at(n / 10);
        for &i in crashed {
            sim.crash(i);
        }
        let crashes_seen = sim.run_until(|sim| {
            (0..n).filter(|&i| sim.up(i)).all(|i| {
                crashed
                    .iter()
                    .all(|&c| sim.views[i].state(&name(c)) == Some(NodeState::Down))
            })
        });
        for &i in hung {
            sim.hung[i] = true;
        }
        let hangs_seen = sim.run_until(|sim| {
            (0..n).filter(|&i| sim.up(i)).all(|i| {
                hung.iter()
                    .all(|&h| sim.views[i].state(&name(h)) == Some(NodeState::Down))
            })
        });
        assert!(
            crashes_seen <= 100 * MS,
            "{n} nodes: crashes seen after {crashes_seen:?}"
        );
        assert!(
            hangs_seen <= sim.config.down_after + Duration::from_secs(1),
            "{n} nodes: hangs seen after {hangs_seen:?}"
        );
        for &i in crashed {
            sim.restart(i, 0);
        }
        for &i in hung {
            sim.resume(i);
        }
        let healed = sim.run_until(Sim::meshed_and_quiet);
        println!(
            "{n} nodes: joined through one seed, meshed and quiet in {converged:?} (simulated), \
             {joining_messages:.0} messages and {joining_bytes:.0} view bytes per node per second \
             meanwhile; idle {idle_messages:.1} messages per node per second; {} crashed seen \
             down by all in {crashes_seen:?}, {} hung in {hangs_seen:?}; healed in {healed:?}; \
             wall time {:.1} s",
            crashed.len(),
            hung.len(),
            wall.elapsed().as_secs_f64()
        );
        assert!(
            converged <= Duration::from_secs(30),
            "{n} nodes: {converged:?}"
        );
        assert!(healed <= Duration::from_secs(30), "{n} nodes: {healed:?}");
    }
}

//! `scale` (run on demand: `gen-cluster bench --only scale`, a few minutes): N `gen-cluster node`
//! processes on this machine, each a cluster member running the global dictionary (three
//! candidates, the rest workers), for N = 10, 30, 60, 100.
//!
//! - Convergence after the last process started — every node connected to every other and
//!   following the first candidate — when each is given only the first node's address, beside
//!   the same N given every address; then until every node holds all N members.
//! - The idle CPU of the whole cluster once converged, beside the same cluster with every member
//!   watching every other (`--monitors N−1`: the full-mesh heartbeats of earlier versions).
//! - `kill -9` of a tenth of the nodes: until every survivor has seen each of them down.
//!
//! Figures come from the nodes' JSON events and the kernel's per-thread CPU time
//! (`/proc/<pid>/task/*/schedstat`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Bench, COOKIE, Report};
use crate::child::NodeProcess;

const SIZES: [usize; 4] = [10, 30, 60, 100];
/// The sizes whose idle CPU is measured.
const IDLE_SIZES: [usize; 3] = [10, 30, 100];
const CANDIDATES: usize = 3;
/// A bound on each wait, only so that a broken run ends.
const BOUND: Duration = Duration::from_secs(60);
/// The failure detector's deadline: 100 processes joining at once on two cores starve some of
/// them for over the default second, and a starved member is rightly declared down (and let
/// back in once heard from, which the convergence figures would then include).
const DOWN_AFTER_MS: &str = "3000";
/// How long idle CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// How the nodes find each other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seeding {
    /// Each is given the first node's address.
    First,
    /// Each is given every address.
    All,
}

/// What one node has said so far.
#[derive(Default)]
struct Seen {
    peers: BTreeSet<String>,
    leader: Option<String>,
    members: usize,
    /// When it reported each peer down.
    down_at: BTreeMap<String, Instant>,
    /// Its last few reports of a peer down, for the message of a run that fails.
    downs: Vec<String>,
}

impl Seen {
    fn take(&mut self, event: &Value) {
        let peer = || event["peer"].as_str().unwrap_or_default().to_string();
        match event["event"].as_str() {
            Some("node_up") => {
                self.peers.insert(peer());
            }
            Some("node_down") => {
                self.peers.remove(&peer());
                self.down_at.insert(peer(), Instant::now());
                if self.downs.len() < 5 {
                    self.downs.push(format!("{} {}", peer(), event["detail"]));
                }
            }
            Some("leader") => self.leader = event["leader"].as_str().map(str::to_string),
            Some(kind) if kind.starts_with("member_") => {
                self.members = event["members"]["scale"].as_array().map_or(0, Vec::len);
            }
            _ => {}
        }
    }
}

/// N node processes and what each has said.
struct Fleet {
    nodes: Vec<Option<NodeProcess>>,
    seen: Vec<Seen>,
    /// When the last node had started.
    started: Instant,
    /// What this fleet is, for the message of a run that fails.
    label: String,
}

fn name(i: usize) -> String {
    format!("n{i:03}")
}

impl Fleet {
    fn start(n: usize, seeding: Seeding, monitors: Option<usize>) -> Result<Self> {
        let mut probes = Vec::with_capacity(n);
        for _ in 0..n {
            probes.push(std::net::TcpListener::bind("127.0.0.1:0")?);
        }
        let addrs: Vec<String> = probes
            .iter()
            .map(|probe| probe.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<_>>()?;
        drop(probes);
        let candidates: Vec<String> = (0..CANDIDATES).map(name).collect();
        let candidates = candidates.join(",");
        let monitors = monitors.map(|m| m.to_string());
        let mut nodes = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let mut args = vec![
                "--listen",
                addr,
                "--member",
                "scale",
                "--candidates",
                &candidates,
                "--down-after-ms",
                DOWN_AFTER_MS,
            ];
            let seeds: Vec<&String> = match seeding {
                Seeding::First if i == 0 => Vec::new(),
                Seeding::First => vec![&addrs[0]],
                Seeding::All => addrs.iter().filter(|other| *other != addr).collect(),
            };
            for seed in seeds {
                args.extend(["--seed", seed]);
            }
            if let Some(monitors) = &monitors {
                args.extend(["--monitors", monitors]);
            }
            nodes.push(Some(NodeProcess::start(&name(i), COOKIE, &args, BOUND)?));
        }
        let seeded = match seeding {
            Seeding::First => "seeded with one",
            Seeding::All => "given every address",
        };
        let watched = monitors.map_or(String::new(), |m| format!(", {m} monitors"));
        Ok(Self {
            seen: (0..n).map(|_| Seen::default()).collect(),
            nodes,
            started: Instant::now(),
            label: format!("{n} nodes {seeded}{watched}"),
        })
    }

    /// Takes every event printed so far.
    fn drain(&mut self) {
        for (node, seen) in self.nodes.iter().zip(&mut self.seen) {
            if let Some(node) = node {
                while let Some(event) = node.try_event() {
                    seen.take(&event);
                }
            }
        }
    }

    /// Waits until `done` holds for every live node's events.
    fn until(&mut self, what: &str, done: impl Fn(&Seen) -> bool) -> Result<()> {
        let deadline = Instant::now() + BOUND;
        loop {
            self.drain();
            let live = self
                .nodes
                .iter()
                .zip(&self.seen)
                .filter(|(n, _)| n.is_some());
            if live.map(|(_, seen)| seen).all(&done) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let behind: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&self.seen)
                    .enumerate()
                    .filter(|(_, (node, seen))| node.is_some() && !done(seen))
                    .map(|(i, (_, seen))| {
                        format!(
                            "{}: {} peers, leader {:?}, {} members, downs {:?}",
                            name(i),
                            seen.peers.len(),
                            seen.leader,
                            seen.members,
                            seen.downs
                        )
                    })
                    .collect();
                bail!(
                    "{}: not {what} within {BOUND:?}: {}",
                    self.label,
                    behind.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Time from the last start until every node is connected to all the others and follows
    /// the first candidate.
    fn meshed(&mut self) -> Result<Duration> {
        let n = self.nodes.len();
        let leader = name(0);
        self.until("meshed under one leader", |seen| {
            seen.peers.len() == n - 1 && seen.leader.as_deref() == Some(leader.as_str())
        })?;
        Ok(self.started.elapsed())
    }

    /// Time from the last start until every node also holds every member; or how many members
    /// the node that holds the fewest holds, if that does not happen within the bound (see the
    /// README's known limits).
    fn members(&mut self) -> std::result::Result<Duration, usize> {
        let n = self.nodes.len();
        match self.until("holding every member", |seen| seen.members == n) {
            Ok(()) => Ok(self.started.elapsed()),
            Err(_) => Err(self.seen.iter().map(|seen| seen.members).min().unwrap_or(0)),
        }
    }

    /// The CPU the node processes use over `window`, in cores.
    fn cpu(&self, window: Duration) -> Result<f64> {
        let used = || -> Result<Duration> {
            let mut total = Duration::ZERO;
            for node in self.nodes.iter().flatten() {
                total += cpu_time(node.pid())?;
            }
            Ok(total)
        };
        let before = used()?;
        std::thread::sleep(window);
        let after = used()?;
        Ok((after - before).as_secs_f64() / window.as_secs_f64())
    }

    /// Kills every tenth node; the time until every survivor has reported each of them down.
    fn kill_tenth(&mut self) -> Result<Duration> {
        self.drain();
        for seen in &mut self.seen {
            seen.down_at.clear();
        }
        let mut killed = Vec::new();
        for i in (5..self.nodes.len()).step_by(10) {
            if let Some(mut node) = self.nodes[i].take() {
                node.kill()?;
                killed.push(name(i));
            }
        }
        let at = Instant::now();
        self.until("every kill seen by every survivor", |seen| {
            killed.iter().all(|k| seen.down_at.contains_key(k))
        })?;
        let last = self
            .nodes
            .iter()
            .zip(&self.seen)
            .filter(|(node, _)| node.is_some())
            .flat_map(|(_, seen)| killed.iter().filter_map(|k| seen.down_at.get(k)))
            .max()
            .copied()
            .unwrap_or(at);
        Ok(last.saturating_duration_since(at))
    }
}

/// The CPU time a process has used so far: the sum over its threads of the nanoseconds on a CPU
/// that `/proc/<pid>/task/<tid>/schedstat` gives first.
fn cpu_time(pid: u32) -> Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        let on_cpu = stat.split_whitespace().next().context("empty schedstat")?;
        total += on_cpu.parse::<u64>()?;
    }
    Ok(Duration::from_nanos(total))
}

pub(super) fn scale(_: &Bench, report: &mut Report) -> Result<()> {
    for n in SIZES {
        let mut seeded = Fleet::start(n, Seeding::First, None)?;
        let meshed = seeded.meshed()?;
        let members = seeded.members();
        let idle = if IDLE_SIZES.contains(&n) {
            std::thread::sleep(Duration::from_secs(2));
            Some(seeded.cpu(IDLE_WINDOW)?)
        } else {
            None
        };
        let kills = (n >= 30).then(|| seeded.kill_tenth()).transpose()?;
        drop(seeded);
        let mut given = Fleet::start(n, Seeding::All, None)?;
        let floor = given.meshed()?;
        drop(given);
        report.lower(
            &format!("scale_{n}_processes_seeded_with_one_meshed_one_leader"),
            "ms",
            meshed.as_secs_f64() * 1000.0,
            "every_address_given",
            floor.as_secs_f64() * 1000.0,
        );
        match members {
            Ok(held) => report.lower(
                &format!("scale_{n}_processes_seeded_with_one_all_members_held"),
                "ms",
                held.as_secs_f64() * 1000.0,
                "meshed_one_leader",
                meshed.as_secs_f64() * 1000.0,
            ),
            Err(fewest) => report.note(&format!(
                "{n} processes: the member lists did not converge within {BOUND:?} \
                 (the shortest holds {fewest} of {n})"
            )),
        }
        if let Some(kills) = kills {
            report.lower(
                &format!("scale_{n}_processes_kill_9_of_a_tenth_seen_by_all"),
                "ms",
                kills.as_secs_f64() * 1000.0,
                "meshed_seeded_with_one",
                meshed.as_secs_f64() * 1000.0,
            );
        }
        if let Some(idle) = idle {
            let mut full = Fleet::start(n, Seeding::First, Some(n - 1))?;
            full.meshed()?;
            std::thread::sleep(Duration::from_secs(2));
            let full_mesh = full.cpu(IDLE_WINDOW)?;
            drop(full);
            report.lower(
                &format!("scale_{n}_processes_idle_cpu_percent_of_a_core"),
                "%",
                idle * 100.0,
                "every_member_watching_every_other",
                full_mesh * 100.0,
            );
        }
    }
    Ok(())
}

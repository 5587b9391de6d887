//! The node image under Docker, driven as an orchestrator drives it: `deploy/compose.yml`'s five
//! nodes (the `majority` election unless a test says otherwise, discovery by DNS A records of
//! the network alias `nodes` through Docker's embedded DNS, mutual TLS) started, killed, cut off
//! the network, joined by two more, restarted one after another, and dropped from DNS. The
//! client is a node of this test process (with the clients' certificate) dialing the
//! containers' addresses on the bridge; a side cut off the network is asked through
//! `docker exec`, as `deploy/gc` does.
//!
//! Needs root, the Docker daemon, `docker-compose` and the image (`deploy/build-image.sh`);
//! `deploy/secrets.sh` runs first (it keeps secrets already made). Ignored by `cargo test`:
//! `.ci/run` builds the image and runs them with `--include-ignored --test-threads=1` (they
//! share the containers' names). Without Docker they fail saying so, or are skipped with a
//! notice when `GEN_CLUSTER_SKIP_REAL_PEERS` is set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/register.rs"]
mod register;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gen_cluster::services::dict::{self, Dict, Read, ReadReply, Request, Write};
use gen_cluster::{
    Leader, LeaderCallError, LeaderStatus, Node, NodeConfig, NodeName, Tls, TlsFiles,
};

/// The compose project: its network is `gencluster-test_cluster`.
const PROJECT: &str = "gencluster-test";
const IMAGE: &str = "gen-cluster:latest";
/// The candidates, as `deploy/node.toml` lists them.
const NODES: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
/// What a client prints when a minority side refuses a write.
const NO_QUORUM: &str = "no leader with a quorum of voters";
/// A bound on each wait, only so that a broken run ends.
const HANG: Duration = Duration::from_secs(60);
/// A bound on one call of the client.
const CALL: Duration = Duration::from_secs(3);
/// A discovery round (deploy/node.toml: 1 s) with a margin.
const DISCOVERY_ROUND_AND_MARGIN: Duration = Duration::from_secs(3);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs `command`: its standard output, or what it said on failure.
fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    run(Command::new("docker").args(args))
}

/// Waits until `done` holds, checking every 50 ms; fails saying `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Whether Docker and the image are here: fails saying what is missing, or `false` (the test is
/// skipped) when `GEN_CLUSTER_SKIP_REAL_PEERS` is set.
fn docker_ready() -> bool {
    let missing = if docker(&["info", "--format", "{{.ServerVersion}}"]).is_err() {
        "no Docker daemon answers (start it; the tests need root)".to_string()
    } else if run(Command::new("docker-compose").arg("version")).is_err() {
        "docker-compose is not installed".to_string()
    } else if docker(&["image", "inspect", IMAGE]).is_err() {
        format!("no image {IMAGE}: build it with deploy/build-image.sh")
    } else {
        return true;
    };
    assert!(
        std::env::var_os("GEN_CLUSTER_SKIP_REAL_PEERS").is_some(),
        "{missing}, or set GEN_CLUSTER_SKIP_REAL_PEERS=1 to skip the container tests"
    );
    eprintln!("{missing}: test skipped");
    false
}

/// Five nodes (or seven) that can be stopped with SIGTERM and started again, wherever they run.
trait Fleet: Send + Sync + 'static {
    /// The node's cluster address, while it runs and can be reached.
    fn addr(&self, node: &str) -> Option<String>;
    /// The address of the node's HTTP server (`/ready`).
    fn http(&self, node: &str) -> Option<String>;
    /// Sends the node SIGTERM and waits until it has exited.
    fn stop(&self, node: &str);
    fn start(&self, node: &str);
    /// A call through the node failed: its address may have changed.
    fn forget(&self, _node: &str) {}
}

/// `deploy/compose.yml`'s containers: `down -v` when dropped (their logs printed if the test
/// failed).
struct Compose {
    election: &'static str,
    /// The containers' addresses, as last looked up (a restarted container may have another).
    ips: Mutex<BTreeMap<String, String>>,
}

impl Compose {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("docker-compose")
            .args(["-p", PROJECT, "-f"])
            .arg(deploy().join("compose.yml"))
            .args(args)
            .env("GEN_CLUSTER_ELECTION", self.election))
    }

    fn network() -> String {
        format!("{PROJECT}_cluster")
    }

    /// The container's address on the cluster's network, if it is on it and running.
    fn ip(&self, container: &str) -> Option<String> {
        let mut ips = self.ips.lock().unwrap();
        if let Some(ip) = ips.get(container) {
            return Some(ip.clone());
        }
        let ip = Self::inspect_ip(container)?;
        ips.insert(container.to_string(), ip.clone());
        Some(ip)
    }

    fn inspect_ip(container: &str) -> Option<String> {
        let format = format!(
            "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
            Self::network()
        );
        docker(&["inspect", "--format", &format, container])
            .ok()
            .filter(|ip| !ip.is_empty())
    }

    /// Takes `container` off the network: its links drop, Docker's DNS stops naming it.
    fn cut(&self, container: &str) {
        self.forget(container);
        docker(&["network", "disconnect", &Self::network(), container]).unwrap();
    }

    /// Puts `container` back on the network, under the alias discovery looks up.
    fn heal(&self, container: &str) {
        self.forget(container);
        docker(&[
            "network",
            "connect",
            "--alias",
            "nodes",
            &Self::network(),
            container,
        ])
        .unwrap();
    }
}

impl Fleet for Compose {
    fn addr(&self, node: &str) -> Option<String> {
        self.ip(node).map(|ip| format!("{ip}:4370"))
    }

    fn http(&self, node: &str) -> Option<String> {
        self.ip(node).map(|ip| format!("{ip}:9100"))
    }

    fn stop(&self, node: &str) {
        self.forget(node);
        docker(&["stop", "--time", "10", node]).unwrap();
    }

    fn start(&self, node: &str) {
        self.forget(node);
        docker(&["start", node]).unwrap();
    }

    fn forget(&self, node: &str) {
        self.ips.lock().unwrap().remove(node);
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}",
                self.run(&["logs", "--no-color", "--tail", "40"])
                    .unwrap_or_default()
            );
        }
        // A paused container would outlive `down`.
        for node in NODES {
            let _ = docker(&["unpause", node]);
        }
        let _ = self.run(&["--profile", "scale", "down", "-v", "--timeout", "1"]);
    }
}

/// The same five nodes as OS processes of the CLI on loopback (static seeds, the same TLS files
/// and cookie): the baseline of the containers' figures. Killed when dropped.
struct Processes {
    data: PathBuf,
    running: Mutex<BTreeMap<String, std::process::Child>>,
}

impl Processes {
    /// Node `i`'s ports: its cluster port, then its HTTP port.
    fn ports(node: &str) -> (u16, u16) {
        let i: u16 = node.trim_start_matches("node").parse().unwrap();
        (24370 + i, 29100 + i)
    }

    fn start_all() -> Self {
        let data = std::env::temp_dir().join(format!("gen-cluster-rolling-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let processes = Self {
            data,
            running: Mutex::new(BTreeMap::new()),
        };
        for node in NODES {
            processes.start(node);
        }
        processes
    }
}

impl Fleet for Processes {
    fn addr(&self, node: &str) -> Option<String> {
        Some(format!("127.0.0.1:{}", Self::ports(node).0))
    }

    fn http(&self, node: &str) -> Option<String> {
        Some(format!("127.0.0.1:{}", Self::ports(node).1))
    }

    fn stop(&self, node: &str) {
        let child = self.running.lock().unwrap().remove(node);
        if let Some(mut child) = child {
            run(Command::new("kill").args(["-TERM", &child.id().to_string()])).unwrap();
            child.wait().unwrap();
        }
    }

    fn start(&self, node: &str) {
        let secrets = deploy().join("secrets").join(node);
        let (port, http) = Self::ports(node);
        let mut command = Command::new(env!("CARGO_BIN_EXE_gen-cluster"));
        // Its settings are the flags below, whatever the environment says.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GEN_CLUSTER_") {
                command.env_remove(name);
            }
        }
        command
            .args([
                "node",
                "--name",
                node,
                "--election",
                "majority",
                "--events",
                "json",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--candidates", &NODES.join(",")])
            .arg("--data-dir")
            .arg(self.data.join(node))
            .arg("--cookie-file")
            .arg(secrets.join("cookie"))
            .arg("--tls-cert")
            .arg(secrets.join("node.pem"))
            .arg("--tls-key")
            .arg(secrets.join("node.key"))
            .arg("--tls-ca")
            .arg(secrets.join("ca.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for other in NODES.iter().filter(|n| **n != node) {
            command.args(["--seed", &format!("127.0.0.1:{}", Self::ports(other).0)]);
        }
        let child = command.spawn().unwrap();
        self.running.lock().unwrap().insert(node.to_string(), child);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut *self.running.lock().unwrap()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Nodes and a client of theirs.
struct Cluster<F: Fleet> {
    fleet: F,
    client: Client,
}

impl Cluster<Compose> {
    /// `node1` … `node5` started afresh (no data kept from an earlier run) with `election`, and
    /// a client; `None` when the test is skipped.
    fn up(election: &'static str) -> Option<Self> {
        if !docker_ready() {
            return None;
        }
        run(&mut Command::new(deploy().join("secrets.sh"))).unwrap();
        let cluster = Self {
            fleet: Compose {
                election,
                ips: Mutex::new(BTreeMap::new()),
            },
            client: Client::start(),
        };
        let _ = cluster.fleet.run(&["down", "-v", "--timeout", "1"]);
        let mut up = vec!["up", "-d"];
        up.extend(NODES);
        cluster.fleet.run(&up).unwrap();
        Some(cluster)
    }
}

impl<F: Fleet> Cluster<F> {
    fn at(&self, node: &str) -> Result<String, String> {
        self.fleet
            .addr(node)
            .ok_or_else(|| format!("{node} has no address"))
    }

    /// `call` with the node's address; its address looked up again next time if it failed.
    fn through<T>(
        &self,
        node: &str,
        call: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let outcome = call(&self.at(node)?);
        if outcome.is_err() {
            self.fleet.forget(node);
        }
        outcome
    }

    fn put(&self, node: &str, key: &str, value: &str) -> Result<u64, String> {
        self.through(node, |addr| self.client.put(addr, key, value))
    }

    fn get(&self, node: &str, key: &str) -> Result<Option<String>, String> {
        self.through(node, |addr| self.client.get(addr, key))
    }

    fn list(&self, node: &str) -> Result<BTreeMap<String, String>, String> {
        self.through(node, |addr| self.client.list(addr))
    }

    fn status(&self, node: &str) -> Result<LeaderStatus, String> {
        self.through(node, |addr| self.client.status(addr))
    }

    /// Whether the node's HTTP server answers 200 on `path`, asked by the CLI's health check.
    fn http_ok(&self, node: &str, path: &str) -> bool {
        let Some(http) = self.fleet.http(node) else {
            return false;
        };
        run(Command::new(env!("CARGO_BIN_EXE_gen-cluster"))
            .args(["health", "--http", &http, "--path", path]))
        .is_ok()
    }

    /// The leader and term every one of `nodes` follows, once they all follow the same one and
    /// each sees all of `nodes` taking part.
    fn agreed_leader(&self, nodes: &[&str]) -> Option<(NodeName, u64)> {
        let mut agreed = None;
        for node in nodes {
            let status = self.status(node).ok()?;
            let election = status.election?;
            let taking_part: BTreeSet<&str> = status.alive.iter().map(NodeName::as_str).collect();
            if !nodes.iter().all(|n| taking_part.contains(n)) {
                return None;
            }
            let this = (election.leader, election.term);
            match &agreed {
                None => agreed = Some(this),
                Some(first) if *first == this => {}
                Some(_) => return None,
            }
        }
        agreed
    }

    fn wait_for_one_leader(&self, nodes: &[&str]) -> (NodeName, u64) {
        let started = Instant::now();
        loop {
            if let Some(found) = self.agreed_leader(nodes) {
                return found;
            }
            if started.elapsed() > HANG {
                let seen: Vec<String> = nodes
                    .iter()
                    .map(|node| match self.status(node) {
                        Ok(s) => format!(
                            "{node}: leader {:?} term {:?}, nodes {:?}",
                            s.leader,
                            s.election.map(|e| e.term),
                            s.nodes
                                .iter()
                                .map(|k| format!("{} {} {}", k.name, k.addr, k.state))
                                .collect::<Vec<_>>()
                        ),
                        Err(e) => format!("{node}: {e}"),
                    })
                    .collect();
                panic!("no leader agreed by {nodes:?} within {HANG:?}: {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every one of `nodes` holds every key of `written` with its value.
    fn wait_for_writes_on(&self, nodes: &[&str], written: &BTreeMap<String, String>) {
        for node in nodes {
            let mut missing = written.len();
            wait_until(
                &format!("{node} holds every acknowledged write ({missing} missing)"),
                HANG,
                || {
                    let held = self.list(node).unwrap_or_default();
                    missing = written
                        .iter()
                        .filter(|(k, v)| held.get(*k) != Some(*v))
                        .count();
                    missing == 0
                },
            );
        }
    }
}

/// A hidden node of this process with the clients' certificate, calling the containers' nodes.
struct Client {
    runtime: tokio::runtime::Runtime,
    node: Node,
}

impl Client {
    fn start() -> Self {
        let secrets = deploy().join("secrets/client");
        let name = NodeName::new("test.clients.cluster").unwrap();
        let cookie = std::fs::read_to_string(secrets.join("cookie")).unwrap();
        let mut config = NodeConfig::new(name.clone(), cookie.trim().as_bytes().to_vec());
        config.hidden = true;
        config.handshake_timeout = Duration::from_secs(1);
        let files = TlsFiles {
            cert: secrets.join("client.pem"),
            key: secrets.join("client.key"),
            ca: secrets.join("ca.pem"),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let node = runtime.block_on(async {
            let tls = Tls::load(files, name).unwrap();
            Node::start_with(config, tls).await.unwrap()
        });
        Self { runtime, node }
    }

    /// The dictionary's instance on the node at `addr`, connected now.
    async fn dict(node: &Node, addr: &str) -> Result<Leader<Dict>, String> {
        let host = tokio::time::timeout(CALL, node.connect(addr))
            .await
            .map_err(|_| format!("{addr}: no connection in time"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(Leader::at(node, &host, dict::ELECTION))
    }

    /// A write through the node at `addr`; the term of the leader that acknowledged it.
    fn put(&self, addr: &str, key: &str, value: &str) -> Result<u64, String> {
        self.runtime.block_on(async {
            let dict = Self::dict(&self.node, addr).await?;
            let write = Write::Put(key.to_string(), value.to_string());
            match dict.leader_call_with_term(write.into(), CALL).await {
                Ok((_, term)) => Ok(term),
                Err(LeaderCallError::NoQuorum) => Err(NO_QUORUM.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// A read of `key` through the leader, via the node at `addr`.
    fn get(&self, addr: &str, key: &str) -> Result<Option<String>, String> {
        self.runtime.block_on(async {
            let dict = Self::dict(&self.node, addr).await?;
            dict.leader_call(Request::Get(key.to_string()), CALL)
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// Every key and value the node at `addr` holds.
    fn list(&self, addr: &str) -> Result<BTreeMap<String, String>, String> {
        self.runtime.block_on(async {
            let dict = Self::dict(&self.node, addr).await?;
            match dict.call(Read::List, CALL).await {
                Ok(ReadReply::All(entries)) => Ok(entries.into_iter().collect()),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn status(&self, addr: &str) -> Result<LeaderStatus, String> {
        self.runtime.block_on(async {
            let dict = Self::dict(&self.node, addr).await?;
            dict.status(CALL).await.map_err(|e| e.to_string())
        })
    }
}

/// `gen-cluster dict ARGS` run in `container` against its own node, as `deploy/gc` runs it.
fn dict_in(container: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new(deploy().join("gc"))
        .arg(container)
        .arg("dict")
        .args(args))
}

/// Runs `op(i, node)` for i = 0, 1, … until `stop`, each time through the next of `nodes` not
/// set aside; after a failed `op` (false), the next node and a short pause.
fn rotate(
    stop: &AtomicBool,
    aside: &Mutex<HashSet<String>>,
    nodes: &[&str],
    mut op: impl FnMut(usize, &str) -> bool,
) {
    let (mut via, mut i) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let node = nodes[via % nodes.len()];
        if aside.lock().unwrap().contains(node) {
            via += 1;
            continue;
        }
        if !op(i, node) {
            via += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        i += 1;
    }
}

/// A client writing distinct keys through any node not set aside, until stopped: what was
/// acknowledged, and when.
struct Writer {
    stop: Arc<AtomicBool>,
    aside: Arc<Mutex<HashSet<String>>>,
    acked: Arc<Mutex<Vec<(Instant, String, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start<F: Fleet>(
        cluster: &Arc<Cluster<F>>,
        prefix: &'static str,
        nodes: Vec<&'static str>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let aside = Arc::new(Mutex::new(HashSet::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, aside, acked, cluster) =
                (stop.clone(), aside.clone(), acked.clone(), cluster.clone());
            std::thread::spawn(move || {
                rotate(&stop, &aside, &nodes, |i, node| {
                    let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
                    let written = cluster.put(node, &key, &value).is_ok();
                    if written {
                        acked.lock().unwrap().push((Instant::now(), key, value));
                    }
                    written
                });
            })
        };
        Self {
            stop,
            aside,
            acked,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn set_aside(&self, node: &str, aside: bool) {
        let mut set = self.aside.lock().unwrap();
        if aside {
            set.insert(node.to_string());
        } else {
            set.remove(node);
        }
    }

    /// Stops the writer; every write it had acknowledged.
    fn finish(mut self) -> (BTreeMap<String, String>, Vec<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let acked = self.acked.lock().unwrap();
        let times = acked.iter().map(|(t, _, _)| *t).collect();
        let written = acked
            .iter()
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        (written, times)
    }
}

/// The longest stretch without an acknowledged write that overlaps `from..to`.
fn unavailable(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let before = acks
        .iter()
        .rev()
        .find(|t| **t <= from)
        .copied()
        .unwrap_or(from);
    let mut last = before;
    let mut longest = Duration::ZERO;
    for t in acks.iter().filter(|t| **t > before) {
        longest = longest.max(t.duration_since(last));
        last = *t;
        if *t >= to {
            break;
        }
    }
    longest
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn five_containers_find_each_other_through_dns_and_agree_on_one_leader() {
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    let agreed = wait_until("one leader agreed by all five", HANG, || {
        cluster.agreed_leader(&NODES).is_some()
    });
    println!("one leader agreed {agreed:?} after the last container started");
    assert!(agreed <= Duration::from_secs(5), "took {agreed:?}");
    for node in NODES {
        wait_until(&format!("{node} /ready"), HANG, || {
            cluster.http_ok(node, "/ready")
        });
    }
    let healthy = |node: &str| {
        docker(&["inspect", "--format", "{{.State.Health.Status}}", node]).as_deref()
            == Ok("healthy")
    };
    wait_until("every container healthy by the image's check", HANG, || {
        NODES.iter().all(|n| healthy(n))
    });
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn killing_the_leader_loses_no_acknowledged_write_and_it_rejoins_through_dns() {
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    let cluster = Arc::new(cluster);
    let (leader, term) = cluster.wait_for_one_leader(&NODES);
    let writer = Writer::start(&cluster, "k", NODES.to_vec());
    wait_until("50 writes acknowledged", HANG, || writer.count() >= 50);
    writer.set_aside(leader.as_str(), true);
    cluster.fleet.forget(leader.as_str());
    docker(&["kill", leader.as_str()]).unwrap();
    let killed = Instant::now();
    let before = writer.count();
    let survivors: Vec<&str> = NODES
        .into_iter()
        .filter(|n| *n != leader.as_str())
        .collect();
    wait_until("50 more writes after the kill", HANG, || {
        writer.count() >= before + 50
    });
    let (new_leader, new_term) = cluster.wait_for_one_leader(&survivors);
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {new_term} after {term}");
    let (written, acks) = writer.finish();
    println!(
        "kill -9 of {leader}: writes stopped for {:?}, new leader {new_leader} (term {new_term})",
        unavailable(&acks, killed, Instant::now())
    );
    cluster.wait_for_writes_on(&survivors, &written);
    cluster.fleet.start(leader.as_str());
    cluster.wait_for_writes_on(&[leader.as_str()], &written);
    cluster.wait_for_one_leader(&NODES);
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn a_cut_minority_refuses_writes_and_the_heal_loses_none() {
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    cluster.wait_for_one_leader(&NODES);
    let mut written = BTreeMap::new();
    for i in 0..10 {
        let (key, value) = (format!("before{i}"), format!("v{i}"));
        cluster.put("node1", &key, &value).unwrap();
        written.insert(key, value);
    }
    let cut = ["node4", "node5"];
    for node in cut {
        cluster.fleet.cut(node);
    }
    let cut_at = Instant::now();
    wait_until("the three accept writes", HANG, || {
        cluster.put("node1", "three", "yes").is_ok()
    });
    written.insert("three".into(), "yes".into());
    for node in cut {
        let mut answer = Ok(String::new());
        let refused = wait_until(&format!("{node} refuses writes: {answer:?}"), HANG, || {
            answer = dict_in(node, &["put", "two", "no"]);
            answer.as_ref().is_err_and(|e| e.contains(NO_QUORUM))
        });
        println!("{node} refused writes with NoQuorum {refused:?} into the cut");
        let again = dict_in(node, &["put", "two", "no"]);
        assert!(
            again.as_ref().is_err_and(|e| e.contains(NO_QUORUM)),
            "{again:?}"
        );
    }
    println!("cut at {:?}", cut_at.elapsed());
    for i in 0..10 {
        let (key, value) = (format!("during{i}"), format!("v{i}"));
        cluster.put("node2", &key, &value).unwrap();
        written.insert(key, value);
    }
    for node in cut {
        cluster.fleet.heal(node);
    }
    cluster.wait_for_one_leader(&NODES);
    cluster.wait_for_writes_on(&NODES, &written);
    for node in NODES {
        let held = cluster.list(node).unwrap();
        assert!(
            !held.contains_key("two"),
            "{node} holds a write the minority refused"
        );
    }
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn in_priority_mode_a_cut_pair_leads_itself_and_the_heal_merges_both_sides() {
    let Some(cluster) = Cluster::up("priority") else {
        return;
    };
    let (leader, _) = cluster.wait_for_one_leader(&NODES);
    assert_eq!(
        leader.as_str(),
        "node1",
        "the highest-priority candidate leads"
    );
    let (cut, kept) = (["node1", "node2"], ["node3", "node4", "node5"]);
    for node in cut {
        cluster.fleet.cut(node);
    }
    wait_until("the three elect node3 and accept writes", HANG, || {
        cluster.put("node4", "three", "yes").is_ok()
    });
    let (three_leader, _) = cluster.wait_for_one_leader(&kept);
    assert_eq!(three_leader.as_str(), "node3");
    let mut answer = Ok(String::new());
    wait_until(
        &format!("the pair accepts writes: {answer:?}"),
        HANG,
        || {
            answer = dict_in("node2", &["put", "two", "yes"]);
            answer.is_ok()
        },
    );
    for node in cut {
        cluster.fleet.heal(node);
    }
    let (leader, _) = cluster.wait_for_one_leader(&NODES);
    assert_eq!(leader.as_str(), "node1");
    let merged: BTreeMap<String, String> = [("three", "yes"), ("two", "yes")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cluster.wait_for_writes_on(&NODES, &merged);
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn two_more_containers_are_found_through_dns_and_join_as_workers() {
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    let (leader, _) = cluster.wait_for_one_leader(&NODES);
    cluster
        .fleet
        .run(&["--profile", "scale", "up", "-d", "node6", "node7"])
        .unwrap();
    let all = [
        "node1", "node2", "node3", "node4", "node5", "node6", "node7",
    ];
    let (now_leader, _) = cluster.wait_for_one_leader(&all);
    assert_eq!(now_leader, leader, "workers joining change no leader");
    let status = cluster.status("node1").unwrap();
    let workers: BTreeSet<&str> = status.workers.iter().map(NodeName::as_str).collect();
    assert_eq!(workers, BTreeSet::from(["node6", "node7"]), "{status:?}");
    cluster.put("node7", "from", "node7").unwrap();
    let written = BTreeMap::from([("from".to_string(), "node7".to_string())]);
    cluster.wait_for_writes_on(&all, &written);
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn a_container_gone_from_dns_is_not_redialed_and_is_found_again_when_back() {
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    cluster.wait_for_one_leader(&NODES);
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", "node5"]).unwrap();
    let old_ip = Compose::inspect_ip("node5").unwrap();
    // Paused, node5 dials no one: any connection to it is another node's dial.
    docker(&["pause", "node5"]).unwrap();
    cluster.fleet.cut("node5");
    let others = ["node1", "node2", "node3", "node4"];
    cluster.wait_for_one_leader(&others);
    wait_until("node5 seen down by the others", HANG, || {
        others.iter().all(|n| {
            cluster.status(n).is_ok_and(|s| {
                s.nodes
                    .iter()
                    .any(|k| k.name.as_str() == "node5" && k.state.to_string() != "up")
            })
        })
    });
    // A node may have seen node5's link drop before its discovery round found node5 gone from
    // DNS, and redialed it then: such a dial waits on its connect (the node's connect timeout)
    // and would complete once node5 is back. Those dials are allowed; let them end first, so that
    // only a dial begun after discovery lost node5 can reach it.
    let connect_timeout = NodeConfig::new(NodeName::new("any").unwrap(), "any").connect_timeout;
    std::thread::sleep(connect_timeout + DISCOVERY_ROUND_AND_MARGIN);
    // Back on the network at an address, but not under the alias discovery looks up.
    docker(&["network", "connect", &Compose::network(), "node5"]).unwrap();
    let ip = Compose::inspect_ip("node5").unwrap();
    // At another address, the others' redials would miss it and prove nothing.
    assert_eq!(ip, old_ip, "node5 came back at another address");
    // The peer address of every connection to node5's port.
    let dials = || {
        run(Command::new("nsenter").args(["-t", &pid, "-n", "ss", "-Htan", "sport", "=", ":4370"]))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("LISTEN"))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.last().map(|peer| peer.to_string())
            })
            .collect::<Vec<_>>()
    };
    // The links of before the cut are still there (node5, paused, has not closed them): only
    // connections from new peer addresses count.
    let before: BTreeSet<String> = dials().into_iter().collect();
    // Twelve discovery rounds (one a second), past the 10 s of quick redials of a dropped peer.
    std::thread::sleep(Duration::from_secs(12));
    let dialed: Vec<String> = dials()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(
        dialed.is_empty(),
        "a node off DNS was dialed at {ip}: {dialed:#?} (before: {before:#?})"
    );
    docker(&["network", "disconnect", &Compose::network(), "node5"]).unwrap();
    cluster.fleet.heal("node5");
    docker(&["unpause", "node5"]).unwrap();
    cluster.wait_for_one_leader(&NODES);
}

/// What a rolling restart measured: the time from each start to `/ready`, and the writes'
/// unavailability per restart of the leader and of a follower.
struct Rolling {
    ready: Vec<Duration>,
    leader: Vec<Duration>,
    follower: Vec<Duration>,
}

impl Rolling {
    fn report(&self, what: &str) {
        let line = |samples: &[Duration]| match samples {
            [] => "none".to_string(),
            _ => format!(
                "p50 {:.0} ms, max {:.0} ms ({})",
                percentile(samples, 0.5).as_secs_f64() * 1e3,
                percentile(samples, 1.0).as_secs_f64() * 1e3,
                samples.len()
            ),
        };
        println!("{what}: /ready after start {}", line(&self.ready));
        println!(
            "{what}: writes unavailable per leader restart {}",
            line(&self.leader)
        );
        println!(
            "{what}: writes unavailable per follower restart {}",
            line(&self.follower)
        );
    }
}

/// `rounds` rounds of restarting each node in turn (SIGTERM, start, wait for `/ready`) while one
/// client writes keys through any node not restarting and another writes one register and reads
/// it through the leader, and every node's status is sampled: no acknowledged write missing on
/// any node, never two leaders in one term, the register's history linearizable.
fn rolling_restart<F: Fleet>(cluster: Arc<Cluster<F>>, rounds: usize) -> Rolling {
    cluster.wait_for_one_leader(&NODES);
    let stop = Arc::new(AtomicBool::new(false));
    // Every (term, leader) any node reported, and the register's history.
    let leaders = Arc::new(Mutex::new(BTreeMap::<u64, BTreeSet<String>>::new()));
    let history = Arc::new(register::History::default());
    let observer = {
        let (cluster, stop, leaders) = (cluster.clone(), stop.clone(), leaders.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for node in NODES {
                    if let Ok(Some(election)) = cluster.status(node).map(|s| s.election) {
                        leaders
                            .lock()
                            .unwrap()
                            .entry(election.term)
                            .or_default()
                            .insert(election.leader.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let writer = Writer::start(&cluster, "k", NODES.to_vec());
    let register = {
        let (cluster, stop, aside, history) = (
            cluster.clone(),
            stop.clone(),
            writer.aside.clone(),
            history.clone(),
        );
        std::thread::spawn(move || {
            rotate(&stop, &aside, &NODES, |i, node| {
                let started = Instant::now();
                if i % 2 == 0 {
                    let value = format!("r{i}");
                    let outcome = cluster.put(node, "register", &value);
                    history.write(&value, started, outcome.is_ok());
                    outcome.is_ok()
                } else {
                    let value = cluster.get(node, "register");
                    if let Ok(value) = &value {
                        history.read(value.as_deref(), started);
                    }
                    value.is_ok()
                }
            });
        })
    };
    wait_until("writes acknowledged", HANG, || writer.count() >= 20);
    let (mut ready, mut windows) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for node in NODES {
            let was_leader = cluster
                .status(node)
                .ok()
                .and_then(|s| s.election)
                .is_some_and(|e| e.leader.as_str() == node);
            writer.set_aside(node, true);
            let stopping = Instant::now();
            cluster.fleet.stop(node);
            cluster.fleet.start(node);
            let started = Instant::now();
            wait_until(&format!("{node} /ready after its restart"), HANG, || {
                cluster.http_ok(node, "/ready")
            });
            ready.push(started.elapsed());
            windows.push((was_leader, stopping, Instant::now()));
            writer.set_aside(node, false);
        }
    }
    stop.store(true, Ordering::Relaxed);
    observer.join().unwrap();
    register.join().unwrap();
    let (written, acks) = writer.finish();
    cluster.wait_for_writes_on(&NODES, &written);
    for (term, named) in leaders.lock().unwrap().iter() {
        assert_eq!(named.len(), 1, "two leaders in term {term}: {named:?}");
    }
    history.check().unwrap();
    let (writes, reads) = history.counts();
    println!(
        "{rounds} rounds, {} restarts: {} keys written, the register {writes} times written and {reads} times read, linearizable",
        ready.len(),
        written.len()
    );
    let gaps = |leader: bool| -> Vec<Duration> {
        windows
            .iter()
            .filter(|(l, _, _)| *l == leader)
            .map(|(_, from, to)| unavailable(&acks, *from, *to))
            .collect()
    };
    Rolling {
        ready,
        leader: gaps(true),
        follower: gaps(false),
    }
}

#[test]
#[ignore = "needs Docker and the image: .ci/run builds it (deploy/build-image.sh)"]
fn twenty_rolling_restarts_lose_no_acknowledged_write_and_never_show_two_leaders_in_a_term() {
    let rounds: usize = std::env::var("ROLLING_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let Some(cluster) = Cluster::up("majority") else {
        return;
    };
    let containers = rolling_restart(Arc::new(cluster), rounds);
    // The baseline, in the same run: the same nodes as OS processes on loopback.
    let processes = Cluster {
        fleet: Processes::start_all(),
        client: Client::start(),
    };
    let processes = rolling_restart(Arc::new(processes), rounds.div_ceil(4));
    containers.report("containers");
    processes.report("OS processes on loopback");
}

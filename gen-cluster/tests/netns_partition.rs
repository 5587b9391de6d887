//! A netsplit between real network stacks: three `gen-cluster node` processes running the
//! global dictionary, each in a network namespace of its own, joined by a bridge. One node's
//! link is cut — its packets vanish, so both sides see silence, not a reset — and restored.
//! Each side keeps a leader and takes writes; after the heal there is one leader again and
//! every node holds both sides' writes.
//!
//! Needs root and `ip` (iproute2). Where namespaces cannot be made the test is skipped with a
//! notice, unless `GEN_CLUSTER_REQUIRE_REAL_PEERS` is set (as `.ci/run` does).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const COOKIE: &str = "netns-cookie";
const HOSTS: [&str; 3] = ["a", "b", "c"];
const HANG: Duration = Duration::from_secs(30);

/// Namespaces `<prefix>-a|b|c` on 10.77.0.1–3, bridged in `<prefix>-br`; removed on drop.
struct Net {
    prefix: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    fn new() -> Option<Self> {
        let net = Self {
            prefix: format!("gc{}", std::process::id()),
        };
        if !ip(&["netns", "add", &net.ns("br")]) {
            assert!(
                std::env::var_os("GEN_CLUSTER_REQUIRE_REAL_PEERS").is_none(),
                "cannot make network namespaces (root and iproute2 needed)"
            );
            eprintln!(
                "cannot make network namespaces here (root and iproute2 needed): test skipped"
            );
            return None;
        }
        let br = net.ns("br");
        assert!(ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]));
        assert!(ip(&["-n", &br, "link", "set", "br0", "up"]));
        for (i, host) in HOSTS.iter().enumerate() {
            let (ns, inner, outer) = (net.ns(host), net.veth(host), net.port(host));
            assert!(ip(&["netns", "add", &ns]));
            assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
            assert!(ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer
            ]));
            assert!(ip(&["link", "set", &inner, "netns", &ns]));
            assert!(ip(&["link", "set", &outer, "netns", &br]));
            assert!(ip(&["-n", &br, "link", "set", &outer, "master", "br0"]));
            assert!(ip(&["-n", &br, "link", "set", &outer, "up"]));
            let addr = format!("10.77.0.{}/24", i + 1);
            assert!(ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]));
            assert!(ip(&["-n", &ns, "link", "set", &inner, "up"]));
        }
        Some(net)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn veth(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    fn port(&self, host: &str) -> String {
        format!("{}{host}p", self.prefix)
    }

    /// Cuts (`down`) or restores (`up`) the host's link to the bridge.
    fn link(&self, host: &str, state: &str) {
        assert!(ip(&[
            "-n",
            &self.ns("br"),
            "link",
            "set",
            &self.port(host),
            state
        ]));
    }

    /// `gen-cluster ARGS…` run inside the host's namespace.
    fn command(&self, host: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.ns(host),
                env!("CARGO_BIN_EXE_gen-cluster"),
            ])
            .args(args)
            .env("GEN_CLUSTER_COOKIE", COOKIE);
        command
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in HOSTS.iter().chain(&["br"]) {
            ip(&["netns", "del", &self.ns(host)]);
        }
    }
}

fn addr(host: &str) -> String {
    let i = HOSTS.iter().position(|h| *h == host).unwrap();
    format!("10.77.0.{}:4370", i + 1)
}

/// A node process in its namespace, and its JSON events.
struct Host {
    child: Child,
    events: mpsc::Receiver<Value>,
    name: &'static str,
}

impl Host {
    fn start(net: &Net, name: &'static str) -> Self {
        let listen = addr(name);
        let mut args = vec![
            "node",
            "--name",
            name,
            "--listen",
            &listen,
            "--events",
            "json",
            "--candidates",
            "a,b,c",
            "--down-after-ms",
            "500",
        ];
        let seeds: Vec<String> = HOSTS
            .iter()
            .filter(|h| **h != name)
            .map(|h| addr(h))
            .collect();
        for seed in &seeds {
            args.extend(["--seed", seed]);
        }
        let mut child = net
            .command(name, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            events,
            name,
        }
    }

    fn wait(&self, what: &str, pick: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{}: no {what} before the hang bound", self.name));
            if pick(&event) {
                return;
            }
        }
    }

    fn wait_leader(&self, leader: &str) {
        self.wait(&format!("leader {leader}"), |e| {
            e["event"] == "leader" && e["peer"] == leader
        });
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gen-cluster dict ARGS… --node <host's address>`, run in the host's namespace.
fn dict(net: &Net, host: &str, args: &[&str]) -> String {
    let node = addr(host);
    let mut all = vec!["dict"];
    all.extend(args);
    all.extend(["--node", &node]);
    let output = net.command(host, &all).output().unwrap();
    assert!(
        output.status.success(),
        "dict {args:?} on {host}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_netsplit_leaves_a_leader_on_each_side_and_the_heal_merges_both_sides_writes() {
    let Some(net) = Net::new() else { return };
    let hosts: Vec<Host> = HOSTS.iter().map(|h| Host::start(&net, h)).collect();
    for host in &hosts {
        host.wait_leader("a");
    }
    dict(&net, "b", &["put", "before", "0"]);

    net.link("a", "down");
    let cut = Instant::now();
    hosts[1].wait_leader("b");
    hosts[2].wait_leader("b");
    let failover = cut.elapsed();
    let seen = std::cell::RefCell::new(Vec::new());
    hosts[0].wait("node_down of b and c", |e| {
        if e["event"] == "node_down" {
            seen.borrow_mut()
                .push(e["peer"].as_str().unwrap_or_default().to_string());
        }
        let seen = seen.borrow();
        seen.iter().any(|p| p == "b") && seen.iter().any(|p| p == "c")
    });
    dict(&net, "a", &["put", "island-a", "1"]);
    dict(&net, "c", &["put", "island-bc", "2"]);

    net.link("a", "up");
    let healed = Instant::now();
    hosts[1].wait_leader("a");
    hosts[2].wait_leader("a");
    let merged = healed.elapsed();
    eprintln!("failover after the cut: {failover:?}; one leader after the heal: {merged:?}");

    let expected = "before\t0\nisland-a\t1\nisland-bc\t2\n";
    for host in HOSTS {
        let deadline = Instant::now() + HANG;
        loop {
            let listed = dict(&net, host, &["list"]);
            if listed == expected {
                break;
            }
            assert!(Instant::now() < deadline, "{host} holds {listed:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

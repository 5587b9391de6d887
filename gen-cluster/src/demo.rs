//! `gen-cluster demo`: the global dictionary on three local nodes, each a separate OS process
//! (this binary's `node` command). It shows the election, writes a few keys through the leader,
//! kills the leader with SIGKILL, shows the new leader and the dictionary intact on the
//! survivors, then restarts the old leader and shows it come back as a follower with every key —
//! with the time each step took.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gen_cluster::services::dict::{self, Dict, Read, ReadReply, Write};
use gen_cluster::{Leader, Node, NodeConfig, NodeName};
use serde_json::Value;

const CANDIDATES: &str = "alpha,beta,gamma";
/// A bound on each step, only so that a broken demo ends instead of hanging.
const STEP: Duration = Duration::from_secs(15);

pub fn run() -> Result<()> {
    let cookie = format!(
        "demo-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let data = std::env::temp_dir().join(format!("gen-cluster-demo-{}", std::process::id()));
    let outcome = tokio::runtime::Runtime::new()?.block_on(demo(&cookie, &data));
    let _ = std::fs::remove_dir_all(&data);
    outcome
}

async fn demo(cookie: &str, data: &Path) -> Result<()> {
    println!("gen-cluster demo: the global dictionary on three nodes, each its own OS process\n");
    let started = Instant::now();
    let alpha = NodeProcess::start("alpha", cookie, &[], data)?;
    let beta = NodeProcess::start("beta", cookie, &[&alpha.addr], data)?;
    let gamma = NodeProcess::start("gamma", cookie, &[&alpha.addr, &beta.addr], data)?;
    for node in [&alpha, &beta, &gamma] {
        node.wait_leader("alpha")?;
    }
    println!(
        "1. alpha, beta, gamma started (candidates in this order: {CANDIDATES}); all follow alpha   {}",
        took(started)
    );

    let mut config = NodeConfig::new(
        NodeName::new(format!("demo-client-{}", std::process::id()))?,
        cookie,
    );
    config.cluster = "default".into();
    let client = Node::start(config).await?;
    for node in [&alpha, &beta, &gamma] {
        client.connect(&node.addr).await?;
    }
    let via_gamma = Leader::<Dict>::at(&client, &gamma.name, dict::ELECTION);
    for (key, value) in [("color", "blue"), ("shape", "round"), ("size", "large")] {
        let t = Instant::now();
        via_gamma
            .leader_call(Write::Put(key.into(), value.into()), STEP)
            .await
            .context("a write")?;
        println!(
            "2. put {key}={value} through gamma, handled by the leader alpha   {}",
            took(t)
        );
    }

    let killed = Instant::now();
    let mut alpha = alpha;
    alpha.kill()?;
    beta.wait_leader("beta")?;
    gamma.wait_leader("beta")?;
    println!(
        "3. alpha killed (SIGKILL); beta and gamma follow beta   {}",
        took(killed)
    );
    let t = Instant::now();
    via_gamma
        .leader_call(Write::Put("after".into(), "failover".into()), STEP)
        .await
        .context("a write after the failover")?;
    println!(
        "   put after=failover through gamma, handled by beta   {}",
        took(t)
    );
    for node in [&beta, &gamma] {
        println!(
            "   {} holds {}",
            node.name,
            list(&client, &node.name).await?
        );
    }

    let restarted = Instant::now();
    let alpha = NodeProcess::start("alpha", cookie, &[&beta.addr, &gamma.addr], data)?;
    alpha.wait_leader("beta")?;
    println!(
        "4. alpha restarted: it follows beta (no failback)   {}",
        took(restarted)
    );
    client.connect(&alpha.addr).await?;
    let expected = list(&client, &beta.name).await?;
    let caught_up = Instant::now();
    while list(&client, &alpha.name).await? != expected {
        if caught_up.elapsed() > STEP {
            bail!("alpha did not get the dictionary");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("   alpha holds {expected}");
    let incarnation =
        std::fs::read_to_string(data.join("alpha").join("gen_leader.dict.incarnation"))?;
    println!("   its incarnation on disk: {}", incarnation.trim());

    client.shutdown().await;
    drop((alpha, beta, gamma));
    println!("\ndone in {}", took(started));
    Ok(())
}

fn took(since: Instant) -> String {
    format!("[{:.1} ms]", since.elapsed().as_secs_f64() * 1000.0)
}

async fn list(client: &Node, host: &NodeName) -> Result<String> {
    let dictionary = Leader::<Dict>::at(client, host, dict::ELECTION);
    match dictionary.call(Read::List, STEP).await? {
        ReadReply::All(entries) => Ok(entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")),
        ReadReply::Value(_) => Err(anyhow!("unexpected answer")),
    }
}

/// A `gen-cluster node` child running the dictionary, and its JSON events.
struct NodeProcess {
    child: Child,
    events: mpsc::Receiver<Value>,
    name: NodeName,
    addr: String,
}

impl NodeProcess {
    fn start(name: &str, cookie: &str, seeds: &[&str], data: &Path) -> Result<Self> {
        let data_dir: PathBuf = data.join(name);
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args([
                "node",
                "--name",
                name,
                "--listen",
                "127.0.0.1:0",
                "--events",
                "json",
            ])
            .args(["--candidates", CANDIDATES, "--down-after-ms", "1000"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("GEN_CLUSTER_COOKIE", cookie)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for seed in seeds {
            command.args(["--seed", seed]);
        }
        let mut child = command.spawn().context("cannot start a node process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut node = Self {
            child,
            events,
            name: NodeName::new(name)?,
            addr: String::new(),
        };
        let started = node.wait(|e| e["event"] == "started")?;
        node.addr = started["addr"].as_str().context("no address")?.to_string();
        Ok(node)
    }

    fn wait(&self, pick: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .map_err(|_| anyhow!("{}: no expected event within {STEP:?}", self.name))?;
            if pick(&event) {
                return Ok(event);
            }
        }
    }

    fn wait_leader(&self, leader: &str) -> Result<()> {
        self.wait(|e| e["event"] == "leader" && e["peer"] == leader)
            .map(|_| ())
    }

    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

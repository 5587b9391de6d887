//! `gen-cluster demo`: the global dictionary on three local nodes, each a separate OS process
//! (this binary's `node` command). It shows the election, writes a few keys through the leader,
//! kills the leader with SIGKILL, shows the new leader and the dictionary intact on the
//! survivors, then restarts the old leader and shows it come back as a follower with every key —
//! with the time each step took.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gen_cluster::services::dict::{self, Dict, Read, ReadReply, Write};
use gen_cluster::{Leader, Node, NodeConfig, NodeName};

use crate::child::NodeProcess;

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
    let alpha = start("alpha", cookie, &[], data)?;
    let beta = start("beta", cookie, &[&alpha.addr], data)?;
    let gamma = start("gamma", cookie, &[&alpha.addr, &beta.addr], data)?;
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
            .leader_call(Write::Put(key.into(), value.into()).into(), STEP)
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
        .leader_call(Write::Put("after".into(), "failover".into()).into(), STEP)
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
    let alpha = start("alpha", cookie, &[&beta.addr, &gamma.addr], data)?;
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

/// A node of the demo's dictionary, keeping its incarnation under `data`.
fn start(name: &str, cookie: &str, seeds: &[&str], data: &Path) -> Result<NodeProcess> {
    let data_dir = data.join(name);
    let data_dir = data_dir
        .to_str()
        .context("a temporary path that is not UTF-8")?;
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--candidates",
        CANDIDATES,
        "--data-dir",
        data_dir,
    ];
    for seed in seeds {
        args.extend(["--seed", seed]);
    }
    NodeProcess::start(name, cookie, &args, STEP)
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

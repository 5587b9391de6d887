//! `gen-cluster demo`: three nodes in this process find each other through one seed address and
//! call each other's echo server; then one leaves and the others see it go.

use std::time::{Duration, Instant};

use anyhow::Result;
use gen_cluster::services::echo::{self, Echo, EchoCall, EchoReply};
use gen_cluster::{Node, NodeConfig, NodeEvent, NodeName, ServerRef};

pub fn run() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(demo())
}

async fn demo() -> Result<()> {
    let cookie = "demo-cookie";
    let started = Instant::now();
    let mut nodes = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let node = Node::start(NodeConfig::new(NodeName::new(name)?, cookie)).await?;
        node.spawn_named(echo::NAME, Echo::default()).await?;
        println!("started {name} on {}", node.listen_addr());
        nodes.push(node);
    }
    let seed = nodes[0].listen_addr().to_string();
    let mut seed_events = nodes[0].subscribe();
    for node in &nodes[1..] {
        let peer = node.connect(&seed).await?;
        println!("{} connected to {peer} (the seed)", node.name());
    }
    let (beta, gamma) = (&nodes[1], &nodes[2]);
    // The newcomers learn of each other from the seed's peer list.
    if let Some(peer) = nodes[0]
        .peers()
        .into_iter()
        .find(|p| &p.name == gamma.name())
    {
        beta.connect(&peer.addr).await?;
        println!(
            "{} connected to {} (address learned from the seed)",
            beta.name(),
            peer.name
        );
    }
    println!(
        "cluster of 3 formed in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    for from in &nodes {
        for to in &nodes {
            if from.name() == to.name() {
                continue;
            }
            let echo = ServerRef::<Echo>::named(to.name(), echo::NAME);
            let t = Instant::now();
            let reply = from
                .call(
                    &echo,
                    EchoCall::Echo(b"hello".to_vec()),
                    Duration::from_secs(2),
                )
                .await?;
            let EchoReply::Echo(bytes) = reply else {
                anyhow::bail!("unexpected reply {reply:?}")
            };
            println!(
                "{} -> {}: {:?} in {:.0} us",
                from.name(),
                to.name(),
                String::from_utf8_lossy(&bytes),
                t.elapsed().as_secs_f64() * 1e6
            );
        }
    }
    println!("gamma leaves the cluster");
    let t = Instant::now();
    gamma.shutdown().await;
    loop {
        if let NodeEvent::NodeDown { peer, reason, .. } = seed_events.recv().await? {
            println!(
                "alpha saw {peer} go down ({reason}) {:.1} ms after it began to leave",
                t.elapsed().as_secs_f64() * 1000.0
            );
            break;
        }
    }
    for node in &nodes[..2] {
        node.shutdown().await;
    }
    println!("demo done");
    Ok(())
}

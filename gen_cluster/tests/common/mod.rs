//! Helpers shared by the integration tests: nodes on loopback, event waits with generous
//! bounds that only catch hangs.

#![allow(clippy::unwrap_used, dead_code)] // test code; not every test file uses every helper

use std::time::Duration;

use gen_cluster::{LivenessConfig, Node, NodeConfig, NodeEvent, NodeName};
use tokio::sync::broadcast;

/// A bound that only catches hangs; the speeds belong in `gen-cluster bench`.
pub const HANG: Duration = Duration::from_secs(20);

pub fn config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(NodeName::new(name).unwrap(), "test-cookie");
    config.liveness = LivenessConfig {
        heartbeat_interval: Duration::from_millis(100),
        down_after: Duration::from_millis(500),
    };
    config
}

pub async fn node(name: &str) -> Node {
    Node::start(config(name)).await.unwrap()
}

/// Two connected nodes.
pub async fn pair() -> (Node, Node) {
    let a = node("a").await;
    let b = node("b").await;
    a.connect(b.listen_addr()).await.unwrap();
    wait_until(|| b.is_connected(a.name())).await;
    (a, b)
}

pub async fn wait_until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(HANG, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached before the hang bound");
}

/// The next event matching `pick`.
pub async fn next_event<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(HANG, async {
        loop {
            let event = events.recv().await.expect("event stream open");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("event not seen before the hang bound")
}

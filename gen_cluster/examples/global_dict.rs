//! The global dictionary on gen_leader, the classic example of the original: a node of the
//! election `dict` whose writes go through the leader and whose reads are local. It reads
//! commands from standard input: `put KEY VALUE`, `get KEY`, `del KEY`, `list`, `status`.
//!
//! Run three, in three terminals (candidates in the same order everywhere):
//!
//! ```sh
//! cargo run -p gen_cluster --example global_dict -- a 127.0.0.1:4480
//! cargo run -p gen_cluster --example global_dict -- b 127.0.0.1:4481 127.0.0.1:4480
//! cargo run -p gen_cluster --example global_dict -- c 127.0.0.1:4482 127.0.0.1:4480 127.0.0.1:4481
//! ```
//!
//! `a` leads; `put` on any node reaches every node. Stop `a` and `b` leads, with the same keys.

use std::time::Duration;

use gen_cluster::services::dict::{Dict, Read, ReadReply, Write};
use gen_cluster::{Leader, LeaderConfig, Node, NodeConfig, NodeName};
use tokio::io::{AsyncBufReadExt, BufReader};

const CANDIDATES: [&str; 3] = ["a", "b", "c"];
const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, listen, seeds @ ..] = args.as_slice() else {
        return Err("usage: global_dict NAME LISTEN_ADDR [SEED_ADDR…]".into());
    };
    let mut config = NodeConfig::new(NodeName::new(name.as_str())?, "example-cookie");
    config.listen = listen.clone();
    let node = Node::start(config).await?;
    for seed in seeds {
        node.connect(seed).await?;
    }
    let candidates = CANDIDATES
        .iter()
        .map(|c| NodeName::new(*c))
        .collect::<Result<_, _>>()?;
    let dict = Leader::start(
        &node,
        LeaderConfig::new("dict", candidates),
        Dict::default(),
    )
    .await?;
    println!(
        "{name} listening on {}; commands: put K V, get K, del K, list, status",
        node.listen_addr()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome = match words.as_slice() {
            ["put", key, value] => dict
                .leader_call(Write::Put(key.to_string(), value.to_string()), TIMEOUT)
                .await
                .map(|()| "ok".to_string())
                .map_err(|e| e.to_string()),
            ["del", key] => dict
                .leader_call(Write::Delete(key.to_string()), TIMEOUT)
                .await
                .map(|()| "ok".to_string())
                .map_err(|e| e.to_string()),
            ["get", key] => match dict.call(Read::Get(key.to_string()), TIMEOUT).await {
                Ok(ReadReply::Value(value)) => Ok(value.unwrap_or_else(|| "(none)".into())),
                other => Err(format!("{other:?}")),
            },
            ["list"] => match dict.call(Read::List, TIMEOUT).await {
                Ok(ReadReply::All(entries)) => Ok(format!("{entries:?}")),
                other => Err(format!("{other:?}")),
            },
            ["status"] => dict
                .status(TIMEOUT)
                .await
                .map(|s| format!("{s:?}"))
                .map_err(|e| e.to_string()),
            _ => Err("commands: put K V, get K, del K, list, status".into()),
        };
        match outcome {
            Ok(text) => println!("{text}"),
            Err(error) => println!("error: {error}"),
        }
    }
    node.shutdown().await;
    Ok(())
}

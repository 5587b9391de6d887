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
//!
//! With `MAJORITY_DATA_DIR=/some/dir/a` (a directory per node) the election runs in the
//! `majority` mode: a write answers once two of the three hold it, a node cut from the other two
//! refuses writes (`NoQuorum`), and each answer carries the term of the leader that wrote it (`leader_call_with_term`). A
//! [`Fence`] stands for the store the writes go on to: it refuses a term older than one it saw,
//! so a leader deposed while paused cannot write after its successor did.

use std::time::Duration;

use gen_cluster::services::dict::{Dict, Read, ReadReply, Write};
use gen_cluster::{ElectionMode, Fence, Leader, LeaderConfig, Node, NodeConfig, NodeName};
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
    let mut election = LeaderConfig::new("dict", candidates);
    if let Some(dir) = std::env::var_os("MAJORITY_DATA_DIR") {
        election.mode = ElectionMode::Majority;
        election.data_dir = Some(dir.into());
    }
    let dict = Leader::start(&node, election, Dict::default()).await?;
    let store = Fence::new();
    println!(
        "{name} listening on {}; commands: put K V, get K, del K, list, status",
        node.listen_addr()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let outcome = match words.as_slice() {
            ["put", key, value] => dict
                .leader_call_with_term(
                    Write::Put(key.to_string(), value.to_string()).into(),
                    TIMEOUT,
                )
                .await
                .map_err(|e| e.to_string())
                .and_then(|(_, term)| fenced(&store, term)),
            ["del", key] => dict
                .leader_call_with_term(Write::Delete(key.to_string()).into(), TIMEOUT)
                .await
                .map_err(|e| e.to_string())
                .and_then(|(_, term)| fenced(&store, term)),
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

/// Passes a write of `term` through the store's fence.
fn fenced(store: &Fence, term: u64) -> Result<String, String> {
    store.admit(term).map_err(|stale| stale.to_string())?;
    Ok(format!("ok (term {term})"))
}

//! `gen-cluster dict` and `gen-cluster status`: clients of a running node. Each starts a
//! short-lived node of its own (same cookie and cluster), connects to the given address, and
//! talks to that node's instance of the dictionary's election.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use gen_cluster::services::dict::{self, Dict, Read, ReadReply, Request, Write};
use gen_cluster::{Leader, LeaderStatus, Node, NodeConfig, NodeName, Tls};

use crate::cookie::Missing;
use crate::{ClientArgs, DictArgs, DictOp, StatusArgs};

/// What a failed request to the node's election most often means.
const NOT_RUNNING: &str =
    "no answer from the node's dictionary (was it started with --candidates?)";

/// How long a client waits for an answer (a write waits for a leader at most this long).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the node to answer its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

pub fn dict(args: DictArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (node, dictionary) = connect(&args.client).await?;
        let outcome = run_dict(&dictionary, args.op).await;
        node.shutdown().await;
        emit(&outcome?)
    })
}

/// What `op` prints.
async fn run_dict(dictionary: &Leader<Dict>, op: DictOp) -> Result<String> {
    let to_leader = |request| dictionary.leader_call_with_term(request, CLIENT_TIMEOUT);
    // The term of the leader that answered, in the majority election (0 in the priority one).
    let term = |term: u64| match term {
        0 => String::new(),
        term => format!(" (term {term})"),
    };
    Ok(match op {
        DictOp::Put { key, value } => {
            let (_, written) = to_leader(Write::Put(key.clone(), value.clone()).into()).await?;
            format!("ok {key}={value}{}\n", term(written))
        }
        DictOp::Del { key } => {
            let (_, written) = to_leader(Write::Delete(key.clone()).into()).await?;
            format!("ok deleted {key}{}\n", term(written))
        }
        DictOp::Get { key, leader: true } => match to_leader(Request::Get(key.clone())).await? {
            (Some(value), _) => format!("{value}\n"),
            (None, _) => bail!("no key {key:?}"),
        },
        DictOp::Get { key, leader: false } => match dictionary
            .call(Read::Get(key.clone()), CLIENT_TIMEOUT)
            .await
            .context(NOT_RUNNING)?
        {
            ReadReply::Value(Some(value)) => format!("{value}\n"),
            ReadReply::Value(None) => bail!("no key {key:?}"),
            ReadReply::All(_) => bail!("unexpected answer"),
        },
        DictOp::List => match dictionary
            .call(Read::List, CLIENT_TIMEOUT)
            .await
            .context(NOT_RUNNING)?
        {
            ReadReply::All(entries) => entries
                .iter()
                .map(|(key, value)| format!("{key}\t{value}\n"))
                .collect(),
            ReadReply::Value(_) => bail!("unexpected answer"),
        },
    })
}

/// Writes a command's output; a reader that stopped reading (`… | head -1`) is no error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written.context("cannot write to standard output")?),
    }
}

pub fn status(args: StatusArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (node, dictionary) = connect(&args.client).await?;
        let status = dictionary.status(CLIENT_TIMEOUT).await;
        node.shutdown().await;
        let status = status.context(NOT_RUNNING)?;
        emit(&status_text(&status, args.json))
    })
}

/// What `status` prints.
fn status_text(status: &LeaderStatus, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string(status).unwrap_or_default());
    }
    let list = |names: &[NodeName]| {
        names
            .iter()
            .map(NodeName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let leader = status.leader.as_ref().map_or("none", NodeName::as_str);
    let election = status
        .election
        .as_ref()
        .map_or("none".to_string(), |e| e.to_string());
    let mut text = format!(
        "node        {}\nleader      {leader}\nelection    {election}\ncandidates  {}\n\
         workers     {}\ntaking part {}\n",
        status.node,
        list(&status.candidates),
        list(&status.workers),
        list(&status.alive)
    );
    if !status.absent.is_empty() {
        let absent = list(&status.absent);
        text += &format!("absent      {absent} (known, not taking part now)\n");
    }
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|known| format!("{} {}", known.name, known.state))
        .collect();
    text += &format!("nodes       {}\n", nodes.join(", "));
    if !status.refused.is_empty() {
        let refused = list(&status.refused);
        text += &format!(
            "refused     {refused} (their candidate lists or lease settings conflict with this \
             node's)\n"
        );
    }
    text
}

/// A client node connected to the node at `args.node`, and a handle on its dictionary.
async fn connect(args: &ClientArgs) -> Result<(Node, Leader<Dict>)> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => NodeName::new(format!("gen-cluster-client-{}", std::process::id()))?,
    };
    let tls = match args.tls.files()? {
        Some(files) => Some(
            Tls::load(files, name.clone())
                .context("give --name a name the client's certificate is valid for")?,
        ),
        None => None,
    };
    let mut config = NodeConfig::new(
        name,
        crate::cookie::load(args.cookie_file.as_deref(), Missing::Refuse)?,
    );
    config.cluster = args.cluster.clone();
    config.hidden = true;
    // A node answers a handshake in a few round trips: a silent port is not one.
    config.handshake_timeout = HANDSHAKE_TIMEOUT;
    let node = match tls {
        Some(tls) => Node::start_with(config, tls).await,
        None => Node::start(config).await,
    }
    .context("cannot start the client node")?;
    let Some(addr) = &args.node else {
        bail!("which node? give its address with --node HOST:PORT");
    };
    let host = node.connect(addr).await.with_context(|| {
        format!("cannot reach a gen-cluster node at {addr} (is it a node's --listen address?)")
    })?;
    let dictionary = Leader::at(&node, &host, dict::ELECTION);
    Ok((node, dictionary))
}

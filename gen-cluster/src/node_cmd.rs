//! `gen-cluster node`: one node from flags, printing its events until it is told to stop.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use gen_cluster::services::echo::{self, Echo};
use gen_cluster::{LivenessConfig, Node, NodeConfig, NodeEvent, NodeName};
use serde_json::json;

use crate::{EventFormat, NodeArgs};

/// How often an unreachable seed is dialed again.
const SEED_RETRY: Duration = Duration::from_millis(500);

pub fn run(args: NodeArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(args))
}

async fn serve(args: NodeArgs) -> Result<()> {
    let name = NodeName::new(&args.name)?;
    let mut config = NodeConfig::new(name, crate::cookie::load(args.cookie_file.as_deref())?);
    config.listen = args.listen.clone();
    config.cluster = args.cluster.clone();
    let down_after = Duration::from_millis(args.down_after_ms);
    config.liveness = LivenessConfig {
        heartbeat_interval: down_after / 5,
        down_after,
    };
    let node = Node::start(config).await.context("cannot start the node")?;
    let echo = node.spawn_named(echo::NAME, Echo::default()).await?;
    let echo_pid = echo.pid().context("a spawned server has a pid")?;
    for name in &args.globals {
        node.register_global(name, echo_pid)
            .await
            .with_context(|| format!("cannot register the global name {name:?}"))?;
    }
    let printer = Printer {
        format: args.events,
        node: node.name().to_string(),
    };
    let mut events = node.subscribe();
    printer.print("started", None, None, Some(node.listen_addr()));
    if !args.seeds.is_empty() {
        node.keep_connected(args.seeds.clone(), SEED_RETRY);
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            event = events.recv() => match event {
                Ok(NodeEvent::NodeUp { peer, addr, .. }) => printer.print("node_up", Some(peer.as_str()), None, Some(&addr)),
                Ok(NodeEvent::NodeDown { peer, reason, .. }) => {
                    printer.print("node_down", Some(peer.as_str()), Some((reason.kind(), reason.to_string())), None)
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event printer fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    printer.print("stopping", None, None, None);
    node.shutdown().await;
    printer.print("stopped", None, None, None);
    Ok(())
}

struct Printer {
    format: EventFormat,
    node: String,
}

impl Printer {
    fn print(
        &self,
        event: &str,
        peer: Option<&str>,
        reason: Option<(&str, String)>,
        addr: Option<&str>,
    ) {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = match self.format {
            EventFormat::Json => json!({
                "event": event,
                "node": self.node,
                "peer": peer,
                "reason": reason.as_ref().map(|(kind, _)| *kind),
                "detail": reason.as_ref().map(|(_, detail)| detail),
                "addr": addr,
                "ts_ms": ts_ms,
            })
            .to_string(),
            EventFormat::Text => {
                let mut line = format!("{ts_ms} {} {event}", self.node);
                if let Some(peer) = peer {
                    line += &format!(" peer={peer}");
                }
                if let Some(addr) = addr {
                    line += &format!(" addr={addr}");
                }
                if let Some((_, detail)) = reason {
                    line += &format!(" reason=\"{detail}\"");
                }
                line
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

//! `gen-cluster node`: one node from flags, printing its events until it is told to stop.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use gen_cluster::rally_name;
use gen_cluster::services::dict::{self, Dict};
use gen_cluster::services::echo::{self, Echo};
use gen_cluster::services::roster::{Roster, RosterChange};
use gen_cluster::{
    Clustered, Discovery, Dns, DnsA, DnsSrv, ElectionId, ElectionMode, Epmd, Leader, MemberConfig,
    Node, NodeEvent, NodeId, NodeName, NodeState, Pid, Seed, StaticPeers, Tls,
};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use crate::cookie::Missing;
use gen_cluster::settings::{EventFormat, Settings};

use crate::NodeArgs;

pub fn run(args: NodeArgs) -> Result<()> {
    let settings = gen_cluster::settings::resolve(args.config.as_deref(), args.settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(settings))
}

/// The election followed next time it changes; pending forever without a dictionary.
async fn next_leader(
    changes: &mut Option<tokio::sync::watch::Receiver<Option<ElectionId>>>,
) -> Option<Option<ElectionId>> {
    let Some(changes) = changes else {
        return std::future::pending().await;
    };
    if changes.changed().await.is_err() {
        return std::future::pending().await;
    }
    Some(changes.borrow_and_update().clone())
}

/// The nodes connected to this one that were started with other voters or another lease setting
/// (`majority` mode): while there is one, no node that sees it leads, stands or votes.
async fn refused_voters(dictionary: &Leader<Dict>) -> Vec<NodeName> {
    match dictionary.status(Duration::from_secs(1)).await {
        Ok(status) => status.refused,
        Err(error) => {
            tracing::warn!(%error, "cannot read the election's status");
            Vec::new()
        }
    }
}

/// The global dictionary, if the settings name its candidates.
async fn start_dictionary(node: &Node, args: &Settings) -> Result<Option<Leader<Dict>>> {
    let Some(config) = args.leader_config(dict::ELECTION) else {
        return Ok(None);
    };
    let dictionary = Leader::start(node, config, Dict::default())
        .await
        .context("cannot start the global dictionary")?;
    Ok(Some(dictionary))
}

/// Every discovery source the settings name, each in a reconcile loop of its own.
fn start_discovery(node: &Node, args: &Settings) -> Result<()> {
    let reconcile = args.reconcile();
    let (seeds, discovery) = (&args.given.seeds, &args.given.discovery);
    if !seeds.is_empty() {
        Discovery::start(node, StaticPeers(seeds.clone()), reconcile);
    }
    if discovery.dns_a.is_some() || discovery.dns_srv.is_some() {
        let dns = match discovery.nameserver {
            Some(server) => Dns::server(server),
            None => Dns::system()?,
        };
        if let Some(a) = &discovery.dns_a {
            Discovery::start(
                node,
                DnsA::new(dns.clone(), &a.name, a.port, a.host_type),
                reconcile,
            );
        }
        if let Some(srv) = &discovery.dns_srv {
            Discovery::start(node, DnsSrv::new(dns, &srv.name, srv.host_type), reconcile);
        }
    }
    if let Some(epmd) = &discovery.epmd_register {
        Epmd::register(node, epmd);
    }
    if !discovery.epmd.is_empty() {
        Discovery::start(node, Epmd::new(&discovery.epmd), reconcile);
    }
    Ok(())
}

async fn serve(args: Settings) -> Result<()> {
    // Before the node starts: a taken port stops it before it joins anyone, and the counters
    // it makes as links come up go to this recorder.
    let http = match &args.given.http {
        Some(addr) => Some((crate::http::bind(addr)?, crate::http::install_recorder()?)),
        None => None,
    };
    let config = args.node_config(crate::cookie::load(
        args.given.cookie_file.as_deref(),
        Missing::Create,
    )?);
    let tls = match args.given.tls.files()? {
        Some(files) => Some(Tls::load(files, args.name.clone())?),
        None => None,
    };
    let node = match &tls {
        Some(tls) => Node::start_with(config, tls.clone()).await,
        None => Node::start(config).await,
    }
    .context("cannot start the node")?;
    let echo = node.spawn_named(echo::NAME, Echo::default()).await?;
    let echo_pid = echo.pid().context("a spawned server has a pid")?;
    for name in &args.given.globals {
        node.globals()
            .register(name, echo_pid)
            .await
            .with_context(|| format!("cannot register the global name {name:?}"))?;
    }
    let printer = Printer {
        format: args.events(),
        node: node.name().to_string(),
        names: RefCell::new(BTreeMap::from([(node.id(), node.name().to_string())])),
        peers: node.clone(),
        up: RefCell::default(),
    };
    let mut events = node.subscribe();
    printer.print("started", None, None, Some(node.listen_addr()));
    printer.resync_links();
    start_discovery(&node, &args)?;
    let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let (rally_tx, mut rally_holders) = tokio::sync::mpsc::unbounded_channel();
    if let Some(kind) = &args.given.member {
        watch_rally(&node, rally_name(&args.cluster()), rally_tx);
        let seed = join_point(&node, &args).await;
        let config = MemberConfig::new(args.cluster(), kind.clone(), seed);
        let member = Clustered::start(&node, config, Roster::new(changes_tx)).await?;
        printer.print_member_started(member.pid(), kind);
    }
    let dictionary = start_dictionary(&node, &args).await?;
    let mut leader_changes = dictionary.as_ref().and_then(Leader::leader_changes);
    let majority = args
        .leader_config(dict::ELECTION)
        .is_some_and(|config| config.mode == ElectionMode::Majority);
    if let Some((bound, metrics)) = http {
        let addr = bound.addr()?;
        bound.serve(
            metrics,
            readiness(&node, args.expects_peers(), leader_changes.clone()),
        )?;
        printer.print("http", None, None, Some(&addr));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tls_files = tls.as_ref().map(TlsWatch::new);
    let mut tls_check = tokio::time::interval(TLS_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Some(watch) = &mut tls_files {
                    watch.reload(&printer, "SIGHUP");
                }
            }
            _ = tls_check.tick(), if tls_files.is_some() => {
                if let Some(watch) = &mut tls_files
                    && watch.changed()
                {
                    watch.reload(&printer, "files changed");
                }
            }
            Some(election) = next_leader(&mut leader_changes) => {
                let refused = match (&election, &dictionary) {
                    (None, Some(dictionary)) if majority => refused_voters(dictionary).await,
                    _ => Vec::new(),
                };
                printer.print_leader(election.as_ref(), &refused);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            Some(change) = changes.recv() => printer.print_member(&change),
            Some(holder) = rally_holders.recv() => printer.print_rally(holder),
            event = events.recv() => match event {
                Ok(NodeEvent::NodeUp { peer, addr, .. }) => printer.node_up(&peer, &addr),
                Ok(NodeEvent::NodeDown { peer, reason, .. }) => {
                    printer.node_down(&peer, reason.kind(), reason.to_string())
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event printer fell behind; it reports the links as they are now");
                    printer.resync_links();
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

/// The node's readiness: once it has joined its cluster (a peer was up, when it was given
/// peers to find; it stays joined when they go, so that a survivor keeps serving), and while it
/// follows a leader when it runs the dictionary.
fn readiness(
    node: &Node,
    expects_peers: bool,
    leader: Option<tokio::sync::watch::Receiver<Option<ElectionId>>>,
) -> crate::http::Readiness {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let joined = std::sync::Arc::new(AtomicBool::new(!expects_peers));
    if expects_peers {
        let (node, joined) = (node.clone(), std::sync::Arc::clone(&joined));
        tokio::spawn(async move {
            let mut views = node.view_changes();
            let name = node.name().clone();
            let peer_up = |view: &std::sync::Arc<gen_cluster::ClusterView>| {
                view.nodes
                    .iter()
                    .any(|known| known.name != name && known.state == NodeState::Up)
            };
            if views.wait_for(peer_up).await.is_ok() {
                joined.store(true, Relaxed);
            }
        });
    }
    let node = node.clone();
    std::sync::Arc::new(move || {
        if node.is_shutting_down() {
            return Err("shutting down".into());
        }
        if !joined.load(Relaxed) {
            return Err("no peer has been up yet: the node has not joined its cluster".into());
        }
        if let Some(leader) = &leader
            && leader.borrow().is_none()
        {
            return Err("the dictionary follows no leader (electing, or no quorum)".into());
        }
        Ok(())
    })
}

/// How often the TLS files are checked for a change.
const TLS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The TLS files of a node, read again when they change (their size or modification time,
/// checked every [`TLS_CHECK_EVERY`]; a link swapped in place, as Kubernetes does with secrets,
/// counts) or on SIGHUP.
struct TlsWatch {
    tls: Tls,
    seen: Vec<Option<(SystemTime, u64)>>,
}

impl TlsWatch {
    fn new(tls: &Tls) -> Self {
        let mut watch = Self {
            tls: tls.clone(),
            seen: Vec::new(),
        };
        watch.seen = watch.stamps();
        watch
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let files = self.tls.files();
        [&files.cert, &files.key, &files.ca]
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    /// Whether a file changed since last seen.
    fn changed(&mut self) -> bool {
        let now = self.stamps();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }

    /// Reads the files again; on error the ones in use stay, and the error is printed.
    fn reload(&mut self, printer: &Printer, why: &str) {
        self.seen = self.stamps();
        match self.tls.reload() {
            Ok(()) => printer.print("tls_reloaded", None, Some(("reload", why.into())), None),
            Err(error) => printer.print(
                "tls_reload_failed",
                None,
                Some(("tls", format!("{error}; the files in use stay in use"))),
                None,
            ),
        }
    }
}

/// Where a new member joins: through the rally name of the seeds' cluster once a seed is
/// connected and the name resolves (bounded wait), else as the first member. Two clusters started
/// apart merge when they meet: the rally name clash makes them introduce themselves.
async fn join_point(node: &Node, args: &Settings) -> Seed {
    if args.given.seeds.is_empty() {
        return Seed::First;
    }
    let rally = rally_name(&args.cluster());
    let held = node
        .globals()
        .wait_until(|names| names.whereis(&rally).is_some());
    let resolved = tokio::time::timeout(JOIN_WAIT, held).await;
    if resolved.is_err() {
        tracing::warn!(%rally, "no member found through the seeds yet: starting as the first member");
    }
    Seed::Rally
}

/// Sends every change of the member holding the cluster's `rally` name, as this node sees it.
fn watch_rally(node: &Node, rally: String, holders: UnboundedSender<Option<Pid>>) {
    let (node, globals) = (node.clone(), node.globals().clone());
    node.clone()
        .spawn_task(tracing::info_span!("rally events"), async move {
            let mut holder = None;
            loop {
                let changed = globals.wait_until(|names| names.whereis(&rally) != holder);
                tokio::select! {
                    _ = node.shutting_down() => return,
                    _ = changed => {}
                }
                // Read once: a change and its undoing in between is no change.
                let now = globals.whereis(&rally);
                if now == holder {
                    continue;
                }
                holder = now;
                if holders.send(holder).is_err() {
                    return;
                }
            }
        });
}

/// How long a new member waits for the seeds' cluster before starting on its own.
const JOIN_WAIT: Duration = Duration::from_secs(2);

struct Printer {
    format: EventFormat,
    node: String,
    /// The names of the nodes met, by id: a pid names its node by id only.
    names: RefCell<BTreeMap<NodeId, String>>,
    /// This node, whose connected peers name the ids not met yet.
    peers: Node,
    /// The members reported up and not down since.
    up: RefCell<BTreeSet<NodeName>>,
}

impl Printer {
    /// Reports `peer` up, once until it is reported down (the first resync and the event of a
    /// peer that connected meanwhile may both tell of it).
    fn node_up(&self, peer: &NodeName, addr: &str) {
        self.learn(peer);
        if self.up.borrow_mut().insert(peer.clone()) {
            self.print("node_up", Some(peer.as_str()), None, Some(addr));
        }
    }

    fn node_down(&self, peer: &NodeName, kind: &str, detail: String) {
        self.up.borrow_mut().remove(peer);
        self.print("node_down", Some(peer.as_str()), Some((kind, detail)), None);
    }

    /// After missed events (or before the first: a peer may connect before the printer
    /// subscribes): reports the members connected now that were not reported up, and those
    /// reported up that are not connected now (why is unknown: the event was missed).
    fn resync_links(&self) {
        let now: BTreeMap<NodeName, String> = self
            .peers
            .peers()
            .into_iter()
            .filter(|peer| !peer.hidden)
            .map(|peer| (peer.name, peer.addr))
            .collect();
        let gone: Vec<NodeName> = self
            .up
            .borrow()
            .iter()
            .filter(|peer| !now.contains_key(*peer))
            .cloned()
            .collect();
        for peer in gone {
            self.node_down(&peer, "unknown", "its event was missed".into());
        }
        for (peer, addr) in &now {
            if !self.up.borrow().contains(peer) {
                self.node_up(peer, addr);
            }
        }
    }

    /// Notes a node's name, to show with its processes' pids.
    fn learn(&self, node: &NodeName) {
        self.names.borrow_mut().insert(node.id(), node.to_string());
    }

    /// The name of the node `pid` runs on, if this node met it or is connected to it.
    fn node_of(&self, pid: Pid) -> Option<String> {
        if let Some(name) = self.names.borrow().get(&pid.node) {
            return Some(name.clone());
        }
        let peer = self
            .peers
            .peers()
            .into_iter()
            .find(|p| p.name.id() == pid.node)?;
        self.learn(&peer.name);
        Some(peer.name.to_string())
    }

    /// `pid` for a text line: `b/<…>` when its node is known.
    fn pid_text(&self, pid: Pid) -> String {
        match self.node_of(pid) {
            Some(node) => format!("{node}/{pid}"),
            None => pid.to_string(),
        }
    }

    fn print(
        &self,
        event: &str,
        peer: Option<&str>,
        reason: Option<(&str, String)>,
        addr: Option<&str>,
    ) {
        let at = At::now();
        let line = match self.format {
            EventFormat::Json => json!({
                "event": event,
                "node": self.node,
                "peer": peer,
                "reason": reason.as_ref().map(|(kind, _)| *kind),
                "detail": reason.as_ref().map(|(_, detail)| detail),
                "addr": addr,
                "ts_ms": at.ms(),
            })
            .to_string(),
            EventFormat::Text => {
                let mut line = format!("{at} {} {event}", self.node);
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
        emit(&line);
    }

    /// The leader followed changed: who, and in the majority election its term; or none is
    /// known (`reason` `none`) while the nodes elect, or while nodes started with other voters or
    /// another lease setting (`refused`) are connected.
    fn print_leader(&self, election: Option<&ElectionId>, refused: &[NodeName]) {
        let why_none = match refused {
            [] => "no leader known; electing".to_string(),
            _ => {
                let names: Vec<&str> = refused.iter().map(NodeName::as_str).collect();
                format!(
                    "no leader while {} is connected: it was started with other voters or \
                     another lease setting",
                    names.join(",")
                )
            }
        };
        let at = At::now();
        let leader = election.map(|e| e.leader.as_str());
        let term = election.map(|e| e.term).filter(|term| *term > 0);
        let line = match self.format {
            EventFormat::Json => json!({
                "event": "leader", "node": self.node, "leader": leader, "term": term,
                "reason": election.is_none().then_some("none"),
                "detail": election.is_none().then_some(&why_none), "ts_ms": at.ms(),
            })
            .to_string(),
            EventFormat::Text => {
                let mut line = format!("{at} {} leader", self.node);
                match (leader, term) {
                    (Some(leader), Some(term)) => line += &format!(" leader={leader} term={term}"),
                    (Some(leader), None) => line += &format!(" leader={leader}"),
                    (None, _) => line += &format!(" leader=none reason=\"{why_none}\""),
                }
                line
            }
        };
        emit(&line);
    }

    /// The member holding the rally name changed (`None`: nobody holds it, as this node sees it).
    fn print_rally(&self, holder: Option<Pid>) {
        let at = At::now();
        let line = match self.format {
            EventFormat::Json => json!({
                "event": "rally", "node": self.node, "member": holder.map(|p| p.to_string()),
                "member_node": holder.and_then(|p| self.node_of(p)), "ts_ms": at.ms(),
            })
            .to_string(),
            EventFormat::Text => format!(
                "{at} {} rally member={}",
                self.node,
                holder.map_or_else(|| "none".to_string(), |p| self.pid_text(p))
            ),
        };
        emit(&line);
    }

    fn print_member_started(&self, pid: Option<Pid>, kind: &str) {
        if let Some(pid) = pid {
            self.emit_member("member_started", pid, kind, None, &[]);
        }
    }

    fn print_member(&self, change: &RosterChange) {
        let event = format!("member_{}", change.event.as_str());
        let reason = change.reason.as_ref().map(|r| r.to_string());
        self.emit_member(
            &event,
            change.member.pid,
            &change.member.kind,
            reason,
            &change.members,
        );
    }

    fn emit_member(
        &self,
        event: &str,
        member: Pid,
        kind: &str,
        reason: Option<String>,
        members: &[(String, Vec<gen_cluster::Pid>)],
    ) {
        let at = At::now();
        let line = match self.format {
            EventFormat::Json => {
                let members: serde_json::Map<String, serde_json::Value> = members
                    .iter()
                    .map(|(kind, pids)| {
                        (kind.clone(), pids.iter().map(|p| p.to_string()).collect())
                    })
                    .collect();
                json!({
                    "event": event, "node": self.node, "member": member.to_string(),
                    "member_node": self.node_of(member), "kind": kind,
                    "reason": reason, "members": members, "ts_ms": at.ms(),
                })
                .to_string()
            }
            EventFormat::Text => {
                let member = self.pid_text(member);
                let mut line = format!("{at} {} {event} member={member} kind={kind}", self.node);
                if let Some(reason) = reason {
                    line += &format!(" reason=\"{reason}\"");
                }
                if !members.is_empty() {
                    let groups: Vec<String> = members
                        .iter()
                        .map(|(kind, pids)| {
                            let pids: Vec<String> =
                                pids.iter().map(|p| self.pid_text(*p)).collect();
                            format!("{kind}:[{}]", pids.join(","))
                        })
                        .collect();
                    line += &format!(" members={}", groups.join(" "));
                }
                line
            }
        };
        emit(&line);
    }
}

/// When an event was printed: JSON gives milliseconds since the Unix epoch (`ts_ms`), text an
/// RFC 3339 time in UTC to the millisecond.
struct At(SystemTime);

impl At {
    fn now() -> Self {
        Self(SystemTime::now())
    }

    fn ms(&self) -> u64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let utc = time::OffsetDateTime::from(self.0);
        match utc.format(&format) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.ms()),
        }
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

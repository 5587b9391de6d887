//! A running node: its identity, its process table, its connection table, and what happens when
//! processes end or peers go down. The `connection` module drives each connection's handshake and
//! its reader and writer tasks and calls back into the node; [`crate::process`] runs each
//! process and tells the node when it ends.
//!
//! Costs: a local message is one mailbox push under the process-table lock; a remote one is one
//! encode into a frame and one queue push; a node down is O(processes + monitors on that peer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gen_cluster_proto::arbitration::{self, Other, Progress, Step, Verdict};
use gen_cluster_proto::handshake::{HandshakeConfig, Identity, Refusal, SUPPORTED_VERSIONS};
use gen_cluster_proto::registry::{RegisterError, Registry};
use gen_cluster_proto::wire::{self, CallRefusal, Dest, Header};
use gen_cluster_proto::{ExitReason, Incarnation, NodeId, NodeName, Pid};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NodeConfig;
use crate::connection;
use crate::error::{CallError, ConnectError, SendError, StartError, StartNodeError};
use crate::events::{DownReason, NodeEvent};
use crate::process::{
    self, Mailbox, Message, MonitorRef, Payload, ReplyRoute, Server, ServerRef, Signal, Target,
};
use crate::registry::{self, GlobalRegistry};
use crate::transport::{Dialer, Tcp, Transport};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// A running node. Cheap to clone: every clone is the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: NodeConfig,
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) listen_addr: String,
    pub(crate) dialer: Box<dyn Dialer>,
    pub(crate) epoch: Instant,
    next_local: AtomicU64,
    next_ref: AtomicU64,
    processes: Mutex<Processes>,
    peers: Mutex<Peers>,
    events: broadcast::Sender<NodeEvent>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) registry: GlobalRegistry,
    process_tasks: TaskTracker,
    pub(crate) link_tasks: TaskTracker,
}

#[derive(Default)]
struct Processes {
    slots: HashMap<u64, Slot>,
    names: HashMap<Arc<str>, u64>,
    closed: bool,
}

struct Slot {
    mailbox: mpsc::UnboundedSender<Signal>,
    watchers: Vec<Watcher>,
    name: Option<Arc<str>>,
}

/// Who is told when a process ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Watcher {
    Monitor { reference: u64, watcher: Pid },
    Link { other: Pid },
}

impl Watcher {
    fn pid(&self) -> Pid {
        match *self {
            Watcher::Monitor { watcher, .. } => watcher,
            Watcher::Link { other } => other,
        }
    }
}

#[derive(Default)]
struct Peers {
    by_id: HashMap<NodeId, PeerEntry>,
    next_conn: u64,
}

enum PeerEntry {
    Handshaking(Pending),
    Up(Arc<PeerLink>),
}

struct Pending {
    conn: u64,
    name: NodeName,
    progress: Progress,
    dialed_by_us: bool,
    incarnation: Incarnation,
    cancel: CancellationToken,
}

/// An established connection to a peer, shared by everything that sends to it.
pub(crate) struct PeerLink {
    pub(crate) name: NodeName,
    pub(crate) id: NodeId,
    pub(crate) incarnation: Incarnation,
    pub(crate) addr: String,
    out: mpsc::UnboundedSender<Outgoing>,
    state: Mutex<LinkState>,
    max_frame: usize,
    pub(crate) cancel: CancellationToken,
    down_reason: Mutex<Option<DownReason>>,
}

/// What the writer task is given to send.
pub(crate) enum Outgoing {
    Frame(Vec<u8>),
    Goodbye(ExitReason),
}

#[derive(Default)]
struct LinkState {
    closed: bool,
    calls: HashMap<u64, oneshot::Sender<Result<Payload, CallError>>>,
    /// Monitors held by local watchers on processes of this peer: reference → (watcher, target).
    monitors: HashMap<u64, (Pid, Pid)>,
    /// Links between a local process and a process of this peer: (local, remote).
    links: HashSet<(Pid, Pid)>,
}

/// A peer as seen by [`Node::peers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its name.
    pub name: NodeName,
    /// Its life.
    pub incarnation: Incarnation,
    /// Where it listens.
    pub addr: String,
}

impl Node {
    /// Starts a node on TCP: binds `config.listen` and accepts peers.
    pub async fn start(config: NodeConfig) -> Result<Node, StartNodeError> {
        Self::start_with(config, Tcp).await
    }

    /// Starts a node on the given transport.
    pub async fn start_with<T: Transport>(
        config: NodeConfig,
        transport: T,
    ) -> Result<Node, StartNodeError> {
        config.validate()?;
        let transport = Arc::new(transport);
        let (listener, listen_addr) =
            transport
                .bind(&config.listen)
                .await
                .map_err(|source| StartNodeError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let incarnation = Incarnation(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        );
        let node = Node {
            inner: Arc::new(Inner {
                id: config.name.id(),
                incarnation,
                listen_addr,
                dialer: Box::new(Arc::clone(&transport)),
                epoch: connection::now(),
                next_local: AtomicU64::new(1),
                next_ref: AtomicU64::new(1),
                processes: Mutex::default(),
                peers: Mutex::default(),
                events: broadcast::channel(EVENT_BUFFER).0,
                shutdown: CancellationToken::new(),
                registry: GlobalRegistry::new(Registry::new(config.name.clone(), incarnation)),
                process_tasks: TaskTracker::new(),
                link_tasks: TaskTracker::new(),
                config,
            }),
        };
        registry::start(&node);
        let pending = Arc::new(Semaphore::new(node.inner.config.max_pending_handshakes));
        node.inner.link_tasks.spawn(connection::accept_loop(
            node.clone(),
            transport,
            listener,
            pending,
        ));
        tracing::info!(node = %node.name(), addr = %node.listen_addr(), incarnation = %incarnation, "node started");
        Ok(node)
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.inner.config.name
    }

    /// This node's id (what its pids carry).
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This life of the node.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// The address the node listens on.
    pub fn listen_addr(&self) -> &str {
        &self.inner.listen_addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Events from now on: peers up and down.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let peers = lock(&self.inner.peers);
        let mut list: Vec<PeerInfo> = peers
            .by_id
            .values()
            .filter_map(|entry| match entry {
                PeerEntry::Up(link) => Some(PeerInfo {
                    name: link.name.clone(),
                    incarnation: link.incarnation,
                    addr: link.addr.clone(),
                }),
                PeerEntry::Handshaking(_) => None,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Whether the node with this id is connected.
    pub(crate) fn is_connected_id(&self, id: NodeId) -> bool {
        self.link_to(id).is_some()
    }

    /// Whether a peer of this name is connected.
    pub fn is_connected(&self, peer: &NodeName) -> bool {
        self.link_to(peer.id())
            .is_some_and(|link| &link.name == peer)
    }

    /// Connects to the node listening on `addr` and returns its name once the handshake is done
    /// (dial and handshake are bounded by the configured timeouts). Connecting to a node that is
    /// already connected returns its name.
    pub async fn connect(&self, addr: &str) -> Result<NodeName, ConnectError> {
        connection::dial(self, addr).await
    }

    /// Drops the connection to `peer` at once, without a goodbye (Erlang's `disconnect_node`):
    /// this node reports it down as [`DownReason::Disconnected`], the peer as a lost connection.
    /// Returns whether it was connected.
    pub fn disconnect(&self, peer: &NodeName) -> bool {
        match self.link_to(peer.id()) {
            Some(link) if &link.name == peer => {
                link.note_down_reason(DownReason::Disconnected);
                link.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Starts a process running `server`; returns once its `init` has succeeded.
    pub async fn spawn<S: Server>(&self, server: S) -> Result<ServerRef<S>, StartError> {
        self.spawn_inner(None, server).await
    }

    /// Starts a process and registers it under `name` on this node (before `init` runs, so
    /// `init` may already be reached by name). The name is released when the process ends.
    pub async fn spawn_named<S: Server>(
        &self,
        name: &str,
        server: S,
    ) -> Result<ServerRef<S>, StartError> {
        self.spawn_inner(Some(name.into()), server).await
    }

    async fn spawn_inner<S: Server>(
        &self,
        name: Option<Arc<str>>,
        server: S,
    ) -> Result<ServerRef<S>, StartError> {
        let (pid, rx) = self.register_slot(name)?;
        let (started_tx, started_rx) = oneshot::channel();
        self.inner
            .process_tasks
            .spawn(process::run(server, self.clone(), pid, rx, started_tx));
        match started_rx.await {
            Ok(Ok(())) => Ok(ServerRef::from_pid(pid)),
            Ok(Err(reason)) => Err(StartError::InitFailed(reason)),
            Err(_) => Err(StartError::ShuttingDown),
        }
    }

    /// A new mailbox on this node: a pid that code which is not a server can receive with.
    pub fn mailbox<M: Message>(&self) -> Mailbox<M> {
        let (pid, rx) = self
            .register_slot(None)
            .unwrap_or_else(|_| self.closed_slot());
        Mailbox::new(self.clone(), pid, rx)
    }

    /// A new mailbox registered under `name` on this node, so peers can reach it by name.
    pub fn mailbox_named<M: Message>(&self, name: &str) -> Result<Mailbox<M>, StartError> {
        let (pid, rx) = self.register_slot(Some(name.into()))?;
        Ok(Mailbox::new(self.clone(), pid, rx))
    }

    /// Registers `name` for the local process `pid` across the cluster. Every connected node
    /// learns it before this returns (each answers within the failure detector's deadline or is
    /// treated as gone). If another process holds the name, or wins it while this registration
    /// is being announced (see the registry's clash rule: the earlier registration wins), the
    /// result is [`RegisterError::Taken`] with the holder.
    ///
    /// The name is released when `pid` ends, when it is unregistered, or — on the other nodes —
    /// when this node is lost. A holder that loses its name after a partition heals gets
    /// [`Info::NameLost`](crate::Info::NameLost).
    pub async fn register_global(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        registry::register(self, name, pid, self.inner.config.liveness.down_after).await
    }

    /// The holder of the global `name`, as this node knows it: a local read, no round trip.
    /// Never a process whose end (or whose node's loss) this node has learned of.
    pub fn whereis_global(&self, name: &str) -> Option<Pid> {
        self.inner.registry.whereis(name)
    }

    /// Releases the global `name` if a process of this node holds it; returns whether one did.
    /// The other nodes learn it without a round trip being awaited.
    pub fn unregister_global(&self, name: &str) -> bool {
        let Some(holder) = self.whereis_global(name).filter(|&pid| self.is_local(pid)) else {
            return false;
        };
        registry::drive(self, |machine| machine.unregister(name, holder))
    }

    /// Every global name this node knows, with its holder.
    pub fn global_names(&self) -> Vec<(String, Pid)> {
        self.inner.registry.names()
    }

    /// The pid registered as `name` on this node.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let processes = lock(&self.inner.processes);
        processes.names.get(name).map(|&local| self.pid_of(local))
    }

    /// Calls `server` and waits for its reply, at most `timeout`.
    pub async fn call<S: Server>(
        &self,
        server: &ServerRef<S>,
        request: S::Call,
        timeout: Duration,
    ) -> Result<S::Reply, CallError> {
        let reply = match self.resolve(&server.target) {
            Route::Local(local) => {
                let (tx, rx) = oneshot::channel();
                let signal = Signal::Call {
                    request: Payload::Local(Box::new(request)),
                    reply: ReplyRoute::Local(tx),
                };
                if !self.deliver_local(local, signal) {
                    return Err(CallError::NoProc);
                }
                rx
            }
            Route::Remote(node, dest) => {
                let link = self.link_to(node).ok_or(CallError::NodeDown)?;
                link.start_call(self.next_ref(), dest, &request)?
            }
            Route::Nowhere => return Err(CallError::NoProc),
        };
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Ok(payload))) => payload.decode().map_err(CallError::BadReply),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(CallError::NodeDown),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Sends `message` to `pid`'s `handle_info` encoded even when `pid` is local, so that a
    /// receiver whose info type differs from `M` but shares its encoding (an enum with the same
    /// leading variants) decodes it. Used between members of different kinds of one cluster.
    pub(crate) fn send_encoded<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        if self.is_local(pid) {
            let bytes = postcard::to_allocvec(&message)
                .map_err(|e| wire::WireError::Encode(e.to_string()))?;
            self.deliver_local(pid.local, Signal::Info(Payload::Remote(bytes.into())));
            return Ok(());
        }
        self.post(
            &Target::Pid(pid),
            message,
            |to| Header::Send { to },
            Signal::Info,
        )
    }

    /// Sends `message` to the process registered as `name` on the node `node`.
    pub(crate) fn post_named<M: Message>(
        &self,
        node: NodeId,
        name: &str,
        message: M,
    ) -> Result<(), SendError> {
        let target = Target::Named {
            node,
            name: name.into(),
        };
        self.post(&target, message, |to| Header::Send { to }, Signal::Info)
    }

    /// Sends a one-way request to `server`'s `handle_cast`.
    pub fn cast<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Cast,
    ) -> Result<(), SendError> {
        self.post(
            &server.target,
            message,
            |to| Header::Cast { to },
            Signal::Cast,
        )
    }

    /// Sends a message to `server`'s `handle_info`.
    pub fn send<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Info,
    ) -> Result<(), SendError> {
        self.post(
            &server.target,
            message,
            |to| Header::Send { to },
            Signal::Info,
        )
    }

    /// Sends a message to a [`Mailbox`] (or any process whose info type is `M`) by pid.
    pub fn send_to<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        self.post(
            &Target::Pid(pid),
            message,
            |to| Header::Send { to },
            Signal::Info,
        )
    }

    /// Asks the process `pid` on this node to stop with `reason` (its `terminate` runs). Returns
    /// whether there was such a process.
    pub fn stop_process(&self, pid: Pid, reason: ExitReason) -> bool {
        pid.node == self.inner.id
            && pid.incarnation == self.inner.incarnation
            && self.deliver_local(pid.local, Signal::Stop(reason))
    }

    /// Stops the node: every process ends with reason `shutdown` (so remote monitors see a clean
    /// end), every peer is told goodbye (so it reports a leave, not a crash), then connections
    /// close. Bounded: processes get 5 s, goodbyes 1 s.
    pub async fn shutdown(&self) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        tracing::info!(node = %self.name(), "node shutting down");
        self.inner.shutdown.cancel();
        let mailboxes: Vec<_> = {
            let mut processes = lock(&self.inner.processes);
            processes.closed = true;
            processes
                .slots
                .values()
                .map(|slot| slot.mailbox.clone())
                .collect()
        };
        for mailbox in mailboxes {
            let _ = mailbox.send(Signal::Stop(ExitReason::Shutdown));
        }
        self.inner.process_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.process_tasks.wait()).await;
        let links: Vec<Arc<PeerLink>> = lock(&self.inner.peers)
            .by_id
            .values()
            .filter_map(|entry| match entry {
                PeerEntry::Up(link) => Some(Arc::clone(link)),
                PeerEntry::Handshaking(pending) => {
                    pending.cancel.cancel();
                    None
                }
            })
            .collect();
        for link in &links {
            let _ = link.out.send(Outgoing::Goodbye(ExitReason::Shutdown));
        }
        self.inner.link_tasks.close();
        if tokio::time::timeout(Duration::from_secs(1), self.inner.link_tasks.wait())
            .await
            .is_err()
        {
            for link in &links {
                self.take_down(link, DownReason::LocalShutdown);
            }
        }
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }
}

/// Where a message for a target goes.
enum Route<'a> {
    Local(u64),
    Remote(NodeId, Dest<'a>),
    Nowhere,
}

// Process table.
impl Node {
    fn pid_of(&self, local: u64) -> Pid {
        Pid {
            node: self.inner.id,
            incarnation: self.inner.incarnation,
            local,
        }
    }

    pub(crate) fn next_ref(&self) -> u64 {
        self.inner.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    fn register_slot(
        &self,
        name: Option<Arc<str>>,
    ) -> Result<(Pid, mpsc::UnboundedReceiver<Signal>), StartError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut processes = lock(&self.inner.processes);
        if processes.closed {
            return Err(StartError::ShuttingDown);
        }
        let local = self.inner.next_local.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = &name {
            if processes.names.contains_key(name) {
                return Err(StartError::NameTaken(name.to_string()));
            }
            processes.names.insert(Arc::clone(name), local);
        }
        processes.slots.insert(
            local,
            Slot {
                mailbox: tx,
                watchers: Vec::new(),
                name,
            },
        );
        Ok((self.pid_of(local), rx))
    }

    /// A mailbox on a node that is shutting down: it receives nothing.
    fn closed_slot(&self) -> (Pid, mpsc::UnboundedReceiver<Signal>) {
        let (_, rx) = mpsc::unbounded_channel();
        (
            self.pid_of(self.inner.next_local.fetch_add(1, Ordering::Relaxed)),
            rx,
        )
    }

    fn is_local(&self, pid: Pid) -> bool {
        pid.node == self.inner.id && pid.incarnation == self.inner.incarnation
    }

    fn resolve<'a>(&self, target: &'a Target) -> Route<'a> {
        match target {
            Target::Pid(pid) if self.is_local(*pid) => Route::Local(pid.local),
            Target::Pid(pid) if pid.node == self.inner.id => Route::Nowhere,
            Target::Pid(pid) => Route::Remote(pid.node, Dest::Pid(*pid)),
            Target::Named { node, name } if *node == self.inner.id => {
                match lock(&self.inner.processes).names.get(&**name) {
                    Some(&local) => Route::Local(local),
                    None => Route::Nowhere,
                }
            }
            Target::Named { node, name } => Route::Remote(*node, Dest::Name(name)),
        }
    }

    /// Puts a signal from a peer in the mailbox of the process it names (one table lock);
    /// gives the signal back if there is no such process.
    pub(crate) fn deliver_to_dest(&self, dest: Dest<'_>, signal: Signal) -> Result<(), Signal> {
        let processes = lock(&self.inner.processes);
        let local = match dest {
            Dest::Pid(pid) if self.is_local(pid) => Some(pid.local),
            Dest::Pid(_) => None,
            Dest::Name(name) => processes.names.get(name).copied(),
        };
        match local.and_then(|local| processes.slots.get(&local)) {
            Some(slot) => slot.mailbox.send(signal).map_err(|returned| returned.0),
            None => Err(signal),
        }
    }

    /// Puts a signal in a local mailbox; false if there is no such process.
    pub(crate) fn deliver_local(&self, local: u64, signal: Signal) -> bool {
        let processes = lock(&self.inner.processes);
        processes
            .slots
            .get(&local)
            .is_some_and(|slot| slot.mailbox.send(signal).is_ok())
    }

    pub(crate) fn deliver_to_pid(&self, pid: Pid, signal: Signal) {
        if self.is_local(pid) {
            self.deliver_local(pid.local, signal);
        }
    }

    fn post<M: Message>(
        &self,
        target: &Target,
        message: M,
        header: impl FnOnce(Dest<'_>) -> Header<'_>,
        signal: impl FnOnce(Payload) -> Signal,
    ) -> Result<(), SendError> {
        match self.resolve(target) {
            Route::Local(local) => {
                self.deliver_local(local, signal(Payload::Local(Box::new(message))));
                Ok(())
            }
            Route::Remote(node, dest) => {
                let link = self.link_to(node).ok_or(SendError::NodeDown)?;
                let frame = wire::encode(&header(dest), Some(&message), link.max_frame)?;
                link.send_frame(frame);
                Ok(())
            }
            Route::Nowhere => Ok(()),
        }
    }

    /// Adds a watcher to a local process; false if there is no such process.
    fn add_watcher(&self, local: u64, watcher: Watcher) -> bool {
        let mut processes = lock(&self.inner.processes);
        match processes.slots.get_mut(&local) {
            Some(slot) => {
                slot.watchers.push(watcher);
                true
            }
            None => false,
        }
    }

    fn remove_watcher(&self, local: u64, watcher: Watcher) {
        if let Some(slot) = lock(&self.inner.processes).slots.get_mut(&local) {
            slot.watchers.retain(|w| *w != watcher);
        }
    }

    pub(crate) fn monitor_from(&self, watcher: Pid, target: Pid) -> MonitorRef {
        let reference = self.next_ref();
        let down = |reason| Signal::Down {
            reference: MonitorRef(reference),
            pid: target,
            reason,
        };
        if target.node == self.inner.id {
            let alive = self.is_local(target)
                && self.add_watcher(target.local, Watcher::Monitor { reference, watcher });
            if !alive {
                self.deliver_to_pid(watcher, down(ExitReason::NoProc));
            }
        } else {
            let watched = self.link_to(target.node).is_some_and(|link| {
                link.track(|state| state.monitors.insert(reference, (watcher, target)))
                    .is_some()
                    && link.send_header(&Header::Monitor {
                        reference,
                        watcher,
                        target,
                    })
            });
            if !watched {
                self.deliver_to_pid(watcher, down(ExitReason::NoConnection));
            }
        }
        MonitorRef(reference)
    }

    pub(crate) fn demonitor_from(&self, reference: MonitorRef, target: Pid) {
        if target.node == self.inner.id {
            if let Some(slot) = lock(&self.inner.processes).slots.get_mut(&target.local) {
                slot.watchers.retain(
                    |w| !matches!(w, Watcher::Monitor { reference: r, .. } if *r == reference.0),
                );
            }
        } else if let Some(link) = self.link_to(target.node) {
            link.track(|state| state.monitors.remove(&reference.0));
            link.send_header(&Header::Demonitor {
                reference: reference.0,
                target,
            });
        }
    }

    pub(crate) fn link(&self, local: Pid, other: Pid) {
        if !self.add_watcher(local.local, Watcher::Link { other }) {
            return;
        }
        if other.node == self.inner.id {
            let alive = self.is_local(other)
                && self.add_watcher(other.local, Watcher::Link { other: local });
            if !alive {
                self.remove_watcher(local.local, Watcher::Link { other });
                self.deliver_local(
                    local.local,
                    Signal::Exit {
                        from: other,
                        reason: ExitReason::NoProc,
                    },
                );
            }
        } else {
            let linked = self.link_to(other.node).is_some_and(|link| {
                link.track(|state| state.links.insert((local, other)))
                    .is_some()
                    && link.send_header(&Header::Link {
                        from: local,
                        to: other,
                    })
            });
            if !linked {
                self.remove_watcher(local.local, Watcher::Link { other });
                self.deliver_local(
                    local.local,
                    Signal::Exit {
                        from: other,
                        reason: ExitReason::NoConnection,
                    },
                );
            }
        }
    }

    pub(crate) fn unlink(&self, local: Pid, other: Pid) {
        self.remove_watcher(local.local, Watcher::Link { other });
        if other.node == self.inner.id {
            self.remove_watcher(other.local, Watcher::Link { other: local });
        } else if let Some(link) = self.link_to(other.node) {
            link.track(|state| state.links.remove(&(local, other)));
            link.send_header(&Header::Unlink {
                from: local,
                to: other,
            });
        }
    }

    /// A process ended: releases its slot and name, and tells its monitors and links.
    pub(crate) fn process_exited(&self, pid: Pid, reason: ExitReason) {
        let Some(slot) = ({
            let mut processes = lock(&self.inner.processes);
            let slot = processes.slots.remove(&pid.local);
            if let Some(name) = slot.as_ref().and_then(|s| s.name.as_ref()) {
                processes.names.remove(name);
            }
            slot
        }) else {
            return;
        };
        for watcher in slot.watchers {
            match watcher {
                Watcher::Monitor { reference, watcher } if self.is_local(watcher) => {
                    self.deliver_local(
                        watcher.local,
                        Signal::Down {
                            reference: MonitorRef(reference),
                            pid,
                            reason: reason.clone(),
                        },
                    );
                }
                Watcher::Monitor { reference, watcher } => {
                    if let Some(link) = self.link_to(watcher.node) {
                        link.send_header(&Header::Down {
                            reference,
                            target: pid,
                            reason: reason.clone(),
                        });
                    }
                }
                Watcher::Link { other } if self.is_local(other) => {
                    self.remove_watcher(other.local, Watcher::Link { other: pid });
                    self.deliver_local(
                        other.local,
                        Signal::Exit {
                            from: pid,
                            reason: reason.clone(),
                        },
                    );
                }
                Watcher::Link { other } => {
                    if let Some(link) = self.link_to(other.node) {
                        link.track(|state| state.links.remove(&(pid, other)));
                        link.send_header(&Header::Exit {
                            from: pid,
                            to: other,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }
}

// Frames from peers about processes.
impl Node {
    pub(crate) fn handle_monitor(
        &self,
        link: &PeerLink,
        reference: u64,
        watcher: Pid,
        target: Pid,
    ) {
        let alive = self.is_local(target)
            && self.add_watcher(target.local, Watcher::Monitor { reference, watcher });
        if !alive {
            link.send_header(&Header::Down {
                reference,
                target,
                reason: ExitReason::NoProc,
            });
        }
    }

    pub(crate) fn handle_demonitor(&self, reference: u64, target: Pid) {
        if self.is_local(target)
            && let Some(slot) = lock(&self.inner.processes).slots.get_mut(&target.local)
        {
            slot.watchers
                .retain(|w| !matches!(w, Watcher::Monitor { reference: r, .. } if *r == reference));
        }
    }

    pub(crate) fn handle_down(
        &self,
        link: &PeerLink,
        reference: u64,
        target: Pid,
        reason: ExitReason,
    ) {
        if let Some(Some((watcher, _))) = link.track(|state| state.monitors.remove(&reference)) {
            self.deliver_to_pid(
                watcher,
                Signal::Down {
                    reference: MonitorRef(reference),
                    pid: target,
                    reason,
                },
            );
        }
    }

    pub(crate) fn handle_link(&self, link: &PeerLink, from: Pid, to: Pid) {
        if !link.owns(from) {
            tracing::warn!(peer = %link.name, %from, "peer asked to link on behalf of another node's pid; ignored");
            return;
        }
        let alive = self.is_local(to)
            && link.track(|state| state.links.insert((to, from))).is_some()
            && self.add_watcher(to.local, Watcher::Link { other: from });
        if !alive {
            link.track(|state| state.links.remove(&(to, from)));
            link.send_header(&Header::Exit {
                from: to,
                to: from,
                reason: ExitReason::NoProc,
            });
        }
    }

    pub(crate) fn handle_unlink(&self, link: &PeerLink, from: Pid, to: Pid) {
        link.track(|state| state.links.remove(&(to, from)));
        if self.is_local(to) {
            self.remove_watcher(to.local, Watcher::Link { other: from });
        }
    }

    pub(crate) fn handle_exit(&self, link: &PeerLink, from: Pid, to: Pid, reason: ExitReason) {
        if link.track(|state| state.links.remove(&(to, from))) == Some(true) && self.is_local(to) {
            self.remove_watcher(to.local, Watcher::Link { other: from });
            self.deliver_local(to.local, Signal::Exit { from, reason });
        }
    }
}

// Connection table.
impl Node {
    pub(crate) fn link_to(&self, node: NodeId) -> Option<Arc<PeerLink>> {
        match lock(&self.inner.peers).by_id.get(&node) {
            Some(PeerEntry::Up(link)) => Some(Arc::clone(link)),
            _ => None,
        }
    }

    pub(crate) fn handshake_config(&self) -> HandshakeConfig {
        let config = &self.inner.config;
        HandshakeConfig {
            cluster: config.cluster.clone(),
            secret: config.cookie.clone(),
            local: Identity {
                name: config.name.clone(),
                incarnation: self.inner.incarnation,
                listen: self.inner.listen_addr.clone(),
            },
            versions: SUPPORTED_VERSIONS,
        }
    }

    pub(crate) fn new_conn_id(&self) -> u64 {
        let mut peers = lock(&self.inner.peers);
        peers.next_conn += 1;
        peers.next_conn
    }

    /// Decides whether handshake `conn` with `peer` may go on at `step` (see
    /// [`arbitration`]); if so, records its progress, cancelling or taking down what it replaces.
    pub(crate) fn arbitrate(
        &self,
        conn: u64,
        peer: &Identity,
        step: Step,
        cancel: &CancellationToken,
    ) -> Result<(), Refusal> {
        let id = peer.name.id();
        // The initiator's only decision point is the Challenge; the acceptor's are the others.
        let dialed_by_us = step == Step::ChallengeReceived;
        let mut replaced = None;
        {
            let mut peers = lock(&self.inner.peers);
            let entry = peers.by_id.get(&id);
            let (other, other_name) = match entry {
                Some(PeerEntry::Handshaking(p)) if p.conn == conn => (None, &p.name),
                Some(PeerEntry::Handshaking(p)) => (
                    Some(Other {
                        progress: p.progress,
                        dialed_by_us: p.dialed_by_us,
                        incarnation: p.incarnation,
                    }),
                    &p.name,
                ),
                Some(PeerEntry::Up(link)) => (
                    Some(Other {
                        progress: Progress::Established,
                        dialed_by_us: false,
                        incarnation: link.incarnation,
                    }),
                    &link.name,
                ),
                None => (None, &peer.name),
            };
            if *other_name != peer.name {
                return Err(Refusal::IdCollision);
            }
            match arbitration::arbitrate(
                &self.inner.config.name,
                &peer.name,
                peer.incarnation,
                step,
                other,
            ) {
                Verdict::Refuse(refusal) => return Err(refusal),
                Verdict::Proceed => {}
                Verdict::ProceedReplacing => replaced = peers.by_id.remove(&id),
            }
            let progress = match step {
                Step::HelloReceived => Progress::Challenged,
                Step::ChallengeReceived => Progress::Proved,
                Step::ResponseVerified => Progress::Established,
            };
            peers.by_id.insert(
                id,
                PeerEntry::Handshaking(Pending {
                    conn,
                    name: peer.name.clone(),
                    progress,
                    dialed_by_us,
                    incarnation: peer.incarnation,
                    cancel: cancel.clone(),
                }),
            );
        }
        match replaced {
            Some(PeerEntry::Handshaking(pending)) => pending.cancel.cancel(),
            Some(PeerEntry::Up(link)) => self.take_down(&link, DownReason::Restarted),
            None => {}
        }
        Ok(())
    }

    /// Forgets handshake `conn` if it is still the one recorded for `peer` (it failed).
    pub(crate) fn abandon(&self, conn: u64, peer: NodeId) {
        let mut peers = lock(&self.inner.peers);
        if matches!(peers.by_id.get(&peer), Some(PeerEntry::Handshaking(p)) if p.conn == conn) {
            peers.by_id.remove(&peer);
        }
    }

    /// Turns handshake `conn` into an established link, if it is still the one recorded.
    pub(crate) fn establish(
        &self,
        conn: u64,
        peer: &Identity,
        out: mpsc::UnboundedSender<Outgoing>,
        cancel: CancellationToken,
    ) -> Option<Arc<PeerLink>> {
        let id = peer.name.id();
        let mut peers = lock(&self.inner.peers);
        if !matches!(peers.by_id.get(&id), Some(PeerEntry::Handshaking(p)) if p.conn == conn) {
            return None;
        }
        let link = Arc::new(PeerLink {
            name: peer.name.clone(),
            id,
            incarnation: peer.incarnation,
            addr: peer.listen.clone(),
            out,
            state: Mutex::default(),
            max_frame: self.inner.config.max_frame,
            cancel,
            down_reason: Mutex::new(None),
        });
        peers.by_id.insert(id, PeerEntry::Up(Arc::clone(&link)));
        drop(peers);
        metrics::counter!("gen_cluster_node_up_total").increment(1);
        tracing::info!(node = %self.name(), peer = %link.name, addr = %link.addr, "node up");
        let _ = self.inner.events.send(NodeEvent::NodeUp {
            peer: link.name.clone(),
            incarnation: link.incarnation,
            addr: link.addr.clone(),
        });
        Some(link)
    }

    /// Takes a link down (once): fails its calls, fires monitors and links of its processes with
    /// `noconnection`, forgets its processes' watches here, stops its tasks, tells subscribers.
    pub(crate) fn take_down(&self, link: &Arc<PeerLink>, reason: DownReason) {
        let reason = {
            let mut slot = lock(&link.down_reason);
            slot.get_or_insert(reason).clone()
        };
        let state = {
            let mut state = lock(&link.state);
            if state.closed {
                return;
            }
            state.closed = true;
            std::mem::take(&mut *state)
        };
        link.cancel.cancel();
        {
            let mut peers = lock(&self.inner.peers);
            if matches!(peers.by_id.get(&link.id), Some(PeerEntry::Up(l)) if Arc::ptr_eq(l, link)) {
                peers.by_id.remove(&link.id);
            }
        }
        for (_, call) in state.calls {
            let _ = call.send(Err(CallError::NodeDown));
        }
        for (reference, (watcher, target)) in state.monitors {
            self.deliver_to_pid(
                watcher,
                Signal::Down {
                    reference: MonitorRef(reference),
                    pid: target,
                    reason: ExitReason::NoConnection,
                },
            );
        }
        {
            let on_peer = |pid: Pid| pid.node == link.id && pid.incarnation == link.incarnation;
            let mut processes = lock(&self.inner.processes);
            for slot in processes.slots.values_mut() {
                slot.watchers.retain(|w| !on_peer(w.pid()));
            }
        }
        for (local, remote) in state.links {
            self.deliver_to_pid(
                local,
                Signal::Exit {
                    from: remote,
                    reason: ExitReason::NoConnection,
                },
            );
        }
        metrics::counter!("gen_cluster_node_down_total", "reason" => reason.kind()).increment(1);
        match reason {
            DownReason::Left(_) | DownReason::LocalShutdown | DownReason::Disconnected => {
                tracing::info!(node = %self.name(), peer = %link.name, %reason, "node down")
            }
            _ => tracing::warn!(node = %self.name(), peer = %link.name, %reason, "node down"),
        }
        let _ = self.inner.events.send(NodeEvent::NodeDown {
            peer: link.name.clone(),
            incarnation: link.incarnation,
            reason,
        });
    }
}

impl PeerLink {
    /// Queues an encoded frame; false if the link is closed.
    pub(crate) fn send_frame(&self, frame: Vec<u8>) -> bool {
        self.out.send(Outgoing::Frame(frame)).is_ok()
    }

    pub(crate) fn send_header(&self, header: &Header<'_>) -> bool {
        match wire::encode_header(header, self.max_frame) {
            Ok(frame) => self.send_frame(frame),
            Err(error) => {
                tracing::error!(peer = %self.name, %error, "cannot encode a control frame");
                false
            }
        }
    }

    pub(crate) fn send_reply<R: Serialize>(&self, reference: u64, value: &R) {
        match wire::encode(&Header::Reply { reference }, Some(value), self.max_frame) {
            Ok(frame) => {
                self.send_frame(frame);
            }
            Err(error) => {
                tracing::error!(peer = %self.name, %error, "cannot send a reply");
                self.send_header(&Header::ReplyRefused {
                    reference,
                    refusal: CallRefusal::NoReply,
                });
            }
        }
    }

    /// Whether `pid` lives on this peer (in the life this link connects to).
    fn owns(&self, pid: Pid) -> bool {
        pid.node == self.id && pid.incarnation == self.incarnation
    }

    /// Runs `f` on the link's bookkeeping unless the link is closed (then returns `None`).
    fn track<T>(&self, f: impl FnOnce(&mut LinkState) -> T) -> Option<T> {
        let mut state = lock(&self.state);
        (!state.closed).then(|| f(&mut state))
    }

    fn start_call<M: Serialize>(
        &self,
        reference: u64,
        to: Dest<'_>,
        request: &M,
    ) -> Result<oneshot::Receiver<Result<Payload, CallError>>, CallError> {
        let frame = wire::encode(
            &Header::Call { to, reference },
            Some(request),
            self.max_frame,
        )?;
        let (tx, rx) = oneshot::channel();
        self.track(|state| state.calls.insert(reference, tx))
            .ok_or(CallError::NodeDown)?;
        if !self.send_frame(frame) {
            self.track(|state| state.calls.remove(&reference));
            return Err(CallError::NodeDown);
        }
        Ok(rx)
    }

    pub(crate) fn finish_call(&self, reference: u64, outcome: Result<Payload, CallError>) {
        if let Some(Some(call)) = self.track(|state| state.calls.remove(&reference)) {
            let _ = call.send(outcome);
        }
    }

    /// Records why the link is going down, if nothing recorded it first.
    pub(crate) fn note_down_reason(&self, reason: DownReason) {
        lock(&self.down_reason).get_or_insert(reason);
    }
}

/// Maps a peer's refusal of a call to the caller's error.
pub(crate) fn call_error_of(refusal: CallRefusal) -> CallError {
    match refusal {
        CallRefusal::NoProc => CallError::NoProc,
        CallRefusal::BadRequest(why) => CallError::BadRequest(why),
        _ => CallError::NoReply,
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical section
/// here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

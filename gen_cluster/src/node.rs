//! The node façade: the one `impl Node`, the API applications and the services use. Each method
//! forwards to the part that owns the state (see `kernel.rs`); nothing here keeps state of its
//! own.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gen_cluster_proto::handshake::Identity;
use gen_cluster_proto::{ExitReason, Incarnation, NodeId, NodeName, Pid};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::clock::{self, Epoch};
use crate::config::NodeConfig;
use crate::dist::peers::PeerTable;
use crate::dist::{self, Dist, PeerInfo};
use crate::error::{CallError, ConnectError, SendError, StartError, StartNodeError};
use crate::events::{DownReason, EventBus, NodeEvent};
use crate::kernel::{Kernel, Node};
use crate::names::{self, GlobalNames};
use crate::process::signal::Signal;
use crate::process::table::ProcessTable;
use crate::process::watch::Watchers;
use crate::process::{self, Mailbox, Message, Server, ServerRef, Target};
use crate::router::{Delivery, Router};
use crate::tasks::Tasks;
use crate::telemetry;
use crate::throttle::Throttle;
use crate::transport::{Tcp, Transport};
use crate::view::{self, ClusterView};

/// How long shutdown waits for processes to end, then for links to say goodbye.
const PROCESS_DRAIN: Duration = Duration::from_secs(5);
const LINK_DRAIN: Duration = Duration::from_secs(1);

impl Node {
    /// Starts a node on TCP: binds `config.listen` and accepts peers. The node runs until
    /// [`shutdown`](Self::shutdown) is awaited.
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
        let (listener, bound) =
            transport
                .bind(&config.listen)
                .await
                .map_err(|source| StartNodeError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let listen_addr = advertised(&config, &bound)?;
        let config = Arc::new(config);
        let (id, incarnation) = (config.name.id(), clock::incarnation());
        let tasks = Tasks::default();
        let events = EventBus::new(config.name.clone());
        let processes = Arc::new(ProcessTable::new(id, incarnation));
        let peers = Arc::new(PeerTable::new(config.name.clone()));
        let watchers = Arc::new(Watchers::new(Arc::clone(&processes), Arc::clone(&peers)));
        let router = Router::new(id, Arc::clone(&processes), Arc::clone(&peers));
        let dist = Arc::new(Dist {
            local: Identity {
                name: config.name.clone(),
                incarnation,
                listen: listen_addr.clone(),
                hidden: config.hidden,
            },
            config: Arc::clone(&config),
            epoch: Epoch::start(),
            peers: Arc::clone(&peers),
            processes: Arc::clone(&processes),
            watchers: Arc::clone(&watchers),
            events: events.clone(),
            tasks: tasks.clone(),
            dialer: Box::new(Arc::clone(&transport)),
            throttle: Throttle::default(),
        });
        let view::Started {
            published: view,
            left: view_left,
            undiscovered,
        } = view::start(view::Parts {
            router: router.clone(),
            processes: Arc::clone(&processes),
            peers: Arc::clone(&peers),
            events: events.clone(),
            tasks: tasks.clone(),
            dist: Arc::clone(&dist),
        })
        .map_err(StartNodeError::Services)?;
        let globals = names::start(names::Parts {
            node: config.name.clone(),
            incarnation,
            router: router.clone(),
            processes: Arc::clone(&processes),
            watchers: Arc::clone(&watchers),
            peers: Arc::clone(&peers),
            events: events.clone(),
            view: view.clone(),
            tasks: tasks.clone(),
            answer_within: config.liveness.down_after,
        })
        .map_err(StartNodeError::Services)?;
        telemetry::start(
            &tasks,
            telemetry::Sampled {
                peers: Arc::clone(&peers),
                processes: Arc::clone(&processes),
                globals: globals.clone(),
                view: view.clone(),
                send_queue_bound: config.send_queue_bytes,
            },
        );
        dist::listener::start(&dist, transport, listener);
        tracing::info!(node = %config.name, addr = %listen_addr, %incarnation, "node started");
        Ok(Node(Arc::new(Kernel {
            id,
            incarnation,
            listen_addr,
            config,
            processes,
            watchers,
            peers,
            router,
            globals,
            view,
            view_left,
            undiscovered,
            events,
            tasks,
            dist,
        })))
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.0.config.name
    }

    /// This node's id (what its pids carry).
    pub fn id(&self) -> NodeId {
        self.0.id
    }

    /// This life of the node.
    pub fn incarnation(&self) -> Incarnation {
        self.0.incarnation
    }

    /// The address other nodes reach this node at: [`NodeConfig::advertise`], by default the
    /// address the listener is bound to (see there for a listener bound to any address).
    pub fn listen_addr(&self) -> &str {
        &self.0.listen_addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.0.config
    }

    /// Events from now on: peers up and down.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.0.events.subscribe()
    }

    /// The connected peers, in name order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.0.peers.list()
    }

    /// The cluster as this node sees it now: every node it knows of, learned transitively, with
    /// its state, and the group of nodes the services act with.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.0.view.borrow())
    }

    /// The view, to wait for its changes (`changed().await`).
    pub fn view_changes(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.0.view.clone()
    }

    /// Tells the node that no node lives at `addr` any more, as a discovery source no longer
    /// finds one there: a cluster member known at that address is not dialed again when its
    /// link drops, until it is connected again (found again, or dialing in). [`Discovery`]
    /// says so of every address its source drops.
    ///
    /// [`Discovery`]: crate::Discovery
    pub fn forget_address(&self, addr: &str) {
        self.0.undiscovered.insert(addr);
    }

    /// Whether a peer of this name is connected.
    pub fn is_connected(&self, peer: &NodeName) -> bool {
        self.0.peers.is_connected(peer)
    }

    /// Whether the node with this id (the one a [`Pid`] carries) is connected.
    pub fn is_connected_id(&self, node: NodeId) -> bool {
        self.0.peers.link_to(node).is_some()
    }

    /// Connects to the node listening on `addr` and returns its name once the handshake is done
    /// (dial and handshake are bounded by the configured timeouts). Connecting to a node that is
    /// already connected returns its name.
    pub async fn connect(&self, addr: &str) -> Result<NodeName, ConnectError> {
        dist::handshake::dial(&self.0.dist, addr).await
    }

    /// Drops the connection to `peer` at once, without a goodbye (Erlang's `disconnect_node`):
    /// this node reports it down as [`DownReason::Disconnected`], the peer as a lost connection.
    /// Returns whether it was connected.
    pub fn disconnect(&self, peer: &NodeName) -> bool {
        match self.0.peers.link_to(peer.id()) {
            Some(link) if &link.name == peer => {
                link.note_down_reason(DownReason::Disconnected);
                link.cancel();
                true
            }
            _ => false,
        }
    }

    /// Starts a process running `server`; returns once its `init` has succeeded.
    pub async fn spawn<S: Server>(&self, server: S) -> Result<ServerRef<S>, StartError> {
        process::spawn(self, None, server).await
    }

    /// Starts a process and registers it under `name` on this node (before `init` runs, so
    /// `init` may already be reached by name). The name is released when the process ends.
    pub async fn spawn_named<S: Server>(
        &self,
        name: &str,
        server: S,
    ) -> Result<ServerRef<S>, StartError> {
        process::spawn(self, Some(name.into()), server).await
    }

    /// A new mailbox on this node: a pid that code which is not a server can receive with. During
    /// shutdown it receives nothing.
    pub fn mailbox<M: Message>(&self) -> Mailbox<M> {
        process::spawn_mailbox(self, None).unwrap_or_else(|_| {
            let (pid, inbox) = self.0.processes.closed_slot();
            Mailbox::new(self.clone(), pid, inbox)
        })
    }

    /// A new mailbox registered under `name` on this node, so peers can reach it by name.
    pub fn mailbox_named<M: Message>(&self, name: &str) -> Result<Mailbox<M>, StartError> {
        process::spawn_mailbox(self, Some(name.into()))
    }

    /// The pid registered as `name` on this node.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.0.processes.whereis(name)
    }

    /// The cluster's global names, as this node knows them: register, release, look up.
    pub fn globals(&self) -> &GlobalNames {
        &self.0.globals
    }

    /// Calls `server` and waits for its reply, at most `timeout`.
    pub async fn call<S: Server>(
        &self,
        server: &ServerRef<S>,
        request: S::Call,
        timeout: Duration,
    ) -> Result<S::Reply, CallError> {
        self.0.router.call(&server.target, request, timeout).await
    }

    /// Sends a one-way request to `server`'s `handle_cast`, once there is room for it (in its
    /// bounded mailbox, or in the queue to its node: see
    /// [`NodeConfig::send_queue_bytes`](crate::NodeConfig::send_queue_bytes)). Sent means
    /// queued, not handled; a message to a process that does not exist is dropped, as in Erlang.
    pub async fn cast<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Cast,
    ) -> Result<(), SendError> {
        let router = &self.0.router;
        router.post(&server.target, message, Delivery::Cast).await
    }

    /// [`cast`](Self::cast) if there is room now; else [`SendError::Busy`], and nothing is sent.
    pub fn try_cast<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Cast,
    ) -> Result<(), SendError> {
        let router = &self.0.router;
        router.try_post(&server.target, message, Delivery::Cast)
    }

    /// Sends a message to `server`'s `handle_info`, once there is room for it (see
    /// [`cast`](Self::cast)).
    pub async fn send<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Info,
    ) -> Result<(), SendError> {
        let router = &self.0.router;
        router.post(&server.target, message, Delivery::Info).await
    }

    /// [`send`](Self::send) if there is room now; else [`SendError::Busy`], and nothing is sent.
    pub fn try_send<S: Server>(
        &self,
        server: &ServerRef<S>,
        message: S::Info,
    ) -> Result<(), SendError> {
        let router = &self.0.router;
        router.try_post(&server.target, message, Delivery::Info)
    }

    /// Sends a message to a [`Mailbox`] (or any process whose info type is `M`) by pid, once
    /// there is room for it.
    pub async fn send_to<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        let router = &self.0.router;
        router
            .post(&Target::Pid(pid), message, Delivery::Info)
            .await
    }

    /// [`send_to`](Self::send_to) if there is room now; else [`SendError::Busy`].
    pub fn try_send_to<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        let router = &self.0.router;
        router.try_post(&Target::Pid(pid), message, Delivery::Info)
    }

    /// Sends `message` to `pid`'s `handle_info` encoded even when `pid` is local, so that a
    /// receiver whose info type differs from `M` but shares its encoding (an enum with the same
    /// leading variants) decodes it. Members of different kinds of one cluster talk this way.
    pub async fn send_encoded<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        self.0.router.post_encoded(pid, message).await
    }

    /// Asks the process `pid` on this node to stop with `reason` (its `terminate` runs). Returns
    /// whether there was such a process.
    pub fn stop_process(&self, pid: Pid, reason: ExitReason) -> bool {
        self.0.processes.deliver(pid, Signal::Stop(reason))
    }

    /// Runs `task` on this node's task tracker, inside `span`. Shutdown waits (boundedly) for it,
    /// so it must end once [`shutting_down`](Self::shutting_down) resolves. For the background
    /// work of services built on the node (discovery loops, election timers).
    pub fn spawn_task<F, T>(&self, span: tracing::Span, task: F) -> JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.0.tasks.spawn(span, task)
    }

    /// Resolves once [`shutdown`](Self::shutdown) has begun.
    pub async fn shutting_down(&self) {
        self.0.tasks.stopping().await
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.tasks.is_stopping()
    }

    /// Stops the node: every process ends with reason `shutdown` (so remote monitors see a clean
    /// end), every peer is told goodbye (so it reports a leave, not a crash), then connections
    /// close and every task of the node ends. Bounded: processes get 5 s, goodbyes 1 s. Required:
    /// a node whose handles are all dropped without it keeps running.
    pub async fn shutdown(&self) {
        let kernel = &self.0;
        if !kernel.tasks.begin_shutdown() {
            return;
        }
        tracing::info!(node = %self.name(), "node shutting down");
        for mailbox in kernel.processes.close() {
            let _ = mailbox.send(Signal::Stop(ExitReason::Shutdown));
        }
        kernel.tasks.drain_processes(PROCESS_DRAIN).await;
        // The peers hear that this node leaves before its links close.
        let _ = tokio::time::timeout(LINK_DRAIN, kernel.view_left.cancelled()).await;
        let links = kernel.peers.close();
        for link in &links {
            link.queue.goodbye(ExitReason::Shutdown);
        }
        if !kernel.tasks.drain_services(LINK_DRAIN).await {
            for link in &links {
                kernel.dist.take_down(link, DownReason::LocalShutdown);
            }
            kernel.tasks.drain_services(LINK_DRAIN).await;
        }
    }

    /// How many of the node's tasks are still running (none once `shutdown` has returned).
    pub fn running_tasks(&self) -> usize {
        self.0.tasks.running()
    }
}

/// The address other nodes are told to dial: `config.advertise`, else `bound`, with an
/// unspecified IP (`0.0.0.0`, `::`) replaced by this host's address on its default route.
fn advertised(config: &NodeConfig, bound: &str) -> Result<String, StartNodeError> {
    if let Some(addr) = &config.advertise {
        return Ok(addr.clone());
    }
    match bound.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => outward_ip(addr.is_ipv6())
            .map(|ip| SocketAddr::new(ip, addr.port()).to_string())
            .map_err(|source| StartNodeError::NoAdvertisedAddress {
                bound: bound.to_string(),
                source,
            }),
        _ => Ok(bound.to_string()),
    }
}

/// This host's address toward the wider network: the source address of a route to a
/// documentation address (RFC 5737, RFC 3849; for `::`, IPv6 first, then IPv4). Connecting a UDP
/// socket picks the route and sends nothing. Found once, at start.
fn outward_ip(ipv6: bool) -> std::io::Result<IpAddr> {
    let route = |any: &str, probe: &str| -> std::io::Result<IpAddr> {
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(probe)?;
        Ok(socket.local_addr()?.ip())
    };
    let v4 = || route("0.0.0.0:0", "192.0.2.1:9");
    if ipv6 {
        // A dual-stack listener is reached over IPv4 too.
        route("[::]:0", "[2001:db8::1]:9").or_else(|_| v4())
    } else {
        v4()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn config(advertise: Option<&str>) -> NodeConfig {
        let mut config = NodeConfig::new(NodeName::new("a").unwrap(), "cookie");
        config.advertise = advertise.map(str::to_string);
        config
    }

    #[test]
    fn a_node_bound_to_one_address_advertises_it_unless_told_otherwise() {
        assert_eq!(
            advertised(&config(None), "10.0.0.5:4370").unwrap(),
            "10.0.0.5:4370"
        );
        assert_eq!(
            advertised(&config(Some("node-a.example:4370")), "0.0.0.0:4370").unwrap(),
            "node-a.example:4370"
        );
        for bad in [
            "node-a.example",
            ":4370",
            "a:port",
            &format!("{}:1", "a".repeat(255)),
        ] {
            assert!(config(Some(bad)).validate().is_err(), "{bad}");
        }
        assert!(config(Some("[::1]:4370")).validate().is_ok());
    }

    #[test]
    fn a_node_bound_to_any_address_advertises_its_address_on_the_default_route() {
        // Where this host has a default route (else the start error says what to set).
        match advertised(&config(None), "0.0.0.0:4370") {
            Ok(addr) => {
                let addr: SocketAddr = addr.parse().unwrap();
                assert!(!addr.ip().is_unspecified(), "{addr}");
                assert_eq!(addr.port(), 4370);
            }
            Err(error) => assert!(error.to_string().contains("--advertise"), "{error}"),
        }
    }
}

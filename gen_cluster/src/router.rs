//! The router: where a message for a [`Target`] goes — into a local mailbox (moved, never
//! encoded), onto a peer's link queue (encoded once), or nowhere (a process of this node that no
//! longer exists: dropped, as in Erlang). Calls wait here for their reply, bounded by the caller's
//! timeout.
//!
//! Costs: a local message is one table lookup and one mailbox push; a remote one is one table
//! lookup, one encode and one queue push; a remote call adds one entry in its link's call table.

use std::sync::Arc;
use std::time::Duration;

use gen_cluster_proto::wire::{self, Dest, Header};
use gen_cluster_proto::{NodeId, Pid};
use tokio::sync::oneshot;

use crate::dist::peers::PeerTable;
use crate::error::{CallError, SendError};
use crate::process::signal::{Payload, ReplyRoute, Signal};
use crate::process::table::ProcessTable;
use crate::process::{Message, Target};

/// Routes messages and calls from this node. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    processes: Arc<ProcessTable>,
    peers: Arc<PeerTable>,
    node: NodeId,
}

/// Where a message for a target goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A live or dead process of this node, by pid.
    Local(Pid),
    /// A process of the peer node, by pid or name.
    Remote(NodeId, Dest<'a>),
    /// No process: a name not registered here, or a pid of an earlier life of this node.
    Nowhere,
}

/// Which handler a one-way message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// `handle_cast`.
    Cast,
    /// `handle_info` (a plain send).
    Info,
}

impl Router {
    /// A router for the node `node`, over its process and peer tables.
    pub(crate) fn new(node: NodeId, processes: Arc<ProcessTable>, peers: Arc<PeerTable>) -> Self {
        Self {
            processes,
            peers,
            node,
        }
    }

    /// Where a message for `target` goes.
    pub(crate) fn route<'a>(&self, target: &'a Target) -> Route<'a> {
        match target {
            Target::Pid(pid) if self.processes.is_local(*pid) => Route::Local(*pid),
            Target::Pid(pid) if pid.node == self.node => Route::Nowhere,
            Target::Pid(pid) => Route::Remote(pid.node, Dest::Pid(*pid)),
            Target::Named { node, name } if *node == self.node => self
                .processes
                .whereis(name)
                .map_or(Route::Nowhere, Route::Local),
            Target::Named { node, name } => Route::Remote(*node, Dest::Name(name)),
        }
    }

    /// Sends a one-way message to `target`. A target that does not exist is not an error; an
    /// unconnected node is.
    pub(crate) fn post<M: Message>(
        &self,
        target: &Target,
        message: M,
        delivery: Delivery,
    ) -> Result<(), SendError> {
        match self.route(target) {
            Route::Local(pid) => {
                let payload = Payload::Local(Box::new(message));
                self.processes.deliver(pid, self.signal(payload, delivery));
                Ok(())
            }
            Route::Remote(node, to) => {
                let link = self.peers.link_to(node).ok_or(SendError::NodeDown)?;
                let header = match delivery {
                    Delivery::Cast => Header::Cast { to },
                    Delivery::Info => Header::Send { to },
                };
                link.queue.send(&header, &message)?;
                Ok(())
            }
            Route::Nowhere => Ok(()),
        }
    }

    /// Sends `message` to `pid`'s `handle_info` encoded even when `pid` is local, so that a
    /// receiver whose info type differs from `M` but shares its encoding decodes it.
    pub(crate) fn post_encoded<M: Message>(&self, pid: Pid, message: M) -> Result<(), SendError> {
        if !self.processes.is_local(pid) {
            return self.post(&Target::Pid(pid), message, Delivery::Info);
        }
        let bytes =
            postcard::to_allocvec(&message).map_err(|e| wire::WireError::Encode(e.to_string()))?;
        let payload = Payload::Encoded(bytes.into());
        self.processes
            .deliver(pid, self.signal(payload, Delivery::Info));
        Ok(())
    }

    /// Calls `target` with `request` and waits for its reply, at most `timeout`.
    pub(crate) async fn call<M: Message, R: Message>(
        &self,
        target: &Target,
        request: M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let mut remote = None;
        let reply = match self.route(target) {
            Route::Local(pid) => {
                let (tx, rx) = oneshot::channel();
                let signal = Signal::Call {
                    request: Payload::Local(Box::new(request)),
                    reply: ReplyRoute::Local(tx),
                };
                if !self.processes.deliver(pid, signal) {
                    return Err(CallError::NoProc);
                }
                rx
            }
            Route::Remote(node, to) => {
                let link = self.peers.link_to(node).ok_or(CallError::NodeDown)?;
                let reference = self.processes.next_ref();
                let reply = link.start_call(reference, to, &request)?;
                remote = Some((link, reference));
                reply
            }
            Route::Nowhere => return Err(CallError::NoProc),
        };
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Ok(payload))) => payload.decode().map_err(CallError::BadReply),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(CallError::NodeDown),
            Err(_) => {
                // A late reply then finds no caller, and the link keeps no entry for it.
                if let Some((link, reference)) = remote {
                    link.forget_call(reference);
                }
                Err(CallError::Timeout(timeout))
            }
        }
    }

    fn signal(&self, payload: Payload, delivery: Delivery) -> Signal {
        match delivery {
            Delivery::Cast => Signal::Cast(payload),
            Delivery::Info => Signal::Info {
                payload,
                from: self.node,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use gen_cluster_proto::handshake::Identity;
    use gen_cluster_proto::{Incarnation, NodeName};
    use tokio_util::sync::CancellationToken;

    use crate::dist::queue::{FrameQueue, Outgoing};

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn router() -> (Router, Arc<ProcessTable>, Arc<PeerTable>) {
        let me = name("a");
        let processes = Arc::new(ProcessTable::new(me.id(), Incarnation(2)));
        let peers = Arc::new(PeerTable::new(me.clone()));
        let router = Router::new(me.id(), Arc::clone(&processes), Arc::clone(&peers));
        (router, processes, peers)
    }

    /// Connects the peer `b` in `peers` and returns its frame queue's receiving end.
    fn connect_b(peers: &PeerTable) -> tokio::sync::mpsc::UnboundedReceiver<Outgoing> {
        let b = Identity {
            name: name("b"),
            incarnation: Incarnation(1),
            listen: "b:1".into(),
        };
        let conn = peers.new_conn_id();
        let cancel = CancellationToken::new();
        use gen_cluster_proto::arbitration::Step;
        peers
            .arbitrate(conn, &b, Step::ResponseVerified, &cancel, |_, _| {})
            .unwrap();
        let (queue, frames) = FrameQueue::new(b.name.clone(), 1 << 20);
        peers.establish(conn, &b, queue, |_| {}).unwrap();
        frames
    }

    #[test]
    fn targets_route_to_local_processes_peers_or_nowhere() {
        let (router, processes, _) = router();
        let (pid, _rx) = processes.register(Some("p".into())).unwrap();
        let me = name("a").id();
        assert_eq!(router.route(&Target::Pid(pid)), Route::Local(pid));
        let named = Target::Named {
            node: me,
            name: "p".into(),
        };
        assert_eq!(router.route(&named), Route::Local(pid));
        let missing = Target::Named {
            node: me,
            name: "q".into(),
        };
        assert_eq!(router.route(&missing), Route::Nowhere);
        let earlier_life = Pid {
            incarnation: Incarnation(1),
            ..pid
        };
        assert_eq!(router.route(&Target::Pid(earlier_life)), Route::Nowhere);
        let remote = Target::Named {
            node: name("b").id(),
            name: "p".into(),
        };
        assert_eq!(
            router.route(&remote),
            Route::Remote(name("b").id(), Dest::Name("p"))
        );
    }

    #[test]
    fn a_local_post_moves_the_value_and_a_remote_one_queues_one_frame() {
        let (router, processes, peers) = router();
        let (pid, mut rx) = processes.register(None).unwrap();
        router
            .post(&Target::Pid(pid), 5u32, Delivery::Cast)
            .unwrap();
        assert!(matches!(rx.try_recv(), Ok(Signal::Cast(Payload::Local(_)))));
        let remote = Target::Named {
            node: name("b").id(),
            name: "echo".into(),
        };
        assert_eq!(
            router.post(&remote, 5u32, Delivery::Info),
            Err(SendError::NodeDown)
        );
        let mut frames = connect_b(&peers);
        router.post(&remote, 5u32, Delivery::Info).unwrap();
        let Ok(Outgoing::Frame(frame, _)) = frames.try_recv() else {
            panic!("one frame queued")
        };
        let (header, payload) = wire::decode(&frame[wire::LENGTH_PREFIX..]).unwrap();
        assert_eq!(
            header,
            Header::Send {
                to: Dest::Name("echo")
            }
        );
        assert_eq!(postcard::from_bytes::<u32>(payload).unwrap(), 5);
    }

    #[test]
    fn an_encoded_post_to_a_local_process_arrives_encoded() {
        let (router, processes, _) = router();
        let (pid, mut rx) = processes.register(None).unwrap();
        router.post_encoded(pid, 7u8).unwrap();
        let Ok(Signal::Info {
            payload: Payload::Encoded(bytes),
            ..
        }) = rx.try_recv()
        else {
            panic!("an encoded info")
        };
        assert_eq!(postcard::from_bytes::<u8>(&bytes).unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_fail_fast_when_nobody_can_answer_and_time_out_when_nobody_does() {
        let (router, processes, peers) = router();
        let me = name("a").id();
        let missing = Target::Named {
            node: me,
            name: "nobody".into(),
        };
        assert_eq!(
            router
                .call::<u8, u8>(&missing, 1, Duration::from_secs(1))
                .await,
            Err(CallError::NoProc)
        );
        let remote = Target::Named {
            node: name("b").id(),
            name: "echo".into(),
        };
        assert_eq!(
            router
                .call::<u8, u8>(&remote, 1, Duration::from_secs(1))
                .await,
            Err(CallError::NodeDown)
        );
        let (pid, _rx) = processes.register(None).unwrap();
        let t = Duration::from_millis(10);
        assert_eq!(
            router.call::<u8, u8>(&Target::Pid(pid), 1, t).await,
            Err(CallError::Timeout(t))
        );
        let _frames = connect_b(&peers);
        let link = peers.link_to(name("b").id()).unwrap();
        let late = router.call::<u8, u8>(&remote, 1, t).await;
        assert_eq!(late, Err(CallError::Timeout(t)));
        assert_eq!(
            link.track(|state| state.calls.len()),
            Some(0),
            "a timed-out call leaves no entry on its link"
        );
        let call = router.call::<u8, u8>(&remote, 1, Duration::from_secs(1));
        let lose_link = async {
            tokio::task::yield_now().await;
            peers.remove(&link, |mut state| state.fail_calls());
        };
        let (outcome, ()) = tokio::join!(call, lose_link);
        assert_eq!(outcome, Err(CallError::NodeDown));
    }
}

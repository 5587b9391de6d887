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

use crate::dist::link::PeerLink;
use crate::dist::outbox::Lane;
use crate::dist::peers::PeerTable;
use crate::dist::queue::Refused;
use crate::error::{CallError, SendError};
use crate::process::signal::{Payload, ReplyRoute, Signal};
use crate::process::table::{Full, Placement, ProcessTable};
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

/// A one-way message, ready to be put where it goes.
enum Outbound {
    Local(Pid, Signal),
    Remote(Arc<PeerLink>, Vec<u8>, Lane),
    Nowhere,
}

/// What a refusal of the link's queue means to a sender.
fn refused(refusal: Refused) -> SendError {
    match refusal {
        Refused::Busy => SendError::Busy,
        Refused::Closed => SendError::NodeDown,
    }
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

    /// Sends a one-way message to `target` once there is room for it: in the process's mailbox
    /// if it is bounded, in the link's queue if the process is remote. A target that does not
    /// exist is not an error; an unconnected node is.
    pub(crate) async fn post<M: Message>(
        &self,
        target: &Target,
        message: M,
        delivery: Delivery,
    ) -> Result<(), SendError> {
        match self.prepare(target, message, delivery)? {
            Outbound::Local(pid, signal) => {
                if let Placement::Waiting(waiting) = self.processes.deliver_message(pid, signal) {
                    let _ = waiting.place().await;
                }
                Ok(())
            }
            Outbound::Remote(link, frame, lane) => {
                link.queue.push_message(frame, lane).await.map_err(refused)
            }
            Outbound::Nowhere => Ok(()),
        }
    }

    /// Sends a one-way message to `target` if there is room for it now; else
    /// [`SendError::Busy`], and nothing is sent.
    pub(crate) fn try_post<M: Message>(
        &self,
        target: &Target,
        message: M,
        delivery: Delivery,
    ) -> Result<(), SendError> {
        match self.prepare(target, message, delivery)? {
            Outbound::Local(pid, signal) => match self.processes.try_deliver_message(pid, signal) {
                Ok(_) => Ok(()),
                Err(Full) => Err(SendError::Busy),
            },
            Outbound::Remote(link, frame, lane) => {
                link.queue.try_push_message(frame, lane).map_err(refused)
            }
            Outbound::Nowhere => Ok(()),
        }
    }

    /// Sends a message of the runtime's own that must neither wait nor be refused (the name
    /// service's: small and few); it takes no room in a link's queue.
    pub(crate) fn post_unbounded<M: Message>(
        &self,
        target: &Target,
        message: M,
    ) -> Result<(), SendError> {
        match self.prepare(target, message, Delivery::Info)? {
            Outbound::Local(pid, signal) => {
                // Name services' mailboxes are unbounded: never full.
                let _ = self.processes.try_deliver_message(pid, signal);
                Ok(())
            }
            Outbound::Remote(link, frame, lane) => {
                link.queue.push(frame, lane);
                Ok(())
            }
            Outbound::Nowhere => Ok(()),
        }
    }

    /// Sends `message` to `pid`'s `handle_info` encoded even when `pid` is local, so that a
    /// receiver whose info type differs from `M` but shares its encoding decodes it.
    pub(crate) async fn post_encoded<M: Message>(
        &self,
        pid: Pid,
        message: M,
    ) -> Result<(), SendError> {
        if !self.processes.is_local(pid) {
            return self.post(&Target::Pid(pid), message, Delivery::Info).await;
        }
        let bytes =
            postcard::to_allocvec(&message).map_err(|e| wire::WireError::Encode(e.to_string()))?;
        let payload = Payload::Encoded(bytes.into());
        let signal = self.signal(payload, Delivery::Info);
        let _ = self.processes.deliver_message(pid, signal).finish().await;
        Ok(())
    }

    /// Calls `target` with `request` and waits for its reply — and first for room for the
    /// request, if the mailbox or the link's queue is full — at most `timeout` in all.
    pub(crate) async fn call<M: Message, R: Message>(
        &self,
        target: &Target,
        request: M,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let mut remote = None;
        let asked = async {
            let reply = match self.route(target) {
                Route::Local(pid) => {
                    let (tx, rx) = oneshot::channel();
                    let signal = Signal::Call {
                        request: Payload::Local(Box::new(request)),
                        reply: ReplyRoute::Local(tx),
                    };
                    let delivery = self.processes.deliver_message(pid, signal);
                    if delivery.finish().await.is_err() {
                        return Err(CallError::NoProc);
                    }
                    rx
                }
                Route::Remote(node, to) => {
                    let link = self.peers.link_to(node).ok_or(CallError::NodeDown)?;
                    let reference = self.processes.next_ref();
                    remote = Some((Arc::clone(&link), reference));
                    link.start_call(reference, to, &request).await?
                }
                Route::Nowhere => return Err(CallError::NoProc),
            };
            match reply.await {
                Ok(Ok(payload)) => payload.decode().map_err(CallError::BadReply),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(CallError::NodeDown),
            }
        };
        let outcome = tokio::time::timeout(timeout, asked).await;
        outcome.unwrap_or_else(|_| {
            // A late reply then finds no caller, and the link keeps no entry for it.
            if let Some((link, reference)) = remote {
                link.forget_call(reference);
            }
            Err(CallError::Timeout(timeout))
        })
    }

    /// Where a message goes, ready to be put there.
    fn prepare<M: Message>(
        &self,
        target: &Target,
        message: M,
        delivery: Delivery,
    ) -> Result<Outbound, SendError> {
        Ok(match self.route(target) {
            Route::Local(pid) => {
                let payload = Payload::Local(Box::new(message));
                Outbound::Local(pid, self.signal(payload, delivery))
            }
            Route::Remote(node, to) => {
                let link = self.peers.link_to(node).ok_or(SendError::NodeDown)?;
                let header = match delivery {
                    Delivery::Cast => Header::Cast { to },
                    Delivery::Info => Header::Send { to },
                };
                let frame = wire::encode(&header, Some(&message), link.queue.max_frame())?;
                Outbound::Remote(link, frame, Lane::of(&header))
            }
            Route::Nowhere => Outbound::Nowhere,
        })
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
    use crate::dist::queue::Outgoing;
    use gen_cluster_proto::handshake::Identity;
    use gen_cluster_proto::{Incarnation, NodeName};

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
            hidden: false,
        };
        let (_, frames) = peers.connect_for_tests(&b);
        frames
    }

    #[test]
    fn targets_route_to_local_processes_peers_or_nowhere() {
        let (router, processes, _) = router();
        let (pid, _rx) = processes.register(Some("p".into()), None).unwrap();
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

    #[tokio::test]
    async fn a_local_post_moves_the_value_and_a_remote_one_queues_one_frame() {
        let (router, processes, peers) = router();
        let (pid, mut rx) = processes.register(None, None).unwrap();
        router
            .post(&Target::Pid(pid), 5u32, Delivery::Cast)
            .await
            .unwrap();
        assert!(matches!(
            rx.try_recv(),
            Some(Signal::Cast(Payload::Local(_)))
        ));
        let remote = Target::Named {
            node: name("b").id(),
            name: "echo".into(),
        };
        assert_eq!(
            router.post(&remote, 5u32, Delivery::Info).await,
            Err(SendError::NodeDown)
        );
        let mut frames = connect_b(&peers);
        router.post(&remote, 5u32, Delivery::Info).await.unwrap();
        let Ok(Outgoing::Frame(frame, _, _)) = frames.try_recv() else {
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

    #[tokio::test]
    async fn an_encoded_post_to_a_local_process_arrives_encoded() {
        let (router, processes, _) = router();
        let (pid, mut rx) = processes.register(None, None).unwrap();
        router.post_encoded(pid, 7u8).await.unwrap();
        let Some(Signal::Info {
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
        let (pid, _rx) = processes.register(None, None).unwrap();
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

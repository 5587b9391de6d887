//! Who is told when a process ends: monitors and links, between processes of this node and across
//! links to peers. [`Watchers`] keeps, for every live local process, the list of its watchers;
//! sets and removes monitors and links (sending the control frames for remote ones); fans a
//! process's end out to its watchers; handles the control frames peers send about processes; and
//! turns a lost peer into `noconnection` DOWNs and exits.
//!
//! Remote monitors and links held by local processes are kept on the peer's link (its
//! `LinkState`), so that losing the link hands them over at once.
//!
//! Locks: the watch lists' mutex, then (inside it, only to check that a process is alive) the
//! process table's; never the other way round. A process's end frees its table slot first, then
//! takes its watch list; a watcher is added only while the slot is there (checked under the
//! lists' lock): one added before the end is in the list and fires, one after is refused with
//! `noproc`. A peer speaks only for its own processes: a monitor, link or exit it sends on behalf
//! of another node's process is ignored, and a DOWN must name the process the monitor watched. Costs: a monitor or link is O(1); an end is O(its watchers); a lost peer
//! is O(all watch lists) to forget the peer's watchers.

use std::sync::{Arc, Mutex};

use gen_cluster_proto::wire::Header;
use gen_cluster_proto::{ExitReason, Pid};
use rustc_hash::FxHashMap as HashMap;

use crate::dist::link::{LinkState, PeerLink};
use crate::dist::peers::PeerTable;
use crate::lock;
use crate::process::MonitorRef;
use crate::process::signal::Signal;
use crate::process::table::ProcessTable;

/// The watchers of every live local process.
#[derive(Debug)]
pub(crate) struct Watchers {
    processes: Arc<ProcessTable>,
    peers: Arc<PeerTable>,
    /// Per live local process (by local number), who watches it.
    lists: Mutex<HashMap<u64, Vec<Watcher>>>,
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

impl Watchers {
    /// The watchers of the processes in `processes`, reaching remote ones over `peers`.
    pub(crate) fn new(processes: Arc<ProcessTable>, peers: Arc<PeerTable>) -> Self {
        Self {
            processes,
            peers,
            lists: Mutex::default(),
        }
    }

    /// `watcher` watches `target`: when it ends (or if it does not exist, or its node is lost)
    /// `watcher` gets a DOWN with the returned reference.
    pub(crate) fn monitor(&self, watcher: Pid, target: Pid) -> MonitorRef {
        let reference = self.processes.next_ref();
        let down = |reason| Signal::Down {
            reference: MonitorRef(reference),
            pid: target,
            reason,
        };
        if self.processes.is_this_node(target) {
            if !self.add(target, Watcher::Monitor { reference, watcher }) {
                self.processes.deliver(watcher, down(ExitReason::NoProc));
            }
        } else {
            let watched = self.peers.link_to(target.node).is_some_and(|link| {
                link.track(|state| state.monitors.insert(reference, (watcher, target)))
                    .is_some()
                    && link.queue.send_header(&Header::Monitor {
                        reference,
                        watcher,
                        target,
                    })
            });
            if !watched {
                self.processes
                    .deliver(watcher, down(ExitReason::NoConnection));
            }
        }
        MonitorRef(reference)
    }

    /// Removes a monitor set with [`monitor`](Self::monitor).
    pub(crate) fn demonitor(&self, reference: MonitorRef, target: Pid) {
        if self.processes.is_this_node(target) {
            self.remove_monitor(target, reference.0);
        } else if let Some(link) = self.peers.link_to(target.node) {
            link.track(|state| state.monitors.remove(&reference.0));
            link.queue.send_header(&Header::Demonitor {
                reference: reference.0,
                target,
            });
        }
    }

    /// Links the local process `local` to `other`; if `other` cannot be linked (gone, or its node
    /// not connected), `local` gets the exit at once.
    pub(crate) fn link(&self, local: Pid, other: Pid) {
        if !self.add(local, Watcher::Link { other }) {
            return;
        }
        let refused = if self.processes.is_this_node(other) {
            (!self.add(other, Watcher::Link { other: local })).then_some(ExitReason::NoProc)
        } else {
            let linked = self.peers.link_to(other.node).is_some_and(|link| {
                link.track(|state| state.links.insert((local, other)))
                    .is_some()
                    && link.queue.send_header(&Header::Link {
                        from: local,
                        to: other,
                    })
            });
            (!linked).then_some(ExitReason::NoConnection)
        };
        if let Some(reason) = refused {
            self.remove(local, Watcher::Link { other });
            self.processes.deliver(
                local,
                Signal::Exit {
                    from: other,
                    reason,
                },
            );
        }
    }

    /// Removes the link between the local process `local` and `other`.
    pub(crate) fn unlink(&self, local: Pid, other: Pid) {
        self.remove(local, Watcher::Link { other });
        if self.processes.is_this_node(other) {
            self.remove(other, Watcher::Link { other: local });
        } else if let Some(link) = self.peers.link_to(other.node) {
            link.track(|state| state.links.remove(&(local, other)));
            link.queue.send_header(&Header::Unlink {
                from: local,
                to: other,
            });
        }
    }

    /// The local process `pid` ended: frees its slot and name, and tells its monitors and links.
    pub(crate) fn process_ended(&self, pid: Pid, reason: ExitReason) {
        if !self.processes.remove(pid) {
            return;
        }
        let Some(watchers) = lock(&self.lists).remove(&pid.local) else {
            return;
        };
        for watcher in watchers {
            match watcher {
                Watcher::Monitor { reference, watcher } if self.processes.is_local(watcher) => {
                    self.processes.deliver(
                        watcher,
                        Signal::Down {
                            reference: MonitorRef(reference),
                            pid,
                            reason: reason.clone(),
                        },
                    );
                }
                Watcher::Monitor { reference, watcher } => {
                    if let Some(link) = self.peers.link_to(watcher.node)
                        && link.owns(watcher)
                    {
                        link.queue.send_header(&Header::Down {
                            reference,
                            target: pid,
                            reason: reason.clone(),
                        });
                    }
                }
                Watcher::Link { other } if self.processes.is_local(other) => {
                    self.remove(other, Watcher::Link { other: pid });
                    self.processes.deliver(
                        other,
                        Signal::Exit {
                            from: pid,
                            reason: reason.clone(),
                        },
                    );
                }
                Watcher::Link { other } => {
                    if let Some(link) = self.peers.link_to(other.node)
                        && link.owns(other)
                    {
                        link.track(|state| state.links.remove(&(pid, other)));
                        link.queue.send_header(&Header::Exit {
                            from: pid,
                            to: other,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The link to a peer was lost: the monitors and links local processes held on its
    /// processes fire with `noconnection`, and its processes stop watching local ones.
    pub(crate) fn peer_down(&self, link: &PeerLink, state: LinkState) {
        for (reference, (watcher, target)) in state.monitors {
            self.processes.deliver(
                watcher,
                Signal::Down {
                    reference: MonitorRef(reference),
                    pid: target,
                    reason: ExitReason::NoConnection,
                },
            );
        }
        for list in lock(&self.lists).values_mut() {
            list.retain(|w| !link.owns(w.pid()));
        }
        for (local, remote) in state.links {
            self.processes.deliver(
                local,
                Signal::Exit {
                    from: remote,
                    reason: ExitReason::NoConnection,
                },
            );
        }
    }

    /// A control frame about processes arrived on `link`: a monitor, demonitor, DOWN, link,
    /// unlink or exit. Other frames are not for the watchers and are ignored.
    pub(crate) fn inbound(&self, link: &PeerLink, header: Header<'_>) {
        match header {
            Header::Monitor {
                reference,
                watcher,
                target,
            } => {
                if !link.owns(watcher) {
                    tracing::warn!(peer = %link.name, %watcher, "peer asked to monitor on behalf of another node's pid; ignored");
                    return;
                }
                let watched = self.add(target, Watcher::Monitor { reference, watcher });
                if !watched {
                    link.queue.send_header(&Header::Down {
                        reference,
                        target,
                        reason: ExitReason::NoProc,
                    });
                }
            }
            Header::Demonitor { reference, target } => self.remove_monitor(target, reference),
            Header::Down {
                reference,
                target,
                reason,
            } => {
                let watched = link.track(|state| match state.monitors.get(&reference) {
                    Some(&(watcher, watched)) if watched == target => {
                        state.monitors.remove(&reference);
                        Some(watcher)
                    }
                    _ => None,
                });
                if let Some(Some(watcher)) = watched {
                    self.processes.deliver(
                        watcher,
                        Signal::Down {
                            reference: MonitorRef(reference),
                            pid: target,
                            reason,
                        },
                    );
                }
            }
            Header::Link { from, to } => {
                if !link.owns(from) {
                    tracing::warn!(peer = %link.name, %from, "peer asked to link on behalf of another node's pid; ignored");
                    return;
                }
                let linked = self.processes.is_local(to)
                    && link.track(|state| state.links.insert((to, from))).is_some()
                    && self.add(to, Watcher::Link { other: from });
                if !linked {
                    link.track(|state| state.links.remove(&(to, from)));
                    link.queue.send_header(&Header::Exit {
                        from: to,
                        to: from,
                        reason: ExitReason::NoProc,
                    });
                }
            }
            Header::Unlink { from, to } => {
                link.track(|state| state.links.remove(&(to, from)));
                self.remove(to, Watcher::Link { other: from });
            }
            Header::Exit { from, to, reason } => {
                let linked = link.track(|state| state.links.remove(&(to, from))) == Some(true);
                if linked {
                    self.remove(to, Watcher::Link { other: from });
                    self.processes.deliver(to, Signal::Exit { from, reason });
                }
            }
            _ => {}
        }
    }

    /// Adds a watcher to the local process `pid`; false if it is not alive.
    fn add(&self, pid: Pid, watcher: Watcher) -> bool {
        let mut lists = lock(&self.lists);
        if !self.processes.is_alive(pid) {
            return false;
        }
        lists.entry(pid.local).or_default().push(watcher);
        true
    }

    fn remove(&self, pid: Pid, watcher: Watcher) {
        if !self.processes.is_local(pid) {
            return;
        }
        if let Some(list) = lock(&self.lists).get_mut(&pid.local) {
            list.retain(|w| *w != watcher);
        }
    }

    fn remove_monitor(&self, target: Pid, reference: u64) {
        if !self.processes.is_local(target) {
            return;
        }
        if let Some(list) = lock(&self.lists).get_mut(&target.local) {
            list.retain(|w| !matches!(w, Watcher::Monitor { reference: r, .. } if *r == reference));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use gen_cluster_proto::handshake::Identity;
    use gen_cluster_proto::wire;
    use gen_cluster_proto::{Incarnation, NodeName};
    use tokio::sync::mpsc;

    use crate::dist::queue::Outgoing;
    use crate::process::signal::Inbox;

    struct World {
        watchers: Watchers,
        processes: Arc<ProcessTable>,
        peers: Arc<PeerTable>,
    }

    fn world() -> World {
        let me = NodeName::new("a").unwrap();
        let processes = Arc::new(ProcessTable::new(me.id(), Incarnation(1)));
        let peers = Arc::new(PeerTable::new(me));
        let watchers = Watchers::new(Arc::clone(&processes), Arc::clone(&peers));
        World {
            watchers,
            processes,
            peers,
        }
    }

    impl World {
        fn process(&self) -> (Pid, Inbox) {
            self.processes.register(None, None).unwrap()
        }

        /// Connects the peer `b` and returns its link and the frames queued to it.
        fn peer(&self) -> (Arc<PeerLink>, mpsc::UnboundedReceiver<Outgoing>) {
            let b = Identity {
                name: NodeName::new("b").unwrap(),
                incarnation: Incarnation(5),
                listen: "b:1".into(),
                hidden: false,
            };
            self.peers.connect_for_tests(&b)
        }
    }

    fn remote_pid(local: u64) -> Pid {
        Pid {
            node: NodeName::new("b").unwrap().id(),
            incarnation: Incarnation(5),
            local,
        }
    }

    fn down(inbox: &mut Inbox) -> Option<(u64, Pid, ExitReason)> {
        match inbox.try_recv()? {
            Signal::Down {
                reference,
                pid,
                reason,
            } => Some((reference.0, pid, reason)),
            _ => None,
        }
    }

    fn exit(inbox: &mut Inbox) -> Option<(Pid, ExitReason)> {
        match inbox.try_recv()? {
            Signal::Exit { from, reason } => Some((from, reason)),
            _ => None,
        }
    }

    fn header(frames: &mut mpsc::UnboundedReceiver<Outgoing>) -> Option<Header<'static>> {
        let Ok(Outgoing::Frame(frame, _, _)) = frames.try_recv() else {
            return None;
        };
        let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
        Some(wire::decode(&frame[wire::LENGTH_PREFIX..]).unwrap().0)
    }

    #[test]
    fn a_local_monitor_fires_once_with_the_reason_when_its_target_ends() {
        let w = world();
        let (watcher, mut inbox) = w.process();
        let (target, _) = w.process();
        let reference = w.watchers.monitor(watcher, target);
        w.watchers.process_ended(target, ExitReason::Normal);
        w.watchers.process_ended(target, ExitReason::Shutdown);
        assert_eq!(
            down(&mut inbox),
            Some((reference.0, target, ExitReason::Normal))
        );
        assert!(inbox.try_recv().is_none(), "an end is told once");
    }

    #[test]
    fn monitoring_a_missing_process_fires_noproc_and_a_demonitored_one_stays_silent() {
        let w = world();
        let (watcher, mut inbox) = w.process();
        let (gone, _) = w.process();
        w.watchers.process_ended(gone, ExitReason::Normal);
        w.watchers.monitor(watcher, gone);
        assert_eq!(down(&mut inbox).map(|d| d.2), Some(ExitReason::NoProc));
        let (target, _) = w.process();
        let reference = w.watchers.monitor(watcher, target);
        w.watchers.demonitor(reference, target);
        w.watchers.process_ended(target, ExitReason::Normal);
        assert!(inbox.try_recv().is_none());
    }

    #[test]
    fn a_local_link_delivers_the_exit_to_the_other_end_only() {
        let w = world();
        let (a, mut a_inbox) = w.process();
        let (b, mut b_inbox) = w.process();
        w.watchers.link(a, b);
        w.watchers
            .process_ended(a, ExitReason::Error("boom".into()));
        assert_eq!(
            exit(&mut b_inbox),
            Some((a, ExitReason::Error("boom".into())))
        );
        assert!(a_inbox.try_recv().is_none());
        let (c, mut c_inbox) = w.process();
        let (d, _) = w.process();
        w.watchers.link(c, d);
        w.watchers.unlink(c, d);
        w.watchers.process_ended(d, ExitReason::Shutdown);
        assert!(
            c_inbox.try_recv().is_none(),
            "an unlinked process is not told"
        );
    }

    #[test]
    fn a_remote_monitor_sends_its_frame_and_fires_noconnection_when_the_peer_is_lost() {
        let w = world();
        let (watcher, mut inbox) = w.process();
        let target = remote_pid(3);
        let unreachable = w.watchers.monitor(watcher, target);
        assert_eq!(
            down(&mut inbox),
            Some((unreachable.0, target, ExitReason::NoConnection)),
            "no link: noconnection at once"
        );
        let (link, mut frames) = w.peer();
        let reference = w.watchers.monitor(watcher, target);
        assert_eq!(
            header(&mut frames),
            Some(Header::Monitor {
                reference: reference.0,
                watcher,
                target
            })
        );
        w.peers
            .remove(&link, |state| w.watchers.peer_down(&link, state));
        assert_eq!(
            down(&mut inbox),
            Some((reference.0, target, ExitReason::NoConnection))
        );
    }

    #[test]
    fn a_peers_watchers_are_forgotten_when_it_is_lost() {
        let w = world();
        let (target, _) = w.process();
        let (link, mut frames) = w.peer();
        w.watchers.inbound(
            &link,
            Header::Monitor {
                reference: 9,
                watcher: remote_pid(1),
                target,
            },
        );
        w.peers
            .remove(&link, |state| w.watchers.peer_down(&link, state));
        let (_, mut frames_again) = w.peer();
        w.watchers.process_ended(target, ExitReason::Normal);
        assert!(header(&mut frames).is_none());
        assert!(
            header(&mut frames_again).is_none(),
            "the lost peer's monitor does not outlive it"
        );
    }

    #[test]
    fn a_peers_monitor_of_a_missing_process_is_answered_with_noproc() {
        let w = world();
        let (link, mut frames) = w.peer();
        let (gone, _) = w.process();
        w.watchers.process_ended(gone, ExitReason::Normal);
        w.watchers.inbound(
            &link,
            Header::Monitor {
                reference: 4,
                watcher: remote_pid(1),
                target: gone,
            },
        );
        assert_eq!(
            header(&mut frames),
            Some(Header::Down {
                reference: 4,
                target: gone,
                reason: ExitReason::NoProc
            })
        );
    }

    #[test]
    fn a_peer_cannot_link_on_behalf_of_another_nodes_process() {
        let w = world();
        let (local, mut inbox) = w.process();
        let (link, mut frames) = w.peer();
        let someone_elses = Pid {
            node: NodeName::new("c").unwrap().id(),
            incarnation: Incarnation(1),
            local: 1,
        };
        w.watchers.inbound(
            &link,
            Header::Link {
                from: someone_elses,
                to: local,
            },
        );
        w.watchers.process_ended(local, ExitReason::Shutdown);
        assert!(header(&mut frames).is_none(), "no exit for a refused link");
        assert!(inbox.try_recv().is_none());
    }

    #[test]
    fn a_peer_speaks_only_for_its_own_processes_and_a_down_must_name_the_watched_one() {
        let w = world();
        let (target, _) = w.process();
        let (watcher, mut inbox) = w.process();
        let (link, mut frames) = w.peer();
        // A monitor on behalf of a local process: ignored, so the target's end tells nobody.
        w.watchers.inbound(
            &link,
            Header::Monitor {
                reference: 1,
                watcher,
                target,
            },
        );
        w.watchers.process_ended(target, ExitReason::Normal);
        assert!(inbox.try_recv().is_none());
        assert!(header(&mut frames).is_none());
        // A DOWN for a real monitor that names another pid: ignored; the right one fires it.
        let remote = remote_pid(7);
        let reference = w.watchers.monitor(watcher, remote);
        header(&mut frames);
        let forged = Header::Down {
            reference: reference.0,
            target: remote_pid(8),
            reason: ExitReason::Normal,
        };
        w.watchers.inbound(&link, forged);
        assert!(inbox.try_recv().is_none());
        w.watchers.inbound(
            &link,
            Header::Down {
                reference: reference.0,
                target: remote,
                reason: ExitReason::Normal,
            },
        );
        assert_eq!(
            down(&mut inbox),
            Some((reference.0, remote, ExitReason::Normal))
        );
    }

    #[test]
    fn a_remote_exit_reaches_a_linked_process_and_only_while_linked() {
        let w = world();
        let (local, mut inbox) = w.process();
        let (link, mut frames) = w.peer();
        let remote = remote_pid(2);
        w.watchers.link(local, remote);
        assert_eq!(
            header(&mut frames),
            Some(Header::Link {
                from: local,
                to: remote
            })
        );
        let crash = Header::Exit {
            from: remote,
            to: local,
            reason: ExitReason::Shutdown,
        };
        w.watchers.inbound(&link, crash.clone());
        assert_eq!(exit(&mut inbox), Some((remote, ExitReason::Shutdown)));
        w.watchers.inbound(&link, crash);
        assert!(
            inbox.try_recv().is_none(),
            "the link is gone after its exit"
        );
    }
}

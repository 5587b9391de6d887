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
//! takes its watch list: a watcher added in between is in the list and fires; one added after is
//! refused with `noproc`. Costs: a monitor or link is O(1); an end is O(its watchers); a lost peer
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
                    if let Some(link) = self.peers.link_to(watcher.node) {
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
                    if let Some(link) = self.peers.link_to(other.node) {
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
                if let Some(Some((watcher, _))) =
                    link.track(|state| state.monitors.remove(&reference))
                {
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

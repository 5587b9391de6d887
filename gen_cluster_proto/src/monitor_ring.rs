//! Who watches whom for the failure detector. The live nodes of the cluster stand on a ring
//! ordered by their ids (hashes of their names: nodes named alike are not neighbours); each node
//! watches the `k` nodes after it and is watched by the `k` before it, so an idle cluster of `n`
//! nodes carries `n·k` heartbeats per interval, not `n·(n − 1)`, and each node's share is `k`
//! whatever `n` (Akka's heartbeat ring, SWIM's constant load). A node also watches a peer connected
//! to it that most of the peer's watchers do not reach (see `view`): for a moment while a mesh
//! forms or a node restarts, and for good where the peers are not all connected (a hub then
//! watches its spokes), so a node's share is `k` in a settled full mesh.
//!
//! The cluster view (`view`) builds the ring from the nodes it holds live, asks it which peers this
//! node watches (the runtime turns heartbeats on for those links only) and which nodes watch a
//! member (a member most of whose watchers lost it is unreachable for everyone, see
//! [`quorum`]). Nodes whose views differ for a moment may disagree on a few watchers; the quorum
//! leaves room for that. Costs: building the ring is O(n log n) and one hash per node; each
//! question after it is O(log n + k).

use crate::{NodeId, NodeName};

/// The default number of nodes that watch each node: a hang is seen by five, and a quorum of
/// three of them declares it, so two watchers that lag or fail themselves neither hide a hang
/// nor invent one.
pub const DEFAULT_MONITORS: usize = 5;

/// How many of `watchers` must have lost a node for it to be unreachable: a majority, so that one
/// lagging watcher (itself paused, or cut from the node alone) declares nothing.
pub fn quorum(watchers: usize) -> usize {
    watchers / 2 + 1
}

/// The live nodes in ring order.
#[derive(Debug, Clone, Default)]
pub struct MonitorRing {
    ring: Vec<(NodeId, NodeName)>,
    monitors: usize,
}

impl MonitorRing {
    /// The ring of `live`, each node watched by `monitors` others (fewer when there are fewer).
    pub fn new(live: impl IntoIterator<Item = NodeName>, monitors: usize) -> Self {
        let mut ring: Vec<(NodeId, NodeName)> =
            live.into_iter().map(|name| (name.id(), name)).collect();
        ring.sort_unstable();
        ring.dedup();
        Self { ring, monitors }
    }

    /// The nodes `node` watches: the `monitors` after it on the ring.
    pub fn watched_by(&self, node: &NodeName) -> Vec<&NodeName> {
        self.around(node, |start, step, len| (start + step) % len, 0)
    }

    /// The nodes that watch `node`, on the ring or not: the `monitors` before its place.
    pub fn watchers_of(&self, node: &NodeName) -> Vec<&NodeName> {
        self.around(node, |start, step, len| (start + len - 1 - step) % len, 1)
    }

    /// The `monitors` nodes other than `node` met walking the ring from its place (`place`
    /// gives the index of the step-th), `node` itself skipped; `before` is 1 when walking
    /// backwards (the place is the index of the first node after `node`).
    fn around(
        &self,
        node: &NodeName,
        place: impl Fn(usize, usize, usize) -> usize,
        before: usize,
    ) -> Vec<&NodeName> {
        let id = node.id();
        let len = self.ring.len();
        let on_ring = self
            .ring
            .binary_search_by(|(other, name)| other.cmp(&id).then_with(|| name.cmp(node)));
        let others = len - usize::from(on_ring.is_ok());
        let count = self.monitors.min(others);
        // Walking forwards starts after `node`; backwards, before it.
        let start = match on_ring {
            Ok(at) => at + 1 - before,
            Err(at) => at,
        };
        let mut found = Vec::with_capacity(count);
        let mut step = 0;
        while found.len() < count {
            let (_, name) = &self.ring[place(start, step, len)];
            if name != node {
                found.push(name);
            }
            step += 1;
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<NodeName> {
        (0..n)
            .map(|i| NodeName::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn each_node_watches_k_others_and_is_watched_by_k_others() {
        let nodes = names(20);
        let ring = MonitorRing::new(nodes.clone(), 5);
        for node in &nodes {
            let watched = ring.watched_by(node);
            assert_eq!(watched.len(), 5);
            assert!(!watched.contains(&node));
            let watchers = ring.watchers_of(node);
            assert_eq!(watchers.len(), 5);
            for watcher in watchers {
                assert!(
                    ring.watched_by(watcher).contains(&node),
                    "{watcher} watches {node}"
                );
            }
        }
    }

    #[test]
    fn a_small_cluster_watches_everyone_and_no_one_watches_itself() {
        let nodes = names(3);
        let ring = MonitorRing::new(nodes.clone(), 5);
        for node in &nodes {
            assert_eq!(ring.watched_by(node).len(), 2);
            assert_eq!(ring.watchers_of(node).len(), 2);
        }
        let alone = MonitorRing::new(nodes[..1].to_vec(), 5);
        assert!(alone.watched_by(&nodes[0]).is_empty());
        assert!(alone.watchers_of(&nodes[0]).is_empty());
    }

    #[test]
    fn a_node_off_the_ring_keeps_the_watchers_it_had_on_it() {
        let nodes = names(12);
        let ring = MonitorRing::new(nodes.clone(), 5);
        let without = MonitorRing::new(nodes.iter().filter(|n| **n != nodes[4]).cloned(), 5);
        assert_eq!(ring.watchers_of(&nodes[4]), without.watchers_of(&nodes[4]));
    }

    #[test]
    fn a_majority_of_the_watchers_is_needed() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(5), 3);
        assert_eq!(quorum(9), 5);
    }
}

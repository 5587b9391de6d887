//! Identities: who a node is ([`NodeName`], [`NodeId`], [`Incarnation`]) and how a process is
//! addressed anywhere in the cluster ([`Pid`]). The handshake exchanges names and incarnations;
//! the wire carries pids; the runtime keys its tables by them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The longest node name accepted, in bytes (Erlang's atoms stop at 255 too).
pub const MAX_NODE_NAME_LEN: usize = 255;

/// A node's name, unique within a cluster: 1 to 255 bytes of ASCII letters, digits and `-_.@:`.
///
/// Names are validated when built and when decoded from a peer, so the rest of the system never
/// sees an empty or unprintable one. A name is shared, not copied: the view, the tables and the
/// messages hold one name many times, and a clone costs a reference count. Two clones of one
/// name compare equal without reading their text (the view's link matrices compare names n² times
/// per settling of its groups, mostly clones of the names it holds).
#[derive(Clone)]
pub struct NodeName(Arc<str>);

impl std::hash::Hash for NodeName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for NodeName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for NodeName {}

impl PartialOrd for NodeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

/// A string that is not a valid [`NodeName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid node name {name:?}: use 1 to 255 ASCII letters, digits or '-', '_', '.', '@', ':'"
)]
pub struct InvalidNodeName {
    /// The refused name (cut to 64 characters).
    pub name: String,
}

impl NodeName {
    /// Validates `name`.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidNodeName> {
        let name = name.as_ref();
        let valid = !name.is_empty()
            && name.len() <= MAX_NODE_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            Err(InvalidNodeName {
                name: name.chars().take(64).collect(),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The compact id that pids carry for this name.
    pub fn id(&self) -> NodeId {
        NodeId::of(self)
    }
}

impl TryFrom<String> for NodeName {
    type Error = InvalidNodeName;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0.as_ref().to_owned()
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = NodeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<NodeName, E> {
                NodeName::new(name).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl std::str::FromStr for NodeName {
    type Err = InvalidNodeName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A fixed-size id derived from a [`NodeName`] (the first 8 bytes of its SHA-256), so that a
/// [`Pid`] is `Copy` and 24 bytes. The handshake refuses a peer whose id collides with another
/// connected node's, so within one cluster an id names one node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of `name`; every node computes the same one.
    pub fn of(name: &NodeName) -> Self {
        let digest = Sha256::new()
            .chain_update(b"gen_cluster node id\0")
            .chain_update(name.as_str().as_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(head))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:016x})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which life of a node this is: new at every start (the runtime uses the start time in
/// nanoseconds since the Unix epoch, so a later start has a larger incarnation unless the clock
/// went back). Pids carry it, so a message to a process of an earlier life is refused instead of
/// reaching a process of the new one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A process address, the same whether the process lives on this node or another: the node's id,
/// the node's incarnation, and the process's number on that node (never reused within an
/// incarnation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid {
    /// The node the process runs on.
    pub node: NodeId,
    /// The life of that node the process belongs to.
    pub incarnation: Incarnation,
    /// The process's number on its node, from 1.
    pub local: u64,
}

impl Pid {
    /// Whether this process belongs to the node `node` in its life `incarnation`.
    pub fn is_of(&self, node: NodeId, incarnation: Incarnation) -> bool {
        self.node == node && self.incarnation == incarnation
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{:08x}.{}.{}>",
            self.node.0 >> 32,
            self.local,
            self.incarnation.0 % 1_000_000
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn node_names_refuse_empty_long_and_odd_characters() {
        assert!(NodeName::new("").is_err());
        assert!(NodeName::new("a b").is_err());
        assert!(NodeName::new("é").is_err());
        assert!(NodeName::new("x".repeat(256)).is_err());
        assert!(NodeName::new("x".repeat(255)).is_ok());
        assert!(NodeName::new("app@host-1.example:4370").is_ok());
    }

    #[test]
    fn node_names_compare_by_their_text_whether_shared_or_not() {
        let a = NodeName::new("a@host").unwrap();
        let b = NodeName::new("b@host").unwrap();
        let a_again = NodeName::new("a@host").unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(a, a_again);
        assert_eq!(a.cmp(&a_again), std::cmp::Ordering::Equal);
        assert_eq!(a.cmp(&a.clone()), std::cmp::Ordering::Equal);
        assert_eq!(a.cmp(&b), std::cmp::Ordering::Less);
        assert_eq!(b.cmp(&a.clone()), std::cmp::Ordering::Greater);
        assert_ne!(a, b);
        let set = std::collections::BTreeSet::from([b.clone(), a.clone(), a_again]);
        assert_eq!(set.into_iter().collect::<Vec<_>>(), [a, b]);
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let a = NodeName::new("a").unwrap();
        let b = NodeName::new("b").unwrap();
        assert_eq!(a.id(), NodeName::new("a").unwrap().id());
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn decoding_a_node_name_validates_it() {
        let bytes = postcard::to_allocvec(&"bad name").unwrap();
        assert!(postcard::from_bytes::<NodeName>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"good").unwrap();
        assert_eq!(
            postcard::from_bytes::<NodeName>(&bytes).unwrap().as_str(),
            "good"
        );
    }
}

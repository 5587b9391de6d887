//! The global dictionary: a replicated key-value map on the gen_leader behaviour. Writes go to
//! the leader ([`Leader::leader_call`](crate::Leader::leader_call)), which stamps them and
//! broadcasts them; every node reads its own copy. When a partition heals, the leaders' copies
//! are merged key by key, the later stamp winning, so the writes of both sides survive; a
//! deleted key is kept as a tombstone so that a merge does not bring it back.
//!
//! In the `majority` election mode there is no merge: a minority side has no leader and takes no
//! write, and a write's answer comes once a quorum of the voters holds it (see `crate::leader`).
//!
//! Reads are answered by the local copy, or by the leader's ([`Request::Get`]): in the
//! `majority` mode the leader answers once a quorum of voters has confirmed it still leads, so
//! such a read sees every write acknowledged before it began (a linearizable read).
//!
//! Costs: a write is one leader call and one broadcast to each of the n−1 members; a local read
//! is a local call, a read through the leader one leader call (and, in the `majority` mode, one
//! confirmation round shared by the reads that arrive together); a new member receives the
//! whole map once. Tombstones stay until the process ends.

use std::collections::BTreeMap;

use gen_cluster_proto::NodeName;
use serde::{Deserialize, Serialize};

use crate::leader::{ElectionId, LeaderFlow, LeaderReplyTo, LeaderServer, LeaderStatus};

/// The election name the CLI's nodes run the dictionary under.
pub const ELECTION: &str = "dict";

/// When a value was written: the leader's write counter, then the leader's name, so that
/// any two writes are ordered the same way on every node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Above every stamp the writing leader had seen.
    pub counter: u64,
    /// The leader that wrote.
    pub leader: NodeName,
}

/// A key's value (`None`: deleted) and its stamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value, or `None` once deleted.
    pub value: Option<String>,
    /// When it was written.
    pub stamp: Stamp,
}

/// Writes, sent to the leader by a leader call (as [`Request::Write`]) or a leader cast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Sets a key.
    Put(String, String),
    /// Deletes a key.
    Delete(String),
}

/// What a leader call asks of the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A write.
    Write(Write),
    /// A read of one key in the leader's copy: in the `majority` mode, a linearizable read.
    Get(String),
}

impl From<Write> for Request {
    fn from(write: Write) -> Self {
        Self::Write(write)
    }
}

/// Reads, answered by the local copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Read {
    /// One key.
    Get(String),
    /// Every key and value.
    List,
}

/// Answers to reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadReply {
    /// The value of the key, if set.
    Value(Option<String>),
    /// Every key and value, in key order.
    All(Vec<(String, String)>),
}

/// What the leader sends its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// One key was written.
    Set(String, Entry),
    /// The whole map, after a merge.
    All(BTreeMap<String, Entry>),
}

/// One node's copy of the dictionary.
#[derive(Debug, Default)]
pub struct Dict {
    entries: BTreeMap<String, Entry>,
    counter: u64,
}

impl Dict {
    /// The value of `key` in this copy.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key)?.value.as_deref()
    }

    fn set(&mut self, key: String, entry: Entry) {
        self.counter = self.counter.max(entry.stamp.counter);
        self.entries.insert(key, entry);
    }

    fn replace(&mut self, entries: BTreeMap<String, Entry>) {
        self.counter = entries
            .values()
            .map(|e| e.stamp.counter)
            .fold(self.counter, u64::max);
        self.entries = entries;
    }

    /// Takes every entry of `theirs` whose stamp is later than ours.
    fn merge_entries(&mut self, theirs: BTreeMap<String, Entry>) {
        for (key, entry) in theirs {
            let newer = self
                .entries
                .get(&key)
                .is_none_or(|ours| entry.stamp > ours.stamp);
            if newer {
                self.set(key, entry);
            }
        }
    }
}

impl LeaderServer for Dict {
    type State = BTreeMap<String, Entry>;
    type Call = Request;
    /// The key's value once the request was carried out (`None`: not set). The term of the
    /// leader that answered comes with it from
    /// [`leader_call_with_term`](crate::Leader::leader_call_with_term).
    type Reply = Option<String>;
    type Cast = Write;
    type Broadcast = Change;
    type LocalCall = Read;
    type LocalReply = ReadReply;
    type LocalCast = ();

    fn elected(&mut self, _: &ElectionId, _: Option<&NodeName>) -> Self::State {
        self.entries.clone()
    }

    fn surrendered(&mut self, state: Self::State, _: &ElectionId) {
        self.replace(state);
    }

    fn handle_leader_call(
        &mut self,
        request: Request,
        from: LeaderReplyTo<Self>,
        election: &ElectionId,
    ) -> LeaderFlow<Change> {
        let (key, flow) = match request {
            Request::Write(write) => {
                let key = match &write {
                    Write::Put(key, _) | Write::Delete(key) => key.clone(),
                };
                (key, self.handle_leader_cast(write, election))
            }
            Request::Get(key) => (key, LeaderFlow::Continue),
        };
        from.reply(self.get(&key).map(str::to_string));
        flow
    }

    fn handle_leader_cast(&mut self, request: Write, election: &ElectionId) -> LeaderFlow<Change> {
        let (key, value) = match request {
            Write::Put(key, value) => (key, Some(value)),
            Write::Delete(key) => (key, None),
        };
        self.counter += 1;
        let entry = Entry {
            value,
            stamp: Stamp {
                counter: self.counter,
                leader: election.leader.clone(),
            },
        };
        self.set(key.clone(), entry.clone());
        LeaderFlow::Broadcast(Change::Set(key, entry))
    }

    fn from_leader(&mut self, change: Change, _: &ElectionId) {
        match change {
            Change::Set(key, entry) => self.set(key, entry),
            Change::All(entries) => self.replace(entries),
        }
    }

    fn stepping_down(&mut self, _: &NodeName) -> Self::State {
        self.entries.clone()
    }

    fn merge(&mut self, theirs: Self::State, _: &NodeName, _: &ElectionId) -> LeaderFlow<Change> {
        self.merge_entries(theirs);
        LeaderFlow::Broadcast(Change::All(self.entries.clone()))
    }

    fn handle_call(&mut self, request: Read, _: &LeaderStatus) -> ReadReply {
        match request {
            Read::Get(key) => ReadReply::Value(self.get(&key).map(str::to_string)),
            Read::List => ReadReply::All(
                self.entries
                    .iter()
                    .filter_map(|(k, e)| Some((k.clone(), e.value.clone()?)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn entry(value: Option<&str>, counter: u64, leader: &str) -> Entry {
        Entry {
            value: value.map(str::to_string),
            stamp: Stamp {
                counter,
                leader: NodeName::new(leader).unwrap(),
            },
        }
    }

    #[test]
    fn a_merge_keeps_both_sides_writes_and_the_later_of_two_writes_to_one_key() {
        let mut ours = Dict::default();
        ours.set("a".into(), entry(Some("1"), 1, "x"));
        ours.set("both".into(), entry(Some("old"), 2, "x"));
        ours.set("gone".into(), entry(Some("v"), 1, "x"));
        let theirs = BTreeMap::from([
            ("b".to_string(), entry(Some("2"), 1, "y")),
            ("both".to_string(), entry(Some("new"), 3, "y")),
            ("gone".to_string(), entry(None, 5, "y")),
        ]);
        ours.merge_entries(theirs);
        assert_eq!(ours.get("a"), Some("1"));
        assert_eq!(ours.get("b"), Some("2"));
        assert_eq!(ours.get("both"), Some("new"));
        assert_eq!(
            ours.get("gone"),
            None,
            "a later delete wins over an older value"
        );
        assert_eq!(
            ours.counter, 5,
            "later writes are stamped after every merged one"
        );
    }
}

//! Fencing by term, for the `majority` mode: wherever a leader's acts land (a database, a file
//! store, a device), remember the highest term seen and refuse anything older, so that a leader
//! deposed while paused cannot act after its successor has. [`super::Leader::term`] and
//! [`super::ElectionId::term`] give the term to attach to each act.

use std::sync::atomic::{AtomicU64, Ordering};

/// The highest term seen by one resource; shared between threads.
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
}

/// An act came with a term older than one the fence has seen: its leader was deposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("term {term} is older than term {highest}, already seen: its leader was deposed")]
pub struct StaleTerm {
    /// The act's term.
    pub term: u64,
    /// The highest term seen.
    pub highest: u64,
}

impl Fence {
    /// A fence that has seen no term.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits an act of `term` if no later term was seen, and remembers `term`.
    pub fn admit(&self, term: u64) -> Result<(), StaleTerm> {
        let highest = self.highest.fetch_max(term, Ordering::AcqRel);
        match term < highest {
            true => Err(StaleTerm { term, highest }),
            false => Ok(()),
        }
    }

    /// The highest term seen.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_admits_the_same_or_later_terms_and_refuses_older_ones() {
        let fence = Fence::new();
        assert_eq!(fence.admit(3), Ok(()));
        assert_eq!(fence.admit(3), Ok(()), "the same leader acts again");
        assert_eq!(
            fence.admit(2),
            Err(StaleTerm {
                term: 2,
                highest: 3
            })
        );
        assert_eq!(fence.admit(5), Ok(()));
        assert_eq!(fence.highest(), 5);
        assert!(
            fence.admit(4).is_err(),
            "a refused term does not lower the fence"
        );
    }
}

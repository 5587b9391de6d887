//! Admission of incoming connections before they prove the secret. Every accepted connection
//! takes a place in a bounded pool until its dialer's proof verifies; the pool is bounded in total
//! and per source address. When a bound is reached, a newcomer is not turned away: the oldest
//! place is taken back (its connection closed), first among connections that have not even sent
//! a Hello, then among those waiting for their proof — so a flood of silent or stalling sockets
//! cannot keep a real peer out, whose handshake needs only a few round trips. Each place is also
//! bounded in time by the handshake's own deadline for proving the secret.
//!
//! Cost: O(pool size) to find the place to take back, once per connection over a bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::lock;

/// The pool of connections not yet authenticated.
#[derive(Debug)]
pub(crate) struct Admission {
    total: usize,
    per_source: usize,
    pool: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    places: VecDeque<Place>,
    next: u64,
}

#[derive(Debug)]
struct Place {
    id: u64,
    source: String,
    greeted: bool,
    evict: CancellationToken,
}

/// Why a place was taken back from a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Crowded {
    /// The pool was full.
    Total,
    /// Its source had too many connections in the pool.
    Source,
}

/// A connection's place in the pool; freed when dropped, or when its dialer is authenticated.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
}

impl Admission {
    /// A pool of at most `total` connections, at most `per_source` from one source address.
    pub(crate) fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: total.max(1),
            per_source: per_source.max(1),
            pool: Mutex::default(),
        }
    }

    /// Admits a connection from `source` (its address: `host:port`, the host counts), taking
    /// a place back from another connection when a bound is reached; returns its place and
    /// why a place was taken back, if one was.
    pub(crate) fn admit(self: &Arc<Self>, source: &str) -> (Ticket, Option<Crowded>) {
        let source = host_of(source).to_string();
        let mut pool = lock(&self.pool);
        let from_source = pool.places.iter().filter(|p| p.source == source).count();
        let crowded = if from_source >= self.per_source {
            Some(Crowded::Source)
        } else if pool.places.len() >= self.total {
            Some(Crowded::Total)
        } else {
            None
        };
        if let Some(crowded) = crowded {
            let same = |p: &Place| crowded == Crowded::Total || p.source == source;
            let victim = pool
                .places
                .iter()
                .position(|p| same(p) && !p.greeted)
                .or_else(|| pool.places.iter().position(same));
            if let Some(victim) = victim.and_then(|at| pool.places.remove(at)) {
                victim.evict.cancel();
            }
        }
        pool.next += 1;
        let id = pool.next;
        let evicted = CancellationToken::new();
        pool.places.push_back(Place {
            id,
            source,
            greeted: false,
            evict: evicted.clone(),
        });
        let place = Ticket {
            admission: Arc::clone(self),
            id,
            evicted,
        };
        (place, crowded)
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Pool, usize)) {
        let mut pool = lock(&self.pool);
        if let Some(at) = pool.places.iter().position(|p| p.id == id) {
            change(&mut pool, at);
        }
    }

    /// How many connections hold a place.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.pool).places.len()
    }
}

impl Ticket {
    /// The connection sent a well-formed Hello: it is taken back only after silent ones.
    pub(crate) fn greeted(&self) {
        self.admission
            .update(self.id, |pool, at| pool.places[at].greeted = true);
    }

    /// Resolves when the place was taken back for a newer connection.
    pub(crate) fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evicted.clone().cancelled_owned()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.update(self.id, |pool, at| {
            pool.places.remove(at);
        });
    }
}

/// The host part of `host:port` (`[v6]:port` too); the whole string when it has no port.
fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_takes_back_the_oldest_silent_place_first() {
        let admission = Arc::new(Admission::new(3, 3));
        let (first, _) = admission.admit("10.0.0.1:1");
        let (second, _) = admission.admit("10.0.0.2:1");
        let (third, _) = admission.admit("10.0.0.3:1");
        first.greeted();
        let (_fourth, crowded) = admission.admit("10.0.0.4:1");
        assert_eq!(crowded, Some(Crowded::Total));
        assert!(
            !first.evicted.is_cancelled(),
            "a greeted connection is kept"
        );
        assert!(
            second.evicted.is_cancelled(),
            "the oldest silent one is taken back"
        );
        assert!(!third.evicted.is_cancelled());
        assert_eq!(admission.len(), 3);
    }

    #[test]
    fn one_source_cannot_hold_more_than_its_share() {
        let admission = Arc::new(Admission::new(10, 2));
        let (other, _) = admission.admit("10.0.0.9:1");
        let (a1, _) = admission.admit("10.0.0.1:1");
        let (_a2, _) = admission.admit("10.0.0.1:2");
        let (_a3, crowded) = admission.admit("10.0.0.1:3");
        assert_eq!(crowded, Some(Crowded::Source));
        assert!(
            a1.evicted.is_cancelled(),
            "its own oldest place is taken back"
        );
        assert!(!other.evicted.is_cancelled(), "other sources keep theirs");
    }

    #[test]
    fn a_place_is_freed_when_dropped() {
        let admission = Arc::new(Admission::new(2, 2));
        let (place, _) = admission.admit("[::1]:5");
        assert_eq!(admission.len(), 1);
        drop(place);
        assert_eq!(admission.len(), 0);
        assert_eq!(host_of("[::1]:5"), "::1");
        assert_eq!(host_of("a:7"), "a");
    }
}

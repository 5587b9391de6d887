//! The runtime's clock and randomness, in one place. Time is tokio's, so that paused and simulated
//! time (`tokio::time::pause`) drive every protocol machine; randomness comes from the OS and is
//! only ever handed to the machines as a value (a nonce, a seed), never drawn inside them.
//!
//! Used by the distribution layer (handshake nonces, liveness), the services (election timers,
//! discovery backoff seeds) and the node (its incarnation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gen_cluster_proto::Incarnation;
use gen_cluster_proto::handshake::Nonce;

/// Now, on tokio's clock (paused in tests that pause it).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A fixed instant that lets a moment be stored in an [`AtomicU64`] as nanoseconds after it, so
/// that one task can note when it last heard a peer and another read it without a lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    /// The epoch is now.
    pub(crate) fn start() -> Self {
        Self(now())
    }

    /// Stores `at` in `cell`.
    pub(crate) fn store(&self, cell: &AtomicU64, at: Instant) {
        let nanos = at.saturating_duration_since(self.0).as_nanos();
        cell.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `at` as nanoseconds since the epoch, to send and get back (a ping's stamp).
    pub(crate) fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long before `now` the `stamp` was made; none for a stamp from the future (not one
    /// this epoch made).
    pub(crate) fn since(&self, now: Instant, stamp: u64) -> Option<Duration> {
        let at = self.0.checked_add(Duration::from_nanos(stamp))?;
        now.checked_duration_since(at)
    }

    /// The instant stored in `cell` (the epoch itself if nothing was stored).
    pub(crate) fn load(&self, cell: &AtomicU64) -> Instant {
        self.0 + Duration::from_nanos(cell.load(Ordering::Relaxed))
    }
}

/// A fresh handshake nonce from the OS's random source.
pub(crate) fn nonce() -> Nonce {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    nonce
}

/// A seed for a machine's own deterministic random stream (backoff jitter).
pub(crate) fn seed() -> u64 {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    u64::from_le_bytes(seed)
}

/// The incarnation of a node starting now: the wall clock in nanoseconds, so that a node
/// restarted under the same name has a later one than its earlier life.
pub(crate) fn incarnation() -> Incarnation {
    Incarnation(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            }),
    )
}

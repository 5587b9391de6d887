//! The failure detector of one connection. A connection reset is noticed by the runtime at once;
//! this machine catches the silent failures — a hung or stopped peer, a blackholed link — whose
//! kernel keeps the TCP connection open. A node that *watches* its peer declares it down once it
//! has heard no frame at all from it during [`LivenessConfig::down_after`]; a node whose peer
//! asked for *heartbeats* sends one whenever it has sent nothing for
//! [`LivenessConfig::heartbeat_interval`].
//!
//! Between members both are off until asked for: each member watches only the few peers the
//! monitor ring gives it (`monitor_ring`), so an idle cluster's heartbeats grow with the number of
//! nodes, not its square. Links to hidden nodes and to peers of older versions watch and
//! heartbeat both ways from the start ([`Liveness::new`]).
//!
//! Inputs: `handle_heard` (any frame arrived), `handle_sent` (any frame left), the two switches.
//! Outputs: [`Liveness::poll`] returns what is due at `now`, [`Liveness::poll_timeout`] when to
//! ask next. Cost: O(1) per frame and per timer, at most one timer per connection.

use std::time::{Duration, Instant};

/// Failure detector settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Send a heartbeat after this long without sending anything. Default 200 ms: five chances to
    /// be heard within the default deadline, at a cost of five small frames a second per idle link.
    pub heartbeat_interval: Duration,
    /// Declare a silent peer down after this long without a frame. Default 1 s: a hung peer is
    /// noticed within a second, while a busy 2-core machine pausing a few hundred ms is not.
    pub down_after: Duration,
    /// How many members watch each member (see `monitor_ring`). Default 5: a hang is declared
    /// when 3 of them lost the node.
    pub monitors: usize,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            down_after: Duration::from_secs(1),
            monitors: crate::monitor_ring::DEFAULT_MONITORS,
        }
    }
}

/// The refused [`LivenessConfig`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LivenessConfigError {
    /// A zero duration cannot be honoured.
    #[error("heartbeat_interval, down_after and monitors must be greater than zero")]
    Zero,
    /// Heartbeats must come often enough for a live peer to be heard before the deadline.
    #[error(
        "heartbeat_interval ({heartbeat_interval:?}) must be at most half of down_after ({down_after:?})"
    )]
    HeartbeatTooSlow {
        /// The configured interval.
        heartbeat_interval: Duration,
        /// The configured deadline.
        down_after: Duration,
    },
}

impl LivenessConfig {
    /// Checks that a live peer can be heard before the deadline.
    pub fn validate(&self) -> Result<(), LivenessConfigError> {
        if self.heartbeat_interval.is_zero() || self.down_after.is_zero() || self.monitors == 0 {
            return Err(LivenessConfigError::Zero);
        }
        if self.heartbeat_interval * 2 > self.down_after {
            return Err(LivenessConfigError::HeartbeatTooSlow {
                heartbeat_interval: self.heartbeat_interval,
                down_after: self.down_after,
            });
        }
        Ok(())
    }
}

/// What the detector wants done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum LivenessAction {
    /// Send a heartbeat frame.
    SendHeartbeat,
    /// Nothing heard for `silent_for`: the peer is down; close the connection.
    Down {
        /// How long the peer has been silent.
        silent_for: Duration,
    },
}

/// The detector of one connection.
#[derive(Debug)]
pub struct Liveness {
    config: LivenessConfig,
    last_heard: Instant,
    last_sent: Instant,
    /// Whether a silent peer is declared down.
    watching: bool,
    /// Whether heartbeats go out when idle.
    heartbeats: bool,
    down: bool,
}

impl Liveness {
    /// A detector for a connection established at `now` that watches the peer and sends it
    /// heartbeats.
    pub fn new(config: LivenessConfig, now: Instant) -> Self {
        Self {
            config,
            last_heard: now,
            last_sent: now,
            watching: true,
            heartbeats: true,
            down: false,
        }
    }

    /// A detector for a connection established at `now` that neither watches nor heartbeats
    /// until told to.
    pub fn quiet(config: LivenessConfig, now: Instant) -> Self {
        Self {
            watching: false,
            heartbeats: false,
            ..Self::new(config, now)
        }
    }

    /// Starts (at `now`: the peer has the whole deadline from here to be heard) or stops
    /// watching the peer.
    pub fn set_watching(&mut self, on: bool, now: Instant) {
        if on && !self.watching {
            self.last_heard = self.last_heard.max(now);
        }
        self.watching = on;
    }

    /// Starts or stops sending heartbeats when idle.
    pub fn set_heartbeats(&mut self, on: bool) {
        self.heartbeats = on;
    }

    /// Whether the peer is watched.
    pub fn watching(&self) -> bool {
        self.watching
    }

    /// A frame arrived at `at`.
    pub fn handle_heard(&mut self, at: Instant) {
        self.last_heard = self.last_heard.max(at);
    }

    /// A frame was sent at `at`.
    pub fn handle_sent(&mut self, at: Instant) {
        self.last_sent = self.last_sent.max(at);
    }

    /// When [`poll`](Self::poll) next has something to do; `None` while it neither watches nor
    /// heartbeats.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self
            .heartbeats
            .then(|| self.last_sent + self.config.heartbeat_interval);
        let deadline = self
            .watching
            .then(|| self.last_heard + self.config.down_after);
        match (heartbeat, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`. A down verdict is given once; after it the detector is silent.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessAction> {
        if self.down {
            return None;
        }
        let silent_for = now.saturating_duration_since(self.last_heard);
        if self.watching && silent_for >= self.config.down_after {
            self.down = true;
            return Some(LivenessAction::Down { silent_for });
        }
        if self.heartbeats && now >= self.last_sent + self.config.heartbeat_interval {
            self.last_sent = now;
            return Some(LivenessAction::SendHeartbeat);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> LivenessConfig {
        LivenessConfig {
            heartbeat_interval: 100 * MS,
            down_after: 500 * MS,
            monitors: 5,
        }
    }

    #[test]
    fn an_idle_link_sends_a_heartbeat_each_interval() {
        let t0 = Instant::now();
        let mut d = Liveness::new(config(), t0);
        assert_eq!(d.poll_timeout(), Some(t0 + 100 * MS));
        assert_eq!(d.poll(t0 + 99 * MS), None);
        assert_eq!(d.poll(t0 + 100 * MS), Some(LivenessAction::SendHeartbeat));
        assert_eq!(d.poll(t0 + 150 * MS), None);
        assert_eq!(d.poll_timeout(), Some(t0 + 200 * MS));
    }

    #[test]
    fn a_busy_link_sends_no_heartbeat() {
        let t0 = Instant::now();
        let mut d = Liveness::new(config(), t0);
        for i in 1..20 {
            let now = t0 + i * 50 * MS;
            d.handle_sent(now);
            d.handle_heard(now);
            assert_eq!(d.poll(now), None);
        }
    }

    #[test]
    fn a_silent_peer_is_declared_down_once_at_the_deadline() {
        let t0 = Instant::now();
        let mut d = Liveness::new(config(), t0);
        d.handle_heard(t0 + 100 * MS);
        d.handle_sent(t0 + 550 * MS);
        assert_eq!(d.poll(t0 + 599 * MS), None);
        assert_eq!(d.poll_timeout(), Some(t0 + 600 * MS));
        assert_eq!(
            d.poll(t0 + 600 * MS),
            Some(LivenessAction::Down {
                silent_for: 500 * MS
            })
        );
        assert_eq!(d.poll(t0 + 700 * MS), None);
    }

    #[test]
    fn a_quiet_link_sends_nothing_and_declares_nothing_until_told() {
        let t0 = Instant::now();
        let mut d = Liveness::quiet(config(), t0);
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.poll(t0 + 10_000 * MS), None);
        // Watching starts the deadline now, not when the link came up.
        d.set_watching(true, t0 + 10_000 * MS);
        assert_eq!(d.poll_timeout(), Some(t0 + 10_500 * MS));
        assert_eq!(d.poll(t0 + 10_499 * MS), None);
        assert!(matches!(
            d.poll(t0 + 10_500 * MS),
            Some(LivenessAction::Down { .. })
        ));
        let mut d = Liveness::quiet(config(), t0);
        d.set_heartbeats(true);
        assert_eq!(d.poll(t0 + 100 * MS), Some(LivenessAction::SendHeartbeat));
        d.set_heartbeats(false);
        assert_eq!(d.poll(t0 + 10_000 * MS), None);
    }

    #[test]
    fn hearing_late_news_never_moves_time_back() {
        let t0 = Instant::now();
        let mut d = Liveness::new(config(), t0 + 300 * MS);
        d.handle_heard(t0);
        assert_eq!(d.poll(t0 + 700 * MS), Some(LivenessAction::SendHeartbeat));
        assert!(matches!(
            d.poll(t0 + 800 * MS),
            Some(LivenessAction::Down { .. })
        ));
    }

    #[test]
    fn configs_that_cannot_hear_a_live_peer_are_refused() {
        assert!(LivenessConfig::default().validate().is_ok());
        let slow = LivenessConfig {
            heartbeat_interval: 600 * MS,
            down_after: 1000 * MS,
            monitors: 5,
        };
        assert!(matches!(
            slow.validate(),
            Err(LivenessConfigError::HeartbeatTooSlow { .. })
        ));
        let zero = LivenessConfig {
            heartbeat_interval: Duration::ZERO,
            down_after: 1000 * MS,
            monitors: 5,
        };
        assert_eq!(zero.validate(), Err(LivenessConfigError::Zero));
        let no_monitors = LivenessConfig {
            monitors: 0,
            ..LivenessConfig::default()
        };
        assert_eq!(no_monitors.validate(), Err(LivenessConfigError::Zero));
    }
}

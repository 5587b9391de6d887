//! The failure detector of one connection. A connection reset is noticed by the runtime at once;
//! this machine catches the silent failures — a hung or stopped peer, a blackholed link — whose
//! kernel keeps the TCP connection open. The peer sends a heartbeat whenever it has sent nothing
//! for [`LivenessConfig::heartbeat_interval`]; a peer heard from for no frame at all during
//! [`LivenessConfig::down_after`] is declared down.
//!
//! Inputs: `handle_heard` (any frame arrived), `handle_sent` (any frame left). Outputs:
//! [`Liveness::poll`] returns what is due at `now`, [`Liveness::poll_timeout`] when to ask next.
//! Cost: O(1) per frame and per timer, one timer per connection.

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
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            down_after: Duration::from_secs(1),
        }
    }
}

/// The refused [`LivenessConfig`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LivenessConfigError {
    /// A zero duration cannot be honoured.
    #[error("heartbeat_interval and down_after must be greater than zero")]
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
        if self.heartbeat_interval.is_zero() || self.down_after.is_zero() {
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
    down: bool,
}

impl Liveness {
    /// A detector for a connection established at `now`.
    pub fn new(config: LivenessConfig, now: Instant) -> Self {
        Self {
            config,
            last_heard: now,
            last_sent: now,
            down: false,
        }
    }

    /// A frame arrived at `at`.
    pub fn handle_heard(&mut self, at: Instant) {
        self.last_heard = self.last_heard.max(at);
    }

    /// A frame was sent at `at`.
    pub fn handle_sent(&mut self, at: Instant) {
        self.last_sent = self.last_sent.max(at);
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn poll_timeout(&self) -> Instant {
        (self.last_sent + self.config.heartbeat_interval)
            .min(self.last_heard + self.config.down_after)
    }

    /// What is due at `now`. A down verdict is given once; after it the detector is silent.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessAction> {
        if self.down {
            return None;
        }
        let silent_for = now.saturating_duration_since(self.last_heard);
        if silent_for >= self.config.down_after {
            self.down = true;
            return Some(LivenessAction::Down { silent_for });
        }
        if now >= self.last_sent + self.config.heartbeat_interval {
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
        }
    }

    #[test]
    fn an_idle_link_sends_a_heartbeat_each_interval() {
        let t0 = Instant::now();
        let mut d = Liveness::new(config(), t0);
        assert_eq!(d.poll_timeout(), t0 + 100 * MS);
        assert_eq!(d.poll(t0 + 99 * MS), None);
        assert_eq!(d.poll(t0 + 100 * MS), Some(LivenessAction::SendHeartbeat));
        assert_eq!(d.poll(t0 + 150 * MS), None);
        assert_eq!(d.poll_timeout(), t0 + 200 * MS);
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
        assert_eq!(d.poll_timeout(), t0 + 600 * MS);
        assert_eq!(
            d.poll(t0 + 600 * MS),
            Some(LivenessAction::Down {
                silent_for: 500 * MS
            })
        );
        assert_eq!(d.poll(t0 + 700 * MS), None);
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
        };
        assert!(matches!(
            slow.validate(),
            Err(LivenessConfigError::HeartbeatTooSlow { .. })
        ));
        let zero = LivenessConfig {
            heartbeat_interval: Duration::ZERO,
            down_after: 1000 * MS,
        };
        assert_eq!(zero.validate(), Err(LivenessConfigError::Zero));
    }
}

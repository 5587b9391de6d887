//! Log lines that peers could multiply at will (refused connections, failed handshakes): at most
//! one line per cause per second, each telling how many were held back since the last one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::now;
use crate::lock;

/// How often one cause may log.
const EVERY: Duration = Duration::from_secs(1);

/// Per cause, when it last logged and how many lines were held back since.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    causes: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Throttle {
    /// Whether a line for `cause` may be written now; if so, how many were held back since the
    /// last one.
    pub(crate) fn allow(&self, cause: &'static str) -> Option<u64> {
        let now = now();
        let mut causes = lock(&self.causes);
        match causes.get_mut(cause) {
            Some((last, held_back)) if now.saturating_duration_since(*last) < EVERY => {
                *held_back += 1;
                None
            }
            Some((last, held_back)) => {
                *last = now;
                Some(std::mem::take(held_back))
            }
            None => {
                causes.insert(cause, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_cause_per_second_with_the_count_held_back() {
        let throttle = Throttle::default();
        assert_eq!(throttle.allow("a"), Some(0));
        assert_eq!(throttle.allow("a"), None);
        assert_eq!(throttle.allow("a"), None);
        assert_eq!(throttle.allow("b"), Some(0), "causes are counted apart");
        tokio::time::sleep(EVERY).await;
        assert_eq!(throttle.allow("a"), Some(2));
    }
}

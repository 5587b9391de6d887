//! Accepts connections until the node shuts down. Each connection is opened (for TLS: its TLS
//! handshake) and runs its handshake in a task of its own, with a place in the admission pool
//! (see `admission`): the pool of connections that have not yet proved the secret is bounded
//! in total and per source, and a newcomer takes the place of the oldest one rather than being
//! turned away, so silent dialers cannot starve real peers. Log
//! lines about crowding are held back to one per second per cause.

use std::sync::Arc;
use std::time::Duration;

use crate::dist::admission::{Admission, Crowded};
use crate::dist::{Dist, handshake};
use crate::transport::{Side, Transport};

/// Starts the accept loop of `dist` on `listener`.
pub(crate) fn start<T: Transport>(dist: &Arc<Dist>, transport: Arc<T>, listener: T::Listener) {
    let config = &dist.config;
    let admission = Arc::new(Admission::new(
        config.max_pending_handshakes,
        config.max_pending_per_source,
    ));
    let span = tracing::info_span!("listener", addr = %dist.local.listen);
    dist.tasks.spawn(
        span,
        accept_loop(Arc::clone(dist), transport, listener, admission),
    );
}

async fn accept_loop<T: Transport>(
    dist: Arc<Dist>,
    transport: Arc<T>,
    mut listener: T::Listener,
    admission: Arc<Admission>,
) {
    loop {
        let accepted = tokio::select! {
            _ = dist.tasks.stopping() => return,
            accepted = transport.accept(&mut listener) => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let (ticket, crowded) = admission.admit(&remote);
                if let Some(crowded) = crowded {
                    let cause = match crowded {
                        Crowded::Total => "too many pending handshakes",
                        Crowded::Source => "too many pending handshakes from one address",
                    };
                    if let Some(held_back) = dist.throttle.allow(cause) {
                        tracing::warn!(%remote, held_back, "{cause}: the oldest one was dropped");
                    }
                }
                let span = tracing::info_span!("accept", %remote);
                let opening = {
                    let transport = Arc::clone(&transport);
                    async move { transport.open(stream, Side::Accepted).await }
                };
                let handshake = handshake::accept(Arc::clone(&dist), opening, remote, ticket);
                dist.tasks.spawn(span, handshake);
            }
            Err(error) => {
                if let Some(held_back) = dist.throttle.allow("accept failed") {
                    tracing::warn!(%error, held_back, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

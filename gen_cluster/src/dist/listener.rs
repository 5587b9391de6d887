//! Accepts connections until the node shuts down. Each handshake runs in a task of its own, at
//! most `max_pending_handshakes` at once: a connection beyond that is closed at once, so that a
//! flood of silent dialers costs each a socket for the handshake deadline and nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::dist::{Dist, handshake};
use crate::transport::Transport;

/// Starts the accept loop of `dist` on `listener`.
pub(crate) fn start<T: Transport>(dist: &Arc<Dist>, transport: Arc<T>, listener: T::Listener) {
    let pending = Arc::new(Semaphore::new(dist.config.max_pending_handshakes));
    let span = tracing::info_span!("listener", addr = %dist.local.listen);
    dist.tasks.spawn(
        span,
        accept_loop(Arc::clone(dist), transport, listener, pending),
    );
}

async fn accept_loop<T: Transport>(
    dist: Arc<Dist>,
    transport: Arc<T>,
    mut listener: T::Listener,
    pending: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            _ = dist.tasks.stopping() => return,
            accepted = transport.accept(&mut listener) => accepted,
        };
        match accepted {
            Ok((read, write, remote)) => match Arc::clone(&pending).try_acquire_owned() {
                Ok(permit) => {
                    let span = tracing::info_span!("accept", %remote);
                    let handshake = handshake::accept(Arc::clone(&dist), read, write, remote);
                    dist.tasks.spawn(span, async move {
                        handshake.await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%remote, "too many handshakes in progress; connection dropped")
                }
            },
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

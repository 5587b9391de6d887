//! Every task a node runs, tracked so that shutdown can drain them, and each inside a tracing span
//! that names it (`proc{pid}`, `link{peer,conn}`, `names`, `leader{election}`, `discovery`…).
//!
//! Two trackers, because shutdown stops them in two steps: the processes first (so that their
//! exits reach remote monitors over links that are still up), then the links and services.
//! Nothing in the runtime calls `tokio::spawn` directly.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

/// The node's task trackers and its shutdown signal. Cheap to clone: clones share them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks {
    processes: TaskTracker,
    services: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    /// Runs a process's task inside `span`.
    pub(crate) fn spawn_process<F>(&self, span: Span, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.processes.spawn(task.instrument(span))
    }

    /// Runs a link's or a service's task inside `span`. It must end once
    /// [`stopping`](Self::stopping) resolves, or shutdown waits for it (boundedly).
    pub(crate) fn spawn<F, T>(&self, span: Span, task: F) -> JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.services.spawn(task.instrument(span))
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// A token cancelled when shutdown begins (or earlier, by its holder).
    pub(crate) fn child_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Begins shutdown; false if it had already begun.
    pub(crate) fn begin_shutdown(&self) -> bool {
        let first = !self.shutdown.is_cancelled();
        self.shutdown.cancel();
        first
    }

    /// Waits, at most `bound`, for every process task to end; true if they all did.
    pub(crate) async fn drain_processes(&self, bound: Duration) -> bool {
        self.processes.close();
        tokio::time::timeout(bound, self.processes.wait())
            .await
            .is_ok()
    }

    /// Waits, at most `bound`, for every link and service task to end; true if they all did.
    pub(crate) async fn drain_services(&self, bound: Duration) -> bool {
        self.services.close();
        tokio::time::timeout(bound, self.services.wait())
            .await
            .is_ok()
    }

    /// How many tasks are still running.
    pub(crate) fn running(&self) -> usize {
        self.processes.len() + self.services.len()
    }
}

//! A node's shutdown ends every task the node started — links, processes, the global-name
//! service, an election instance and its driver, discovery loops and their dials, a deferred
//! reply's timer — and tells its peers it left. Runs over loopback TCP and over the in-memory
//! network in paused time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::time::Duration;

use common::{Net, next_event};
use gen_cluster::services::dict::Dict;
use gen_cluster::services::echo::{Echo, EchoCall};
use gen_cluster::{
    Discovery, DownReason, ExitReason, Leader, LeaderConfig, NodeEvent, ReconcileConfig,
    StaticPeers,
};
use tokio::runtime::Handle;

async fn shutdown_ends_every_task_the_node_started(net: Net) {
    let before = Handle::current().metrics().num_alive_tasks();
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    b.globals()
        .register("echo", echo.pid().unwrap())
        .await
        .unwrap();
    let candidates = vec![a.name().clone(), b.name().clone()];
    for node in [&a, &b] {
        Leader::start(
            node,
            LeaderConfig::new("dict", candidates.clone()),
            Dict::default(),
        )
        .await
        .unwrap();
    }
    let peers = StaticPeers(vec![b.listen_addr().to_string(), "nowhere:1".into()]);
    let _discovery = Discovery::start(&a, peers, ReconcileConfig::default());
    // A reply deferred for longer than the test lasts: its timer task must end too.
    let later = EchoCall::EchoLater {
        payload: vec![],
        delay_ms: 3_600_000,
    };
    let pending = a.call(&echo, later, Duration::from_millis(10)).await;
    assert!(pending.is_err());
    assert!(a.running_tasks() > 0 && b.running_tasks() > 0);

    let mut events = a.subscribe();
    b.shutdown().await;
    let reason = next_event(&mut events, |e| match e {
        NodeEvent::NodeDown { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, DownReason::Left(ExitReason::Shutdown));
    a.shutdown().await;
    assert_eq!(a.running_tasks(), 0, "a's tasks");
    assert_eq!(b.running_tasks(), 0, "b's tasks");
    // No task escaped the nodes' trackers: the runtime runs what it ran before the nodes (a
    // task that just ended is released within a few turns of the scheduler).
    for _ in 0..1000 {
        if Handle::current().metrics().num_alive_tasks() == before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(Handle::current().metrics().num_alive_tasks(), before);
}

on_both_transports!(shutdown_ends_every_task_the_node_started);

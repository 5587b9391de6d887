//! Processes across two nodes in one OS process: calls, casts, deferred replies, monitors, links,
//! crashes, and what a lost node does to them. Each scenario runs over loopback TCP and over the
//! in-memory network in paused time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod common;

use std::time::Duration;

use common::{HANG, Net, next_event};
use gen_cluster::services::echo::{Echo, EchoCall, EchoReply, NAME};
use gen_cluster::{
    CallError, Context, DownReason, ExitReason, Flow, Info, NodeEvent, ReplyTo, Server, ServerRef,
};

const T: Duration = Duration::from_secs(5);

async fn a_remote_call_gets_its_reply_and_a_local_one_too(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn_named(NAME, Echo::default()).await.unwrap();
    let reply = a
        .call(&echo, EchoCall::Echo(b"hi".to_vec()), T)
        .await
        .unwrap();
    assert_eq!(reply, EchoReply::Echo(b"hi".to_vec()));
    let by_name = ServerRef::<Echo>::named(b.name(), NAME);
    assert_eq!(
        a.call(&by_name, EchoCall::Pid, T).await.unwrap(),
        EchoReply::Pid(echo.pid().unwrap())
    );
    assert_eq!(
        b.call(&by_name, EchoCall::Echo(vec![1]), T).await.unwrap(),
        EchoReply::Echo(vec![1])
    );
}

async fn casts_arrive_in_order_before_a_later_call(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    for i in 0..1000u32 {
        a.cast(&echo, i.to_be_bytes().to_vec()).await.unwrap();
    }
    assert_eq!(
        a.call(&echo, EchoCall::CastsSeen, T).await.unwrap(),
        EchoReply::Count(1000)
    );
}

async fn a_deferred_reply_from_another_task_reaches_the_remote_caller(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let later = EchoCall::EchoLater {
        payload: vec![7],
        delay_ms: 50,
    };
    // While the first call waits for its deferred reply, the server keeps serving: the slow
    // call is sent first (a biased select polls it first) and the fast one is answered first.
    let slow = a.call(&echo, later, T);
    tokio::pin!(slow);
    let fast = tokio::select! {
        biased;
        _ = &mut slow => panic!("the deferred reply came before the later call's"),
        fast = a.call(&echo, EchoCall::Echo(vec![8]), T) => fast,
    };
    let slow = slow.await;
    assert_eq!(slow.unwrap(), EchoReply::Echo(vec![7]));
    assert_eq!(fast.unwrap(), EchoReply::Echo(vec![8]));
}

async fn calling_a_missing_process_fails_with_noproc_locally_and_remotely(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let mut watcher = b.mailbox::<()>();
    watcher.monitor(echo.pid().unwrap());
    b.call(&echo, EchoCall::Stop, T).await.unwrap();
    let ended = tokio::time::timeout(HANG, watcher.recv()).await.unwrap();
    assert!(matches!(ended, Some(Info::Down { .. })), "{ended:?}");
    assert_eq!(
        a.call(&echo, EchoCall::Echo(vec![]), T).await,
        Err(CallError::NoProc)
    );
    assert_eq!(
        b.call(&echo, EchoCall::Pid, T).await,
        Err(CallError::NoProc)
    );
    let missing = ServerRef::<Echo>::named(b.name(), "nobody");
    assert_eq!(
        a.call(&missing, EchoCall::Pid, T).await,
        Err(CallError::NoProc)
    );
}

async fn a_crashing_handler_ends_its_process_with_the_panic_and_the_node_lives_on(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let mut watcher = a.mailbox::<()>();
    let reference = watcher.monitor(echo.pid().unwrap());
    assert_eq!(
        a.call(&echo, EchoCall::Crash, T).await,
        Err(CallError::NoReply)
    );
    match tokio::time::timeout(HANG, watcher.recv()).await.unwrap() {
        Some(Info::Down {
            reference: r,
            reason: ExitReason::Error(why),
            ..
        }) => {
            assert_eq!(r, reference);
            assert!(why.contains("crash requested"), "{why}");
        }
        other => panic!("expected DOWN with the panic, got {other:?}"),
    }
    let fresh = b.spawn(Echo::default()).await.unwrap();
    assert_eq!(
        a.call(&fresh, EchoCall::Echo(vec![1]), T).await.unwrap(),
        EchoReply::Echo(vec![1])
    );
}

async fn calls_queued_behind_a_stop_are_refused_at_once(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    // Frames on a link are ordered: the second call waits in the mailbox when the first stops
    // the process; it is refused with noproc, not left to its caller's timeout.
    let (stopped, queued) = tokio::join!(
        a.call(&echo, EchoCall::Stop, T),
        a.call(&echo, EchoCall::Pid, HANG * 2)
    );
    assert_eq!(stopped, Ok(EchoReply::Ok));
    assert_eq!(queued, Err(CallError::NoProc));
    let local = b.spawn(Echo::default()).await.unwrap();
    let (stopped, queued) = tokio::join!(
        b.call(&local, EchoCall::Stop, T),
        b.call(&local, EchoCall::Pid, HANG * 2)
    );
    assert_eq!(stopped, Ok(EchoReply::Ok));
    assert_eq!(queued, Err(CallError::NoProc), "the same locally");
}

async fn a_call_times_out_when_the_reply_is_too_late(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let later = EchoCall::EchoLater {
        payload: vec![],
        delay_ms: 500,
    };
    let t = Duration::from_millis(50);
    assert_eq!(a.call(&echo, later, t).await, Err(CallError::Timeout(t)));
}

async fn a_monitor_on_a_missing_pid_fires_noproc_at_once(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let pid = echo.pid().unwrap();
    let mut local_watcher = b.mailbox::<()>();
    local_watcher.monitor(pid);
    b.call(&echo, EchoCall::Stop, T).await.unwrap();
    let gone = tokio::time::timeout(HANG, local_watcher.recv())
        .await
        .unwrap();
    assert!(
        matches!(
            gone,
            Some(Info::Down {
                reason: ExitReason::Normal,
                ..
            })
        ),
        "{gone:?}"
    );
    let mut watcher = a.mailbox::<()>();
    watcher.monitor(pid);
    let down = tokio::time::timeout(HANG, watcher.recv()).await.unwrap();
    assert!(
        matches!(
            down,
            Some(Info::Down {
                reason: ExitReason::NoProc,
                ..
            })
        ),
        "{down:?}"
    );
}

async fn losing_a_node_fires_every_monitor_on_it_and_fails_calls_in_flight(net: Net) {
    let (a, b) = net.pair().await;
    let mut events = a.subscribe();
    let echoes = [
        b.spawn(Echo::default()).await.unwrap(),
        b.spawn(Echo::default()).await.unwrap(),
    ];
    let mut watcher = a.mailbox::<()>();
    for echo in &echoes {
        watcher.monitor(echo.pid().unwrap());
    }
    let slow = EchoCall::EchoLater {
        payload: vec![],
        delay_ms: 10_000,
    };
    let in_flight = a.call(&echoes[0], slow, HANG);
    let lose_b = async {
        // Frames on a link are ordered: once the second echo has answered, b holds the first
        // call.
        a.call(&echoes[1], EchoCall::Pid, T).await.unwrap();
        assert!(b.disconnect(a.name()));
    };
    let (in_flight, ()) = tokio::join!(in_flight, lose_b);
    assert_eq!(in_flight, Err(CallError::NodeDown));
    for _ in 0..2 {
        let down = tokio::time::timeout(HANG, watcher.recv()).await.unwrap();
        assert!(
            matches!(
                down,
                Some(Info::Down {
                    reason: ExitReason::NoConnection,
                    ..
                })
            ),
            "{down:?}"
        );
    }
    let reason = next_event(&mut events, |e| match e {
        NodeEvent::NodeDown { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(reason, DownReason::ConnectionLost(_)),
        "{reason:?}"
    );
}

async fn a_clean_shutdown_is_reported_as_a_leave_and_monitors_see_shutdown(net: Net) {
    let (a, b) = net.pair().await;
    let mut events = a.subscribe();
    let echo = b.spawn(Echo::default()).await.unwrap();
    let mut watcher = a.mailbox::<()>();
    watcher.monitor(echo.pid().unwrap());
    // Frames on a link are ordered: once this call returns, b has registered the monitor.
    a.call(&echo, EchoCall::Pid, T).await.unwrap();
    b.shutdown().await;
    let down = tokio::time::timeout(HANG, watcher.recv()).await.unwrap();
    assert!(
        matches!(
            down,
            Some(Info::Down {
                reason: ExitReason::Shutdown,
                ..
            })
        ),
        "{down:?}"
    );
    let reason = next_event(&mut events, |e| match e {
        NodeEvent::NodeDown { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, DownReason::Left(ExitReason::Shutdown));
}

/// A server that links to a pid given in init and reports exits it traps.
struct Linker {
    other: gen_cluster::Pid,
    trap: bool,
    report: gen_cluster::Pid,
}

impl Server for Linker {
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();

    async fn init(&mut self, ctx: &mut Context<Self>) -> Result<(), ExitReason> {
        ctx.trap_exits(self.trap);
        ctx.link(self.other);
        Ok(())
    }

    async fn handle_call(&mut self, _: (), from: ReplyTo<()>, _: &mut Context<Self>) -> Flow {
        from.reply(());
        Flow::Continue
    }

    async fn handle_info(&mut self, info: Info<()>, ctx: &mut Context<Self>) -> Flow {
        if let Info::Exit { reason, .. } = info {
            let _ = ctx.node().send_to(self.report, reason.to_string()).await;
        }
        Flow::Continue
    }
}

async fn a_linked_process_dies_with_its_remote_partner_unless_it_traps_exits(net: Net) {
    let (a, b) = net.pair().await;
    let echo = b.spawn(Echo::default()).await.unwrap();
    let mut reports = a.mailbox::<String>();
    let follower = a
        .spawn(Linker {
            other: echo.pid().unwrap(),
            trap: false,
            report: reports.pid(),
        })
        .await
        .unwrap();
    let trapper = a
        .spawn(Linker {
            other: echo.pid().unwrap(),
            trap: true,
            report: reports.pid(),
        })
        .await
        .unwrap();
    reports.monitor(follower.pid().unwrap());
    a.call(&echo, EchoCall::Crash, T).await.unwrap_err();
    let mut saw_down = false;
    let mut saw_trap = false;
    while !(saw_down && saw_trap) {
        match tokio::time::timeout(HANG, reports.recv()).await.unwrap() {
            Some(Info::Down {
                reason: ExitReason::Error(why),
                ..
            }) => {
                assert!(why.contains("crash requested"));
                saw_down = true;
            }
            Some(Info::Message(why)) => {
                assert!(why.contains("crash requested"));
                saw_trap = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(a.call(&trapper, (), T).await, Ok(()));
}

async fn a_pid_of_an_earlier_incarnation_never_reaches_the_new_process(net: Net) {
    let a = net.node("a").await;
    let b1 = net.node("b").await;
    a.connect(b1.listen_addr()).await.unwrap();
    let old = b1.spawn_named(NAME, Echo::default()).await.unwrap();
    let old_pid = old.pid().unwrap();
    b1.shutdown().await;
    let mut config = common::config("b");
    config.listen = b1.listen_addr().to_string();
    let b2 = net.start(config).await;
    a.connect(b2.listen_addr()).await.unwrap();
    // The new life numbers its processes from 1 again: the same local number exists.
    let fresh = b2.spawn_named(NAME, Echo::default()).await.unwrap();
    assert_eq!(fresh.pid().unwrap().local, old_pid.local);
    assert_ne!(fresh.pid().unwrap().incarnation, old_pid.incarnation);
    assert_eq!(
        a.call(&old, EchoCall::CastsSeen, T).await,
        Err(CallError::NoProc)
    );
    a.cast(&old, vec![1]).await.unwrap();
    a.send(&old, vec![1]).await.unwrap();
    assert_eq!(
        a.call(&fresh, EchoCall::CastsSeen, T).await,
        Ok(EchoReply::Count(0))
    );
}

on_both_transports!(
    calls_queued_behind_a_stop_are_refused_at_once,
    a_remote_call_gets_its_reply_and_a_local_one_too,
    casts_arrive_in_order_before_a_later_call,
    a_deferred_reply_from_another_task_reaches_the_remote_caller,
    calling_a_missing_process_fails_with_noproc_locally_and_remotely,
    a_crashing_handler_ends_its_process_with_the_panic_and_the_node_lives_on,
    a_call_times_out_when_the_reply_is_too_late,
    a_monitor_on_a_missing_pid_fires_noproc_at_once,
    losing_a_node_fires_every_monitor_on_it_and_fails_calls_in_flight,
    a_clean_shutdown_is_reported_as_a_leave_and_monitors_see_shutdown,
    a_linked_process_dies_with_its_remote_partner_unless_it_traps_exits,
    a_pid_of_an_earlier_incarnation_never_reaches_the_new_process,
);

/// On a 20 Mbit/s link (the in-memory network's limit, in paused time), an 8 MiB message takes
/// over 3 s: the link stays up (bytes arriving are not silence), and small calls to another
/// process are answered while it streams.
#[tokio::test(start_paused = true)]
async fn a_large_message_on_a_slow_link_is_not_silence_and_small_calls_pass_it() {
    let memory = gen_cluster::MemoryNetwork::new();
    let net = Net::Memory(memory.clone());
    let big = |name: &str| {
        let mut config = common::config(name);
        config.max_frame = 16 * 1024 * 1024;
        config
    };
    let (a, b) = (net.start(big("a")).await, net.start(big("b")).await);
    common::connect(&a, &b).await;
    memory.limit("a", "b", 2_500_000);
    let mut events = [a.subscribe(), b.subscribe()];
    let receiver = b.spawn(Echo::default()).await.unwrap();
    let other = b.spawn(Echo::default()).await.unwrap();
    let started = tokio::time::Instant::now();
    a.cast(&receiver, vec![7u8; 8 * 1024 * 1024]).await.unwrap();
    for _ in 0..5 {
        let asked = tokio::time::Instant::now();
        let reply = a.call(&other, EchoCall::Echo(vec![1]), T).await;
        assert_eq!(reply, Ok(EchoReply::Echo(vec![1])));
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
    }
    let answered = started.elapsed();
    assert_eq!(
        a.call(&receiver, EchoCall::CastsSeen, HANG).await,
        Ok(EchoReply::Count(1))
    );
    let streamed = started.elapsed();
    assert!(
        streamed > Duration::from_secs(3),
        "the link was slow: {streamed:?}"
    );
    assert!(
        answered < streamed / 4,
        "calls answered at {answered:?}, while the message took {streamed:?}"
    );
    for events in &mut events {
        let event = events.try_recv();
        assert!(event.is_err(), "no node went down: {event:?}");
    }
}

//! Memory stays bounded under a flood: a node casting 64 KiB messages as fast as it can at a
//! slow server on a peer is slowed to the server's pace (its link's send queue, the server's
//! bounded mailbox and TCP flow control between them), nothing the API reported as sent is lost,
//! and every buffer is given back afterwards. Memory is the live heap of this test process (both
//! nodes), counted by a wrapping allocator; the scenarios run one after the other, each checking
//! the highest the heap has been since the test began.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use cap::Cap;
use common::Net;
use gen_cluster::{Context, Flow, MemoryNetwork, Node, ReplyTo, SendError, Server};
use tokio::sync::{mpsc, oneshot};

/// Counts the bytes allocated and not yet freed, and the most there have been.
#[global_allocator]
static HEAP: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const MIB: usize = 1024 * 1024;
const MESSAGE: usize = 64 * 1024;
/// 125 MiB in all: far more than the bounds below let wait anywhere.
const MESSAGES: u32 = 2000;
const MAILBOX: usize = 16;
const SEND_QUEUE: usize = MIB;

/// A server that waits for `start` before its first cast, then takes `pause` over each and
/// reports its number.
struct Slow {
    start: Option<oneshot::Receiver<()>>,
    pause: Duration,
    seen: mpsc::UnboundedSender<u32>,
}

impl Slow {
    fn new(pause: Duration) -> (Self, oneshot::Sender<()>, mpsc::UnboundedReceiver<u32>) {
        let (go, start) = oneshot::channel();
        let (seen, arrivals) = mpsc::unbounded_channel();
        let server = Self {
            start: Some(start),
            pause,
            seen,
        };
        (server, go, arrivals)
    }
}

impl Server for Slow {
    type Call = ();
    type Reply = ();
    type Cast = (u32, String);
    type Info = ();

    fn mailbox_capacity(&self) -> Option<NonZeroUsize> {
        NonZeroUsize::new(MAILBOX)
    }

    async fn handle_call(&mut self, _: (), from: ReplyTo<()>, _: &mut Context<Self>) -> Flow {
        from.reply(());
        Flow::Continue
    }

    async fn handle_cast(&mut self, (number, bytes): (u32, String), _: &mut Context<Self>) -> Flow {
        assert_eq!(bytes.len(), MESSAGE);
        if let Some(start) = self.start.take() {
            let _ = start.await;
        }
        tokio::time::sleep(self.pause).await;
        let _ = self.seen.send(number);
        Flow::Continue
    }
}

/// A message body of `MESSAGE` bytes, cheap to encode and decode.
fn filler() -> String {
    "x".repeat(MESSAGE)
}

async fn pair(net: &Net) -> (Node, Node) {
    let start = |name: &str| {
        let mut config = common::config(name);
        config.send_queue_bytes = SEND_QUEUE;
        net.start(config)
    };
    let (a, b) = (start("a").await, start("b").await);
    common::connect(&a, &b).await;
    (a, b)
}

/// A floods a server on b that first stalls for three failure-detector deadlines, then reads
/// slowly: the heap never holds more than the bounds allow (mailbox, send queue, socket buffers)
/// though 125 MiB go through; the stall is back-pressure, not silence (no node goes down); the
/// sender finishes only once the server has nearly caught up; every cast arrives, in order; and
/// afterwards the heap is back where it was.
async fn a_flood_at_a_slow_server_is_slowed_to_its_pace(net: Net, base: usize) {
    let (a, b) = pair(&net).await;
    let mut events = [a.subscribe(), b.subscribe()];
    let (server, go, mut arrivals) = Slow::new(Duration::from_micros(500));
    let slow = b.spawn(server).await.unwrap();

    let sender = a.clone();
    let target = slow.clone();
    let mut flood = Some(tokio::spawn(async move {
        for number in 0..MESSAGES {
            sender.cast(&target, (number, filler())).await.unwrap();
        }
    }));
    let stall = 3 * common::config("a").liveness.down_after;
    assert!(
        tokio::time::timeout(stall, flood.as_mut().unwrap())
            .await
            .is_err(),
        "the sender is held back while the server stalls"
    );
    go.send(()).unwrap();
    let mut arrived = Vec::new();
    let mut handled_when_sent = None;
    while arrived.len() < MESSAGES as usize {
        tokio::select! {
            number = arrivals.recv() => arrived.push(number.unwrap()),
            done = async { flood.as_mut().unwrap().await }, if flood.is_some() => {
                done.unwrap();
                flood = None;
                handled_when_sent = Some(arrived.len());
            }
        }
    }
    assert_eq!(
        arrived,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every cast, in order"
    );
    // Waiting, at most: the mailbox, the send queue, the socket buffers in between and the
    // message being handled — about 1 + 1 + a few MiB — against 125 MiB sent.
    let peak = HEAP.max_allocated() - base;
    assert!(peak < 24 * MIB, "peak {} MiB over idle", peak / MIB);
    let handled_when_sent = handled_when_sent.unwrap();
    assert!(
        handled_when_sent + 400 >= MESSAGES as usize,
        "the sender was done when only {handled_when_sent} of {MESSAGES} had been handled"
    );
    for events in &mut events {
        let event = events.try_recv();
        assert!(event.is_err(), "no node went down: {event:?}");
    }

    a.shutdown().await;
    b.shutdown().await;
    let left = HEAP.allocated().saturating_sub(base);
    assert!(
        left < 2 * MIB,
        "{} KiB still held after the flood",
        left / 1024
    );
}

/// Toward a peer that neither reads nor talks (a cut link), the sender is held at the send
/// queue's bound: `try_cast` says busy and sends nothing, `cast` waits, and once the peer is
/// declared down the waiting cast fails with `NodeDown` rather than queueing on.
async fn a_silent_peer_holds_senders_at_the_queue_bound(memory: MemoryNetwork, base: usize) {
    let net = Net::Memory(memory.clone());
    let (a, b) = pair(&net).await;
    let (server, _go, _arrivals) = Slow::new(Duration::ZERO);
    let slow = b.spawn(server).await.unwrap();
    memory.cut("a", "b");

    let mut accepted: u32 = 0;
    let busy = loop {
        match a.try_cast(&slow, (accepted, filler())) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < MESSAGES, "try_cast never said busy");
    };
    assert_eq!(busy, SendError::Busy);
    let cut_at = tokio::time::Instant::now();
    let failed = loop {
        match a.cast(&slow, (accepted, filler())).await {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < MESSAGES, "cast never waited");
    };
    assert_eq!(failed, SendError::NodeDown);
    let down_after = common::config("a").liveness.down_after;
    assert!(
        cut_at.elapsed() >= down_after,
        "cast waited for room until the peer was declared down ({:?})",
        cut_at.elapsed()
    );
    // The queue, what the writer holds and the connection's buffer.
    let queued = accepted as usize * MESSAGE;
    assert!(
        queued <= SEND_QUEUE + 2 * MIB,
        "{} KiB accepted toward a peer that reads nothing",
        queued / 1024
    );
    let peak = HEAP.max_allocated() - base;
    assert!(peak < 8 * MIB, "peak {} MiB over idle", peak / MIB);
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn memory_stays_bounded() {
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let base = HEAP.allocated();
    paused().block_on(a_silent_peer_holds_senders_at_the_queue_bound(
        MemoryNetwork::new(),
        base,
    ));
    paused().block_on(a_flood_at_a_slow_server_is_slowed_to_its_pace(
        Net::memory(),
        base,
    ));
    let real_time = tokio::runtime::Runtime::new().unwrap();
    real_time.block_on(a_flood_at_a_slow_server_is_slowed_to_its_pace(
        Net::Tcp,
        base,
    ));
}

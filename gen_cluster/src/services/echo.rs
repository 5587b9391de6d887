//! The echo server: a small diagnostics server that the CLI starts on every node under the name
//! [`NAME`]. It answers calls with their payload, counts casts, replies later on request, and can
//! be asked to stop or to crash — what the benchmarks, the demo and the cross-process tests need
//! to exercise calls, casts, deferred replies and monitors from outside the node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::{Context, Flow, ReplyTo, Server};
use crate::{ExitReason, Pid};

/// The name the echo server is registered under.
pub const NAME: &str = "echo";

/// A request to the echo server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoCall {
    /// Replies with the same bytes.
    Echo(Vec<u8>),
    /// Replies with the same bytes after `delay_ms`, from another task.
    EchoLater {
        /// The bytes.
        payload: Vec<u8>,
        /// How long to wait, in milliseconds.
        delay_ms: u64,
    },
    /// Replies with the number of casts received so far.
    CastsSeen,
    /// Replies with the server's pid.
    Pid,
    /// Replies, then stops with reason `normal`.
    Stop,
    /// Panics without replying (the process crashes; the node lives on).
    Crash,
}

/// A reply of the echo server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EchoReply {
    /// The echoed bytes.
    Echo(Vec<u8>),
    /// A count.
    Count(u64),
    /// A pid.
    Pid(Pid),
    /// Done.
    Ok,
}

/// The echo server's state.
#[derive(Debug, Default)]
pub struct Echo {
    casts: u64,
}

impl Server for Echo {
    type Call = EchoCall;
    type Reply = EchoReply;
    type Cast = Vec<u8>;
    type Info = Vec<u8>;

    async fn handle_call(
        &mut self,
        request: EchoCall,
        from: ReplyTo<EchoReply>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        match request {
            EchoCall::Echo(payload) => from.reply(EchoReply::Echo(payload)),
            EchoCall::EchoLater { payload, delay_ms } => {
                let node = ctx.node().clone();
                ctx.node()
                    .spawn_task(tracing::info_span!("echo_later"), async move {
                        tokio::select! {
                            _ = node.shutting_down() => {}
                            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {
                                from.reply(EchoReply::Echo(payload));
                            }
                        }
                    });
            }
            EchoCall::CastsSeen => from.reply(EchoReply::Count(self.casts)),
            EchoCall::Pid => from.reply(EchoReply::Pid(ctx.pid())),
            EchoCall::Stop => {
                from.reply(EchoReply::Ok);
                return Flow::Stop(ExitReason::Normal);
            }
            EchoCall::Crash => panic!("crash requested"),
        }
        Flow::Continue
    }

    async fn handle_cast(&mut self, _: Vec<u8>, _: &mut Context<Self>) -> Flow {
        self.casts += 1;
        Flow::Continue
    }
}

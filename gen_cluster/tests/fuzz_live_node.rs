//! Byte fuzzing of a live node: a peer that passes the real handshake, then sends random or
//! mutated frames. The node may drop that peer, but never panics, never delivers a malformed
//! message, and keeps serving a well-behaved peer throughout. `FUZZ_CASES` raises the case count.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use gen_cluster::services::echo::{Echo, EchoCall, EchoReply};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(64, |n| (n / 50).max(64))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_frames_after_the_handshake_never_harm_the_node(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 1..8),
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (good, node) = common::pair().await;
            let echo = node.spawn(Echo::default()).await.unwrap();
            let mut fuzzer = common::Net::Tcp.authenticated(node.listen_addr(), "fuzzer").await;
            for frame in &frames {
                fuzzer.write_frame(frame).await;
            }
            let reply = good.call(&echo, EchoCall::CastsSeen, Duration::from_secs(5)).await;
            prop_assert_eq!(reply, Ok(EchoReply::Count(0)), "no fuzzed message was delivered as a cast");
            Ok(())
        })?;
    }
}

//! Byte fuzzing of a live node: a peer that passes the real handshake, then sends random or
//! mutated frames. The node may drop that peer, but never panics, never delivers a malformed
//! message, and keeps serving a well-behaved peer throughout. `FUZZ_CASES` raises the case count.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use gen_cluster::services::echo::{Echo, EchoCall, EchoReply};
use gen_cluster_proto::handshake::{self, HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use gen_cluster_proto::{Incarnation, NodeName};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(64, |n| (n / 50).max(64))
}

async fn authenticated_stream(addr: &str, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let config = HandshakeConfig {
        cluster: "default".into(),
        secret: b"test-cookie".to_vec(),
        local: Identity {
            name: NodeName::new(name).unwrap(),
            incarnation: Incarnation(1),
            listen: "127.0.0.1:1".into(),
        },
        versions: SUPPORTED_VERSIONS,
    };
    let (machine, hello) = handshake::initiate(config, [7; 32]);
    send(&mut stream, &hello).await;
    let challenge = receive(&mut stream).await;
    let (machine, response) = machine.handle(&challenge).unwrap().proceed();
    send(&mut stream, &response).await;
    machine.handle(&receive(&mut stream).await).unwrap();
    stream
}

async fn send(stream: &mut TcpStream, body: &[u8]) {
    let _ = stream.write_all(&(body.len() as u32).to_be_bytes()).await;
    let _ = stream.write_all(body).await;
}

async fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    body
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
            let mut fuzzer = authenticated_stream(node.listen_addr(), "fuzzer").await;
            for frame in &frames {
                send(&mut fuzzer, frame).await;
            }
            let reply = good.call(&echo, EchoCall::CastsSeen, Duration::from_secs(5)).await;
            prop_assert_eq!(reply, Ok(EchoReply::Count(0)), "no fuzzed message was delivered as a cast");
            Ok(())
        })?;
    }
}

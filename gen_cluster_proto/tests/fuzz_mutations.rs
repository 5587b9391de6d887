//! A structure-aware byte fuzzer that runs in every `cargo test`: valid frames and handshake
//! messages, mutated (bytes flipped, inserted, removed, truncated), fed to every decoder. None may
//! panic; no mutation may forge a proof. `FUZZ_CASES` raises the number of cases (CI runs more).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use gen_cluster_proto::handshake::{self, HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use gen_cluster_proto::wire::{self, CallRefusal, Dest, Header};
use gen_cluster_proto::{ExitReason, Incarnation, NodeId, NodeName, Pid};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config(name: &str) -> HandshakeConfig {
    HandshakeConfig {
        cluster: "fuzz".into(),
        secret: b"secret".to_vec(),
        local: Identity {
            name: NodeName::new(name).unwrap(),
            incarnation: Incarnation(3),
            listen: "127.0.0.1:4000".into(),
            hidden: false,
        },
        versions: SUPPORTED_VERSIONS,
    }
}

/// Valid frame bodies of every kind, and a valid handshake's four messages.
fn seeds() -> Vec<Vec<u8>> {
    let pid = Pid {
        node: NodeId(1),
        incarnation: Incarnation(2),
        local: 3,
    };
    let headers = [
        Header::Heartbeat,
        Header::Goodbye {
            reason: ExitReason::Error("x".into()),
        },
        Header::Send {
            to: Dest::Name("echo"),
        },
        Header::Cast { to: Dest::Pid(pid) },
        Header::Call {
            to: Dest::Name("echo"),
            reference: 9,
        },
        Header::Reply { reference: 9 },
        Header::ReplyRefused {
            reference: 9,
            refusal: CallRefusal::BadRequest("no".into()),
        },
        Header::Monitor {
            reference: 1,
            watcher: pid,
            target: pid,
        },
        Header::Demonitor {
            reference: 1,
            target: pid,
        },
        Header::Down {
            reference: 1,
            target: pid,
            reason: ExitReason::NoConnection,
        },
        Header::Link { from: pid, to: pid },
        Header::Unlink { from: pid, to: pid },
        Header::Exit {
            from: pid,
            to: pid,
            reason: ExitReason::Killed,
        },
    ];
    let mut seeds: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| {
            let payload = h.carries_payload().then_some(&(1u8, "payload"));
            wire::encode(h, payload, wire::DEFAULT_MAX_FRAME).unwrap()[wire::LENGTH_PREFIX..]
                .to_vec()
        })
        .collect();
    let (await_challenge, hello) = handshake::initiate(config("a"), [1; 32]);
    let (await_response, challenge) = handshake::accept(config("b"), [2; 32])
        .handle(&hello)
        .unwrap()
        .admit();
    let (await_confirm, response) = await_challenge.handle(&challenge).unwrap();
    let (_, confirm) = await_response.handle(&response).unwrap().confirm();
    let (_, ready) = await_confirm.handle(&confirm).unwrap().ready();
    seeds.extend([hello, challenge, response, confirm, ready]);
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, x) if !bytes.is_empty() => bytes[i % len] ^= x,
            Mutation::Insert(i, x) => bytes.insert(i % (bytes.len() + 1), x),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_messages_never_panic_a_decoder_or_forge_a_proof(
        seed in 0usize..18,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let bytes = mutate(seeds[seed % seeds.len()].clone(), &mutations);
        let _ = wire::decode(&bytes);
        if let Ok(hello) = handshake::accept(config("b"), [2; 32]).handle(&bytes) {
            let (await_response, _) = hello.admit();
            prop_assert!(await_response.handle(&bytes).is_err());
        }
        let (await_challenge, _) = handshake::initiate(config("a"), [1; 32]);
        if let Ok((await_confirm, _)) = await_challenge.handle(&bytes) {
            prop_assert!(await_confirm.handle(&bytes).is_err());
        }
    }
}

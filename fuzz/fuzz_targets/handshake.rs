//! Every handshake state that reads a peer's bytes: none may panic, and no input that lacks the
//! cluster secret may establish a connection.
#![no_main]

use gen_cluster_proto::handshake::{self, HandshakeConfig, Identity, SUPPORTED_VERSIONS};
use gen_cluster_proto::{Incarnation, NodeName};
use libfuzzer_sys::fuzz_target;

fn config(name: &str) -> HandshakeConfig {
    HandshakeConfig {
        cluster: "fuzz".into(),
        secret: b"fuzz-secret".to_vec(),
        local: Identity {
            name: NodeName::new(name).expect("valid"),
            incarnation: Incarnation(1),
            listen: "127.0.0.1:1".into(),
            hidden: false,
        },
        versions: SUPPORTED_VERSIONS,
    }
}

fuzz_target!(|data: &[u8]| {
    // Split the input into two messages, as a peer would send them one after the other.
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    let (first, second) = data.split_at(cut);
    if let Ok(hello) = handshake::accept(config("acceptor"), [2; 32]).handle(first) {
        let (await_response, _) = hello.admit();
        assert!(await_response.handle(second).is_err(), "a forged proof never verifies");
    }
    let (await_challenge, _) = handshake::initiate(config("initiator"), [1; 32]);
    if let Ok((await_confirm, _)) = await_challenge.handle(first) {
        assert!(await_confirm.handle(second).is_err(), "a forged proof never verifies");
    }
});

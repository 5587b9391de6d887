//! Every frame body a peer can send after the handshake goes through `wire::decode`: it must
//! never panic, a decoded header without payload must have consumed every byte, and what decodes
//! must encode and decode again to the same header.
#![no_main]

use gen_cluster_proto::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload)) = wire::decode(data) {
        if header.carries_payload() {
            return;
        }
        assert!(payload.is_empty());
        let frame = wire::encode_header(&header, usize::MAX >> 1).expect("a decoded header encodes again");
        let (again, rest) = wire::decode(&frame[wire::LENGTH_PREFIX..]).expect("what we encode decodes");
        assert_eq!(again, header);
        assert!(rest.is_empty());
    }
});

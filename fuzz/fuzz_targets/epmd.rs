//! The replies of an EPMD (or of whatever listens where one was expected) go through
//! `epmd::parse_names` and `epmd::parse_register_reply`: they must never panic, and every name
//! read from a reply must have come from a line of it.
#![no_main]

use gen_cluster_proto::epmd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(names) = epmd::parse_names(data) {
        let text = String::from_utf8_lossy(&data[4..]);
        for (name, port) in names {
            assert!(text.contains(&format!("name {name} at port")), "{name}:{port}");
        }
    }
    if let Some(tag) = data.first() {
        if let Ok(len) = epmd::register_reply_len(*tag) {
            let _ = epmd::parse_register_reply(&data[..len.min(data.len())]);
        }
    }
});

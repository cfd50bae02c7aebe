//! ZDS request decoding (what ztunnel reads from the node agent): never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = inpod::zds::decode_request(data, Vec::new());
});

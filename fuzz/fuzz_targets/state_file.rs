//! ztunnel's state file: parsing and validation never panic, whatever the bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ztunnel::state::local::LocalConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.yaml");
    if let Ok(config) = LocalConfig::parse(path, text) {
        let _ = config.into_state(path);
    }
});

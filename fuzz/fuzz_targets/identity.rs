//! SPIFFE identity parsing: never panics, and whatever parses round-trips.
#![no_main]

use hbone::Identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = s.parse::<Identity>() {
        assert_eq!(id.to_string(), s);
    }
});

//! CONNECT `:authority` parsing: never panics, and whatever parses round-trips.
#![no_main]

use hbone::Authority;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(authority) = s.parse::<Authority>() {
        let again: Authority = authority.to_string().parse().expect("formatted authority must parse");
        assert_eq!(again, authority);
    }
});

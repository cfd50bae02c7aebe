//! `baggage` header parsing: never panics, and whatever parses round-trips.
#![no_main]

use hbone::Baggage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(baggage) = s.parse::<Baggage>() {
        let formatted = baggage.to_string();
        if formatted.len() <= hbone::baggage::MAX_BAGGAGE_LEN {
            let again: Baggage = formatted.parse().expect("formatted baggage must parse");
            assert_eq!(again, baggage);
        }
    }
});

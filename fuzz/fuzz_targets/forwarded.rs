//! `forwarded` header parsing: never panics, and the address round-trips.
#![no_main]

use hbone::Forwarded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(forwarded) = s.parse::<Forwarded>() {
        // Hosts are carried verbatim, so only the `for=` node must survive formatting.
        let only_for = Forwarded { host: None, ..forwarded };
        let again: Forwarded = only_for.to_string().parse().expect("formatted forwarded must parse");
        assert_eq!(again, only_for);
    }
});

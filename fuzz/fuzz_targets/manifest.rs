//! The controller's manifest parser and validation: any text gives objects or errors that
//! name the file, never a panic; whatever parses also translates without a panic.
#![no_main]

use std::path::Path;

use controller::source::SourceEvent;
use controller::store::Store;
use controller::translate::{MeshOptions, translate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let contents = controller::manifest::parse_file(Path::new("fuzz.yaml"), text);
    let mut store = Store::default();
    for parsed in contents.objects {
        store.apply(SourceEvent::Applied(parsed));
    }
    let _ = translate(&store, &MeshOptions::default());
});

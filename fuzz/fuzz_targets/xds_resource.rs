//! ztunnel's xDS conversion: any bytes as an `Address` or `Authorization` resource give a
//! typed result or a named error, never a panic.
#![no_main]

use api::prost_types::Any;
use libfuzzer_sys::fuzz_target;
use ztunnel::xds::convert;

fuzz_target!(|data: &[u8]| {
    let Some((selector, value)) = data.split_first() else { return };
    let type_url = if selector % 2 == 0 {
        api::ADDRESS_TYPE_URL
    } else {
        api::AUTHORIZATION_TYPE_URL
    };
    let any = Any {
        type_url: type_url.to_owned(),
        value: value.to_vec(),
    };
    if selector % 2 == 0 {
        let _ = convert::address("fuzz", Some(&any));
    } else {
        let _ = convert::authorization("fuzz/policy", Some(&any));
    }
});

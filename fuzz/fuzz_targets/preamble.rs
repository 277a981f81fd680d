//! The `MX` preamble: decoding any bytes never panics and stays within its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(used)) = octopoll_wire::preamble::decode(data, 20_000) {
        assert!(used <= data.len());
    }
});

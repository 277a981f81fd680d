//! A message as it arrives: raw DEFLATE, inflated within the size limit (no
//! decompression bomb gets past it), then one BSON envelope. Never panics; an
//! envelope that decodes re-encodes stably (compared as bytes: a NaN is not
//! equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_wire::Envelope;

/// Small, so the fuzzer finds the limit's edge quickly.
const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The same bytes as a BSON document directly, without the inflater.
    if let Ok(envelope) = Envelope::from_bson_bytes(data) {
        if let Ok(bytes) = envelope.to_bson_bytes() {
            let again = Envelope::from_bson_bytes(&bytes).expect("re-encoded envelope decodes");
            assert_eq!(again.to_bson_bytes().ok(), Some(bytes));
        }
    }
    match octopoll_wire::deflate::inflate(data, MAX_MESSAGE) {
        Ok(Some((inflated, used))) => {
            assert!(inflated.len() <= MAX_MESSAGE, "the limit holds");
            assert!(used <= data.len());
            let _ = Envelope::from_bson_bytes(&inflated);
        }
        Ok(None) | Err(_) => {}
    }
});

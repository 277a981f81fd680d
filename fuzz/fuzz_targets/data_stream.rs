//! Data stream frames (id, length, bytes, length again): decoding any bytes never
//! panics, never buffers past the limit, and a decoded frame re-encodes to the
//! bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_wire::DataStream;

const MAX_STREAM: u64 = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((stream, used))) = DataStream::decode(data, MAX_STREAM) {
        assert!(used <= data.len());
        assert!(stream.bytes.len() as u64 <= MAX_STREAM);
        let mut again = Vec::new();
        stream.encode(&mut again);
        assert_eq!(&again[..], &data[..used]);
    }
});

//! Identification lines (`MX-SUBSCRIBER 1.0 poll://…/` and friends): decoding any
//! bytes never panics, never claims more bytes than it was given, and what it
//! decodes encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_wire::RemoteIdentity;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((identity, used))) = RemoteIdentity::decode(data, 1024) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        identity.encode(&mut again);
        let (decoded, _) = RemoteIdentity::decode(&again, 1024)
            .expect("an encoded identity decodes")
            .expect("whole");
        assert_eq!(decoded, identity);
    }
});

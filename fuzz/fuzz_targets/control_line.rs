//! Control lines (`NEXT`, `PROCEED`, `END`, after any blank lines): decoding any
//! bytes never panics and never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_wire::ControlMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((control, used))) = ControlMessage::decode(data, 64) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        control.encode(&mut again);
        let (decoded, _) = ControlMessage::decode(&again, 64)
            .expect("an encoded control line decodes")
            .expect("whole");
        assert_eq!(decoded, control);
    }
});

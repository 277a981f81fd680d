//! The registration API's JSON bodies (`POST /api/machines` and the answers a
//! registration client reads): parsing any bytes never panics, and the
//! subscription a body names parses or is refused cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_wire::api::{CertificateResource, ErrorResource, MachineResource, RootResource};
use octopoll_wire::SubscriptionId;

fuzz_target!(|data: &[u8]| {
    if let Ok(machine) = serde_json::from_slice::<MachineResource>(data) {
        let _ = machine.endpoint.uri.parse::<SubscriptionId>();
        let text = serde_json::to_vec(&machine).expect("a parsed body serialises");
        let again: MachineResource = serde_json::from_slice(&text).expect("and parses again");
        assert_eq!(again, machine);
    }
    let _ = serde_json::from_slice::<CertificateResource>(data);
    let _ = serde_json::from_slice::<RootResource>(data);
    let _ = serde_json::from_slice::<ErrorResource>(data);
});

//! Tentacle.config: parsing any text never panics, nor does reading its trusted
//! servers, port or listening flag; a parsed file writes out and parses back to
//! the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_agent::tentacle::config::TentacleConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = TentacleConfig::parse(text) {
        let _ = config.trusted_servers();
        let _ = config.port();
        let _ = config.no_listen();
        let _ = config.listen_ip();
        let _ = config.polling_connection_count();
        let again = TentacleConfig::parse(&config.to_xml()).expect("written config parses");
        assert_eq!(again.to_xml(), config.to_xml());
    }
});

//! Scenario files: layering and resolving any text never panics; a bad file is a
//! `ScenarioError` naming where.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_scenario::file::Source;
use octopoll_scenario::layers::Layers;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut layers = Layers::new();
    if layers.file(&Source::new("fuzz.toml", text)).is_ok() {
        let _ = layers.resolve();
    }
});

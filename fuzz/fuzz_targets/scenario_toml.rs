//! Scenario files: parsing and resolving any text never panics; a bad file is a
//! `ScenarioError` naming where.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octopoll_scenario::file::{resolve, ScenarioFile, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        name: "fuzz.toml".into(),
        text: text.into(),
    };
    if let Ok(file) = ScenarioFile::parse(&source) {
        let (default, _) = ScenarioFile::default_scenario();
        let _ = resolve(&default.overlay(file), Some(&source));
    }
});

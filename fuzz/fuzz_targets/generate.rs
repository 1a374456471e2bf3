//! Any CMDB text: expanding it never panics and never exceeds the entry cap.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = edeploy_spec::cmdb::Cmdb::parse(text, "fuzz.cmdb") {
        assert!(c.entries.len() <= edeploy_spec::generate::MAX_ENTRIES);
    }
    if text.len() < 64 {
        let _ = edeploy_spec::generate::expand_str(text);
    }
});

//! Any text: the literal parser returns a value or an error, never panics; what it returns
//! writes back to text that parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = edeploy_literal::parse(text) {
        let back = edeploy_literal::to_python(&v);
        let again = edeploy_literal::parse(&back).expect("written literal must parse");
        // NaN never equals itself; compare the text forms instead.
        assert_eq!(edeploy_literal::to_python(&again), back);
    }
    let _ = edeploy_hw::HardwareList::parse(text, "fuzz");
    let _ = edeploy_spec::Specs::parse(text, "fuzz");
    let _ = edeploy_spec::cmdb::Cmdb::parse(text, "fuzz");
    let _ = edeploy_spec::state::State::parse(text, "fuzz");
});

//! Specs and hardware from the fuzzer: matching and explaining never panic, and a match really
//! satisfies every spec line with distinct hardware lines.
#![no_main]
use edeploy_hw::HardwareList;
use edeploy_spec::{explain::explain, match_specs, Specs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // First line: the specs; the rest: the hardware list.
    let (specs_text, hw_text) = text.split_once('\n').unwrap_or((text, "[]"));
    let Ok(specs) = Specs::parse(specs_text, "fuzz.specs") else { return };
    let Ok(hw) = HardwareList::parse(hw_text, "fuzz.hw") else { return };
    if hw.len() > 64 || specs.lines.len() > 16 {
        return;
    }
    let m = match_specs(&specs, &hw);
    let e = explain(&specs, &hw);
    assert_eq!(m.is_some(), e.matched);
    if let Some(m) = m {
        assert_eq!(m.assignment.len(), specs.lines.len());
        let mut seen = m.assignment.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), m.assignment.len(), "a hardware line used twice");
        for (i, &h) in m.assignment.iter().enumerate() {
            assert!(specs.line_bindings(i, &hw.lines()[h].0).is_some());
        }
    }
});

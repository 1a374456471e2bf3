//! Any upload request: the multipart parser and the hardware-list validation never panic, and
//! whatever they accept carries only safe names. Input: the Content-Type line, `\n`, the body
//! (no `\n` at all: the body alone, with boundary `B`).
#![no_main]
use libfuzzer_sys::fuzz_target;

use edeploy_server::pipeline::{check_name, parse_form, parse_hw};

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"multipart/form-data; boundary=B"[..], data),
    };
    let Ok(ct) = std::str::from_utf8(ct) else { return };
    let Ok(form) = parse_form(ct, body, 1 << 20) else { return };
    for name in [&form.section, &form.session, &form.failure].into_iter().flatten() {
        assert!(check_name("field", name).is_ok(), "accepted unsafe {name:?}");
    }
    if let Some(file) = &form.file {
        if let Ok((hw, sysname)) = parse_hw(file) {
            assert!(check_name("system", &sysname).is_ok());
            let text = hw.to_edeploy();
            let back = edeploy_hw::HardwareList::parse(&text, "fuzz.hw").expect("own .hw output reparses");
            assert_eq!(back, hw);
        }
    }
});

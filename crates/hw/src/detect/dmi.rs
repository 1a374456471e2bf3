//! System, motherboard and BIOS identity from `/sys/class/dmi/id` (the kernel's decoded DMI).

use std::path::Path;

use super::sysfs;
use crate::HardwareList;

/// Serial numbers vendors ship when they did not program one. eDeploy's successor replaced them by
/// the UUID, so that machines of one batch still get distinct names and CMDB entries.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "0123456789",
    "System Serial Number",
    "To Be Filled By O.E.M.",
    "To be filled by O.E.M.",
    "Default string",
    "Not Specified",
    "Not Applicable",
    "None",
    "Chassis Serial Number",
    "Base Board Serial Number",
    "Type2 - Board Serial Number",
];

fn is_placeholder_serial(s: &str) -> bool {
    PLACEHOLDER_SERIALS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(s))
        || s.chars().all(|c| c == '0' || c == ' ' || c == '-')
}

fn attr(root: &Path, name: &str) -> Option<String> {
    sysfs::read(&sysfs::under(root, "/sys/class/dmi/id").join(name))
}

/// `system/product/*` and `system/motherboard/*`.
pub(super) fn detect(root: &Path, hw: &mut HardwareList) {
    let uuid = attr(root, "product_uuid").map(|u| u.to_ascii_lowercase());
    // lshw (eDeploy's source) appends the SKU to the product name: specs say
    // 'ProLiant DL360p Gen8 (654081-B21)', so the same text is built here.
    if let Some(mut name) = attr(root, "product_name") {
        if let Some(sku) = attr(root, "product_sku").filter(|s| !is_placeholder_serial(s)) {
            name = format!("{name} ({sku})");
        }
        hw.push("system", "product", "name", &name);
    }
    if let Some(v) = attr(root, "sys_vendor") {
        hw.push("system", "product", "vendor", &v);
    }
    if let Some(v) = attr(root, "product_version") {
        hw.push("system", "product", "version", &v);
    }
    // No serial at all (QEMU's default) stays absent, as with eDeploy: it is part of the name the
    // server saves the machine under, which must not change for existing machines.
    match attr(root, "product_serial") {
        Some(s) if !is_placeholder_serial(&s) => hw.push("system", "product", "serial", &s),
        Some(s) => {
            tracing::debug!(serial = %s, "placeholder product serial, using the uuid");
            if let Some(u) = &uuid {
                hw.push("system", "product", "serial", u);
            }
        }
        None => {}
    }
    if let Some(u) = &uuid {
        hw.push("system", "product", "uuid", u);
    }
    for (key, file) in [
        ("name", "board_name"),
        ("vendor", "board_vendor"),
        ("version", "board_version"),
    ] {
        if let Some(v) = attr(root, file) {
            hw.push("system", "motherboard", key, &v);
        }
    }
    // A board placeholder is just dropped: the uuid identifies the system, not the board.
    match attr(root, "board_serial") {
        Some(s) if !is_placeholder_serial(&s) => hw.push("system", "motherboard", "serial", &s),
        other => tracing::debug!(serial = ?other, "placeholder board serial skipped"),
    }
}

/// `firmware/bios/*`.
pub(super) fn detect_firmware(root: &Path, hw: &mut HardwareList) {
    for (key, file) in [
        ("version", "bios_version"),
        ("date", "bios_date"),
        ("vendor", "bios_vendor"),
    ] {
        if let Some(v) = attr(root, file) {
            hw.push("firmware", "bios", key, &v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        for s in [
            "0123456789",
            "to be filled by o.e.m.",
            "000000",
            "",
            "Not Specified",
        ] {
            assert!(is_placeholder_serial(s), "{s}");
        }
        for s in ["CZ1234ABCD", "VMware-56 4d 9a", "0A0"] {
            assert!(!is_placeholder_serial(s), "{s}");
        }
    }
}

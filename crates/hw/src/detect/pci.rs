//! `pci/<address>/*`: every PCI function, ids as lower-case hex without `0x` (so a spec says
//! `('pci', '$gpu', 'vendor', '10de')`), names from pci.ids under `*_name` keys.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::pciids::PciIds;
use super::sysfs;
use crate::HardwareList;

fn devices_dir(root: &Path) -> PathBuf {
    sysfs::under(root, "/sys/bus/pci/devices")
}

/// PCI addresses (`0000:00:1f.2`), sorted (fixed width, so text order is bus order).
pub(super) fn addresses(root: &Path) -> Vec<String> {
    let mut a = sysfs::list_dir(&devices_dir(root));
    a.sort();
    a
}

/// The (vendor, device) ids present, so only their pci.ids entries are kept.
pub(super) fn present(root: &Path, addresses: &[String]) -> BTreeSet<(String, String)> {
    let dir = devices_dir(root);
    addresses.iter().filter_map(|a| ids(&dir.join(a))).collect()
}

/// Whether a sysfs directory name is a PCI address (`dddd:bb:dd.f`).
pub(super) fn is_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11]
            .iter()
            .all(|&i| b[i].is_ascii_hexdigit())
}

/// The ids of the PCI function in `dir`: (vendor, device), `None` when unreadable.
pub(super) fn ids(dir: &Path) -> Option<(String, String)> {
    Some((
        sysfs::hex_id(&dir.join("vendor"), 4)?,
        sysfs::hex_id(&dir.join("device"), 4)?,
    ))
}

pub(super) fn detect(root: &Path, addresses: &[String], names: &PciIds, hw: &mut HardwareList) {
    let base = devices_dir(root);
    for addr in addresses {
        let dir = base.join(addr);
        let Some((vendor, device)) = ids(&dir) else {
            tracing::debug!(pci = %addr, "PCI function without ids skipped");
            continue;
        };
        let class = sysfs::hex_id(&dir.join("class"), 6).map(|c| c[..4].to_string());
        let sub_vendor = sysfs::hex_id(&dir.join("subsystem_vendor"), 4);
        let sub_device = sysfs::hex_id(&dir.join("subsystem_device"), 4);
        let driver = sysfs::link_name(&dir.join("driver"));

        let mut push = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                hw.push("pci", addr, k, v);
            }
        };
        push("vendor", Some(&vendor));
        push("device", Some(&device));
        push("class", class.as_deref());
        push("subsystem_vendor", sub_vendor.as_deref());
        push("subsystem_device", sub_device.as_deref());
        push("driver", driver.as_deref());
        push("vendor_name", names.vendor(&vendor));
        push("device_name", names.device(&vendor, &device));
        push("class_name", class.as_deref().and_then(|c| names.class(c)));
        if let (Some(sv), Some(sd)) = (&sub_vendor, &sub_device) {
            push("subsystem_name", names.subsystem(&vendor, &device, sv, sd));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses() {
        assert!(super::is_address("0000:00:1f.2"));
        assert!(super::is_address("0000:af:00.0"));
        assert!(!super::is_address("pci0000:00"));
        assert!(!super::is_address("virtio1"));
        assert!(!super::is_address("0000:00:1f.2x"));
    }
}

//! Hardware detection from a sysfs/procfs root.
//!
//! Everything is read from files under `root` (`/sys`, `/proc`, `/dev/disk/by-*` links, the
//! SMBIOS table under `/sys/firmware/dmi/tables`, a `pci.ids` database) so that tests run against
//! fixture trees and the initrd needs no external program. Categories and keys follow eDeploy's
//! detector so existing specs keep matching; see `docs/detect.md` for the full list.
//!
//! Unknown or unreadable data is skipped with a debug log; only a missing `/sys` is an error,
//! because then nothing at all could be detected and an empty list would match nothing silently.

use std::path::{Path, PathBuf};

use crate::HardwareList;

mod cpu;
mod disk;
mod dmi;
mod kernel;
mod memory;
mod net;
mod pci;
mod pciids;
mod smbios;
mod sysfs;

pub use smbios::{structures, Structure};

/// Why detection could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0}: no sysfs here (is /sys mounted?)")]
    NoSysfs(PathBuf),
}

/// Detects the hardware of the system whose root directory is `root` (`/` for this machine).
///
/// The order is fixed (system, firmware, memory, cpu, disk, network, pci; devices sorted by
/// name) because the matcher tries hardware lines in list order.
pub fn detect(root: &Path) -> Result<HardwareList, DetectError> {
    let sys = sysfs::under(root, "/sys");
    if !sys.is_dir() {
        return Err(DetectError::NoSysfs(sys));
    }
    let mut hw = HardwareList::new();
    let table = smbios::read_table(root);
    let structs = table.as_deref().map(structures).unwrap_or_default();
    // pci.ids is large: it is read once, keeping only the devices present on this machine.
    let pci_devices = pci::addresses(root);
    let ids = pciids::PciIds::load(root, &pci::present(root, &pci_devices));

    dmi::detect(root, &mut hw);
    kernel::detect(root, &mut hw);
    dmi::detect_firmware(root, &mut hw);
    memory::detect(root, &structs, &mut hw);
    cpu::detect(root, &mut hw);
    disk::detect(root, &mut hw);
    net::detect(root, &ids, &mut hw);
    pci::detect(root, &pci_devices, &ids, &mut hw);
    Ok(hw)
}

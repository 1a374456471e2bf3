//! `system/kernel/*` and IPMI presence, from procfs and device nodes.

use std::path::Path;

use super::sysfs;
use crate::HardwareList;

/// Device nodes (and the sysfs class) the IPMI driver creates.
const IPMI_PATHS: &[&str] = &[
    "/dev/ipmi0",
    "/dev/ipmi/0",
    "/dev/ipmidev/0",
    "/sys/class/ipmi/ipmi0",
];

/// The LAN channel reported when an IPMI device exists. eDeploy probed channels with `ipmitool`;
/// detection runs no program and sends no IPMI request, so it reports channel 1, the LAN channel
/// of most BMCs (see docs/detect.md).
const DEFAULT_IPMI_CHANNEL: &str = "1";

pub(super) fn detect(root: &Path, hw: &mut HardwareList) {
    if let Some(v) = sysfs::read(&sysfs::under(root, "/proc/sys/kernel/osrelease")) {
        hw.push("system", "kernel", "version", &v);
    }
    if let Some(v) = sysfs::read(&sysfs::under(root, "/proc/sys/kernel/arch")) {
        hw.push("system", "kernel", "arch", &v);
    }
    let cmdline = sysfs::read(&sysfs::under(root, "/proc/cmdline"));
    if let Some(v) = &cmdline {
        hw.push("system", "kernel", "cmdline", v);
    }
    if IPMI_PATHS.iter().any(|p| sysfs::under(root, p).exists()) {
        hw.push("system", "ipmi", "channel", DEFAULT_IPMI_CHANNEL);
    } else if cmdline
        .as_deref()
        .is_some_and(|c| c.to_ascii_uppercase().contains("FAKEIPMI"))
    {
        // eDeploy's test hook (`grep -qi FAKEIPMI /proc/cmdline`): lets a VM match an IPMI spec.
        hw.push("system", "ipmi-fake", "channel", "0");
    }
}

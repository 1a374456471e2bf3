//! `disk/*` for every real block device, from `/sys/block` and the `/dev/disk/by-*` links.

use std::path::{Path, PathBuf};

use super::sysfs;
use crate::HardwareList;

/// Whole disks eDeploy reported: `sd*`, `vd*`, `hd*`, `xvd*` (letters only: no partitions),
/// `nvme<c>n<n>` and `mmcblk<n>` (digits only: no partitions, no `boot0`/`rpmb` areas).
fn is_disk(name: &str) -> bool {
    let letters_after = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_lowercase()))
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if ["sd", "vd", "hd", "xvd"].iter().any(|p| letters_after(p)) {
        return true;
    }
    if let Some(rest) = name.strip_prefix("nvme") {
        return rest
            .split_once('n')
            .is_some_and(|(c, n)| digits(c) && digits(n));
    }
    name.strip_prefix("mmcblk").is_some_and(digits)
}

/// The first readable attribute among `names` under `dir`.
fn first_of(dir: &Path, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let p = dir.join(n);
        if p.exists() {
            sysfs::read(&p)
        } else {
            None
        }
    })
}

/// The serial number a SCSI device reports in its unit serial number VPD page (0x80): a 4-byte
/// header whose bytes 2-3 give the length, then ASCII.
fn vpd_serial(bytes: &[u8]) -> Option<String> {
    let len = usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]));
    let raw = bytes.get(4..4 + len).or_else(|| bytes.get(4..))?;
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

fn serial(block: &Path) -> Option<String> {
    // virtio and NVMe expose it as text; SCSI/SATA only through the VPD page.
    first_of(block, &["serial", "device/serial"]).or_else(|| {
        let vpd = block.join("device/vpd_pg80");
        std::fs::read(&vpd).ok().and_then(|b| vpd_serial(&b))
    })
}

/// `/dev/disk/<dir>` link names that point at `name` itself, sorted.
fn links_to(root: &Path, dir: &str, name: &str) -> Vec<String> {
    let base = sysfs::under(root, "/dev/disk").join(dir);
    if !base.is_dir() {
        return Vec::new();
    }
    let mut out: Vec<String> = sysfs::list_dir(&base)
        .into_iter()
        .filter(|entry| sysfs::link_name(&base.join(entry)).as_deref() == Some(name))
        .collect();
    out.sort();
    out
}

pub(super) fn detect(root: &Path, hw: &mut HardwareList) {
    let sys_block = sysfs::under(root, "/sys/block");
    let mut disks: Vec<(String, PathBuf, u64)> = Vec::new();
    for name in sysfs::list_dir(&sys_block) {
        if !is_disk(&name) {
            continue;
        }
        let dir = sys_block.join(&name);
        let Some(sectors) = sysfs::read_u64(&dir.join("size")) else {
            continue;
        };
        // An empty card reader or CD drive reports 0 sectors: nothing to install on.
        if sectors == 0 {
            tracing::debug!(disk = %name, "empty block device skipped");
            continue;
        }
        disks.push((name, dir, sectors));
    }
    hw.push("disk", "logical", "count", &disks.len().to_string());
    for (name, dir, sectors) in &disks {
        let d = |key: &str, value: &str| (key.to_string(), value.to_string());
        let mut lines = vec![d("size", &(sectors * 512 / 1_000_000_000).to_string())];
        // The nested device/device fallback is eDeploy's: an NVMe namespace's controller has no
        // vendor, its PCI function does.
        let attrs: [(&str, &[&str]); 3] = [
            ("vendor", &["device/vendor", "device/device/vendor"]),
            ("model", &["device/model"]),
            (
                "rev",
                &["device/rev", "device/firmware_rev", "device/revision"],
            ),
        ];
        for (key, files) in attrs {
            if let Some(v) = first_of(dir, files) {
                lines.push(d(key, &v));
            }
        }
        // eDeploy's order: optimal_io_size, physical_block_size, rotational, nr_requests.
        for key in [
            "optimal_io_size",
            "physical_block_size",
            "rotational",
            "nr_requests",
        ] {
            if let Some(v) = sysfs::read(&dir.join("queue").join(key)) {
                lines.push(d(key, &v));
            }
        }
        // `none [mq-deadline] kyber`: the bracketed one is active.
        if let Some(s) = sysfs::read(&dir.join("queue/scheduler")) {
            let active = s
                .split_whitespace()
                .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_string))
                .or_else(|| (!s.contains(' ')).then_some(s.clone()));
            if let Some(a) = active {
                lines.push(d("scheduler", &a));
            }
        }
        if let Some(s) = serial(dir) {
            lines.push(d("serial", &s));
        }
        for id in links_to(root, "by-id", name) {
            let key = if id.starts_with("wwn") {
                "wwn-id"
            } else if id.starts_with("scsi") {
                "scsi-id"
            } else {
                "id"
            };
            lines.push(d(key, &id));
        }
        for p in links_to(root, "by-path", name) {
            lines.push(d("by-path", &p));
        }
        for (k, v) in lines {
            hw.push("disk", name, &k, &v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names() {
        for n in [
            "sda", "sdaa", "vda", "hdc", "xvdb", "nvme0n1", "nvme10n2", "mmcblk0",
        ] {
            assert!(is_disk(n), "{n}");
        }
        for n in [
            "sda1",
            "loop0",
            "zram0",
            "nvme0n1p1",
            "nvme0",
            "mmcblk0p1",
            "mmcblk0boot0",
            "sd",
            "dm-0",
            "md0",
            "sr0",
        ] {
            assert!(!is_disk(n), "{n}");
        }
    }

    #[test]
    fn vpd_page() {
        assert_eq!(
            vpd_serial(b"\0\x80\0\x0a  S3Z1NB0K\0").as_deref(),
            Some("S3Z1NB0K")
        );
        assert_eq!(vpd_serial(b"\0\x80\0"), None);
        assert_eq!(vpd_serial(b"\0\x80\0\xffABC").as_deref(), Some("ABC"));
    }
}

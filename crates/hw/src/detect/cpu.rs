//! `cpu/*` from `/proc/cpuinfo`, with the maximum frequency from cpufreq when it exists. Keys
//! follow eDeploy's successor (`hardware`), which read the same facts through `lscpu`.

use std::collections::BTreeMap;
use std::path::Path;

use super::sysfs;
use crate::HardwareList;

/// One processor block of `/proc/cpuinfo`.
type Block = BTreeMap<String, String>;

fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current = Block::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            current.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    // Some architectures add blocks that are not processors (a trailing "Hardware:" block).
    blocks.retain(|b| b.contains_key("processor"));
    blocks
}

pub(super) fn detect(root: &Path, hw: &mut HardwareList) {
    let Some(text) = sysfs::read_all(&sysfs::under(root, "/proc/cpuinfo")) else {
        return;
    };
    let blocks = parse(&text);
    if blocks.is_empty() {
        tracing::debug!("no processor in /proc/cpuinfo");
        return;
    }
    // Packages in numeric order of their physical id; a missing id (some VMs, ARM) is package 0.
    let mut packages: BTreeMap<u64, Vec<&Block>> = BTreeMap::new();
    for b in &blocks {
        let id = b
            .get("physical id")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        packages.entry(id).or_default().push(b);
    }
    hw.push("cpu", "physical", "number", &packages.len().to_string());
    // "on", "off", "forceoff", "notsupported", "notimplemented", as eDeploy's successor reports.
    if let Some(smt) = sysfs::read(&sysfs::under(root, "/sys/devices/system/cpu/smt/control")) {
        hw.push("cpu", "physical", "smt", &smt);
    }
    for (n, cpus) in packages.values().enumerate() {
        let item = format!("physical_{n}");
        let first = cpus[0];
        // Vendor and product as /proc/cpuinfo (and so lscpu, which eDeploy's successor used)
        // spell them: "GenuineIntel", "Intel(R) Xeon(R) ...".
        if let Some(v) = first.get("vendor_id") {
            hw.push("cpu", &item, "vendor", v);
        }
        if let Some(v) = first.get("model name").filter(|s| !s.is_empty()) {
            hw.push("cpu", &item, "product", v);
        }
        let cores = first.get("cpu cores").cloned().unwrap_or_else(|| {
            let ids: std::collections::BTreeSet<_> =
                cpus.iter().filter_map(|c| c.get("core id")).collect();
            ids.len().max(1).to_string()
        });
        hw.push("cpu", &item, "cores", &cores);
        let threads = first
            .get("siblings")
            .cloned()
            .unwrap_or_else(|| cpus.len().to_string());
        hw.push("cpu", &item, "threads", &threads);
        for (key, field) in [
            ("family", "cpu family"),
            ("model", "model"),
            ("stepping", "stepping"),
        ] {
            if let Some(v) = first.get(field) {
                hw.push("cpu", &item, key, v);
            }
        }
        if let Some(hz) = frequency(root, first) {
            hw.push("cpu", &item, "frequency", &hz.to_string());
        }
        if let Some(v) = first.get("flags").filter(|s| !s.is_empty()) {
            hw.push("cpu", &item, "flags", v);
        }
        if let (Ok(c), Ok(t)) = (cores.parse::<u64>(), threads.parse::<u64>()) {
            if c > 0 && t.is_multiple_of(c) {
                hw.push("cpu", &item, "threads_per_core", &(t / c).to_string());
            }
        }
    }
    hw.push("cpu", "logical", "number", &blocks.len().to_string());
}

/// Frequency in Hz: cpufreq's maximum when present (stable across reboots and load, unlike the
/// current clock), else the `cpu MHz` of `/proc/cpuinfo`.
fn frequency(root: &Path, cpu: &Block) -> Option<u64> {
    let n = cpu.get("processor")?;
    let max = sysfs::under(root, "/sys/devices/system/cpu")
        .join(format!("cpu{n}"))
        .join("cpufreq/cpuinfo_max_freq");
    if max.exists() {
        if let Some(khz) = sysfs::read_u64(&max) {
            return Some(khz * 1000);
        }
    }
    let mhz: f64 = cpu.get("cpu MHz")?.parse().ok()?;
    (mhz.is_finite() && mhz > 0.0).then(|| (mhz * 1e6).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_without_processor_are_ignored() {
        let b = parse("processor : 0\nflags : a b\n\nHardware : foo\n");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["flags"], "a b");
    }
}

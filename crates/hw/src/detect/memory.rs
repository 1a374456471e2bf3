//! `memory/*`: the total, and one `bank:<n>` per SMBIOS type 17 (memory device) structure.
//!
//! Descriptions are built as lshw built them (`DIMM DDR4 Synchronous 2400 MHz (0.4 ns)`), since
//! eDeploy's values came from lshw and specs compare them.

use std::path::Path;

use super::smbios::Structure;
use super::sysfs;
use crate::HardwareList;

const MEMORY_DEVICE: u8 = 17;

/// SMBIOS 7.18.1 form factors, as lshw names them.
fn form_factor(v: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "",
        "",
        "",
        "SIMM",
        "SIP",
        "Chip",
        "DIP",
        "ZIP",
        "Proprietary Card",
        "DIMM",
        "TSOP",
        "Row of chips",
        "RIMM",
        "SODIMM",
        "SRIMM",
        "FB-DIMM",
    ];
    NAMES.get(usize::from(v)).copied().unwrap_or("")
}

/// SMBIOS 7.18.2 memory types, as lshw names them.
fn memory_type(v: u8) -> &'static str {
    const NAMES: [&str; 36] = [
        "",
        "",
        "",
        "DRAM",
        "EDRAM",
        "VRAM",
        "SRAM",
        "RAM",
        "ROM",
        "FLASH",
        "EEPROM",
        "FEPROM",
        "EPROM",
        "CDRAM",
        "3DRAM",
        "SDRAM",
        "SGRAM",
        "RDRAM",
        "DDR",
        "DDR2",
        "DDR2 FB-DIMM",
        "",
        "",
        "",
        "DDR3",
        "FBD2",
        "DDR4",
        "LPDDR",
        "LPDDR2",
        "LPDDR3",
        "LPDDR4",
        "Logical non-volatile device",
        "HBM",
        "HBM2",
        "DDR5",
        "LPDDR5",
    ];
    NAMES.get(usize::from(v)).copied().unwrap_or("")
}

/// SMBIOS 7.18.3 type detail bits; "Other" and "Unknown" add nothing, as in lshw.
fn type_detail(v: u16) -> Vec<&'static str> {
    const NAMES: [&str; 16] = [
        "",
        "",
        "",
        "Fast-paged",
        "Static column",
        "Pseudo-static",
        "RAMBUS",
        "Synchronous",
        "CMOS",
        "EDO",
        "Window DRAM",
        "Cache DRAM",
        "Non-volatile",
        "Registered (Buffered)",
        "Unbuffered (Unregistered)",
        "LRDIMM",
    ];
    (0..16)
        .filter(|bit| v & (1 << bit) != 0)
        .map(|bit| NAMES[bit])
        .filter(|s| !s.is_empty())
        .collect()
}

/// Size in bytes: the 15-bit size word (KB or MB units), or the extended size (MB) when the word
/// says 0x7fff. `None` when unknown (0xffff); `Some(0)` for an empty slot.
fn bank_size(s: &Structure) -> Option<u64> {
    let word = s.word(0x0c)?;
    match word {
        0xffff => None,
        0x7fff => Some(u64::from(s.dword(0x1c)? & 0x7fff_ffff) * 1024 * 1024),
        w if w & 0x8000 != 0 => Some(u64::from(w & 0x7fff) * 1024),
        w => Some(u64::from(w) * 1024 * 1024),
    }
}

fn description(s: &Structure, size: Option<u64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.push(form_factor(s.byte(0x0e).unwrap_or(0)).to_string());
    parts.push(memory_type(s.byte(0x12).unwrap_or(0)).to_string());
    parts.extend(
        type_detail(s.word(0x13).unwrap_or(0))
            .into_iter()
            .map(String::from),
    );
    if let Some(mhz) = s.word(0x15).filter(|&m| m != 0 && m != 0xffff) {
        parts.push(format!("{mhz} MHz ({:.1} ns)", 1000.0 / f64::from(mhz)));
    }
    if size == Some(0) {
        parts.push("[empty]".to_string());
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

pub(super) fn detect(root: &Path, structs: &[Structure], hw: &mut HardwareList) {
    let banks: Vec<&Structure> = structs.iter().filter(|s| s.kind == MEMORY_DEVICE).collect();
    let sizes: Vec<Option<u64>> = banks.iter().map(|s| bank_size(s)).collect();
    // The installed memory, as lshw found it: the DIMMs' sum, else the memory blocks of sysfs, else the kernel's MemTotal (a little lower: the kernel's own reservations).
    let dimm_total: u64 = sizes.iter().flatten().sum();
    let total = if dimm_total > 0 {
        Some(dimm_total)
    } else {
        memory_blocks(root).or_else(|| {
            sysfs::read_all(&sysfs::under(root, "/proc/meminfo")).and_then(|t| meminfo_total(&t))
        })
    };
    if let Some(t) = total {
        hw.push("memory", "total", "size", &t.to_string());
    }
    for (n, (s, size)) in banks.iter().zip(&sizes).enumerate() {
        let item = format!("bank:{n}");
        if let Some(sz) = size.filter(|&z| z > 0) {
            hw.push("memory", &item, "size", &sz.to_string());
        }
        if let Some(slot) = s.string(0x10) {
            hw.push("memory", &item, "slot", &slot);
        }
        hw.push("memory", &item, "description", &description(s, *size));
        for (key, offset) in [("vendor", 0x17), ("serial", 0x18), ("product", 0x1a)] {
            if let Some(v) = s.string(offset) {
                hw.push("memory", &item, key, &v);
            }
        }
        if let Some(mhz) = s.word(0x15).filter(|&m| m != 0 && m != 0xffff) {
            hw.push(
                "memory",
                &item,
                "clock",
                &(u64::from(mhz) * 1_000_000).to_string(),
            );
        }
    }
    if !banks.is_empty() {
        hw.push("memory", "banks", "count", &banks.len().to_string());
    }
}

/// Memory blocks times the block size (`/sys/devices/system/memory`), as lshw computed it.
/// Blocks taken offline by hotplug still count: they are installed. Their `online` files are not
/// read, which keeps this to one directory listing on machines with thousands of blocks.
fn memory_blocks(root: &Path) -> Option<u64> {
    let dir = sysfs::under(root, "/sys/devices/system/memory");
    let size = sysfs::read(&dir.join("block_size_bytes"))?;
    let size = u64::from_str_radix(size.trim_start_matches("0x"), 16).ok()?;
    let blocks = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix("memory")
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .count() as u64;
    (blocks > 0).then(|| blocks * size)
}

fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::structures;

    #[test]
    fn decodes_a_ddr4_dimm() {
        let mut t = vec![0u8; 0x22];
        t[0] = 17;
        t[1] = 0x22;
        t[0x0c..0x0e].copy_from_slice(&0x4000u16.to_le_bytes()); // 16 GiB
        t[0x0e] = 0x09;
        t[0x10] = 1;
        t[0x12] = 0x1a;
        t[0x13..0x15].copy_from_slice(&0x2080u16.to_le_bytes());
        t[0x15..0x17].copy_from_slice(&2400u16.to_le_bytes());
        t[0x17] = 2;
        t.extend_from_slice(b"DIMM_A1\0Samsung\0\0");
        let s = structures(&t);
        assert_eq!(bank_size(&s[0]), Some(16 << 30));
        assert_eq!(
            description(&s[0], Some(1)),
            "DIMM DDR4 Synchronous Registered (Buffered) 2400 MHz (0.4 ns)"
        );
        let mut hw = HardwareList::new();
        detect(Path::new("/nonexistent"), &s, &mut hw);
        assert_eq!(hw.get("memory", "bank:0", "vendor"), Some("Samsung"));
        assert_eq!(hw.get("memory", "bank:0", "slot"), Some("DIMM_A1"));
        assert_eq!(hw.get("memory", "bank:0", "serial"), None);
        assert_eq!(hw.get("memory", "total", "size"), Some("17179869184"));
    }
}

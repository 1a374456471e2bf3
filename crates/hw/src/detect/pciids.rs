//! Names from the `pci.ids` database (Debian `pci.ids`/`hwdata`), when the root has one.
//!
//! The file is about 1.3 MB: it is scanned once, keeping only the vendors present on the
//! machine, so the lookup costs about a millisecond and no memory for the rest.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::sysfs;

const LOCATIONS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

#[derive(Debug, Default)]
struct Vendor {
    name: String,
    devices: HashMap<String, Device>,
}

#[derive(Debug, Default)]
struct Device {
    name: String,
    /// (subsystem vendor, subsystem device) -> name.
    subsystems: HashMap<(String, String), String>,
}

/// The names of the vendors (and their devices) a machine has, and every class.
#[derive(Debug, Default)]
pub(super) struct PciIds {
    vendors: HashMap<String, Vendor>,
    /// `"02"` -> class name, `"0200"` -> subclass name.
    classes: HashMap<String, String>,
}

impl PciIds {
    /// Loads the first database found under `root`, keeping only the `wanted` (vendor, device)
    /// pairs (4 lower-case hex digits each) and every class.
    pub(super) fn load(root: &Path, wanted: &BTreeSet<(String, String)>) -> PciIds {
        for loc in LOCATIONS {
            let path = sysfs::under(root, loc);
            // Streamed through a small buffer: reading the 1.3 MB file into one allocation
            // cost more (page faults) than the whole rest of detection.
            match std::fs::File::open(&path) {
                Ok(f) => return Self::parse(BufReader::with_capacity(1 << 16, f), wanted),
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "no pci.ids here"),
            }
        }
        PciIds::default()
    }

    /// Parses the database. Works on bytes and decodes only the lines it keeps: the devices a
    /// machine does not have (nearly all of them) cost a byte test each and no allocation.
    pub(super) fn parse(mut text: impl BufRead, wanted: &BTreeSet<(String, String)>) -> PciIds {
        let wanted_vendors: BTreeSet<&str> = wanted.iter().map(|(v, _)| v.as_str()).collect();
        let mut ids = PciIds::default();
        // Where the indented lines below the current top-level line belong.
        let mut vendor: Option<String> = None;
        let mut device: Option<String> = None;
        let mut class: Option<String> = None;
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match text.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "pci.ids read error, names from the part read");
                    break;
                }
            }
            let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
            match raw.first() {
                None | Some(b'#') => continue,
                Some(b'\t') if vendor.is_none() && class.is_none() => continue,
                _ => {}
            }
            // A device line of a wanted vendor: skipped unless that device is present.
            if let (Some(v), Some(b'\t'), Some(id)) = (&vendor, raw.first(), raw.get(1..5)) {
                if raw.get(1) != Some(&b'\t') {
                    let d = String::from_utf8_lossy(id).to_ascii_lowercase();
                    if !wanted.contains(&(v.clone(), d)) {
                        device = None;
                        continue;
                    }
                }
            }
            if raw.starts_with(b"\t\t") && vendor.is_some() && device.is_none() {
                continue;
            }
            let line = String::from_utf8_lossy(raw);
            let tabs = line.bytes().take_while(|&b| b == b'\t').count();
            let body = &line[tabs..];
            let (id, name) = match body.split_once("  ") {
                Some((id, name)) => (id.trim(), name.trim()),
                None => continue,
            };
            match tabs {
                0 => {
                    device = None;
                    vendor = None;
                    class = None;
                    if let Some(c) = id.strip_prefix("C ") {
                        class = Some(c.to_ascii_lowercase());
                        ids.classes.insert(c.to_ascii_lowercase(), name.to_string());
                    } else if id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        let v = id.to_ascii_lowercase();
                        if wanted_vendors.contains(v.as_str()) {
                            let entry = Vendor {
                                name: name.to_string(),
                                ..Vendor::default()
                            };
                            ids.vendors.insert(v.clone(), entry);
                            vendor = Some(v);
                        }
                    }
                    // Anything else starts another section (after the classes come lists such
                    // as "X " subclasses): its indented lines are skipped.
                }
                1 => {
                    if let Some(v) = &vendor {
                        let d = id.to_ascii_lowercase();
                        if let Some(ven) = ids.vendors.get_mut(v) {
                            let entry = Device {
                                name: name.to_string(),
                                ..Device::default()
                            };
                            ven.devices.insert(d.clone(), entry);
                        }
                        device = Some(d);
                    } else if let Some(c) = &class {
                        let key = format!("{c}{}", id.to_ascii_lowercase());
                        ids.classes.insert(key, name.to_string());
                    }
                }
                2 => {
                    let (Some(v), Some(d)) = (&vendor, &device) else {
                        continue;
                    };
                    let mut sub = id.split_whitespace();
                    let (Some(sv), Some(sd)) = (sub.next(), sub.next()) else {
                        continue;
                    };
                    if let Some(dev) = ids.vendors.get_mut(v).and_then(|x| x.devices.get_mut(d)) {
                        let key = (sv.to_ascii_lowercase(), sd.to_ascii_lowercase());
                        dev.subsystems.insert(key, name.to_string());
                    }
                }
                _ => {}
            }
        }
        ids
    }

    pub(super) fn vendor(&self, vendor: &str) -> Option<&str> {
        self.vendors.get(vendor).map(|v| v.name.as_str())
    }

    pub(super) fn device(&self, vendor: &str, device: &str) -> Option<&str> {
        Some(self.vendors.get(vendor)?.devices.get(device)?.name.as_str())
    }

    pub(super) fn subsystem(&self, v: &str, d: &str, sv: &str, sd: &str) -> Option<&str> {
        let dev = self.vendors.get(v)?.devices.get(d)?;
        dev.subsystems
            .get(&(sv.to_string(), sd.to_string()))
            .map(String::as_str)
    }

    /// The subclass name (`"0200"` -> "Ethernet controller"), else the class name.
    pub(super) fn class(&self, class: &str) -> Option<&str> {
        self.classes
            .get(class)
            .or_else(|| self.classes.get(class.get(..2)?))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "# comment\n\
1af4  Red Hat, Inc.\n\
\t1041  Virtio 1.0 network device\n\
\t\t1af4 1100  QEMU Virtual Machine\n\
8086  Intel Corporation\n\
\t10fb  82599ES 10-Gigabit SFI/SFP+ Network Connection\n\
C 02  Network controller\n\
\t00  Ethernet controller\n\
\t\t00  should be ignored\n\
C 01  Mass storage controller\n";

    #[test]
    fn keeps_wanted_vendors_and_all_classes() {
        let wanted: BTreeSet<(String, String)> = [("1af4".to_string(), "1041".to_string())].into();
        let ids = PciIds::parse(DB.as_bytes(), &wanted);
        assert_eq!(ids.vendor("1af4"), Some("Red Hat, Inc."));
        assert_eq!(ids.vendor("8086"), None, "not wanted");
        assert_eq!(
            ids.device("1af4", "1041"),
            Some("Virtio 1.0 network device")
        );
        assert_eq!(
            ids.subsystem("1af4", "1041", "1af4", "1100"),
            Some("QEMU Virtual Machine")
        );
        assert_eq!(ids.class("0200"), Some("Ethernet controller"));
        assert_eq!(ids.class("0180"), Some("Mass storage controller"));
        assert_eq!(ids.class("ff"), None);
    }
}

//! `network/<ifname>/*` for every physical NIC (one with a `device` link; `lo`, bridges, bonds,
//! veth and the like have none), from `/sys/class/net` and, for IPv4, procfs routing tables.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::pci;
use super::pciids::PciIds;
use super::sysfs;
use crate::HardwareList;

/// The PCI function behind a NIC: the device itself, or the parent of a virtio device.
fn pci_function(root: &Path, device_link: &Path) -> Option<PathBuf> {
    let dev = std::fs::canonicalize(device_link).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    let is_pci = |p: &Path| {
        p.starts_with(&root)
            && p.file_name()
                .is_some_and(|n| pci::is_address(&n.to_string_lossy()))
    };
    if is_pci(&dev) {
        return Some(dev);
    }
    let virtio = dev
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("virtio"));
    let parent = dev.parent()?;
    (virtio && is_pci(parent)).then(|| parent.to_path_buf())
}

/// lshw's speed text (`1Gbit/s`, `100Mbit/s`, `2500Mbit/s`) from sysfs Mb/s.
fn speed_text(mbits: u64) -> String {
    if mbits >= 1000 && mbits.is_multiple_of(1000) {
        format!("{}Gbit/s", mbits / 1000)
    } else {
        format!("{mbits}Mbit/s")
    }
}

pub(super) fn detect(root: &Path, names: &PciIds, hw: &mut HardwareList) {
    let class = sysfs::under(root, "/sys/class/net");
    let routes = Routes::read(root);
    for ifname in sysfs::list_dir(&class) {
        let dir = class.join(&ifname);
        let device = dir.join("device");
        if ifname == "lo" || !device.exists() {
            tracing::debug!(%ifname, "virtual interface skipped");
            continue;
        }
        let mut push = |k: &str, v: &str| hw.push("network", &ifname, k, v);
        if let Some(mac) = sysfs::read(&dir.join("address")) {
            push("serial", &mac.to_ascii_lowercase());
        }
        if let Some(drv) = sysfs::link_name(&device.join("driver")) {
            push("driver", &drv);
        }
        // lshw's bus info, as eDeploy reported it: `pci@0000:18:00.0`, or `virtio@2` for the
        // virtio device of a virtio-net function.
        let dev_name = std::fs::canonicalize(&device)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let function = pci_function(root, &device);
        match (&dev_name, &function) {
            (Some(n), _) if n.starts_with("virtio") => {
                push("businfo", &format!("virtio@{}", &n["virtio".len()..]));
            }
            (Some(n), Some(_)) => push("businfo", &format!("pci@{n}")),
            _ => tracing::debug!(%ifname, "NIC not on PCI: no businfo"),
        }
        // Names from pci.ids, for virtio too (the function is Red Hat's virtio device).
        if let Some((v, d)) = function.as_deref().and_then(pci::ids) {
            if let Some(n) = names.vendor(&v) {
                push("vendor", n);
            }
            if let Some(n) = names.device(&v, &d) {
                push("product", n);
            }
        }
        // Reading `carrier` of a down interface fails (EINVAL): that is "no link" too.
        let link = sysfs::read(&dir.join("carrier")).as_deref() == Some("1");
        push("link", if link { "yes" } else { "no" });
        if link {
            // Speed and duplex are only meaningful with a link (-1 / "unknown" otherwise).
            if let Some(mb) = sysfs::read(&dir.join("speed")).and_then(|s| s.parse::<u64>().ok()) {
                if mb > 0 {
                    push("speed", &speed_text(mb));
                }
            }
            if let Some(d) = sysfs::read(&dir.join("duplex")).filter(|d| d != "unknown") {
                push("duplex", &d);
            }
        }
        if let Some(mtu) = sysfs::read(&dir.join("mtu")) {
            push("mtu", &mtu);
        }
        if let Some((ip, prefix)) = routes.ipv4(&ifname) {
            let mask = prefix_mask(prefix);
            push("ipv4", &ip.to_string());
            push("ipv4-netmask", &Ipv4Addr::from(mask).to_string());
            push("ipv4-cidr", &prefix.to_string());
            push(
                "ipv4-network",
                &Ipv4Addr::from(u32::from(ip) & mask).to_string(),
            );
        }
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The kernel's IPv4 view without netlink: link routes per interface from `/proc/net/route`, and
/// local addresses (`/32 host LOCAL` leaves) from `/proc/net/fib_trie`. An interface's address is
/// the first local address inside one of its link routes.
#[derive(Debug, Default)]
struct Routes {
    /// (interface, network, prefix length) of directly connected routes.
    links: Vec<(String, u32, u8)>,
    /// Local addresses, in table order, without duplicates.
    locals: Vec<Ipv4Addr>,
}

impl Routes {
    fn read(root: &Path) -> Routes {
        let route = sysfs::read_all(&sysfs::under(root, "/proc/net/route")).unwrap_or_default();
        let trie = sysfs::read_all(&sysfs::under(root, "/proc/net/fib_trie")).unwrap_or_default();
        Routes {
            links: parse_route(&route),
            locals: parse_fib_trie(&trie),
        }
    }

    fn ipv4(&self, ifname: &str) -> Option<(Ipv4Addr, u8)> {
        self.links
            .iter()
            .filter(|(i, _, _)| i == ifname)
            .find_map(|&(_, net, prefix)| {
                let mask = prefix_mask(prefix);
                self.locals
                    .iter()
                    .find(|a| u32::from(**a) & mask == net)
                    .map(|a| (*a, prefix))
            })
    }
}

/// Rows of `/proc/net/route` with no gateway and a contiguous non-zero mask. The kernel prints each
/// network-order address word as a host-order integer (`0002000A` is 10.0.2.0 on x86), so the
/// word's native bytes are the address bytes.
fn parse_route(text: &str) -> Vec<(String, u32, u8)> {
    let addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Some(mask)) = (addr(f[1]), addr(f[2]), addr(f[7])) else {
            continue;
        };
        if gw != 0 || mask == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
            continue;
        }
        out.push((f[0].to_string(), dest & mask, mask.leading_ones() as u8));
    }
    out
}

/// Addresses whose leaf says `/32 host LOCAL`, excluding loopback.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last.filter(|a| !a.is_loopback()) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds() {
        assert_eq!(speed_text(1000), "1Gbit/s");
        assert_eq!(speed_text(100), "100Mbit/s");
        assert_eq!(speed_text(2500), "2500Mbit/s");
        assert_eq!(speed_text(25000), "25Gbit/s");
    }

    #[test]
    fn ipv4_from_procfs() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t0010A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n";
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.2.15\n        /32 host LOCAL\n\
     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.168.16.7\n        /32 host LOCAL\n\
Local:\n     |-- 10.0.2.15\n        /32 host LOCAL\n";
        let r = Routes {
            links: parse_route(route),
            locals: parse_fib_trie(trie),
        };
        assert_eq!(r.locals.len(), 2);
        assert_eq!(r.ipv4("eth0"), Some(("10.0.2.15".parse().unwrap(), 24)));
        assert_eq!(r.ipv4("eth1"), Some(("192.168.16.7".parse().unwrap(), 20)));
        assert_eq!(r.ipv4("eth2"), None);
        assert_eq!(prefix_mask(20), 0xffff_f000);
    }
}

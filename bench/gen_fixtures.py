#!/usr/bin/env python3
"""Writes the spec-engine benchmark inputs into OUTDIR (deterministic, no dependencies).

- hw.json: a 425-line hardware list of a 2-socket server (24 DIMMs, 12 disks, 4 NICs, PCI);
- config/: `state` with 50 profiles x 30 spec lines; the 49 first are decoys that fail late,
  the last one matches;
- adversarial/k<N>.specs: a profile whose first N lines bind variables and whose last line can
  never hold (it asks for the size of the Nth disk to equal the first disk's);
- generate.cmdb: a generate() model expanding to 10,000 entries.
"""
import json
import os
import sys

out = sys.argv[1]
os.makedirs(os.path.join(out, "config"), exist_ok=True)
os.makedirs(os.path.join(out, "adversarial"), exist_ok=True)

hw = [
    ("system", "product", "vendor", "Dell Inc."),
    ("system", "product", "name", "PowerEdge R740 (SKU=0715;ModelName=PowerEdge R740)"),
    ("system", "product", "serial", "9K9PW02"),
    ("system", "product", "uuid", "4c4c4544-004b-3910-8050-b9c04f505732"),
    ("system", "motherboard", "vendor", "Dell Inc."),
    ("system", "motherboard", "name", "06WXJT"),
    ("firmware", "bios", "vendor", "Dell Inc."),
    ("firmware", "bios", "version", "2.12.2"),
    ("firmware", "bios", "date", "07/09/2021"),
    ("system", "ipmi", "channel", "1"),
    ("cpu", "physical", "number", "2"),
    ("cpu", "logical", "number", "48"),
]
for p in range(2):
    hw += [("cpu", "physical_%d" % p, k, v) for k, v in [
        ("vendor", "Intel Corp."), ("product", "Intel(R) Xeon(R) Gold 6126 CPU @ 2.60GHz"),
        ("cores", "12"), ("threads", "24"), ("frequency", "2600000000"), ("flags", "fpu vme de pse tsc msr")]]
hw.append(("memory", "total", "size", str(24 * 32 * 2**30)))
for b in range(24):
    hw += [("memory", "bank:%d" % b, k, v) for k, v in [
        ("size", str(32 * 2**30)), ("slot", "A%d" % (b + 1)), ("description", "DIMM DDR4 Synchronous Registered 2666 MHz"),
        ("vendor", "00AD063200AD"), ("product", "HMA84GR7AFR4N-VK"), ("serial", "%08X" % (0x1000 + b)), ("clock", "2666000000")]]
hw.append(("memory", "banks", "count", "24"))
for d in range(12):
    name = "sd" + "abcdefghijkl"[d]
    ssd = d >= 10
    hw += [("disk", name, k, v) for k, v in [
        ("size", "480" if ssd else str(4000 + d)), ("vendor", "ATA" if ssd else "SEAGATE"),
        ("model", "SSDSC2KG480G8R" if ssd else "ST4000NM0025"), ("rev", "DL63"), ("rotational", "0" if ssd else "1"),
        ("physical_block_size", "4096"), ("optimal_io_size", "0"), ("scheduler", "mq-deadline"),
        ("serial", "ZC1%05d" % d), ("wwn-id", "wwn-0x5000c500a%07x" % d), ("id", "scsi-35000c500a%07x" % d),
        ("by-path", "pci-0000:3b:00.0-scsi-0:0:%d:0" % d), ("slot", str(d)), ("Write Cache Enable", "0")]]
hw.append(("disk", "logical", "count", "12"))
for n in range(4):
    ifn = "eno%d" % (n + 1)
    fast = n >= 2
    hw += [("network", ifn, k, v) for k, v in [
        ("serial", "24:6e:96:%02x:%02x:%02x" % (n, n, n)), ("driver", "ixgbe" if fast else "tg3"),
        ("businfo", "pci@0000:%02x:00.%d" % (0x19 + n // 2, n % 2)), ("vendor", "Intel Corporation" if fast else "Broadcom Inc."),
        ("product", "Ethernet 10G 2P X520" if fast else "NetXtreme BCM5720"), ("link", "yes"),
        ("speed", "10000Mb/s" if fast else "1000Mb/s"), ("duplex", "full"), ("mtu", "1500"),
        ("ipv4", "10.1.%d.17" % n), ("ipv4-netmask", "255.255.255.0"), ("ipv4-cidr", "24"), ("ipv4-network", "10.1.%d.0" % n)]]
pci = 0
while len(hw) < 425:
    hw.append(("pci", "0000:%02x:00.0" % pci, ["vendor", "device", "class"][len(hw) % 3], "%04x" % (0x8086 + pci)))
    pci += 1
assert len(hw) == 425, len(hw)
json.dump([list(l) for l in hw], open(os.path.join(out, "hw.json"), "w"))


def profile(fail_at=None, token=""):
    lines = [
        ("system", "product", "vendor", "Dell Inc."),
        ("system", "product", "name", "regexp(^PowerEdge R7[45]0)"),
        ("cpu", "physical", "number", "2"),
        ("cpu", "logical", "number", "ge(32)"),
        ("memory", "total", "size", "ge(274877906944)"),
    ]
    for i in range(1, 5):
        lines += [("disk", "$disk%d" % i, "size", "gt(1000)"), ("disk", "$disk%d" % i, "rotational", "1")]
    for i in range(1, 3):
        lines += [("disk", "$ssd%d" % i, "size", "lt(1000)"), ("disk", "$ssd%d" % i, "rotational", "0")]
    lines += [
        ("network", "$eth0", "serial", "$$mac"), ("network", "$eth0", "link", "yes"),
        ("network", "$eth0", "ipv4", "network(10.1.0.0/16)"), ("network", "$eth1", "speed", "10000Mb/s"),
        ("network", "$eth1", "link", "yes"), ("network", "$eth2", "speed", "10000Mb/s"),
        ("network", "$eth2", "driver", "ixgbe"), ("network", "$eth2", "mtu", "1500"),
        ("system", "ipmi", "channel", "$ipmi"), ("firmware", "bios", "vendor", "Dell Inc."),
        ("firmware", "bios", "version", "regexp(^2\\.)"), ("memory", "bank:0", "size", "34359738368"),
        ("system", "product", "serial", "$serial"),
    ]
    assert len(lines) == 30, len(lines)
    if fail_at is not None:
        c, i, k, _ = lines[fail_at]
        lines[fail_at] = (c, i, k, "decoy-" + token)
    return "[\n" + "".join("    (%s),\n" % ", ".join(repr(x) for x in l) for l in lines) + "]\n"


state = []
for j in range(49):
    name = "decoy%02d" % j
    # Decoys fail late: on one of the last ten lines, after most variables are bound.
    open(os.path.join(out, "config", name + ".specs"), "w").write(profile(fail_at=20 + j % 10, token=str(j)))
    state.append((name, "*"))
open(os.path.join(out, "config", "target.specs"), "w").write(profile())
state.append(("target", "*"))
open(os.path.join(out, "config", "state"), "w").write(repr(state) + "\n")

for k in range(1, 13):
    lines = [("disk", "$d%d" % i, "size", "$size%d" % i) for i in range(1, k + 1)]
    lines.append(("disk", "$d%d" % k, "size", "$size1" if k > 1 else "$size0"))
    if k == 1:
        # With one binding, make the last line need a second, different size line of disk d1.
        lines[-1] = ("disk", "$d1", "size", "$other")
    open(os.path.join(out, "adversarial", "k%d.specs" % k), "w").write(repr(lines) + "\n")

open(os.path.join(out, "generate.cmdb"), "w").write(
    "generate({'ip': '10.0.0-39.0-249', 'hostname': 'host00001-10000', "
    "'gateway': '10.0.0.1', 'netmask': '255.255.0.0'})\n")

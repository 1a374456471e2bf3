//! Config directories and hardware lists for tests, the load generator and the fuzz seeds. Kept
//! in the library so the unit tests, the integration tests (embedded and CGI) and the bench all
//! drive the same scenarios.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A hardware list: a product name (which profile it is), one NIC with `mac`, one disk.
pub fn hw_json(product: &str, mac: &str) -> String {
    serde_json::json!([
        ["system", "product", "name", product],
        ["system", "product", "vendor", "Acme"],
        ["disk", "sda", "size", "100"],
        ["network", "eth0", "serial", mac],
        ["network", "eth0", "ipv4", "10.0.0.5"],
        ["memory", "total", "size", "8589934592"],
    ])
    .to_string()
}

/// The sysname of [`hw_json`]'s machine.
pub fn sysname(product: &str, mac: &str) -> String {
    format!("{product}-{}", mac.replace(':', "-"))
}

/// The MAC of machine number `n`.
pub fn mac(n: u32) -> String {
    let b = n.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    fs::write(dir.join(name), text)
}

/// The scenario config (all front ends' tests):
///
/// section `SERVER` → `main/`, state `[('known', '*'), ('small', 1), ('vm', '*')]`:
/// - `known`: product `known`, `$$mac` picks one of two CMDB entries (hostnames `known1`, `known2`);
/// - `small`: product `small`, no CMDB, quota 1;
/// - `vm`: product `vm` or `small`, CMDB `generate` of two entries (`vm1`/`10.0.0.1`, `vm2`/`10.0.0.2`).
///
/// section `TIGHT` → `tight/`, state `[('only', 1)]`, `only` takes any machine.
///
/// Both share `hw/`, `logs/`, `health/` and the lock file under `dir`.
pub fn scenario_config(dir: &Path) -> io::Result<PathBuf> {
    let main = dir.join("main");
    let tight = dir.join("tight");
    fs::create_dir_all(&main)?;
    fs::create_dir_all(&tight)?;
    let conf = dir.join("edeploy.conf");
    write(
        dir,
        "edeploy.conf",
        "[SERVER]\nCONFIGDIR=main\nHWDIR=hw\nLOGDIR=logs\nHEALTHDIR=health\nLOCKFILE=edeploy.lock\n\
         USEPXEMNGR=False\nMETADATAURL=http://meta.example/metadata/\n\n\
         [TIGHT]\nCONFIGDIR=tight\nHWDIR=hw\nLOGDIR=logs\nHEALTHDIR=health\nLOCKFILE=edeploy.lock\n",
    )?;
    write(
        &main,
        "state",
        "[('known', '*'), ('small', 1), ('vm', '*')]\n",
    )?;
    write(
        &main,
        "known.specs",
        "[('system', 'product', 'name', 'known'), ('network', '$eth', 'serial', '$$mac')]\n",
    )?;
    write(
        &main,
        "known.cmdb",
        "[{'mac': '52:54:00:00:0a:01', 'hostname': 'known1'},\n \
         {'mac': '52:54:00:00:0a:02', 'hostname': 'known2'}]\n",
    )?;
    write(
        &main,
        "known.configure",
        "echo \"known $hostname\"\nset_role known 1.0 /dev/sda\n",
    )?;
    write(
        &main,
        "small.specs",
        "[('system', 'product', 'name', 'small'), ('network', '$eth', 'serial', '$mac')]\n",
    )?;
    write(&main, "small.configure", "set_role small 1.0 /dev/sda\n")?;
    write(
        &main,
        "vm.specs",
        "[('system', 'product', 'name', 'regexp(^(vm|small)$)'),\n \
         ('disk', '$disk', 'size', 'gt(4)'),\n \
         ('network', '$eth', 'serial', '$mac')]\n",
    )?;
    write(
        &main,
        "vm.cmdb",
        "generate({'ip': '10.0.0.1-2', 'hostname': 'vm1-2'})\n",
    )?;
    write(&main, "vm.configure", "set_role base 1.0 \"/dev/$disk\"\n")?;
    write(&tight, "state", "[('only', 1)]\n")?;
    write(
        &tight,
        "only.specs",
        "[('network', '$eth', 'serial', '$mac')]\n",
    )?;
    write(&tight, "only.configure", "set_role only 1.0 /dev/sda\n")?;
    Ok(conf)
}

/// An `edeploy.conf` keeping everything in its own directory (hardware, logs and health files in
/// subdirectories).
const FLAT_CONF: &str =
    "[SERVER]\nCONFIGDIR=.\nHWDIR=hw\nLOGDIR=logs\nHEALTHDIR=health\nLOCKFILE=edeploy.lock\n";

/// A config with one profile of `entries` CMDB entries (`generate`d) and a quota of `quota`
/// (`None`: `'*'`), taking machines of product `vm` (concurrency and crash tests).
pub fn pool_config(dir: &Path, entries: u32, quota: Option<u32>) -> io::Result<PathBuf> {
    let conf = dir.join("edeploy.conf");
    write(dir, "edeploy.conf", FLAT_CONF)?;
    let q = quota.map_or_else(|| "'*'".to_string(), |q| q.to_string());
    write(dir, "state", &format!("[('pool', {q})]\n"))?;
    write(
        dir,
        "pool.specs",
        "[('system', 'product', 'name', 'vm'), ('network', '$eth', 'serial', '$mac')]\n",
    )?;
    write(
        dir,
        "pool.cmdb",
        &format!("generate({{'hostname': 'node1-{entries}', 'ip': '10.1.0.1-{entries}'}})\n"),
    )?;
    write(dir, "pool.configure", "set_role pool 1.0 /dev/sda\n")?;
    Ok(conf)
}

/// The bench config: `profiles` profiles `p0`… with `'*'` quotas and no CMDB; profile `pN` takes
/// product `prodN` (so a machine of the last product is tried against every profile).
pub fn bench_config(dir: &Path, profiles: usize) -> io::Result<PathBuf> {
    let conf = dir.join("edeploy.conf");
    write(dir, "edeploy.conf", FLAT_CONF)?;
    let state: Vec<String> = (0..profiles).map(|i| format!("('p{i}', '*')")).collect();
    write(dir, "state", &format!("[{}]\n", state.join(",\n ")))?;
    for i in 0..profiles {
        write(
            dir,
            &format!("p{i}.specs"),
            &format!(
                "[('system', 'product', 'name', 'prod{i}'),\n \
                 ('disk', '$disk', 'size', 'gt(4)'),\n \
                 ('memory', 'total', 'size', 'ge(4294967296)'),\n \
                 ('network', '$eth', 'ipv4', 'network(10.0.0.0/8)'),\n \
                 ('network', '$eth', 'serial', '$mac')]\n"
            ),
        )?;
        write(
            dir,
            &format!("p{i}.configure"),
            &format!("set_role r{i} 1.0 \"/dev/$disk\"\n"),
        )?;
    }
    Ok(conf)
}

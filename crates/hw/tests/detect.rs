//! Detection against committed fixture trees (see docs/detect.md): each `fixtures/<name>/` root
//! must give exactly the reviewed list in `fixtures/<name>.json`.

use std::path::{Path, PathBuf};

use edeploy_hw::{detect, DetectError, HardwareList};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compares with the expected list line by line, so a failure names the first differing line.
fn assert_fixture(name: &str) -> HardwareList {
    let root = fixture(name);
    let got = detect(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected_path = root.with_extension("json");
    let text = std::fs::read_to_string(&expected_path).unwrap();
    let expected = HardwareList::parse(&text, &expected_path.display().to_string()).unwrap();
    for (i, (g, e)) in got.lines().iter().zip(expected.lines()).enumerate() {
        assert_eq!(g, e, "{name}: line {i} differs");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: line count differs; got:\n{}",
        got.to_json_lines()
    );
    // The committed file is exactly what `edeploy detect` prints.
    assert_eq!(got.to_json_lines(), text, "{name}: formatting differs");
    got
}

#[test]
fn build_machine() {
    let hw = assert_fixture("build-machine");
    assert_eq!(hw.get("disk", "vda", "vendor"), Some("0x1af4"));
}

#[test]
fn qemu_guest() {
    let hw = assert_fixture("qemu-guest");
    // What specs/vm.specs relies on: a virtio disk vda and a virtio NIC with a MAC.
    assert_eq!(hw.get("disk", "vda", "size"), Some("10"));
    assert_eq!(
        hw.get("network", "eth0", "serial"),
        Some("52:54:00:12:34:56")
    );
    assert_eq!(hw.get("network", "eth0", "driver"), Some("virtio_net"));
    assert_eq!(hw.get("system", "ipmi-fake", "channel"), Some("0"));
    assert_eq!(
        edeploy_hw::sysname(&hw).as_deref(),
        Some("StandardPCi440FXPIIX1996-52-54-00-12-34-56")
    );
}

#[test]
fn server() {
    let hw = assert_fixture("server");
    // Placeholder serial replaced by the uuid; SKU placeholder not appended to the name.
    assert_eq!(
        hw.get("system", "product", "serial"),
        Some("00000000-0000-0000-0000-ac1f6b4a2c10")
    );
    assert_eq!(hw.get("system", "product", "name"), Some("SYS-1029P-WTR"));
    assert_eq!(hw.get("system", "ipmi", "channel"), Some("1"));
    assert_eq!(
        hw.get("disk", "logical", "count"),
        Some("4"),
        "sdd is empty"
    );
    assert_eq!(hw.get("network", "bond0", "serial"), None, "virtual");
    assert_eq!(hw.get("network", "eno2", "link"), Some("no"));
    assert_eq!(hw.get("pci", "0000:d8:00.0", "vendor"), Some("10de"));
}

#[test]
fn detection_is_deterministic() {
    let root = fixture("server");
    assert_eq!(detect(&root).unwrap(), detect(&root).unwrap());
}

#[test]
fn missing_sysfs_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = detect(dir.path()).unwrap_err();
    assert!(matches!(err, DetectError::NoSysfs(_)));
    assert!(err.to_string().contains("no sysfs"), "{err}");
}

fn write(root: &Path, path: &str, text: &[u8]) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn a_bare_sysfs_gives_only_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sys")).unwrap();
    let hw = detect(dir.path()).unwrap();
    assert_eq!(hw.to_json(), r#"[["disk","logical","count","0"]]"#);
}

#[test]
fn sku_ipmi_and_unreadable_data() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(
        r,
        "sys/class/dmi/id/product_name",
        b"ProLiant DL360p Gen8\n",
    );
    write(r, "sys/class/dmi/id/product_sku", b"654081-B21\n");
    write(r, "sys/class/dmi/id/product_serial", b"CZ1234ABCD\n");
    write(
        r,
        "sys/class/dmi/id/board_serial",
        b"To be filled by O.E.M.\n",
    );
    write(r, "dev/ipmi0", b"");
    // FAKEIPMI only matters when there is no real device.
    write(r, "proc/cmdline", b"fakeipmi\n");
    // Garbage where numbers and tables are expected: skipped, never an error or a panic.
    write(r, "proc/cpuinfo", b"\xff\xfe garbage\n\n");
    write(r, "proc/meminfo", b"MemTotal: lots kB\n");
    write(r, "sys/firmware/dmi/tables/DMI", b"\x11\xff\x00");
    write(r, "sys/block/sda/size", b"not a number\n");
    write(r, "proc/net/route", b"Iface\nbad line\n");
    let hw = detect(r).unwrap();
    assert_eq!(
        hw.to_json_lines(),
        r#"[
  ["system","product","name","ProLiant DL360p Gen8 (654081-B21)"],
  ["system","product","serial","CZ1234ABCD"],
  ["system","kernel","cmdline","fakeipmi"],
  ["system","ipmi","channel","1"],
  ["disk","logical","count","0"]
]
"#
    );
}

#[test]
fn random_dmi_tables_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir(r.join("sys")).unwrap();
    let real = std::fs::read(fixture("server").join("sys/firmware/dmi/tables/DMI")).unwrap();
    // Every truncation of a real table, and the table with bytes flipped one at a time.
    for cut in (0..real.len()).step_by(7) {
        write(r, "sys/firmware/dmi/tables/DMI", &real[..cut]);
        detect(r).unwrap();
    }
    for i in (0..real.len()).step_by(5) {
        let mut t = real.clone();
        t[i] ^= 0xa5;
        write(r, "sys/firmware/dmi/tables/DMI", &t);
        detect(r).unwrap();
    }
}

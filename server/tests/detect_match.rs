//! Detection and matching agree on eDeploy's keys: the hardware list `edeploy_hw::detect` reads
//! from a fixture root is matched by the real `edeploy-server match` against `specs/vm.specs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn detect_and_match(fixture: &str) -> (Option<i32>, serde_json::Value) {
    let root = repo().join("crates/hw/tests/fixtures").join(fixture);
    let hw = edeploy_hw::detect(&root).expect("fixture root detects");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hw.json");
    std::fs::write(&file, hw.to_json()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edeploy-server"))
        .args(["match", "--specs"])
        .arg(repo().join("specs/vm.specs"))
        .arg("--hw")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn detected_qemu_guest_matches_vm_specs() {
    let (code, v) = detect_and_match("qemu-guest");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v,
        serde_json::json!({"matched": true, "vars": {"disk": "vda", "eth": "eth0", "mac": "52:54:00:12:34:56"}, "pref_vars": {}})
    );
}

#[test]
fn detected_server_is_not_a_vm() {
    // The hand-made server has big disks but no NIC on the QEMU user network.
    let (code, v) = detect_and_match("server");
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["matched"], false);
}

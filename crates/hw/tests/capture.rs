//! `scripts/capture-hw-fixture` keeps everything detection reads: capturing a fixture tree (as if
//! it were a machine) gives a tree that detects to the same list.

use std::path::Path;
use std::process::Command;

#[test]
fn capturing_a_fixture_loses_nothing() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("../../scripts/capture-hw-fixture");
    for name in ["server", "qemu-guest", "build-machine"] {
        let src = manifest.join("tests/fixtures").join(name);
        let dest = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(&script)
            .arg(dest.path())
            .env("SRC", &src)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let original = edeploy_hw::detect(&src).unwrap();
        let captured = edeploy_hw::detect(dest.path()).unwrap();
        assert_eq!(
            captured.to_json_lines(),
            original.to_json_lines(),
            "{name}: the captured tree detects differently"
        );
    }
}

//! Runs the real `edeploy-server` binary on the repository's `specs/` and on temp directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edeploy-server"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run edeploy-server")
}

/// `edeploy-server match --specs|--config TARGET --hw HW EXTRA...`
fn run_match(what: &str, target: impl AsRef<Path>, hw: impl AsRef<Path>, extra: &[&str]) -> Output {
    bin()
        .args(["match", what])
        .arg(target.as_ref())
        .arg("--hw")
        .arg(hw.as_ref())
        .args(extra)
        .output()
        .expect("run edeploy-server")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of the repository's example config dir, so tests can check nothing is written.
fn example_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in fs::read_dir(repo().join("specs")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
        }
    }
    d
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn match_specs_json_contract() {
    let specs = repo().join("specs/vm.specs");
    let o = run_match("--specs", &specs, data("qemu-vm.json"), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "exactly one JSON object: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"matched": true, "vars": {"disk": "vda", "eth": "eth0", "mac": "52:54:00:12:34:56"}, "pref_vars": {}})
    );
}

#[test]
fn match_specs_pref_vars_and_literal_hw_form() {
    let specs = repo().join("specs/hp-compute.specs");
    let o = run_match("--specs", &specs, data("hp-dl360.hw"), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["pref_vars"], json!({"mac": "9c:8e:99:10:00:02"}));
    assert_eq!(v["vars"]["disk1"], "sdc", "the 146 GB disks are skipped");
    assert_eq!(v["vars"]["disk2"], "sdd");
    assert_eq!(v["vars"]["eth1"], "eno3");
}

#[test]
fn no_match_exits_1_and_explains() {
    let specs = repo().join("specs/dell-storage.specs");
    let hw = data("hp-dl360.hw");
    let o = run_match("--specs", &specs, &hw, &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, json!({"matched": false, "vars": {}, "pref_vars": {}}));
    let o = run_match("--specs", &specs, &hw, &["--explain"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("NO MATCH"), "{text}");
    assert!(
        text.contains("closest: ('system', 'product', 'vendor', 'HP'): 'HP' fails regexp(^Dell)"),
        "{text}"
    );
}

#[test]
fn errors_exit_2_with_location() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.specs");
    fs::write(
        &bad,
        "[\n  ('disk', '$d', 'size', 'gt(4)'),\n  ('disk', '$d' 'size'),\n]\n",
    )
    .unwrap();
    let o = run_match("--specs", &bad, data("qemu-vm.json"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    let hw = d.path().join("hw.json");
    fs::write(&hw, "[[\"a\", \"b\"]]").unwrap();
    let o = run_match("--specs", &bad, &hw, &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = run_match("--specs", "/nonexistent.specs", &hw, &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["match", "--hw", hw.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "--specs or --config is required");
}

#[test]
fn whole_selection_is_a_dry_run() {
    let d = example_dir();
    let before = snapshot(d.path());
    let dir = d.path().to_str().unwrap();
    let o = run_match("--config", dir, data("qemu-vm.json"), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["profile"], "vm");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["vars"]["ip"], "10.0.2.15");
    assert_eq!(v["vars"]["hostname"], "vm15");
    assert_eq!(v["vars"]["disk"], "vda");
    let o = run_match("--config", dir, data("hp-dl360.hw"), &["--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["profile"], "hp-compute");
    assert_eq!(v["vars"]["hostname"], "compute02", "picked by $$mac");
    assert_eq!(
        snapshot(d.path()),
        before,
        "match --config must not write anything"
    );
}

#[test]
fn selection_through_edeploy_conf_and_failures() {
    let d = example_dir();
    let conf = d.path().join("edeploy.conf");
    let o = run_match("--config", &conf, data("qemu-vm.json"), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    fs::write(d.path().join("state"), "[('hp-compute', 0), ('vm', 0)]").unwrap();
    let o = run_match("--config", d.path(), data("qemu-vm.json"), &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["profile"], Value::Null);
    assert!(
        v["error"].as_str().unwrap().contains("every quota is used"),
        "{v}"
    );
    fs::write(d.path().join("state"), "[('dell-storage', 1)]").unwrap();
    let o = run_match("--config", d.path(), data("qemu-vm.json"), &["--explain"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("dell-storage.specs: NO MATCH"), "{text}");
    assert!(
        text.contains("no profile: unable to match requirements"),
        "{text}"
    );
}

#[test]
fn generate_expands_cmdb() {
    let o = run(&[
        "generate",
        repo().join("specs/vm.cmdb").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 85);
    assert_eq!(
        arr[84],
        json!({"gateway": "10.0.2.2", "ip": "10.0.2.99", "netmask": "255.255.255.0", "hostname": "vm99"})
    );
    let o = run(&["generate", repo().join("specs/vm.cmdb").to_str().unwrap()]);
    let text = stdout(&o);
    assert!(
        text.starts_with("[{'gateway': '10.0.2.2', 'ip': '10.0.2.15'"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 85);
}

#[test]
fn check_reports_every_error_at_once() {
    let o = run(&["check", repo().join("specs").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let d = example_dir();
    fs::write(
        d.path().join("vm.specs"),
        "[('disk', '$d', 'size', 'gt(four)')]",
    )
    .unwrap();
    fs::write(d.path().join("vm.cmdb"), "generate({'ip': '10.0.0.1-3'}").unwrap();
    fs::write(
        d.path().join("hp-compute.specs"),
        "[('a', 'b', 'c', 'nosuch(1)')]",
    )
    .unwrap();
    let o = run(&["check", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains("vm.specs:1:29: `gt(four)`: gt() needs a number"),
        "{text}"
    );
    assert!(text.contains("vm.cmdb:1:"), "{text}");
    assert!(text.contains("unknown function `nosuch`"), "{text}");
    assert!(text.contains("2 errors, 1 warnings"), "{text}");
    let o = run(&["check", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2));
}

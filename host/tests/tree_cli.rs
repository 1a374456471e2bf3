//! The `edeploy` tree commands end to end, on a local store directory (HTTP comes later).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use edeploy_tree::store::Store;

fn edeploy(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edeploy"));
    c.arg("--root").arg(root).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two small versions of a role in a store, with an upgrade path 1 → 2.
fn store(t: &Path) -> std::path::PathBuf {
    let v1 = t.join("install/1/base");
    fs::create_dir_all(v1.join("etc")).unwrap();
    fs::create_dir_all(v1.join("usr/bin")).unwrap();
    fs::write(v1.join("etc/motd"), "version 1\n").unwrap();
    fs::write(v1.join("etc/fstab"), "# fstab v1\n").unwrap();
    fs::write(v1.join("usr/bin/tool"), "#!/bin/sh\necho 1\n").unwrap();
    let v2 = t.join("install/2/base");
    fs::create_dir_all(v2.join("etc")).unwrap();
    fs::create_dir_all(v2.join("usr/bin")).unwrap();
    fs::write(v2.join("etc/motd"), "version 2\n").unwrap();
    fs::write(v2.join("etc/fstab"), "# fstab v2\n").unwrap();
    fs::write(v2.join("usr/bin/tool2"), "#!/bin/sh\necho 2\n").unwrap();
    let s = t.join("store");
    Store::new(&s).index(&v1, "1", "base", None).unwrap();
    Store::new(&s).index(&v2, "2", "base", None).unwrap();
    let md = s.join("metadata/1/base/2");
    fs::create_dir_all(&md).unwrap();
    fs::write(md.join("exclude"), "/etc/fstab\n").unwrap();
    s
}

#[test]
fn install_verify_upgrade_rollback() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path());
    let root = t.path().join("root");
    let srv = s.to_str().unwrap();
    let o = edeploy(
        &root,
        &["install", "1", "base", "--server", srv, "--json"],
        &[],
    );
    assert_eq!(code(&o), 0, "{o:?}");
    // --json: one JSON object per line, progress events then the result.
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"installed"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "file").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"done"));
    let conf = fs::read_to_string(root.join("var/lib/edeploy/conf")).unwrap();
    assert!(
        conf.contains("VERS=1\n") && conf.contains("ROLE=base\n"),
        "{conf}"
    );
    assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "1\n");
    assert_eq!(stdout(&edeploy(&root, &["role"], &[])), "base\n");

    let o = edeploy(&root, &["verify", "--full"], &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    fs::write(root.join("etc/motd"), "edited!!!\n").unwrap();
    fs::write(root.join("etc/fstab"), "# local fstab\n").unwrap();
    let o = edeploy(&root, &["verify"], &[]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("etc/motd"), "{}", stdout(&o));
    let o = edeploy(&root, &["verify", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["clean"], false);
    // Back to the installed content for the upgrade test (fstab stays locally edited).
    fs::write(root.join("etc/motd"), "version 1\n").unwrap();

    // Uses the conf's SERV from now on.
    assert_eq!(stdout(&edeploy(&root, &["list"], &[])), "2\n");
    let o = edeploy(&root, &["test-upgrade", "2"], &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    let plan = stdout(&o);
    assert!(plan.contains("*deleting   usr/bin/tool\n"), "{plan}");
    assert!(plan.contains(">f+++++++++ usr/bin/tool2\n"), "{plan}");
    assert!(!plan.contains("fstab"), "{plan}");
    let o = edeploy(&root, &["upgrade", "2"], &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "version 2\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/fstab")).unwrap(),
        "# local fstab\n"
    );
    assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "2\n");
    // The upgrade's exclude is honoured by verify.
    assert_eq!(code(&edeploy(&root, &["verify", "--full"], &[])), 0);
    let o = edeploy(&root, &["rollback"], &[]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(
        fs::read_to_string(root.join("usr/bin/tool")).unwrap(),
        "#!/bin/sh\necho 1\n"
    );
    assert!(!root.join("usr/bin/tool2").exists());
    assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "1\n");
    // Nothing left to roll back: an error, exit 2.
    assert_eq!(code(&edeploy(&root, &["rollback"], &[])), 2);
}

#[test]
fn sigkill_mid_upgrade_then_rerun_or_rollback() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path());
    let srv = s.to_str().unwrap();
    for step in 0..8 {
        let root = t.path().join(format!("root{step}"));
        assert_eq!(
            code(&edeploy(
                &root,
                &["install", "1", "base", "--server", srv],
                &[]
            )),
            0
        );
        let st = step.to_string();
        let o = edeploy(
            &root,
            &["upgrade", "2"],
            &[("EDEPLOY_TREE_KILL_AT_STEP", &st)],
        );
        let killed = o.status.code().is_none();
        if step % 2 == 0 {
            if killed {
                let _ = edeploy(&root, &["rollback"], &[]);
            }
            let o = edeploy(&root, &["verify", "--full"], &[]);
            let expect = if killed { "1\n" } else { "2\n" };
            assert_eq!(
                stdout(&edeploy(&root, &["version"], &[])),
                expect,
                "step {step}"
            );
            assert_eq!(code(&o), 0, "step {step}: {}", stdout(&o));
        } else {
            assert_eq!(
                code(&edeploy(&root, &["upgrade", "2"], &[])),
                0,
                "step {step}"
            );
            assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "2\n");
            let o = edeploy(&root, &["verify", "--full"], &[]);
            assert_eq!(code(&o), 0, "step {step}: {}", stdout(&o));
        }
    }
}

#[test]
fn unreachable_http_server_is_an_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let o = edeploy(
        t.path(),
        &["install", "1", "base", "--server", "http://127.0.0.1:1"],
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("127.0.0.1:1"));
    // Nothing half-done: no conf, no manifest written for a failed install.
    assert!(!t.path().join("var/lib/edeploy/manifest").exists());
}

#[test]
fn signed_install_keeps_enforcing_signatures_on_upgrade() {
    let t = tempfile::tempdir().unwrap();
    let s = store(t.path());
    let key = edeploy_tree::manifest::generate_signing_key().unwrap();
    let pubhex = edeploy_tree::manifest::hex(key.verifying_key().as_bytes());
    // v1 signed, v2 left unsigned.
    Store::new(&s)
        .index(&t.path().join("install/1/base"), "1", "base", Some(&key))
        .unwrap();
    let root = t.path().join("root");
    let srv = s.to_str().unwrap();
    let o = edeploy(
        &root,
        &["install", "1", "base", "--server", srv, "--pubkey", &pubhex],
        &[],
    );
    assert_eq!(code(&o), 0, "{o:?}");
    let conf = fs::read_to_string(root.join("var/lib/edeploy/conf")).unwrap();
    assert!(conf.contains(&format!("PUBKEY={pubhex}\n")), "{conf}");
    let o = edeploy(&root, &["upgrade", "2"], &[]);
    assert_eq!(code(&o), 2, "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not signed"),
        "{o:?}"
    );
    assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "1\n");
    // Once v2 is signed by the same key, the upgrade goes through.
    Store::new(&s)
        .index(&t.path().join("install/2/base"), "2", "base", Some(&key))
        .unwrap();
    assert_eq!(code(&edeploy(&root, &["upgrade", "2"], &[])), 0);
    assert_eq!(stdout(&edeploy(&root, &["version"], &[])), "2\n");
}

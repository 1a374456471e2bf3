//! `edeploy agent`, `edeploy agent check` and `edeploy zk` over a tree file (one machine).

use std::fs;
use std::process::{Command, Output, Stdio};

use edeploy_agent::testkit::FakeHost;

const BIN: &str = env!("CARGO_BIN_EXE_edeploy");

fn edeploy(host: &FakeHost, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(&host.root)
        .args(args)
        .env("PATH", host.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tree_file_mode_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new(dir.path());
    host.publish("cms", "1.0");
    let tree = dir.path().join("tree.zk");
    let tree_s = tree.to_str().unwrap();
    let src = dir.path().join("src.zk");
    fs::write(
        &src,
        "# one machine\n/hosts\n  version = '1'\n/cms : cms\n  version = '1.0'\n  /deploy\n    /box.example.com\n",
    )
    .unwrap();
    let out = edeploy(
        &host,
        &[
            "zk",
            "import",
            "--dry-run",
            "--tree-file",
            tree_s,
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "create /cms : cms {version = '1.0'}\ncreate /cms/deploy\ncreate /cms/deploy/box.example.com\ncreate /hosts {version = '1'}\n"
    );
    assert!(!tree.exists(), "a dry run writes nothing");
    let out = edeploy(
        &host,
        &["zk", "import", "--tree-file", tree_s, src.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let check = |host: &FakeHost| {
        let out = edeploy(
            host,
            &["agent", "check", "--tree-file", tree_s, "--host-id", "x"],
        );
        (out.status.code(), text(&out.stdout))
    };
    assert_eq!(
        check(&host),
        (
            Some(1),
            "WARNING host at version None, cluster at 1, out of sync for 0 min\n".into()
        )
    );
    // Out of sync since long ago (recorded by the first check): CRITICAL.
    let run_dir = host.root.join("var/lib/edeploy/agent");
    fs::write(run_dir.join("out_of_sync_since"), "1000\n").unwrap();
    assert_eq!(check(&host).0, Some(2));

    let agent = [
        "agent",
        "--run-once",
        "--tree-file",
        tree_s,
        "--host-id",
        "0011",
        "--host-name",
        "box.example.com",
    ];
    let out = edeploy(&host, &agent);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        host.take_commands(),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cms 0",
        ]
    );
    assert_eq!(check(&host), (Some(0), "OK in sync at version 1\n".into()));
    assert!(!run_dir.join("out_of_sync_since").exists());
    let status = fs::read_to_string(run_dir.join("status")).unwrap();
    assert!(status.ends_with(" 1 done\n"), "{status}");

    // The agent wrote its host node back into the file; export shows it (no ephemeral here).
    let out = edeploy(&host, &["zk", "export", "/hosts", "--tree-file", tree_s]);
    assert_eq!(
        text(&out.stdout),
        "/hosts\n  version = '1'\n  /0011\n    name = 'box.example.com'\n    version = '1'\n"
    );

    // A failing version: all stop written into the file, CRITICAL check, exit 1.
    fs::write(
        &src,
        "/hosts\n  version = '2'\n/cms : cms\n  version = '9.9'\n  /deploy\n    /box.example.com\n",
    )
    .unwrap();
    let out = edeploy(
        &host,
        &["zk", "import", "--tree-file", tree_s, src.to_str().unwrap()],
    );
    assert!(out.status.success());
    let out = edeploy(&host, &agent);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("FAILED deploying version 2"));
    let out = edeploy(&host, &["zk", "print", "/hosts", "--tree-file", tree_s]);
    assert_eq!(
        text(&out.stdout),
        "/hosts\n  version = None\n  /0011\n    name = 'box.example.com'\n    version = '1'\n    error = 'Command failed (exit status: 1): yum -y install cms-9.9\\nNo package cms-9.9 available.\\n'\n"
    );
    assert_eq!(
        check(&host),
        (Some(2), "CRITICAL FAILED deploying version 2\n".into())
    );
}

#[test]
fn identity_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new(dir.path());
    let tree = dir.path().join("t");
    let out = edeploy(
        &host,
        &["agent", "--run-once", "--tree-file", tree.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no host id: pass --host-id, or HOST_ID= / PXEMAC= in"),
        "{}",
        text(&out.stderr)
    );
}

//! The embedded server, as a real process on a loopback port.

mod common;

use common::*;
use edeploy_server::fixture;

#[test]
fn embedded_scenarios() {
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::scenario_config(d.path()).unwrap();
    let max = MAX_UPLOAD.to_string();
    let (_p, addr) = serve(
        &["--config", conf.to_str().unwrap(), "--max-upload", &max],
        d.path(),
    );
    scenarios(addr, d.path(), "/upload", "/upload-health");
    // eDeploy's path answers the same way.
    let r = upload_hw(addr, "/cgi-bin/upload.py", "known", "52:54:00:00:0a:01");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\nhostname='known1'\n"));
}

#[test]
fn metrics_and_nodes() {
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::scenario_config(d.path()).unwrap();
    let (_p, addr) = serve(&["--config", conf.to_str().unwrap()], d.path());
    assert_eq!(
        upload_hw(addr, "/upload", "vm", "52:54:00:00:00:01").status,
        200
    );
    assert_eq!(
        upload_hw(addr, "/upload", "nope", "52:54:00:00:00:02").status,
        404
    );
    let r = post(addr, "/upload", &[("failure", None, b"small")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        post(
            addr,
            "/upload",
            &[("file", Some("vm-52-54-00-00-00-01.log.gz"), b"z")]
        )
        .status,
        200
    );
    let m = request(addr, "GET", "/metrics", "", b"").unwrap();
    assert_eq!(m.status, 200);
    let t = m.text();
    for line in [
        "edeploy_uploads_total 4\n",
        "edeploy_matches_total{profile=\"vm\"} 1\n",
        "edeploy_failures_total{reason=\"no_match\"} 1\n",
        "edeploy_failure_reports_total{profile=\"small\"} 1\n",
        "edeploy_log_uploads_total 1\n",
        "edeploy_request_duration_seconds_count 4\n",
    ] {
        assert!(t.contains(line), "{line:?} missing from\n{t}");
    }
    let n = request(addr, "GET", "/nodes", "", b"").unwrap();
    let j: serde_json::Value = serde_json::from_slice(&n.body).unwrap();
    let events: Vec<&str> = j["vm-52-54-00-00-00-01"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["upload", "match", "log"]);
    assert_eq!(j["nope-52-54-00-00-00-02"][1]["event"], "refused");
    assert_eq!(j["unknown"][0]["event"], "failure");
    assert_eq!(
        request(addr, "GET", "/nothing", "", b"").unwrap().status,
        404
    );
}

/// With no flags, `serve` copies the repository's specs/ under ./var/edeploy and serves it there.
#[test]
fn no_flag_demo_serves_a_copy_of_specs() {
    let d = tempfile::tempdir().unwrap();
    let (_p, addr) = serve(&[], d.path());
    let data = d.path().join("var/edeploy");
    assert!(data.join("edeploy.conf").is_file());
    assert!(data.join("state").is_file());
    let hw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qemu-vm.json"),
    )
    .unwrap();
    let r = post(addr, "/upload", &[("file", Some("hw.json"), &hw)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("# EDEPLOY_PROFILE=vm\n"));
    assert!(data.join("hw").read_dir().unwrap().count() == 1);
}

/// USEPXEMNGR=True: `pxemngr addsystem <sysname> <macs…>` runs before the selection; its failure
/// is a 500 and takes nothing.
#[test]
fn pxemngr_addsystem_is_called() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::scenario_config(d.path()).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replacen(
            "USEPXEMNGR=False",
            "USEPXEMNGR=True\nPXEMNGRURL=http://pxe.example:8000/",
            1,
        ),
    )
    .unwrap();
    let bin_dir = d.path().join("fakebin");
    std::fs::create_dir(&bin_dir).unwrap();
    let fake = bin_dir.join("pxemngr");
    let calls = d.path().join("calls");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n[ \"$2\" != vm-52-54-00-00-00-09 ]\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (_p, addr) = serve_env(
        &["--config", conf.to_str().unwrap()],
        d.path(),
        &[("PATH", path)],
    );
    let r = upload_hw(addr, "/upload", "vm", "52:54:00:00:00:01");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .text()
        .contains("\nPXEMNGR_URL='http://pxe.example:8000/'\n"));
    assert_eq!(
        read(&calls),
        "addsystem vm-52-54-00-00-00-01 52:54:00:00:00:01\n"
    );
    let cmdb = read(&d.path().join("main/vm.cmdb"));
    let r = upload_hw(addr, "/upload", "vm", "52:54:00:00:00:09");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.header("x-edeploy-error").unwrap().contains("pxemngr"));
    assert_eq!(read(&d.path().join("main/vm.cmdb")), cmdb);
}

/// A reinstall's replaced hardware file is kept as a spare inode; a restart adopts it and the
/// next new machine's file is written into it (see edeploy_fsutil::Spares: on ext4 without a
/// journal, allocating inodes while freed ones are recent costs ~1 ms each).
#[test]
fn replaced_files_are_recycled_across_a_restart() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::scenario_config(d.path()).unwrap();
    let hw = d.path().join("hw");
    let spares = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| edeploy_fsutil::is_temp_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect()
    };
    let file_of = |mac: &str| {
        let tail = format!("{}.hw", mac.replace(':', "-"));
        std::fs::read_dir(&hw)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&tail))
            .unwrap()
    };
    let (mut p, addr) = serve(&["--config", conf.to_str().unwrap()], d.path());
    let a = "52:54:00:00:0b:01";
    assert_eq!(upload_hw(addr, "/upload", "vm", a).status, 200);
    let first = std::fs::metadata(file_of(a)).unwrap().ino();
    assert!(spares(&hw).is_empty(), "a new file replaces nothing");
    assert_eq!(upload_hw(addr, "/upload", "vm", a).status, 200);
    let kept = spares(&hw);
    assert_eq!(kept.len(), 1, "the reinstall keeps the old file's inode");
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().ino(), first);
    assert_ne!(std::fs::metadata(file_of(a)).unwrap().ino(), first);

    p.0.kill().unwrap();
    p.0.wait().unwrap();
    let (_p, addr) = serve(&["--config", conf.to_str().unwrap()], d.path());
    let b = "52:54:00:00:0b:02";
    assert_eq!(upload_hw(addr, "/upload", "vm", b).status, 200);
    assert_eq!(
        std::fs::metadata(file_of(b)).unwrap().ino(),
        first,
        "the adopted spare holds the new machine's file"
    );
    // Left: the empty temp file the restart created to learn a fresh file's owner and mode.
    let left = spares(&hw);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), 0);
    let text = std::fs::read_to_string(file_of(b)).unwrap();
    assert!(text.contains("52:54:00:00:0b:02") && !text.contains("52:54:00:00:0b:01"));
}

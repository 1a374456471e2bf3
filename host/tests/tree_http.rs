//! The `edeploy` tree commands over HTTP, end to end with real processes: `edeploy-server index`
//! publishes eDeploy's `install/<version>/<role>/` trees, `edeploy-server serve` serves them, and
//! the real `edeploy install / verify / list / upgrade` read them through `http://`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A child killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `edeploy-server` from the same target directory as `edeploy`; built once if missing (it is
/// another package, so `cargo test -p edeploy-host` does not build it).
fn server_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_edeploy"))
        .parent()
        .unwrap()
        .join("edeploy-server");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "edeploy-server", "--bin", "edeploy-server"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "building edeploy-server");
    }
    p
}

fn edeploy(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edeploy"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn serve(conf: &Path) -> (Proc, String) {
    let mut c = Proc(
        Command::new(server_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(conf)
            .env("EDEPLOY_LOG", "warn")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = c.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    (c, addr)
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Version 1 (files, modes, a symlink, a hardlink, an empty file, a 2 MiB file) and version 2,
/// with an upgrade path 1 → 2 that excludes /etc/fstab.
fn setup(dir: &Path) -> PathBuf {
    for d in ["config", "hw"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let conf = dir.join("edeploy.conf");
    fs::write(
        &conf,
        "[SERVER]\nCONFIGDIR=config\nHWDIR=hw\nLOCKFILE=lock\nSTOREDIR=pub\n",
    )
    .unwrap();
    let v1 = dir.join("install/1/base");
    for d in ["etc", "usr/bin", "var/empty", "root"] {
        fs::create_dir_all(v1.join(d)).unwrap();
    }
    fs::write(v1.join("etc/motd"), "version 1\n").unwrap();
    fs::write(v1.join("etc/fstab"), "# fstab v1\n").unwrap();
    fs::write(v1.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    fs::set_permissions(v1.join("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(v1.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(v1.join("etc/empty"), "").unwrap();
    fs::write(v1.join("usr/bin/big"), pseudo_random(2 << 20)).unwrap();
    fs::set_permissions(v1.join("usr/bin/big"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(v1.join("usr/bin/big"), v1.join("usr/bin/big-hard")).unwrap();
    std::os::unix::fs::symlink("big", v1.join("usr/bin/big-sym")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", v1.join("etc/dangling")).unwrap();
    let v2 = dir.join("install/2/base");
    fs::create_dir_all(v2.join("etc")).unwrap();
    fs::create_dir_all(v2.join("usr/bin")).unwrap();
    fs::write(v2.join("etc/motd"), "version 2\n").unwrap();
    fs::write(v2.join("etc/fstab"), "# fstab v2\n").unwrap();
    fs::write(v2.join("usr/bin/tool2"), "#!/bin/sh\necho 2\n").unwrap();
    fs::write(v2.join("usr/bin/big"), pseudo_random(1 << 20)).unwrap();
    let md = dir.join("metadata/1/base/2");
    fs::create_dir_all(&md).unwrap();
    fs::write(md.join("exclude"), "/etc/fstab\n").unwrap();
    conf
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir(u32),
    /// mode, mtime, length, hash of the content
    File(u32, i64, usize, u64),
    Link(PathBuf),
}

/// Every entry under `root` (host state excluded): type, mode, mtime, content, link target.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) {
        for de in fs::read_dir(root.join(rel)).unwrap() {
            let de = de.unwrap();
            let r = rel.join(de.file_name());
            let key = r.to_string_lossy().into_owned();
            if key == "var/lib" || key.starts_with(".edeploy") {
                continue;
            }
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.mode() & 0o7777;
            let node = if m.file_type().is_symlink() {
                Node::Link(fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                walk(root, &r, out);
                Node::Dir(mode)
            } else {
                let data = fs::read(&p).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hasher::write(&mut h, &data);
                Node::File(mode, m.mtime(), data.len(), std::hash::Hasher::finish(&h))
            };
            out.insert(key, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

#[test]
fn install_verify_upgrade_over_http() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    let o = Command::new(server_bin())
        .args(["index", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(out.contains("1/base: 14 entries"), "{out}");
    assert!(t.path().join("pub/upgrades/1/base").is_file());
    let (_srv, addr) = serve(&conf);
    let url = format!("http://{addr}");

    // Fresh install over HTTP equals the source tree: content, modes, mtimes, link targets.
    let root = t.path().join("root");
    ok(&edeploy(&root, &["install", "1", "base", "--server", &url]));
    let v1 = t.path().join("install/1/base");
    assert_eq!(snapshot(&root), snapshot(&v1));
    let a = fs::metadata(root.join("usr/bin/big")).unwrap();
    let b = fs::metadata(root.join("usr/bin/big-hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hardlink stays a hardlink");
    let conf_text = fs::read_to_string(root.join("var/lib/edeploy/conf")).unwrap();
    assert!(conf_text.contains(&format!("SERV={url}\n")), "{conf_text}");
    ok(&edeploy(&root, &["verify"]));
    ok(&edeploy(&root, &["verify", "--full"]));

    // Without --server the conf's SERV (an URL now) is used: list and upgrade over HTTP.
    assert_eq!(ok(&edeploy(&root, &["list"])), "2\n");
    ok(&edeploy(&root, &["upgrade", "2"]));
    let mut want = snapshot(&t.path().join("install/2/base"));
    // /etc/fstab is excluded by the upgrade path: it keeps version 1.
    want.insert(
        "etc/fstab".into(),
        snapshot(&v1).remove("etc/fstab").unwrap(),
    );
    let mut got = snapshot(&root);
    // `var/` stays: it holds the host state (var/lib/edeploy), which no upgrade removes.
    assert!(matches!(got.remove("var"), Some(Node::Dir(_))));
    assert_eq!(got, want);
    assert_eq!(ok(&edeploy(&root, &["version"])), "2\n");
    ok(&edeploy(&root, &["verify", "--full"]));

    // SERV + HTTP_PORT in the conf (as the initrd records them) build http://SERV:PORT.
    let root2 = t.path().join("root2");
    fs::create_dir_all(root2.join("var/lib/edeploy")).unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    fs::write(
        root2.join("var/lib/edeploy/conf"),
        format!("SERV={host}\nHTTP_PORT={port}\n"),
    )
    .unwrap();
    ok(&edeploy(&root2, &["install", "1", "base"]));
    assert_eq!(snapshot(&root2), snapshot(&v1));

    // A missing version is a clear error, exit 2.
    let o = edeploy(
        &t.path().join("root3"),
        &["install", "9", "base", "--server", &url],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found"),
        "{o:?}"
    );
}

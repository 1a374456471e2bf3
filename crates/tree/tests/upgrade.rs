//! Upgrade / rollback: exactness, exclude/add_only, pre/post, kills at every step.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use edeploy_tree::install::{self, Options};
use edeploy_tree::source::LocalSource;
use edeploy_tree::state::{self, Conf};
use edeploy_tree::store::Store;
use edeploy_tree::upgrade::{self, JournalState, Outcome};

/// Host state and the excluded file are not part of the trees compared.
const SKIP: &[&str] = &["dev/sock", "var/lib/edeploy", ".edeploy-"];

struct Env {
    t: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
    store: PathBuf,
}

/// v1 = the fixture; v2 = v1 with every kind of change.
fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let v1 = t.path().join("install/1/base");
    let v2 = t.path().join("install/2/base");
    fs::create_dir_all(&v1).unwrap();
    common::fixture(&v1, 0);
    fs::write(v1.join("etc/add-only"), b"v1 default config").unwrap();
    fs::write(v1.join("etc/excluded"), b"v1 excluded").unwrap();
    fs::create_dir_all(v1.join("var/lib/edeploy")).unwrap();
    fs::create_dir_all(v1.join("gone/deep/er")).unwrap();
    fs::write(v1.join("gone/deep/er/f"), b"bye").unwrap();
    fs::write(v1.join("etc/to-dir"), b"a file that becomes a directory").unwrap();
    fs::create_dir_all(v1.join("etc/to-file")).unwrap();
    fs::write(
        v1.join("etc/to-file/child"),
        b"child of a dir that becomes a file",
    )
    .unwrap();
    copy_tree(&v1, &v2);
    // Changes.
    fs::write(v2.join("etc/hostname"), b"node1-v2\n").unwrap();
    fs::write(v2.join("etc/excluded"), b"v2 excluded").unwrap();
    fs::write(v2.join("etc/add-only"), b"v2 default config").unwrap();
    fs::write(v2.join("etc/add-only-new"), b"created if absent").unwrap();
    fs::remove_file(v2.join("etc/dup-b")).unwrap();
    fs::create_dir_all(v2.join("opt/app/bin")).unwrap();
    fs::write(v2.join("opt/app/bin/tool"), b"#!/bin/sh\necho v2\n").unwrap();
    fs::set_permissions(
        v2.join("opt/app/bin/tool"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::remove_dir_all(v2.join("gone")).unwrap();
    fs::set_permissions(v2.join("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    xattr::set(v2.join("etc/hostname"), "user.comment", b"changed").unwrap();
    fs::remove_file(v2.join("etc/to-dir")).unwrap();
    fs::create_dir(v2.join("etc/to-dir")).unwrap();
    fs::write(v2.join("etc/to-dir/inner"), b"now a dir").unwrap();
    fs::remove_dir_all(v2.join("etc/to-file")).unwrap();
    fs::write(v2.join("etc/to-file"), b"now a file").unwrap();
    // hl2 leaves the hardlink group; hl1's content changes (so hl3 must follow it).
    fs::remove_file(v2.join("usr/bin/hl2")).unwrap();
    fs::write(v2.join("usr/bin/hl2"), b"separate now\n").unwrap();
    fs::write(v2.join("usr/bin/hl1"), b"hardlinked v2\n").unwrap();
    fs::remove_file(v2.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("shadow", v2.join("etc/link")).unwrap();
    fs::remove_file(v2.join("dev/null")).unwrap();
    let c = std::ffi::CString::new(v2.join("dev/null").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) },
        0
    );
    // The same content moved to a new path: copied locally, not fetched.
    fs::write(
        v2.join("usr/bin/moved"),
        fs::read(v1.join("usr/bin/random")).unwrap(),
    )
    .unwrap();
    fs::remove_file(v2.join("usr/bin/random")).unwrap();
    let store = t.path().join("store");
    Store::new(&store).index(&v1, "1", "base", None).unwrap();
    Store::new(&store).index(&v2, "2", "base", None).unwrap();
    let md = store.join("metadata/1/base/2");
    fs::create_dir_all(&md).unwrap();
    fs::write(md.join("exclude"), "/etc/excluded\n/srv/\n").unwrap();
    fs::write(md.join("add_only"), "/etc/add-only\n/etc/add-only-new\n").unwrap();
    Env { t, v1, v2, store }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn install_v1(e: &Env, name: &str) -> PathBuf {
    let root = e.t.path().join(name);
    let src = LocalSource::new(&e.store);
    let (m, bytes) = install::install(&src, "1", "base", &root, &Options::default()).unwrap();
    let mut conf = Conf::default();
    conf.set("VERS", "1");
    conf.set("ROLE", "base");
    state::record_install(&root, &m, &bytes, &conf).unwrap();
    // Local state the upgrade must never touch.
    fs::create_dir_all(root.join("srv/data")).unwrap();
    fs::write(root.join("srv/data/db"), b"precious").unwrap();
    fs::write(root.join("etc/excluded"), b"locally edited").unwrap();
    fs::write(root.join("etc/add-only"), b"locally edited").unwrap();
    root
}

/// The expected tree after upgrade: v2, with excluded and add_only paths as they were.
fn expected_v2(e: &Env, root: &Path) -> PathBuf {
    let exp = e.t.path().join(format!(
        "expected-{}",
        root.file_name().unwrap().to_string_lossy()
    ));
    copy_tree(&e.v2, &exp);
    for p in ["etc/excluded", "etc/add-only"] {
        fs::copy(root.join(p), exp.join(p)).unwrap();
        copy_meta(&root.join(p), &exp.join(p));
    }
    copy_tree(&root.join("srv"), &exp.join("srv"));
    let etc = fs::metadata(e.v2.join("etc")).unwrap();
    use std::os::unix::fs::MetadataExt;
    common::set_mtime(&exp.join("etc"), etc.mtime(), etc.mtime_nsec());
    exp
}

fn copy_meta(from: &Path, to: &Path) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(from).unwrap();
    fs::set_permissions(to, m.permissions()).unwrap();
    common::set_mtime(to, m.mtime(), m.mtime_nsec());
}

fn snapshot_before(root: &Path) -> PathBuf {
    let snap = root.with_extension("before");
    copy_tree(root, &snap);
    snap
}

#[test]
fn upgrade_then_rollback_is_exact() {
    require_root!();
    let e = env();
    let root = install_v1(&e, "root");
    // Local drift on a file both versions share: the upgrade repairs it, rollback brings the
    // drifted file back.
    fs::write(root.join("etc/dup-a"), b"locally broken\n").unwrap();
    let before = snapshot_before(&root);
    let src = LocalSource::new(&e.store);
    let plan = upgrade::test_upgrade(&src, &root, "2", &Default::default()).unwrap();
    assert!(
        plan.items
            .iter()
            .any(|(i, p)| i == "*deleting" && p == "etc/dup-b"),
        "{:?}",
        plan.items
    );
    assert!(!plan
        .items
        .iter()
        .any(|(_, p)| p == "etc/excluded" || p == "etc/add-only"));
    assert!(plan.notes.iter().any(|n| n.contains("etc/add-only")));
    let item = |p: &str| {
        plan.items
            .iter()
            .find(|(_, q)| q == p)
            .map(|(i, _)| i.as_str())
    };
    assert_eq!(item("etc/shadow"), Some(".f...p....."));
    assert_eq!(item("etc/dup-a"), Some(">fc........"));
    assert_eq!(item("opt/app/bin/tool"), Some(">f+++++++++"));
    assert_eq!(
        upgrade::upgrade(&src, &root, "2", &Default::default()).unwrap(),
        Outcome::Upgraded
    );
    common::assert_same_tree(&expected_v2(&e, &root), &root, SKIP);
    assert_eq!(Conf::read(&root).unwrap().get("VERS"), Some("2"));
    assert_eq!(state::read_installed(&root).unwrap().0.version, "2");
    assert!(matches!(
        upgrade::journal_state(&root).unwrap(),
        JournalState::Committed { .. }
    ));
    upgrade::rollback(&root).unwrap();
    common::assert_same_tree(&before, &root, SKIP);
    assert_eq!(Conf::read(&root).unwrap().get("VERS"), Some("1"));
    assert_eq!(upgrade::journal_state(&root).unwrap(), JournalState::None);
    assert!(e.v1.exists());
}

#[test]
fn post_failure_rolls_back_and_exit_100_means_reboot() {
    require_root!();
    let e = env();
    let md = e.store.join("metadata/1/base/2");
    fs::write(md.join("pre"), "touch \"$EDEPLOY_ROOT.pre-ran\"\n").unwrap();
    fs::write(md.join("post"), "exit 3\n").unwrap();
    let root = install_v1(&e, "root");
    let before = snapshot_before(&root);
    let src = LocalSource::new(&e.store);
    let err = upgrade::upgrade(&src, &root, "2", &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("post script failed with exit code 3"),
        "{err}"
    );
    fs::remove_file(root.with_extension("pre-ran")).unwrap();
    common::assert_same_tree(&before, &root, SKIP);
    assert_eq!(upgrade::journal_state(&root).unwrap(), JournalState::None);

    fs::write(md.join("post"), "exit 100\n").unwrap();
    assert_eq!(
        upgrade::upgrade(&src, &root, "2", &Default::default()).unwrap(),
        Outcome::RebootNeeded
    );
    fs::remove_file(root.with_extension("pre-ran")).unwrap();
    common::assert_same_tree(&expected_v2(&e, &root), &root, SKIP);
    // A pre failure changes nothing.
    upgrade::rollback(&root).unwrap();
    fs::write(md.join("pre"), "exit 1\n").unwrap();
    assert!(upgrade::upgrade(&src, &root, "2", &Default::default()).is_err());
    common::assert_same_tree(&before, &root, SKIP);
}

#[test]
fn kill_at_every_step_ends_fully_old_or_fully_new() {
    require_root!();
    // Simulated kills are panics: keep them out of the test output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("");
        if !msg.starts_with("simulated kill") {
            default_hook(info);
        }
    }));
    let e = env();
    let src = LocalSource::new(&e.store);
    // Count the steps of a full upgrade.
    let root = install_v1(&e, "count");
    let n = std::sync::atomic::AtomicU64::new(0);
    let count = |s: u64| {
        n.fetch_max(s + 1, std::sync::atomic::Ordering::SeqCst);
    };
    let opts = upgrade::Options {
        step_hook: Some(&count),
        ..Default::default()
    };
    upgrade::upgrade(&src, &root, "2", &opts).unwrap();
    let steps = n.load(std::sync::atomic::Ordering::SeqCst);
    assert!(steps > 20, "only {steps} steps");
    // 20 kill points spread over all steps (first and last included).
    for run in 0..20u64 {
        let k = run * (steps - 1) / 19;
        let root = install_v1(&e, &format!("kill{run}"));
        let before = snapshot_before(&root);
        let expected_new = expected_v2(&e, &root);
        let die = move |s: u64| {
            if s == k {
                panic!("simulated kill at step {s}");
            }
        };
        let opts = upgrade::Options {
            step_hook: Some(&die),
            ..Default::default()
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            upgrade::upgrade(&src, &root, "2", &opts)
        }));
        assert!(r.is_err(), "step {k} did not kill");
        let committed = matches!(
            upgrade::journal_state(&root).unwrap(),
            JournalState::Committed { .. }
        );
        if run % 2 == 0 {
            // Recovery by rollback: fully old.
            if upgrade::journal_state(&root).unwrap() != JournalState::None {
                upgrade::rollback(&root).unwrap();
            }
            common::assert_same_tree(&before, &root, SKIP);
            assert_eq!(state::read_installed(&root).unwrap().0.version, "1");
        } else {
            // Recovery by rerunning the upgrade: fully new.
            if !committed {
                upgrade::upgrade(&src, &root, "2", &Default::default()).unwrap();
            }
            common::assert_same_tree(&expected_new, &root, SKIP);
            assert_eq!(state::read_installed(&root).unwrap().0.version, "2");
        }
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&before).unwrap();
        fs::remove_dir_all(&expected_new).unwrap();
    }
}

/// A source that counts what crosses the "wire": whole blobs and delta ranges.
struct Counting {
    inner: LocalSource,
    blobs: std::sync::atomic::AtomicU64,
    range_bytes: std::sync::atomic::AtomicU64,
}

impl edeploy_tree::source::Source for Counting {
    fn manifest(&self, v: &str, r: &str) -> edeploy_tree::Result<Vec<u8>> {
        self.inner.manifest(v, r)
    }
    fn manifest_signature(&self, v: &str, r: &str) -> edeploy_tree::Result<Option<Vec<u8>>> {
        self.inner.manifest_signature(v, r)
    }
    fn pack_index(
        &self,
        m: &edeploy_tree::Hash,
    ) -> edeploy_tree::Result<edeploy_tree::store::PackIndex> {
        self.inner.pack_index(m)
    }
    fn pack(
        &self,
        m: &edeploy_tree::Hash,
        off: u64,
    ) -> edeploy_tree::Result<Box<dyn std::io::Read + Send>> {
        self.inner.pack(m, off)
    }
    fn blob(
        &self,
        h: &edeploy_tree::Hash,
    ) -> edeploy_tree::Result<(u8, Box<dyn std::io::Read + Send>)> {
        self.blobs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.blob(h)
    }
    fn signature(&self, h: &edeploy_tree::Hash) -> edeploy_tree::Result<Option<Vec<u8>>> {
        self.inner.signature(h)
    }
    fn blob_range(&self, h: &edeploy_tree::Hash, s: u64, e: u64) -> edeploy_tree::Result<Vec<u8>> {
        self.range_bytes
            .fetch_add(e - s, std::sync::atomic::Ordering::SeqCst);
        self.inner.blob_range(h, s, e)
    }
    fn metadata(
        &self,
        f: &str,
        r: &str,
        t: &str,
        n: &str,
    ) -> edeploy_tree::Result<Option<Vec<u8>>> {
        self.inner.metadata(f, r, t, n)
    }
    fn upgrades(&self, f: &str, r: &str) -> edeploy_tree::Result<Vec<String>> {
        self.inner.upgrades(f, r)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn large_changed_file_travels_as_a_delta() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let v1 = t.path().join("v1");
    let v2 = t.path().join("v2");
    for v in [&v1, &v2] {
        fs::create_dir_all(v.join("boot")).unwrap();
        fs::create_dir_all(v.join("var/lib/edeploy")).unwrap();
    }
    // Incompressible (stored raw, so it gets a block signature), 3 MB; v2 inserts bytes at
    // the front (every block shifts) and rewrites 100 KB in the middle.
    let old = common::pseudo_random(3 << 20, 11);
    let mut new = common::pseudo_random(1000, 12);
    new.extend_from_slice(&old[..1 << 20]);
    new.extend_from_slice(&common::pseudo_random(100 << 10, 13));
    new.extend_from_slice(&old[(1 << 20) + (100 << 10)..]);
    fs::write(v1.join("boot/initrd.img"), &old).unwrap();
    fs::write(v2.join("boot/initrd.img"), &new).unwrap();
    let store = t.path().join("store");
    Store::new(&store).index(&v1, "1", "base", None).unwrap();
    let (m2, _) = Store::new(&store).index(&v2, "2", "base", None).unwrap();
    let h2 = *m2.get(b"boot/initrd.img").unwrap().file_hash().unwrap();
    assert!(Store::new(&store).sig_path(&h2).exists(), "no signature");
    fs::create_dir_all(store.join("metadata/1/base/2")).unwrap();
    let root = t.path().join("root");
    let (m, bytes) = install::install(
        &LocalSource::new(&store),
        "1",
        "base",
        &root,
        &Options::default(),
    )
    .unwrap();
    let mut conf = Conf::default();
    conf.set("VERS", "1");
    conf.set("ROLE", "base");
    state::record_install(&root, &m, &bytes, &conf).unwrap();
    let before = snapshot_before(&root);
    let src = Counting {
        inner: LocalSource::new(&store),
        blobs: Default::default(),
        range_bytes: Default::default(),
    };
    upgrade::upgrade(&src, &root, "2", &Default::default()).unwrap();
    assert_eq!(fs::read(root.join("boot/initrd.img")).unwrap(), new);
    common::assert_same_tree(&v2, &root, SKIP);
    let ranged = src.range_bytes.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(src.blobs.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(ranged > 0 && ranged < 400 << 10, "{ranged} bytes fetched");
    // Rollback stays exact after a delta.
    upgrade::rollback(&root).unwrap();
    common::assert_same_tree(&before, &root, SKIP);
}

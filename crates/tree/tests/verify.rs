//! Verify: clean after install, then every kind of drift, exclude, fast vs full.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use edeploy_tree::exclude::Patterns;
use edeploy_tree::install::{self, Options};
use edeploy_tree::source::LocalSource;
use edeploy_tree::store::Store;
use edeploy_tree::verify::{self, Drift};

fn items(d: &[Drift]) -> Vec<String> {
    d.iter().map(|d| d.to_string()).collect()
}

#[test]
fn verify_reports_drift_rsync_style() {
    require_root!();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    common::fixture(&tree, 1);
    let store = t.path().join("store");
    Store::new(&store).index(&tree, "1", "r", None).unwrap();
    let root = t.path().join("root");
    let (m, _) = install::install(
        &LocalSource::new(&store),
        "1",
        "r",
        &root,
        &Options::default(),
    )
    .unwrap();
    let full = verify::Options {
        full: true,
        ..Default::default()
    };
    assert_eq!(verify::verify(&root, &m, &full).unwrap(), vec![]);
    // Host state is not drift.
    fs::create_dir_all(root.join("var/lib/edeploy")).unwrap();
    fs::write(root.join("var/lib/edeploy/conf"), "VERS=1\n").unwrap();

    // Same-size content change with mtime restored: only --full sees it.
    let p = root.join("etc/shadow");
    let mt = fs::metadata(&p).unwrap();
    fs::write(&p, b"ROOT:*:19000:0:99999:7:::\n").unwrap();
    use std::os::unix::fs::MetadataExt;
    common::set_mtime(&p, mt.mtime(), mt.mtime_nsec());
    fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("etc/extra"), b"new").unwrap();
    fs::remove_file(root.join("etc/empty")).unwrap();
    xattr::remove(root.join("usr/bin/ping"), "security.capability").unwrap();
    fs::remove_file(root.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", root.join("etc/link")).unwrap();
    std::os::unix::fs::lchown(root.join("etc/link"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(root.join("var/log"), Some(1), None).unwrap();

    let fast = verify::verify(&root, &m, &verify::Options::default()).unwrap();
    assert_eq!(
        items(&fast),
        vec![
            ">f+++++++++ etc/empty",
            "*deleting   etc/extra",
            ".f...p..... etc/hostname",
            "cLc.t...... etc/link",
            ".f........x usr/bin/ping",
            ".d....o.... var/log",
        ]
    );
    let slow = verify::verify(&root, &m, &full).unwrap();
    assert!(
        items(&slow).contains(&">fc........ etc/shadow".to_string()),
        "{slow:?}"
    );
    assert_eq!(slow.len(), fast.len() + 1);

    // Exclude hides drift both ways.
    let ex = verify::Options {
        full: true,
        exclude: Patterns::parse("/etc/\nvar/log\n/usr/bin/ping\n").unwrap(),
    };
    assert_eq!(verify::verify(&root, &m, &ex).unwrap(), vec![]);
}

#[test]
fn sparse_file_made_dense_is_not_drift_but_changed_data_is() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let f = fs::File::create(tree.join("s")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 4 << 20).unwrap();
    drop(f);
    let m = edeploy_tree::index::index_tree(&tree, "1", "r").unwrap();
    let e = m.get(b"s").unwrap();
    assert!(verify::content_matches(&tree.join("s"), e).unwrap());
    let dense = t.path().join("dense");
    fs::write(&dense, fs::read(tree.join("s")).unwrap()).unwrap();
    assert!(verify::content_matches(&dense, e).unwrap());
    let f = fs::OpenOptions::new().write(true).open(&dense).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"x", 1).unwrap();
    assert!(!verify::content_matches(&dense, e).unwrap());
}

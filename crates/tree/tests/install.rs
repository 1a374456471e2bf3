//! Index → store → install round trips, resume, corruption and signatures.

mod common;

use std::fs;
use std::path::Path;

use edeploy_tree::install::{self, Options};
use edeploy_tree::manifest::{self, Manifest};
use edeploy_tree::source::LocalSource;
use edeploy_tree::store::Store;
use edeploy_tree::{Error, Kind};

fn setup(sparse_gb: u64) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("install/1.0/base");
    fs::create_dir_all(&tree).unwrap();
    common::fixture(&tree, sparse_gb);
    let store = t.path().join("store");
    (t, tree, store)
}

fn install_into(store: &Path, root: &Path) -> edeploy_tree::Result<Manifest> {
    let src = LocalSource::new(store);
    install::install(&src, "1.0", "base", root, &Options::default()).map(|(m, _)| m)
}

#[test]
fn round_trip_every_entry_type_and_2g_sparse() {
    require_root!();
    let (t, tree, store) = setup(2);
    let start = std::time::Instant::now();
    let (m, _) = Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    // Sockets skipped; hardlinks grouped; the sparse file has extents.
    assert!(m.get(b"dev/sock").is_none());
    assert!(matches!(
        m.get(b"usr/bin/hl2").unwrap().kind,
        Kind::Hardlink { .. }
    ));
    assert!(matches!(m.get(b"etc/hl3").unwrap().kind, Kind::File { .. }));
    let Kind::File { extents, size, .. } = &m.get(b"var/sparse.img").unwrap().kind else {
        panic!()
    };
    assert_eq!(*size, 2 << 30);
    assert!(extents.as_ref().unwrap().len() >= 2);
    // The stored manifest parses back to the same thing.
    let bytes = fs::read(Store::new(&store).manifest_path("1.0", "base")).unwrap();
    assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);

    let root = t.path().join("root");
    let installed = install_into(&store, &root).unwrap();
    assert_eq!(installed, m);
    assert!(!root.join(install::STAGING).exists());
    common::assert_same_tree(&tree, &root, &["dev/sock"]);
    // Still sparse on disk.
    use std::os::unix::fs::MetadataExt;
    let blocks = fs::metadata(root.join("var/sparse.img")).unwrap().blocks();
    assert!(
        blocks * 512 < 4 << 20,
        "sparse file allocated {} bytes",
        blocks * 512
    );
    // Re-index of the installed tree gives the identical manifest.
    let again = edeploy_tree::index::index_tree(&root, "1.0", "base").unwrap();
    assert_eq!(again, m);
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
}

#[test]
fn interrupted_install_resumes_and_skips_verified_files() {
    require_root!();
    let (t, tree, store) = setup(0);
    let (_, mh) = Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    // Truncate the pack to simulate a connection cut half-way.
    let pack = Store::new(&store).pack_path(&mh);
    let full = fs::read(&pack).unwrap();
    fs::write(&pack, &full[..full.len() / 2]).unwrap();
    let root = t.path().join("root");
    let err = install_into(&store, &root).unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(
        root.join(install::STAGING).exists(),
        "interrupted, staging left"
    );
    // Some files are committed already; record their inode to prove they are not rewritten.
    use std::os::unix::fs::MetadataExt;
    let ino_before = fs::metadata(root.join("etc/hostname"))
        .map(|m| m.ino())
        .ok();
    assert!(
        ino_before.is_some(),
        "the first half of the pack was committed"
    );
    fs::write(&pack, &full).unwrap();
    install_into(&store, &root).unwrap();
    common::assert_same_tree(&tree, &root, &["dev/sock"]);
    if let Some(ino) = ino_before {
        assert_eq!(fs::metadata(root.join("etc/hostname")).unwrap().ino(), ino);
    }
}

#[test]
fn corrupted_blob_in_pack_is_refused_before_commit() {
    require_root!();
    let (t, tree, store) = setup(0);
    let (m, mh) = Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    let pack = Store::new(&store).pack_path(&mh);
    let mut bytes = fs::read(&pack).unwrap();
    // Flip a byte inside the (raw, incompressible) record of usr/bin/random.
    let h = *m.get(b"usr/bin/random").unwrap().file_hash().unwrap();
    let idx: edeploy_tree::store::PackIndex =
        serde_json::from_slice(&fs::read(Store::new(&store).pack_index_path(&mh)).unwrap())
            .unwrap();
    let rec = idx
        .records
        .iter()
        .find(|r| r.0 == manifest::hex(&h))
        .unwrap();
    let at = (rec.1 + 41 + rec.2 / 2) as usize;
    bytes[at] ^= 0x55;
    fs::write(&pack, &bytes).unwrap();
    let root = t.path().join("root");
    let err = install_into(&store, &root).unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    assert!(
        !root.join("usr/bin/random").exists(),
        "corrupted file committed"
    );
}

#[test]
fn corrupted_manifest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("a")).unwrap();
    fs::write(tree.join("a/f"), b"x").unwrap();
    let store = t.path().join("store");
    Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    let mp = Store::new(&store).manifest_path("1.0", "base");
    let good = fs::read(&mp).unwrap();
    for i in [0, 5, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        fs::write(&mp, &bad).unwrap();
        assert!(
            install_into(&store, &t.path().join("root")).is_err(),
            "byte {i}"
        );
    }
    // Truncated.
    fs::write(&mp, &good[..good.len() - 3]).unwrap();
    assert!(install_into(&store, &t.path().join("root")).is_err());
}

#[test]
fn signature_enforced_when_a_key_is_given() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"signed content").unwrap();
    let store = t.path().join("store");
    let key = manifest::generate_signing_key().unwrap();
    let other = manifest::generate_signing_key().unwrap();
    let src = LocalSource::new(&store);
    // Unsigned manifest + key ⇒ refused.
    Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    let opts = |k| Options {
        key: Some(k),
        ..Options::default()
    };
    let vk = key.verifying_key();
    let err = install::install(&src, "1.0", "base", &t.path().join("r0"), &opts(&vk)).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    // Signed ⇒ accepted with the right key, refused with another.
    Store::new(&store)
        .index(&tree, "1.0", "base", Some(&key))
        .unwrap();
    install::install(&src, "1.0", "base", &t.path().join("r1"), &opts(&vk)).unwrap();
    let ovk = other.verifying_key();
    let err = install::install(&src, "1.0", "base", &t.path().join("r2"), &opts(&ovk)).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    // Tampered manifest with a valid old signature ⇒ refused.
    let mp = Store::new(&store).manifest_path("1.0", "base");
    fs::write(tree.join("g"), b"more").unwrap();
    let (m2, _) = Store::new(t.path().join("s2"))
        .index(&tree, "1.0", "base", None)
        .unwrap();
    fs::write(&mp, m2.to_bytes().unwrap()).unwrap();
    let err = install::install(&src, "1.0", "base", &t.path().join("r3"), &opts(&vk)).unwrap_err();
    assert!(matches!(err, Error::Signature(_)), "{err}");
    // Without a key, unsigned manifests are accepted.
    Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    install::install(
        &src,
        "1.0",
        "base",
        &t.path().join("r4"),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(fs::read(t.path().join("r4/g")).unwrap(), b"more");
}

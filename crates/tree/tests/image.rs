//! Role images (`<role>-<version>.edeploy`): round trip over every entry type (same tree as a
//! pack install, clean full verify, GNU tar reads it too), signatures, and refusal of
//! corrupted, foreign, out-of-order and truncated images.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use edeploy_tree::image::{self, InstallOptions, WriteOptions};
use edeploy_tree::install::{self, Options};
use edeploy_tree::manifest::{self, Manifest};
use edeploy_tree::source::LocalSource;
use edeploy_tree::state::{self, Conf};
use edeploy_tree::store::Store;
use edeploy_tree::{verify, Error, Kind};

fn setup(sparse_gb: u64) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("install/1.0/base");
    fs::create_dir_all(&tree).unwrap();
    common::fixture(&tree, sparse_gb);
    (t, tree)
}

fn image_of(tree: &Path) -> (Manifest, Vec<u8>) {
    let (m, out) = image::build_image(
        tree,
        "1.0",
        "base",
        None,
        &WriteOptions::default(),
        Vec::new(),
    )
    .unwrap();
    (m, out)
}

fn install(img: &[u8], root: &Path) -> edeploy_tree::Result<(Manifest, Vec<u8>)> {
    image::install_image(img, root, &InstallOptions::default())
}

/// The uncompressed tar of an image, and back (to damage a member, not the zstd frame).
fn untar(img: &[u8]) -> Vec<u8> {
    zstd::decode_all(img).unwrap()
}
fn retar(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the tar")
}

#[test]
fn round_trip_every_entry_type_like_a_pack_install() {
    require_root!();
    let (t, tree) = setup(1);
    let (m, img) = image_of(&tree);
    assert!(m.get(b"dev/sock").is_none());
    // 1 GiB sparse file + 6 MiB of random data: only the data travels.
    assert!(img.len() < 12 << 20, "image is {} bytes", img.len());

    let root = t.path().join("root");
    let (got, bytes) = install(&img, &root).unwrap();
    assert_eq!(got, m);
    assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    assert!(!root.join(install::STAGING).exists());
    common::assert_same_tree(&tree, &root, &["dev/sock"]);
    use std::os::unix::fs::MetadataExt;
    let blocks = fs::metadata(root.join("var/sparse.img")).unwrap().blocks();
    assert!(
        blocks * 512 < 4 << 20,
        "sparse file allocated {} bytes",
        blocks * 512
    );
    let full = verify::Options {
        full: true,
        ..Default::default()
    };
    assert_eq!(verify::verify(&root, &m, &full).unwrap(), vec![]);

    // Recorded as a pack install records it: the same tree and state files either way.
    let mut conf = Conf::default();
    conf.set("VERS", "1.0");
    conf.set("ROLE", "base");
    state::record_install(&root, &got, &bytes, &conf).unwrap();
    let store = t.path().join("store");
    Store::new(&store)
        .index(&tree, "1.0", "base", None)
        .unwrap();
    let root2 = t.path().join("root2");
    let (m2, bytes2) = install::install(
        &LocalSource::new(&store),
        "1.0",
        "base",
        &root2,
        &Options::default(),
    )
    .unwrap();
    state::record_install(&root2, &m2, &bytes2, &conf).unwrap();
    assert_eq!(bytes, bytes2);
    // var/lib is not in the fixture: record_install created it (with the time of creation).
    common::assert_same_tree(&root, &root2, &["var/lib"]);
    assert_eq!(
        fs::read(state::conf_path(&root)).unwrap(),
        fs::read(state::conf_path(&root2)).unwrap()
    );
    assert_eq!(state::read_installed(&root).unwrap().1, bytes2);

    // A rerun over a complete install keeps everything (files skipped, tree unchanged).
    install(&img, &root).unwrap();
    common::assert_same_tree(&root, &root2, &["var/lib"]);

    // GNU tar reads the same image: xattrs (security.capability too), owners, devices,
    // hardlinks, nanosecond mtimes, and the pax 1.0 sparse file.
    let p = t.path().join("base-1.0.edeploy");
    fs::write(&p, &img).unwrap();
    let root3 = t.path().join("root3");
    fs::create_dir(&root3).unwrap();
    let o = std::process::Command::new("tar")
        .args([
            "--zstd",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-xpf",
        ])
        .arg(&p)
        .arg("-C")
        .arg(&root3)
        .output();
    match o {
        Ok(o) if o.status.success() => {
            common::assert_same_tree(&tree, &root3, &["dev/sock", ".edeploy-image"]);
        }
        Ok(o) => panic!("GNU tar refused the image: {o:?}"),
        Err(e) => eprintln!("SKIPPED GNU tar check (no tar: {e})"),
    }
}

#[test]
fn signed_images() {
    require_root!();
    let (t, tree) = setup(0);
    let k = manifest::generate_signing_key().unwrap();
    let (_, signed) = image::build_image(
        &tree,
        "1.0",
        "base",
        Some(&k),
        &WriteOptions::default(),
        Vec::new(),
    )
    .unwrap();
    let (_, unsigned) = image_of(&tree);
    let vk = k.verifying_key();
    let other = manifest::generate_signing_key().unwrap().verifying_key();
    let with = |key, expect| InstallOptions {
        key,
        expect,
        progress: None,
    };

    let r = image::install_image(&unsigned[..], &t.path().join("a"), &with(Some(&vk), None));
    assert!(matches!(r, Err(Error::Signature(_))), "{r:?}");
    assert!(
        !t.path().join("a").exists(),
        "nothing written before the check"
    );
    let r = image::install_image(&signed[..], &t.path().join("b"), &with(Some(&other), None));
    assert!(matches!(r, Err(Error::Signature(_))), "{r:?}");
    let r = image::install_image(
        &signed[..],
        &t.path().join("c"),
        &with(Some(&vk), Some(("2.0", "base"))),
    );
    assert!(matches!(r, Err(Error::Integrity(_))), "{r:?}");
    image::install_image(
        &signed[..],
        &t.path().join("d"),
        &with(Some(&vk), Some(("1.0", "base"))),
    )
    .unwrap();
    common::assert_same_tree(&tree, &t.path().join("d"), &["dev/sock"]);
    // Without a key a signed image installs too.
    install(&signed, &t.path().join("e")).unwrap();
}

#[test]
fn corrupted_file_is_refused_and_not_committed() {
    require_root!();
    let (t, tree) = setup(0);
    let (_, img) = image_of(&tree);
    let mut tar = untar(&img);
    let at = find(&tar, b"root:*:19000");
    tar[at] ^= 1;
    let root = t.path().join("root");
    let e = install(&retar(&tar), &root).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity(s) if s.contains("etc/shadow") && s.contains("hash")),
        "{e:?}"
    );
    assert!(!root.join("etc/shadow").exists());
    // Files before it in the stream were committed (a rerun with a good image keeps them).
    assert!(root.join("etc/hostname").exists());
    install(&img, &root).unwrap();
    common::assert_same_tree(&tree, &root, &["dev/sock"]);

    // Damage in the compressed stream: the zstd checksum or a hash catches it.
    let mut bad = img.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x40;
    let e = install(&bad, &t.path().join("root2")).unwrap_err();
    assert!(matches!(e, Error::Integrity(_) | Error::Format(_)), "{e:?}");

    // Truncated: refused, never reported as installed.
    let e = install(&img[..img.len() * 2 / 3], &t.path().join("root3")).unwrap_err();
    assert!(matches!(e, Error::Integrity(_) | Error::Io(_)), "{e:?}");

    // Not an image at all.
    let e = install(&retar(b"hello"), &t.path().join("root4")).unwrap_err();
    assert!(!t.path().join("root4").exists(), "{e:?}");
}

#[test]
fn members_must_match_the_manifest() {
    require_root!();
    let (t, tree) = setup(0);
    let m = edeploy_tree::index::index_tree(&tree, "1.0", "base").unwrap();
    let opts = WriteOptions {
        threads: 0,
        ..Default::default()
    };
    let write = |members: &Manifest, stored: &Manifest| {
        image::write_image(
            &tree,
            members,
            &stored.to_bytes().unwrap(),
            None,
            &opts,
            Vec::new(),
        )
        .unwrap()
    };

    // A member the manifest does not list.
    let mut fewer = m.clone();
    fewer.entries.retain(|e| e.path != b"etc/hostname");
    let e = install(&write(&m, &fewer), &t.path().join("a")).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity(s) if s.contains("etc/hostname") && s.contains("not in the manifest")),
        "{e:?}"
    );
    assert!(!t.path().join("a/etc/hostname").exists());

    // The manifest lists an entry the image lacks: the image is incomplete.
    let e = install(&write(&fewer, &m), &t.path().join("b")).unwrap_err();
    assert!(matches!(e, Error::Integrity(_)), "{e:?}");

    // Another symlink target, another size, another type.
    let mut other = m.clone();
    for e in &mut other.entries {
        if let (b"etc/link", Kind::Symlink { target }) = (&e.path[..], &mut e.kind) {
            *target = b"/etc/shadow".to_vec();
        }
    }
    let e = install(&write(&m, &other), &t.path().join("c")).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity(s) if s.contains("symlink target")),
        "{e:?}"
    );
    let mut other = m.clone();
    for e in &mut other.entries {
        if let (b"etc/hostname", Kind::File { size, .. }) = (&e.path[..], &mut e.kind) {
            *size += 1;
        }
    }
    let e = install(&write(&m, &other), &t.path().join("d")).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity(s) if s.contains("size")),
        "{e:?}"
    );
    let mut other = m.clone();
    for e in &mut other.entries {
        if e.path == b"dev/fifo" {
            e.kind = Kind::Char { rdev: 0 };
        }
    }
    let e = install(&write(&m, &other), &t.path().join("e")).unwrap_err();
    assert!(
        matches!(&e, Error::Integrity(s) if s.contains("type")),
        "{e:?}"
    );
}

#[test]
fn hostile_members_are_refused() {
    // A hand-made image: a valid manifest with one file, and a member escaping the root.
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("a"), "a").unwrap();
    let m = edeploy_tree::index::index_tree(&tree, "1", "r").unwrap();
    let bytes = m.to_bytes().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Raw name: set_path would refuse `..` itself.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(image::MANIFEST_MEMBER, &bytes);
    add("../escape", b"x");
    let img = retar(&b.into_inner().unwrap());
    let root = t.path().join("root");
    let e = install(&img, &root).unwrap_err();
    assert!(
        matches!(&e, Error::Format(s) if s.contains("unsafe path")),
        "{e:?}"
    );
    assert!(!t.path().join("escape").exists());

    // A manifest whose file sits under a symlink: refused before anything is written.
    let mut evil = m.clone();
    evil.entries = vec![
        edeploy_tree::Entry {
            path: b"l".to_vec(),
            kind: Kind::Symlink {
                target: t.path().as_os_str().to_str().unwrap().into(),
            },
            ..m.entries[0].clone()
        },
        edeploy_tree::Entry {
            path: b"l/a".to_vec(),
            ..m.entries[0].clone()
        },
    ];
    let mut b = tar::Builder::new(Vec::new());
    let bytes = evil.to_bytes().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path(image::MANIFEST_MEMBER).unwrap();
    h.set_size(bytes.len() as u64);
    h.set_cksum();
    b.append(&h, &bytes[..]).unwrap();
    let e = install(&retar(&b.into_inner().unwrap()), &t.path().join("r2")).unwrap_err();
    assert!(
        matches!(&e, Error::Format(s) if s.contains("not a directory")),
        "{e:?}"
    );
}

#[test]
fn image_file_from_disk_and_open() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/motd"), "hi\n").unwrap();
    let out = t
        .path()
        .join("images")
        .join(image::file_name("1.0", "base"));
    image::write_image_file(&tree, "1.0", "base", None, &WriteOptions::default(), &out).unwrap();
    assert!(out.ends_with("images/base-1.0.edeploy"));
    // No temp file left next to it.
    assert_eq!(fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
    let mut r = image::open(out.to_str().unwrap()).unwrap();
    let mut img = Vec::new();
    r.read_to_end(&mut img).unwrap();
    let root = t.path().join("root");
    install(&img, &root).unwrap();
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "hi\n");
    assert!(image::open("/nonexistent/x.edeploy").is_err());
}

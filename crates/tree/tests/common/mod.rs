//! Test helpers: a fixture tree with every entry type, and an independent tree snapshot
//! (plain std + xattr calls, not the crate's indexer) to compare trees entry by entry.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Tests that create devices, chown and set security.* xattrs need root. They say so loudly.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!(
                "SKIPPED (needs root: devices, chown, security.capability): {}",
                module_path!()
            );
            return;
        }
    };
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snap {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub rdev: u64,
    pub content: Option<[u8; 32]>,
    pub link: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Hardlink group: the smallest path sharing this inode (for nlink > 1 files).
    pub group: Option<Vec<u8>>,
}

/// Snapshot a tree: every entry (except `skip` prefixes) with all metadata and a hash of the
/// logical content. Directory mtimes included.
pub fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, Snap> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    let mut all = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        for de in fs::read_dir(&dir).unwrap() {
            let de = de.unwrap();
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(de.file_name().as_bytes());
            if skip.iter().any(|s| p.starts_with(s.as_bytes())) {
                continue;
            }
            let full = root.join(OsStr::from_bytes(&p));
            let m = fs::symlink_metadata(&full).unwrap();
            if m.file_type().is_dir() {
                stack.push(p.clone());
            }
            all.push((p, full, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, full, m) in all {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let content = ft.is_file().then(|| hash_sparse(&full, m.len()));
        let mut xattrs = BTreeMap::new();
        for n in xattr::list(&full).unwrap() {
            xattrs.insert(
                n.as_bytes().to_vec(),
                xattr::get(&full, &n).unwrap().unwrap(),
            );
        }
        let group = (ft.is_file() && m.nlink() > 1)
            .then(|| inodes.entry(m.ino()).or_insert_with(|| p.clone()).clone());
        out.insert(
            p,
            Snap {
                kind: kind.into(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { m.len() },
                rdev: m.rdev(),
                content,
                link: ft.is_symlink().then(|| {
                    fs::read_link(&full)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs,
                group,
            },
        );
    }
    out
}

/// Assert two trees are equal entry by entry, with a readable first difference.
pub fn assert_same_tree(a: &Path, b: &Path, skip: &[&str]) {
    let sa = snapshot(a, skip);
    let sb = snapshot(b, skip);
    for (p, ea) in &sa {
        match sb.get(p) {
            None => panic!(
                "{:?} missing in {}",
                String::from_utf8_lossy(p),
                b.display()
            ),
            Some(eb) => assert_eq!(ea, eb, "entry {:?} differs", String::from_utf8_lossy(p)),
        }
    }
    for p in sb.keys() {
        assert!(
            sa.contains_key(p),
            "{:?} extra in {}",
            String::from_utf8_lossy(p),
            b.display()
        );
    }
}

/// Hash of a file's logical content *and* its data/hole layout (SEEK_DATA/SEEK_HOLE), so a
/// sparse file copied dense compares unequal, and a 2 GB sparse file hashes in milliseconds.
pub fn hash_sparse(p: &Path, size: u64) -> [u8; 32] {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(p).unwrap();
    let fd = f.as_raw_fd();
    let mut h = blake3::Hasher::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = (hole as u64).min(size);
        h.update(&(data as u64).to_le_bytes());
        h.update(&end.to_le_bytes());
        let mut buf = vec![0u8; (end - data as u64) as usize];
        f.read_exact_at(&mut buf, data as u64).unwrap();
        h.update(&buf);
        pos = hole;
    }
    *h.finalize().as_bytes()
}

pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

fn mknod(p: &Path, t: libc::mode_t, mode: u32, rdev: u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), t | mode, rdev as libc::dev_t) },
        0,
        "mknod {}",
        p.display()
    );
}

/// security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2, effective, permitted bit 13).
pub const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Build the fixture: every entry type (needs root for devices/owners/capabilities).
/// `sparse_gb` adds a sparse file of that many GiB (data at start, middle, end).
pub fn fixture(root: &Path, sparse_gb: u64) {
    let d = |p: &str, mode: u32| {
        fs::create_dir_all(root.join(p)).unwrap();
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    let f = |p: &str, data: &[u8], mode: u32| {
        fs::write(root.join(p), data).unwrap();
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    d("etc", 0o755);
    d("usr/bin", 0o755);
    d("var/log", 0o750);
    d("empty-dir", 0o700);
    f("etc/hostname", b"node1\n", 0o644);
    f("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640);
    f("etc/empty", b"", 0o600);
    f("etc/dup-a", b"same content twice\n", 0o644);
    f("etc/dup-b", b"same content twice\n", 0o600);
    let big: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    f("usr/bin/compressible", &big, 0o755);
    f("usr/bin/random", &pseudo_random(200_000, 7), 0o4755);
    // Incompressible and larger than the installer's in-memory record limit: streamed inline.
    f("usr/bin/big", &pseudo_random(6 << 20, 11), 0o755);
    f("usr/bin/ping", b"\x7fELF not really", 0o755);
    xattr::set(
        root.join("usr/bin/ping"),
        "security.capability",
        &CAP_NET_RAW,
    )
    .unwrap();
    xattr::set(root.join("etc/hostname"), "user.comment", b"hello").unwrap();
    f("usr/bin/hl1", b"hardlinked\n", 0o755);
    fs::hard_link(root.join("usr/bin/hl1"), root.join("usr/bin/hl2")).unwrap();
    fs::hard_link(root.join("usr/bin/hl1"), root.join("etc/hl3")).unwrap();
    std::os::unix::fs::symlink("hostname", root.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("etc/dangling")).unwrap();
    // Odd names.
    let odd: &[&[u8]] = &[
        b"sp ace",
        b"new\nline",
        b"per%cent",
        b"\xff\xfebin",
        "ünï漢".as_bytes(),
    ];
    for (i, n) in odd.iter().enumerate() {
        fs::write(
            root.join("etc").join(OsStr::from_bytes(n)),
            format!("odd {i}"),
        )
        .unwrap();
    }
    // Specials.
    d("dev", 0o755);
    mknod(
        &root.join("dev/null"),
        libc::S_IFCHR,
        0o666,
        libc::makedev(1, 3),
    );
    mknod(
        &root.join("dev/loop9"),
        libc::S_IFBLK,
        0o660,
        libc::makedev(7, 9),
    );
    mknod(&root.join("dev/fifo"), libc::S_IFIFO, 0o644, 0);
    let _sock = std::os::unix::net::UnixListener::bind(root.join("dev/sock")).unwrap();
    // Owners.
    std::os::unix::fs::lchown(root.join("etc/shadow"), Some(0), Some(42)).unwrap();
    std::os::unix::fs::lchown(root.join("var/log"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("etc/link"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(root.join("usr/bin/random"), Some(0), Some(0)).unwrap();
    // A read-only directory with content.
    d("ro", 0o755);
    f("ro/file", b"inside a read-only dir", 0o444);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    if sparse_gb > 0 {
        let p = root.join("var/sparse.img");
        let file = fs::File::create(&p).unwrap();
        let size = sparse_gb << 30;
        file.set_len(size).unwrap();
        file.write_all_at(b"head of the sparse file", 0).unwrap();
        file.write_all_at(&pseudo_random(70_000, 3), size / 2)
            .unwrap();
        file.write_all_at(b"tail", size - 4).unwrap();
        drop(file);
    }
    // Fixed mtimes everywhere (after all content), deepest first.
    let mut paths: Vec<_> = snapshot(root, &[]).keys().cloned().collect();
    paths.reverse();
    for (i, p) in paths.iter().enumerate() {
        let full = root.join(OsStr::from_bytes(p));
        if fs::symlink_metadata(&full).unwrap().file_type().is_socket() {
            continue;
        }
        set_mtime(
            &full,
            1_600_000_000 + i as i64 * 1000,
            (i as i64 * 7919) % 1_000_000_000,
        );
    }
    std::mem::forget(_sock);
    let _ = std::io::stdout().flush();
}

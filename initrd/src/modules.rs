//! Kernel modules for the hardware that is present, without udev or modprobe: every
//! `sys/bus/*/devices/*/modalias` is matched against `modules.alias`, and the matching modules are
//! loaded after their dependencies (`modules.dep`). Loading a bus driver (virtio_pci) creates new
//! devices (virtio0…) whose drivers are only known then, so the scan repeats until a round loads
//! nothing new.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Modules always wanted when present: the filesystems a configure script formats.
pub const ALWAYS: &[&str] = &["ext4", "vfat"];

/// The module database of one kernel release.
#[derive(Debug, Default)]
pub struct Db {
    pub dir: PathBuf,
    /// `(pattern, module)` in file order.
    aliases: Vec<(String, String)>,
    /// module name → (relative .ko path, dependencies' names in modules.dep order).
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

/// `virtio-net`, `virtio_net.ko`, `kernel/…/virtio_net.ko.xz` → `virtio_net`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The running kernel's release: `ROOT/proc/sys/kernel/osrelease`, else `uname`.
pub fn kernel_release(root: &Path) -> Option<String> {
    if let Ok(s) = fs::read_to_string(root.join("proc/sys/kernel/osrelease")) {
        return Some(s.trim().to_string());
    }
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated C strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        let r = std::ffi::CStr::from_ptr(u.release.as_ptr());
        Some(r.to_string_lossy().into_owned())
    }
}

impl Db {
    /// Reads `dir/modules.alias`, `modules.dep` and (optional) `modules.builtin`.
    pub fn load(dir: &Path) -> io::Result<Db> {
        let alias_text = fs::read_to_string(dir.join("modules.alias"))?;
        let dep_text = fs::read_to_string(dir.join("modules.dep"))?;
        let builtin_text = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let mut db = Db {
            dir: dir.to_path_buf(),
            ..Db::default()
        };
        for line in alias_text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(m)) = (w.next(), w.next(), w.next()) {
                db.aliases.push((pat.to_string(), module_name(m)));
            }
        }
        for line in dep_text.lines() {
            let Some((ko, rest)) = line.split_once(':') else {
                continue;
            };
            let deps = rest.split_whitespace().map(module_name).collect();
            db.deps
                .insert(module_name(ko), (ko.trim().to_string(), deps));
        }
        db.builtin = builtin_text.lines().map(module_name).collect();
        Ok(db)
    }

    /// Modules whose alias pattern matches `modalias`, in modules.alias order.
    pub fn matching(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pat, m) in &self.aliases {
            if glob(pat.as_bytes(), modalias.as_bytes()) && !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    pub fn knows(&self, name: &str) -> bool {
        self.deps.contains_key(name) || self.builtin.contains(name)
    }

    /// Load order for `name`: its dependencies first, then itself. depmod lists a module's
    /// dependencies so that loading them from the last to the first works (what modprobe does).
    pub fn order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.order_into(name, &mut out, 0);
        out
    }

    fn order_into(&self, name: &str, out: &mut Vec<String>, depth: usize) {
        if out.iter().any(|m| m == name) || depth > 64 {
            return;
        }
        if let Some((_, deps)) = self.deps.get(name) {
            for d in deps.iter().rev() {
                self.order_into(d, out, depth + 1);
            }
        }
        if !out.iter().any(|m| m == name) {
            out.push(name.to_string());
        }
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.deps.get(name).map(|(ko, _)| self.dir.join(ko))
    }
}

/// fnmatch(3) without flags, as modprobe matches aliases: `*`, `?`, `[...]` (with `!`/`^`
/// negation and `a-z` ranges).
pub fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Backtrack point of the last `*`: (pattern index after it, string index it swallowed to).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pat, p, s[i]),
            Some(&c) if c == s[i] => Some(p + 1),
            _ => None,
        };
        match step {
            Some(np) => {
                p = np;
                i += 1;
            }
            None => match star {
                Some((sp, si)) => {
                    p = sp;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression at `pat[p]`; the index after it on a match. An
/// unterminated `[` is a literal `[`, as in fnmatch.
fn class(pat: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *pat.get(j)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&h| h != b']') {
            let hi = pat[j + 2];
            hit |= lo <= c && c <= hi;
            j += 3;
        } else {
            hit |= lo == c;
            j += 1;
        }
        if j >= pat.len() {
            // Unterminated: literal `[`.
            return (c == b'[').then_some(p + 1);
        }
    }
    (hit != negate).then_some(j + 1)
}

/// Every modalias under `ROOT/sys/bus/*/devices/*/modalias`, sorted (stable logs).
pub fn modaliases(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = fs::read_dir(root.join("sys/bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devs) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for d in devs.flatten() {
            if let Ok(s) = fs::read_to_string(d.path().join("modalias")) {
                let s = s.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Names in `ROOT/proc/modules`.
pub fn loaded(root: &Path) -> HashSet<String> {
    fs::read_to_string(root.join("proc/modules"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(module_name)
        .collect()
}

/// What a loading round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub loaded: Vec<String>,
    /// `(module, error)`.
    pub failed: Vec<(String, String)>,
}

/// Loads the modules for the hardware under `root`, plus [`ALWAYS`]. `load(path, name)` inserts
/// one module (the real one is [`finit_module`]); it is injected so tests record the order.
pub fn load_for_hardware(
    root: &Path,
    db: &Db,
    load: &mut dyn FnMut(&Path, &str) -> io::Result<()>,
) -> Report {
    let mut report = Report::default();
    // Already in the kernel or already tried (a failed module is not retried every round).
    let mut done: HashSet<String> = loaded(root);
    done.extend(db.builtin.iter().cloned());
    let mut seen_aliases: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let mut wanted: Vec<String> = Vec::new();
        if first {
            wanted.extend(ALWAYS.iter().filter(|m| db.knows(m)).map(|m| m.to_string()));
        }
        for a in modaliases(root) {
            if seen_aliases.insert(a.clone()) {
                wanted.extend(db.matching(&a).into_iter().map(str::to_string));
            }
        }
        first = false;
        let mut progress = false;
        for m in wanted {
            for name in db.order(&m) {
                if done.contains(&name) {
                    continue;
                }
                done.insert(name.clone());
                let Some(path) = db.path(&name) else {
                    report.failed.push((name, "not in modules.dep".into()));
                    continue;
                };
                match load(&path, &name) {
                    Ok(()) => {
                        report.loaded.push(name);
                        progress = true;
                    }
                    // Loaded meanwhile (by a dependency's init, or the kernel): fine.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => report.failed.push((name, e.to_string())),
                }
            }
        }
        if !progress {
            return report;
        }
    }
}

/// Inserts a module with `finit_module(2)`; compressed modules are handed to the kernel to
/// decompress (MODULE_INIT_COMPRESSED_FILE, Linux 5.17+).
pub fn finit_module(path: &Path, _name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path)?;
    let compressed = path
        .extension()
        .is_some_and(|e| e == "xz" || e == "zst" || e == "gz");
    let flags: libc::c_int = if compressed { 4 } else { 0 };
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated parameter string, as finit_module(2) expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob(
            b"pci:v00001AF4d*sv*sd*bc*sc*i*",
            b"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!glob(b"pci:v00001AF4d*", b"pci:v00008086d00001000"));
        assert!(glob(b"virtio:d00000001v*", b"virtio:d00000001v00001AF4"));
        assert!(glob(b"a?c", b"abc") && !glob(b"a?c", b"ac"));
        assert!(glob(b"x[0-9]y", b"x5y") && !glob(b"x[0-9]y", b"xay"));
        assert!(glob(b"x[!0-9]y", b"xay") && !glob(b"x[^0-9]y", b"x1y"));
        assert!(glob(b"x[]]y", b"x]y"));
        assert!(glob(b"x[ab", b"x[ab"));
        assert!(glob(b"*", b"") && glob(b"**a", b"ba") && !glob(b"a", b""));
        assert!(glob(b"*a*b*c", b"xxaxxbxxc") && !glob(b"*a*b*c", b"xxaxxbxx"));
    }

    #[test]
    fn names() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(module_name("virtio-pci"), "virtio_pci");
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// A fake kernel: virtio_pci binds the PCI device, which (in the fake "loader") creates
    /// the virtio devices whose drivers must then be found in a second round.
    #[test]
    fn loads_deps_first_and_repeats_for_new_devices() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let mods = root.join("lib/modules/6.1.0-test");
        write(&root.join("proc/sys/kernel/osrelease"), "6.1.0-test\n");
        write(&root.join("proc/modules"), "crc16 16384 1 ext4, Live 0x0\n");
        write(
            &mods.join("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d*sv*sd*bc*sc*i* e1000\n\
             alias fs-ext4 ext4\n",
        );
        write(
            &mods.join("modules.dep"),
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
             kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
             kernel/drivers/virtio/virtio.ko:\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko\n\
             kernel/fs/mbcache.ko:\n\
             kernel/fs/jbd2/jbd2.ko:\n\
             kernel/lib/crc16.ko:\n\
             kernel/drivers/net/e1000.ko:\n",
        );
        write(&mods.join("modules.builtin"), "kernel/fs/vfat/vfat.ko\n");
        write(
            &root.join("sys/bus/pci/devices/0000:00:03.0/modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        );
        write(
            &root.join("sys/bus/pci/devices/0000:00:04.0/modalias"),
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
        );
        let rel = kernel_release(root).unwrap();
        assert_eq!(rel, "6.1.0-test");
        let db = Db::load(&root.join("lib/modules").join(rel)).unwrap();
        let mut order = Vec::new();
        let report = load_for_hardware(root, &db, &mut |p, name| {
            assert!(p.ends_with(format!("{name}.ko")), "{}", p.display());
            order.push(name.to_string());
            if name == "virtio_pci" {
                write(
                    &root.join("sys/bus/virtio/devices/virtio0/modalias"),
                    "virtio:d00000001v00001AF4\n",
                );
                write(
                    &root.join("sys/bus/virtio/devices/virtio1/modalias"),
                    "virtio:d00000002v00001AF4\n",
                );
            }
            if name == "failover" {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            Ok(())
        });
        assert_eq!(
            order,
            [
                // ext4 first (always wanted), crc16 already loaded.
                "jbd2",
                "mbcache",
                "ext4",
                "virtio_ring",
                "virtio",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk",
            ]
        );
        assert!(!report.loaded.contains(&"failover".to_string()));
        assert!(report.failed.is_empty());
    }

    #[test]
    fn failures_are_reported_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        write(
            &root.join("m/modules.alias"),
            "alias pci:v00008086* e1000\n",
        );
        write(&root.join("m/modules.dep"), "e1000.ko:\n");
        write(
            &root.join("sys/bus/pci/devices/a/modalias"),
            "pci:v00008086d1\n",
        );
        let db = Db::load(&root.join("m")).unwrap();
        let mut n = 0;
        let r = load_for_hardware(root, &db, &mut |_, _| {
            n += 1;
            Err(io::Error::from_raw_os_error(libc::ENOEXEC))
        });
        assert_eq!(n, 1);
        assert_eq!(r.failed.len(), 1);
        assert!(Db::load(&root.join("nowhere")).is_err());
    }
}

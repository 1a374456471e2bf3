//! Thin, path-based wrappers over the syscalls std lacks (mknod, utimensat on links, syncfs,
//! SEEK_DATA/SEEK_HOLE) and entry metadata read/apply shared by index, install, verify, upgrade.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::manifest::{Entry, Kind};

pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mknod(p: &Path, kind: &Kind, mode: u32) -> io::Result<()> {
    let (t, rdev) = match kind {
        Kind::Char { rdev } => (libc::S_IFCHR, *rdev),
        Kind::Block { rdev } => (libc::S_IFBLK, *rdev),
        Kind::Fifo => (libc::S_IFIFO, 0),
        _ => unreachable!("mknod of a non-special entry"),
    };
    let c = cstr(p)?;
    check(unsafe { libc::mknod(c.as_ptr(), t | (mode & 0o7777), rdev as libc::dev_t) })
}

/// Set mtime (atime is set to the same value) without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    let c = cstr(p)?;
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// One sync of the filesystem holding `p` (instead of an fsync per file: 5–10× cheaper).
pub fn syncfs(p: &Path) -> io::Result<()> {
    let f = File::open(p)?;
    check(unsafe { libc::syncfs(f.as_raw_fd()) })
}

/// Start writing `f`'s dirty pages to disk without waiting. The final `syncfs` then finds
/// most data already on its way instead of starting all of it at once.
pub fn start_writeback(f: &File) {
    // Advisory: a filesystem without it still gets everything written by the final sync.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

pub fn read_xattrs(p: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        // System ACLs are part of the mode on most roles; everything else is kept as is.
        if let Some(v) = xattr::get(p, &name)? {
            out.insert(name.as_bytes().to_vec(), v);
        }
    }
    Ok(out)
}

/// Apply owner, mode, xattrs and mtime of `e` to the object at `p`, in the only order that
/// works: chown clears setuid bits and security.capability, so it goes first; mtime goes last.
pub fn apply_meta(p: &Path, e: &Entry) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid))?;
    let is_link = matches!(e.kind, Kind::Symlink { .. });
    if !is_link {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(e.mode))?;
    }
    let current = read_xattrs(p)?;
    for name in current.keys() {
        if !e.xattrs.contains_key(name) {
            xattr::remove(p, OsStr::from_bytes(name))?;
        }
    }
    for (name, value) in &e.xattrs {
        if current.get(name) != Some(value) {
            xattr::set(p, OsStr::from_bytes(name), value)?;
        }
    }
    set_mtime(p, e.mtime, e.mtime_nsec)
}

/// [`apply_meta`] through an open file: the same order (owner, mode, xattrs, mtime last) with
/// fd-based calls, so a freshly written file gets its metadata without a single path lookup
/// (install writes ~15k files; the path walks and the staging rename were half its syscalls).
pub fn apply_meta_fd(f: &File, e: &Entry) -> io::Result<()> {
    use xattr::FileExt;
    let fd = f.as_raw_fd();
    check(unsafe { libc::fchown(fd, e.uid, e.gid) })?;
    check(unsafe { libc::fchmod(fd, e.mode as libc::mode_t) })?;
    let names: Vec<std::ffi::OsString> = match f.list_xattr() {
        Ok(n) => n.collect(),
        Err(err) if err.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(err) => return Err(err),
    };
    for name in &names {
        if !e.xattrs.contains_key(name.as_bytes()) {
            f.remove_xattr(name)?;
        }
    }
    for (name, value) in &e.xattrs {
        let name = OsStr::from_bytes(name);
        let current = if names.iter().any(|n| n == name) {
            f.get_xattr(name)?
        } else {
            None
        };
        if current.as_ref() != Some(value) {
            f.set_xattr(name, value)?;
        }
    }
    let ts = libc::timespec {
        tv_sec: e.mtime as libc::time_t,
        tv_nsec: e.mtime_nsec as _,
    };
    check(unsafe { libc::futimens(fd, [ts, ts].as_ptr()) })
}

/// Data extents of a file via SEEK_DATA/SEEK_HOLE. `None` when the file is dense (one extent
/// covering it all, or the filesystem does not report holes).
pub fn data_extents(f: &File, size: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    if size == 0 {
        return Ok(None);
    }
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                Some(libc::EINVAL) => return Ok(None),
                _ => return Err(e),
            }
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        pos = hole;
    }
    if out.len() == 1 && out[0] == (0, size) {
        return Ok(None);
    }
    Ok(Some(out))
}

/// A reader over the payload of a file: its data extents concatenated (whole file if dense).
pub struct PayloadReader {
    file: File,
    extents: Vec<(u64, u64)>,
    idx: usize,
    done: u64,
}

impl PayloadReader {
    pub fn new(file: File, size: u64, extents: Option<&[(u64, u64)]>) -> Self {
        let extents = match extents {
            Some(x) => x.to_vec(),
            None if size > 0 => vec![(0, size)],
            None => vec![],
        };
        PayloadReader {
            file,
            extents,
            idx: 0,
            done: 0,
        }
    }
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.extents.get(self.idx) {
            if self.done == len {
                self.idx += 1;
                self.done = 0;
                continue;
            }
            let want = ((len - self.done) as usize).min(buf.len());
            let n = self.file.read_at(&mut buf[..want], off + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Writes a payload back into a file at its extents (holes stay holes), then sets the length.
pub struct PayloadWriter {
    file: File,
    extents: Vec<(u64, u64)>,
    idx: usize,
    done: u64,
    size: u64,
}

impl PayloadWriter {
    /// `file` must be empty (freshly created): [`PayloadWriter::finish`] relies on it.
    pub fn new(file: File, size: u64, extents: Option<&[(u64, u64)]>) -> Self {
        let extents = match extents {
            Some(x) => x.to_vec(),
            None if size > 0 => vec![(0, size)],
            None => vec![],
        };
        PayloadWriter {
            file,
            extents,
            idx: 0,
            done: 0,
            size,
        }
    }

    /// Checks the payload filled every extent exactly and sets the final (sparse) length.
    /// Returns the file (its offset is unspecified: writes are positional).
    pub fn finish(self) -> io::Result<File> {
        let mut idx = self.idx;
        let mut done = self.done;
        while idx < self.extents.len() && done == self.extents[idx].1 {
            idx += 1;
            done = 0;
        }
        if idx != self.extents.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "payload shorter than the file's extents",
            ));
        }
        // Every writer starts from an empty file, so one written up to its end already has
        // its length: only a trailing hole needs the ftruncate (a syscall per file saved).
        let end = self.extents.last().map_or(0, |&(o, l)| o + l);
        if end != self.size {
            self.file.set_len(self.size)?;
        }
        Ok(self.file)
    }
}

impl Write for PayloadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.extents.get(self.idx) {
            if self.done == len {
                self.idx += 1;
                self.done = 0;
                continue;
            }
            let n = ((len - self.done) as usize).min(buf.len());
            self.file.write_all_at(&buf[..n], off + self.done)?;
            self.done += n as u64;
            return Ok(n);
        }
        if buf.is_empty() {
            Ok(0)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "payload longer than the file's extents",
            ))
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Size + mode + owner + mtime of a regular file equal the entry's: used to skip files an
/// interrupted install already committed (we set mtime last, after the content was verified).
pub fn file_matches_fast(p: &Path, e: &Entry) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| meta_matches_file(&m, e))
}

/// [`file_matches_fast`] on metadata already read (one `lstat` serves several checks).
pub fn meta_matches_file(m: &std::fs::Metadata, e: &Entry) -> bool {
    let Kind::File { size, .. } = &e.kind else {
        return false;
    };
    m.file_type().is_file()
        && m.len() == *size
        && m.mode() & 0o7777 == e.mode
        && m.uid() == e.uid
        && m.gid() == e.gid
        && m.mtime() == e.mtime
        && m.mtime_nsec() as u32 == e.mtime_nsec
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

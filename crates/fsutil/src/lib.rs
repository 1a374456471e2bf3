//! Crash-safe file updates: the CMDB, state, hardware files, the agent's run directory and tree
//! file are never seen half-written, and writers exclude each other with `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temp files of concurrent writers within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `data` atomically: write a temp file beside it, fsync, rename over, fsync
/// the directory. A crash leaves either the old or the new content, never a mix; a stray temp
/// file (`.name.tmp.*`) is all that can remain.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{seq}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock` on a lock file, released when dropped — or by the kernel when the
/// process dies, so a crash never leaves a stale lock (eDeploy's `O_EXCL` lock file did).
pub struct Lock {
    file: File,
    pub path: PathBuf,
}

impl Lock {
    /// Blocks until the lock is ours.
    pub fn acquire(path: &Path) -> io::Result<Lock> {
        Self::flock(path, libc::LOCK_EX).map(|l| l.expect("a blocking flock ends holding the lock"))
    }

    /// Takes the lock if nobody holds it; `Ok(None)` when another holder has it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<Lock>> {
        Self::flock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn flock(path: &Path, op: libc::c_int) -> io::Result<Option<Lock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
        Ok(Some(Lock {
            file,
            path: path.to_path_buf(),
        }))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too, this just makes it explicit.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(atomic_write(&d.path().join("missing/x"), b"").is_err());
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = Lock::acquire(&p).unwrap();
        let other = File::open(&p).unwrap();
        // SAFETY: plain flock on an open descriptor.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(
            rc, -1,
            "a second holder must be refused while the lock is held"
        );
        assert!(Lock::try_acquire(&p).unwrap().is_none());
        drop(held);
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0);
        drop(other);
        assert!(Lock::try_acquire(&p).unwrap().is_some());
    }
}

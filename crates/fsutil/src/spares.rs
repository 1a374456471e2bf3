//! Recycled inodes: a long-running writer that replaces files all day (the upload server: one
//! hardware file per upload, state and CMDB per batch) keeps each replaced file's inode as the
//! temp file of a later write, instead of freeing one inode and allocating another per write.
//!
//! Why: on ext4 without a journal (the CI and bench VMs of this project), allocating an inode
//! skips every inode of its group freed in the last 60 s — 360 s while their inode-table block is
//! dirty (`recently_deleted()` in the kernel's inode allocator) — checking each in the buffer
//! cache, and with `-o discard` each freed block is discarded synchronously by the call that
//! freed it. Measured under `bench/server.sh`: once a few thousand hardware files had been
//! replaced, creating one temp file cost up to 1 ms of CPU (perf: `find_inode_bit` →
//! `recently_deleted`), 2–5 % of batches spent over 5 ms creating their temps, and the upload
//! p99 went past 10 ms. A recycled inode is opened, overwritten in place (its block stays
//! allocated), fsynced and renamed: nothing is allocated, nothing freed. On any filesystem it
//! also saves the allocation and the free.
//!
//! Safety: the swap is one `renameat2(RENAME_EXCHANGE)`, as atomic as the rename it replaces
//! (the target shows the old or the new content, never a mix); the old inode then sits under a
//! temp name (`.NAME.tmp.PID.SEQ`, as any temp: a crash leaves nothing a restart does not
//! take back, see [`Spares::adopt`]). A spare is reused only after [`Spares::MIN_AGE`], so a reader that opened the old file
//! just before it was replaced still reads it whole, and never when it has another hard link (an
//! operator's `cp -al` backup is never overwritten).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{is_temp_name, parent_dir, temp_path};

/// Spare inodes per directory, oldest first.
pub struct Spares {
    min_age: Duration,
    cap: usize,
    dirs: Mutex<HashMap<PathBuf, Pool>>,
}

/// The spares of one directory.
#[derive(Default)]
struct Pool {
    /// (path, retired at, sequence number), oldest first.
    queue: VecDeque<(PathBuf, Instant, u64)>,
    next: u64,
    /// Spares numbered below this were moved aside before a completed fsync of the directory:
    /// the old name no longer points at them after a power cut.
    synced: u64,
    /// Owner, group and mode of a temp file this process created here: a spare is reused only
    /// when it has them too, so a recycled inode never carries another file's permissions
    /// (an operator's 0600 CMDB) onto the file it becomes.
    template: Option<(u32, u32, u32)>,
}

fn identity(m: &fs::Metadata) -> (u32, u32, u32) {
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

static PROCESS: OnceLock<Spares> = OnceLock::new();

/// Turns recycling on for this process's [`crate::write_files`] / [`crate::stage_files`] (a
/// long-running server calls it once; a short-lived process gains nothing and would leave its
/// spares behind).
pub fn recycle_replaced_files() {
    PROCESS.get_or_init(|| Spares::new(Spares::MIN_AGE, Spares::CAP));
}

/// The process's pool, when recycling is on.
pub fn process() -> Option<&'static Spares> {
    PROCESS.get()
}

impl Spares {
    /// How long a replaced file stays untouched before its inode is written again.
    pub const MIN_AGE: Duration = Duration::from_secs(1);
    /// Spares kept per directory: a spare waits [`Spares::MIN_AGE`] before reuse, so the pool
    /// must hold that long's replacements — over 6,000 a second in the bench's closed loop —
    /// with room (~4 KiB of disk each for a `.hw` file). Past it, a replaced file is freed as
    /// without recycling.
    pub const CAP: usize = 16_384;

    pub fn new(min_age: Duration, cap: usize) -> Spares {
        Spares {
            min_age,
            cap,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Pool>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare of `dir` old enough to reuse, opened for writing (not truncated: the caller
    /// writes from offset 0 and sets the length). `None` when there is none: the caller
    /// creates a new temp file.
    ///
    /// A spare is written only once the exchange that made it is on disk: were the old name
    /// still to point at it after a power cut, it would show another file's content. A
    /// replaced hardware file's exchange is not waited for (see `Staged::rename`), so the first
    /// take of such a spare fsyncs the directory — covering every spare made so far, about one
    /// extra wait a second under load.
    pub(crate) fn take(&self, dir: &Path) -> Option<(PathBuf, File)> {
        loop {
            let (unsynced, next, template) = {
                let dirs = self.dirs();
                let pool = dirs.get(dir)?;
                match (pool.queue.front(), pool.template) {
                    (Some((_, at, seq)), Some(t)) if at.elapsed() >= self.min_age => {
                        (*seq >= pool.synced, pool.next, t)
                    }
                    _ => return None,
                }
            };
            if unsynced {
                File::open(dir).and_then(|d| d.sync_all()).ok()?;
                self.synced(dir, next);
            }
            let path = self.dirs().get_mut(dir)?.queue.pop_front()?.0;
            // O_NOFOLLOW: a spare is a file we moved aside, never a way to write elsewhere.
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => match f.metadata() {
                    Ok(m) if m.is_file() && m.nlink() == 1 && identity(&m) == template => {
                        return Some((path, f))
                    }
                    // Linked elsewhere since, not a file, or another owner or mode: not ours
                    // to overwrite.
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                },
                // Removed by someone else (a restart's cleanup): try the next one.
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// Renames `tmp` over `target`, keeping the replaced file as a spare when there is room: one
    /// atomic exchange of the two names. Falls back to a plain rename when `target` does not
    /// exist, the pool is full, or the filesystem cannot exchange.
    pub(crate) fn replace(&self, tmp: &Path, target: &Path) -> io::Result<()> {
        let dir = parent_dir(target);
        let room = self
            .dirs()
            .get(dir)
            .is_none_or(|p| p.queue.len() < self.cap);
        // Only a plain file is kept: a symlink or directory at `target` is replaced as before.
        let file = || fs::symlink_metadata(target).is_ok_and(|m| m.is_file());
        if room && file() && exchange(tmp, target).is_ok() {
            // `tmp` now names the old file.
            self.keep(dir, tmp.to_path_buf(), Instant::now());
            return Ok(());
        }
        fs::rename(tmp, target)
    }

    /// Notes the owner and mode of a temp file just created in `dir` (once per directory).
    pub(crate) fn learn(&self, dir: &Path, created: &File) {
        if self.dirs().get(dir).is_some_and(|p| p.template.is_some()) {
            return;
        }
        if let Ok(m) = created.metadata() {
            self.dirs().entry(dir.to_path_buf()).or_default().template = Some(identity(&m));
        }
    }

    /// Moves `path` aside as a spare rather than removing it (a journal done with).
    pub fn retire(&self, path: &Path) -> io::Result<()> {
        let dir = parent_dir(path);
        if self
            .dirs()
            .get(dir)
            .is_some_and(|p| p.queue.len() >= self.cap)
        {
            return fs::remove_file(path);
        }
        let spare = temp_path(path)?;
        fs::rename(path, &spare)?;
        self.keep(dir, spare, Instant::now());
        Ok(())
    }

    fn keep(&self, dir: &Path, path: PathBuf, at: Instant) {
        let mut dirs = self.dirs();
        let pool = dirs.entry(dir.to_path_buf()).or_default();
        pool.queue.push_back((path, at, pool.next));
        pool.next += 1;
    }

    /// A mark to pass to [`Spares::synced`] once an fsync of `dir` started after this call
    /// has completed.
    pub(crate) fn mark(&self, dir: &Path) -> u64 {
        self.dirs().get(dir).map_or(0, |p| p.next)
    }

    /// Records that every spare of `dir` made before `mark` is durably apart from its old name.
    pub(crate) fn synced(&self, dir: &Path, mark: u64) {
        if let Some(p) = self.dirs().get_mut(dir) {
            p.synced = p.synced.max(mark);
        }
    }

    /// Takes the temp files a previous run left in `dir` as spares, ready at once (up to the
    /// cap; the rest are removed) — after an fsync of `dir`, as any spare (see `take`): a
    /// killed process's last exchanges may not be on disk yet. Removing them all at start
    /// would make every create of the next minutes pay for them (see the module doc). One
    /// new temp file is created to learn what a fresh file's owner and mode are here.
    pub fn adopt(&self, dir: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        let ready = Instant::now()
            .checked_sub(self.min_age)
            .unwrap_or_else(Instant::now);
        let known: HashSet<PathBuf> = self
            .dirs()
            .get(dir)
            .map(|p| p.queue.iter().map(|(q, _, _)| q.clone()).collect())
            .unwrap_or_default();
        let mut adopted = false;
        for e in rd.flatten() {
            if !is_temp_name(&e.file_name().to_string_lossy()) {
                continue;
            }
            let path = e.path();
            if known.contains(&path) {
                continue;
            }
            let room = self
                .dirs()
                .get(dir)
                .is_none_or(|p| p.queue.len() < self.cap);
            if room && e.file_type().is_ok_and(|t| t.is_file()) {
                self.keep(dir, path, ready);
                adopted = true;
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        if adopted && self.dirs().get(dir).is_some_and(|p| p.template.is_none()) {
            let Ok(probe) = temp_path(&dir.join("spare")) else {
                return;
            };
            if let Ok(f) = File::create(&probe) {
                self.learn(dir, &f);
                self.keep(dir, probe, ready);
            }
        }
    }

    /// Spares held for `dir` (for tests and metrics).
    pub fn len(&self, dir: &Path) -> usize {
        self.dirs().get(dir).map_or(0, |p| p.queue.len())
    }

    pub fn is_empty(&self, dir: &Path) -> bool {
        self.len(dir) == 0
    }
}

/// Swaps the names `a` and `b` atomically (both must exist).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{stage_files_with, write_files_with};
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_replaced_file_becomes_the_next_temp() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::ZERO, 8);
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write_files_with(&[(&a, &b"first version, longer"[..])], Some(&sp)).unwrap();
        let first = fs::metadata(&a).unwrap().ino();
        assert!(sp.is_empty(d.path()), "nothing replaced yet");
        write_files_with(&[(&a, &b"second"[..])], Some(&sp)).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"second");
        assert_eq!(sp.len(d.path()), 1, "the first version is kept as a spare");
        // The next write, to another file, lands in the first version's inode, cut to length.
        write_files_with(&[(&b, &b"b1"[..])], Some(&sp)).unwrap();
        assert_eq!(fs::metadata(&b).unwrap().ino(), first);
        assert_eq!(fs::read(&b).unwrap(), b"b1");
        assert!(sp.is_empty(d.path()));
        assert_eq!(names(d.path()).len(), 2, "{:?}", names(d.path()));
    }

    #[test]
    fn young_or_linked_spares_are_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::from_secs(3600), 8);
        let a = d.path().join("a");
        write_files_with(&[(&a, &b"one"[..])], Some(&sp)).unwrap();
        write_files_with(&[(&a, &b"two"[..])], Some(&sp)).unwrap();
        let spare = d.path().join(
            names(d.path())
                .into_iter()
                .find(|n| is_temp_name(n))
                .unwrap(),
        );
        // Too young: a reader that opened the old `a` still reads "one".
        write_files_with(&[(&a, &b"three"[..])], Some(&sp)).unwrap();
        assert_eq!(fs::read(&spare).unwrap(), b"one");
        assert_eq!(sp.len(d.path()), 2);

        // Old enough, but linked elsewhere: dropped from the pool, the other link untouched.
        let sp = Spares::new(Duration::ZERO, 8);
        let b = d.path().join("b");
        write_files_with(&[(&b, &b"b-one"[..])], Some(&sp)).unwrap();
        let backup = d.path().join("backup-of-b");
        fs::hard_link(&b, &backup).unwrap();
        write_files_with(&[(&b, &b"b-two"[..])], Some(&sp)).unwrap();
        assert_eq!(sp.len(d.path()), 1);
        write_files_with(&[(&a, &b"four"[..])], Some(&sp)).unwrap();
        assert_eq!(fs::read(&backup).unwrap(), b"b-one");
        assert_eq!(fs::read(&a).unwrap(), b"four");
        // The linked spare's name is gone; the pool now holds the replaced `a` alone.
        assert_eq!(sp.len(d.path()), 1);
        assert_eq!(fs::metadata(&backup).unwrap().nlink(), 1);
    }

    #[test]
    fn a_spare_with_another_mode_or_a_symlink_is_not_reused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::ZERO, 8);
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        write_files_with(&[(&a, &b"a"[..])], Some(&sp)).unwrap();
        let fresh = fs::metadata(&a).unwrap().mode() & 0o7777;
        // An operator's 0600 file, replaced: its inode must not carry 0600 onto `b`.
        fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).unwrap();
        write_files_with(&[(&a, &b"a2"[..])], Some(&sp)).unwrap();
        assert_eq!(sp.len(d.path()), 1);
        write_files_with(&[(&b, &b"b"[..])], Some(&sp)).unwrap();
        assert_eq!(fs::metadata(&b).unwrap().mode() & 0o7777, fresh);
        assert!(sp.is_empty(d.path()), "the 0600 spare was dropped");
        // A symlink at the target is replaced, not kept: its destination is never written.
        let outside = d.path().join("outside");
        fs::write(&outside, "keep me").unwrap();
        std::os::unix::fs::symlink(&outside, &c).unwrap();
        write_files_with(&[(&c, &b"c"[..])], Some(&sp)).unwrap();
        assert!(sp.is_empty(d.path()));
        assert!(fs::symlink_metadata(&c).unwrap().is_file());
        assert_eq!(fs::read(&outside).unwrap(), b"keep me");
    }

    #[test]
    fn a_full_pool_frees_the_replaced_file() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::from_secs(3600), 2);
        for i in 0..5 {
            let data = format!("v{i}");
            for f in ["a", "b", "c"] {
                write_files_with(&[(d.path().join(f), data.as_bytes())], Some(&sp)).unwrap();
            }
        }
        assert_eq!(sp.len(d.path()), 2);
        assert_eq!(names(d.path()).len(), 3 + 2);
        for f in ["a", "b", "c"] {
            assert_eq!(fs::read(d.path().join(f)).unwrap(), b"v4");
        }
    }

    #[test]
    fn unpublished_recycled_temps_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::ZERO, 8);
        let a = d.path().join("a");
        write_files_with(&[(&a, &b"1"[..])], Some(&sp)).unwrap();
        write_files_with(&[(&a, &b"2"[..])], Some(&sp)).unwrap();
        let staged = stage_files_with(&[(d.path().join("b"), &b"x"[..])], Some(&sp)).unwrap();
        drop(staged);
        assert_eq!(names(d.path()), ["a"]);
        assert_eq!(fs::read(&a).unwrap(), b"2");
    }

    #[test]
    fn a_spare_is_written_only_after_its_exchange_is_synced() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::ZERO, 8);
        let synced = |sp: &Spares| sp.dirs().get(d.path()).map_or(0, |p| p.synced);
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write_files_with(&[(&a, &b"1"[..])], Some(&sp)).unwrap();
        // A loose replacement (renamed, its directory not fsynced): the spare is not yet apart
        // from the name `a` on disk.
        stage_files_with(&[(&a, &b"2"[..])], Some(&sp))
            .unwrap()
            .rename(0..1)
            .unwrap();
        assert_eq!(sp.len(d.path()), 1);
        assert_eq!(synced(&sp), 0);
        // Taking it fsyncs the directory first.
        write_files_with(&[(&b, &b"3"[..])], Some(&sp)).unwrap();
        assert_eq!(synced(&sp), 1);
        // A published replacement is synced by its own directory fsync.
        write_files_with(&[(&a, &b"4"[..])], Some(&sp)).unwrap();
        assert_eq!(sp.len(d.path()), 1);
        assert_eq!(synced(&sp), 2);
        assert_eq!(fs::read(&a).unwrap(), b"4");
        assert_eq!(fs::read(&b).unwrap(), b"3");
    }

    #[test]
    fn retire_and_adopt() {
        let d = tempfile::tempdir().unwrap();
        let sp = Spares::new(Duration::from_secs(3600), 8);
        let j = d.path().join("journal");
        fs::write(&j, "x").unwrap();
        sp.retire(&j).unwrap();
        assert!(!j.exists());
        assert_eq!(sp.len(d.path()), 1);
        // A restart: the leftovers are adopted, ready at once (not removed: see the module doc).
        fs::write(d.path().join(".c.tmp.1.2"), "left by a crash").unwrap();
        let next = Spares::new(Duration::from_secs(3600), 8);
        next.adopt(d.path());
        // Both, and the probe that learnt a fresh file's owner and mode.
        assert_eq!(next.len(d.path()), 3);
        next.adopt(d.path());
        assert_eq!(next.len(d.path()), 3, "adopting twice keeps one entry each");
        let c = d.path().join("c");
        write_files_with(&[(&c, &b"c"[..])], Some(&next)).unwrap();
        assert_eq!(next.len(d.path()), 2);
        assert_eq!(names(d.path()).len(), 3);
    }
}

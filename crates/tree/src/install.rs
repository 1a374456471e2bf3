//! Fresh install of a manifest into a root (the initrd's code path), and the building blocks
//! the upgrade reuses.
//!
//! Order: directories (mode fixed at the end, so read-only directories can still be filled),
//! symlinks/devices/fifos, files streamed from the pack, hardlinks, directory metadata, one
//! `syncfs`. Each file's hash is checked before it is committed: written straight to its
//! final path when nothing is there (see [`Target`]), else under `ROOT/.edeploy-staging/` and
//! renamed into place; its mtime is set last, after the check. So a file at its final path
//! with its final size/mode/owner/mtime has been verified, which is what makes a rerun after
//! an interruption skip it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::VerifyingKey;
use rayon::prelude::*;

use crate::fsutil::{self, join, PayloadReader, PayloadWriter};
use crate::manifest::{self, hex, manifest_hash, Entry, Hash, Kind, Manifest};
use crate::progress::{Event, Progress, Quiet};
use crate::source::Source;
use crate::stream::{self, Counting, HashVerify};
use crate::{Error, Result};

pub const STAGING: &str = ".edeploy-staging";

/// Files at least this large start their writeback as soon as they are committed, so the
/// final `syncfs` does not begin all the disk writes at once after the last file (measured on
/// the Debian benchmark tree, fresh ext4: ~0.35 s of syncfs at the end otherwise). Smaller
/// files (10k of 12k, a fifth of the bytes) are left to the final sync: one writeback call
/// each cost more than it saved.
const WRITEBACK_MIN: u64 = 64 << 10;

pub struct Options<'a> {
    /// When set, the manifest must carry a valid signature by this key.
    pub key: Option<&'a VerifyingKey>,
    pub progress: &'a dyn Progress,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            key: None,
            progress: &Quiet,
        }
    }
}

/// Fetch, authenticate (when a key is given) and parse a manifest. Returns it with its stored
/// bytes and hash.
pub fn fetch_manifest(
    src: &dyn Source,
    version: &str,
    role: &str,
    key: Option<&VerifyingKey>,
) -> Result<(Manifest, Vec<u8>, Hash)> {
    let bytes = src.manifest(version, role)?;
    if let Some(k) = key {
        let sig = src
            .manifest_signature(version, role)?
            .ok_or_else(|| Error::Signature(format!("manifest {version}/{role} is not signed")))?;
        manifest::verify_signature(&bytes, &sig, k)?;
    }
    let m = Manifest::from_bytes(&bytes)?;
    if m.version != version || m.role != role {
        return Err(Error::Integrity(format!(
            "asked for {version}/{role}, manifest says {}/{}",
            m.version, m.role
        )));
    }
    let h = manifest_hash(&bytes);
    Ok((m, bytes, h))
}

/// Payload length (bytes that travel) of a file entry.
pub fn payload_len(size: u64, extents: Option<&[(u64, u64)]>) -> u64 {
    match extents {
        Some(x) => x.iter().map(|e| e.1).sum(),
        None => size,
    }
}

/// Install `version`/`role` into `root` (empty, or holding an interrupted install of the same
/// manifest). Returns the manifest and its stored bytes (the caller records them as installed).
pub fn install(
    src: &dyn Source,
    version: &str,
    role: &str,
    root: &Path,
    opts: &Options,
) -> Result<(Manifest, Vec<u8>)> {
    let (m, bytes, mh) = fetch_manifest(src, version, role, opts.key)?;
    fs::create_dir_all(root)?;
    let fresh = is_fresh(root)?;
    let staging = Staging::new(root)?;
    create_non_files(root, m.entries.iter())?;
    let needed: Vec<&Entry> = m
        .entries
        .par_iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .filter(|e| fresh || !fsutil::file_matches_fast(&join(root, &e.path), e))
        .collect();
    fetch_files(src, &mh, root, &staging, &needed, opts.progress)?;
    link_hardlinks(root, m.entries.iter())?;
    staging.remove()?;
    finish_dirs(root, m.entries.iter())?;
    opts.progress.event(Event::Phase {
        name: "sync".into(),
    });
    fsutil::syncfs(root)?;
    Ok((m, bytes))
}

/// The staging directory for not-yet-verified content (same filesystem as the tree, so the
/// final rename is atomic). Leftovers from an interrupted run are unverified: dropped.
pub struct Staging {
    pub dir: PathBuf,
    n: AtomicU64,
}

impl Staging {
    pub fn new(root: &Path) -> Result<Staging> {
        let dir = root.join(STAGING);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            n: AtomicU64::new(0),
        })
    }

    pub fn next(&self) -> PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed) + 1;
        self.dir.join(n.to_string())
    }

    pub fn remove(self) -> io::Result<()> {
        fs::remove_dir_all(&self.dir)
    }
}

/// Remove whatever is at `p` (file, link, special, or a whole directory).
pub fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Does the object at `p` already have `e`'s type (and link target / device number)?
pub fn same_kind(p: &Path, e: &Entry) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| same_kind_meta(p, &m, e))
}

/// [`same_kind`] on metadata already read from `p`.
pub fn same_kind_meta(p: &Path, m: &fs::Metadata, e: &Entry) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    match &e.kind {
        Kind::Dir => ft.is_dir(),
        Kind::Symlink { target } => {
            ft.is_symlink()
                && fs::read_link(p)
                    .map(|t| t.as_os_str().as_bytes() == &target[..])
                    .unwrap_or(false)
        }
        Kind::Char { rdev } => ft.is_char_device() && m.rdev() == *rdev,
        Kind::Block { rdev } => ft.is_block_device() && m.rdev() == *rdev,
        Kind::Fifo => ft.is_fifo(),
        Kind::File { .. } | Kind::Hardlink { .. } => ft.is_file(),
    }
}

/// Create directories (in manifest order, parents first), then symlinks, devices and fifos
/// (in parallel). Idempotent: creation is tried first and what holds a taken name is checked
/// only then, kept when it matches and replaced when not — so a fresh root costs one syscall
/// per directory, and a rerun after an interruption keeps what is already right.
pub fn create_non_files<'a>(root: &Path, entries: impl Iterator<Item = &'a Entry>) -> Result<()> {
    let mut specials = Vec::new();
    for e in entries {
        match &e.kind {
            Kind::File { .. } | Kind::Hardlink { .. } => {}
            // Metadata at the end (finish_dirs): a read-only directory must still be filled.
            Kind::Dir => create_taken(&join(root, &e.path), e, |p| fs::create_dir(p))?,
            _ => specials.push(e),
        }
    }
    let special = |e: &&Entry| -> Result<()> {
        let p = join(root, &e.path);
        create_taken(&p, e, |p| match &e.kind {
            Kind::Symlink { target } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), p)
            }
            k => fsutil::mknod(p, k, e.mode),
        })?;
        fsutil::apply_meta(&p, e).map_err(|err| ctx(&p, err))
    };
    // The image extractor calls this once per entry: no thread hand-off for a handful.
    if specials.len() < 16 {
        specials.iter().try_for_each(special)
    } else {
        specials.par_iter().try_for_each(special)
    }
}

/// `create(p)`; when the name is taken by something that is not `e`'s kind, replace it.
fn create_taken(p: &Path, e: &Entry, create: impl Fn(&Path) -> io::Result<()>) -> Result<()> {
    match create(p) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            if !same_kind(p, e) {
                remove_any(p).map_err(|err| ctx(p, err))?;
                create(p).map_err(|err| ctx(p, err))?;
            }
            Ok(())
        }
        r => r.map_err(|err| ctx(p, err)),
    }
}

/// Nothing but what an empty filesystem or an interrupted install's staging holds: every file
/// of the manifest is needed, no need to look for each.
fn is_fresh(root: &Path) -> io::Result<bool> {
    for d in fs::read_dir(root)? {
        let name = d?.file_name();
        if name != STAGING && name != "lost+found" {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn ctx(p: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// Hardlinks, after their targets exist.
pub fn link_hardlinks<'a>(root: &Path, entries: impl Iterator<Item = &'a Entry>) -> Result<()> {
    for e in entries {
        if let Kind::Hardlink { target } = &e.kind {
            let p = join(root, &e.path);
            let t = join(root, target);
            let tm = fs::symlink_metadata(&t).map_err(|err| ctx(&t, err))?;
            if let Ok(pm) = fs::symlink_metadata(&p) {
                if pm.ino() == tm.ino() && pm.dev() == tm.dev() {
                    continue;
                }
                remove_any(&p)?;
            }
            fs::hard_link(&t, &p).map_err(|err| ctx(&p, err))?;
        }
    }
    Ok(())
}

/// Directory metadata, once nothing more is created in them (creating an entry changes its
/// directory's mtime). Deepest first, one depth at a time in parallel: a parent's final mode
/// may forbid a non-root installer to reach into it.
pub fn finish_dirs<'a>(root: &Path, entries: impl Iterator<Item = &'a Entry>) -> Result<()> {
    let mut by_depth: Vec<Vec<&Entry>> = Vec::new();
    for e in entries.filter(|e| matches!(e.kind, Kind::Dir)) {
        let depth = if e.path.is_empty() {
            0
        } else {
            1 + e.path.iter().filter(|&&b| b == b'/').count()
        };
        if by_depth.len() <= depth {
            by_depth.resize_with(depth + 1, Vec::new);
        }
        by_depth[depth].push(e);
    }
    for level in by_depth.iter().rev() {
        level.par_iter().try_for_each(|e| {
            let p = join(root, &e.path);
            fsutil::apply_meta(&p, e).map_err(|err| ctx(&p, err))
        })?;
    }
    Ok(())
}

/// Stream the pack from the first record needed and commit every `needed` file entry.
/// Records not needed (already installed content) are read past, not written.
pub fn fetch_files(
    src: &dyn Source,
    mh: &Hash,
    root: &Path,
    staging: &Staging,
    needed: &[&Entry],
    progress: &dyn Progress,
) -> Result<()> {
    let mut by_hash: HashMap<Hash, Vec<&Entry>> = HashMap::new();
    let mut bytes = 0;
    for e in needed {
        let Kind::File {
            hash,
            size,
            extents,
        } = &e.kind
        else {
            continue;
        };
        let v = by_hash.entry(*hash).or_default();
        if v.is_empty() {
            bytes += payload_len(*size, extents.as_deref());
        }
        v.push(e);
    }
    progress.event(Event::Start {
        files: needed.len() as u64,
        bytes,
        skipped: 0,
    });
    if by_hash.is_empty() {
        progress.event(Event::Done { files: 0, bytes: 0 });
        return Ok(());
    }
    let idx = src.pack_index(mh)?;
    let start = idx
        .offsets()?
        .into_iter()
        .filter(|(h, _)| by_hash.contains_key(h))
        .map(|(_, o)| o)
        .min()
        .ok_or_else(|| Error::Integrity("pack index lacks needed content".into()))?;
    // A dropped connection mid-pack re-opens the pack at the first byte not yet read (over
    // HTTP a Range request), bounded by `http::RESUMES` re-opens in a row without progress;
    // every record is still hash-checked, so a splice that went wrong fails loudly.
    let first = src.pack(mh, start)?;
    let mut r =
        crate::http::Resuming::new(first, |at: u64| src.pack(mh, at), start, Some(idx.size));
    if start == 0 {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != stream::PACK_MAGIC {
            return Err(Error::Integrity("not an edeploy pack".into()));
        }
    }
    // Pipeline: this thread reads the pack (network-bound later); records up to
    // `INLINE_MAX` are handed to worker threads that decompress, verify, write and commit
    // (CPU- and syscall-bound: ~2x on 2 cores), in batches of up to `BATCH_BYTES`: with one
    // hand-off per record (~12k on the Debian tree), wake-ups were ~10% of the profile.
    // Larger records stream inline, so memory stays bounded by the channel depth ×
    // `BATCH_BYTES` plus `INLINE_MAX`.
    const INLINE_MAX: u64 = 4 << 20;
    const BATCH_BYTES: usize = 1 << 20;
    const BATCH_RECORDS: usize = 64;
    // More writers than cores measured slower (file creation contends on ext4's journal
    // and directory locks, not on I/O latency).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let done_bytes = AtomicU64::new(0);
    let last_report = AtomicU64::new(0);
    let files = AtomicU64::new(0);
    let failed = std::sync::Mutex::new(None::<Error>);
    let ctx_w = WriteCtx {
        root,
        staging,
        progress,
        done_bytes: &done_bytes,
        last_report: &last_report,
        files: &files,
    };
    type Record<'e> = (u8, Vec<u8>, Vec<&'e Entry>);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(workers * 2);
    let rx = std::sync::Mutex::new(rx);
    let reader_result = std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let job = rx.lock().map(|r| r.recv());
                let Ok(Ok(batch)) = job else {
                    return;
                };
                for (tag, bytes, targets) in batch {
                    if let Err(e) = ctx_w.write_small(tag, &bytes, &targets) {
                        failed.lock().unwrap().get_or_insert(e);
                        break;
                    }
                }
            });
        }
        let res = (|| -> Result<()> {
            let mut batch: Vec<Record> = Vec::new();
            let mut batch_bytes = 0;
            while !by_hash.is_empty() {
                if failed.lock().unwrap().is_some() {
                    return Ok(());
                }
                let hdr = stream::read_record_header(&mut r)?.ok_or_else(|| {
                    Error::Integrity("pack ended before all content arrived".into())
                })?;
                let mut limited = (&mut r).take(hdr.len);
                let Some(targets) = by_hash.remove(&hdr.hash) else {
                    io::copy(&mut limited, &mut io::sink())?;
                    continue;
                };
                if hdr.len <= INLINE_MAX {
                    let mut buf = Vec::with_capacity(hdr.len as usize);
                    limited.read_to_end(&mut buf)?;
                    if buf.len() as u64 != hdr.len {
                        return Err(Error::Integrity(
                            "pack ended before all content arrived".into(),
                        ));
                    }
                    batch_bytes += buf.len();
                    batch.push((hdr.tag, buf, targets));
                    if (batch_bytes >= BATCH_BYTES
                        || batch.len() >= BATCH_RECORDS
                        || by_hash.is_empty())
                        && tx.send(std::mem::take(&mut batch)).is_err()
                    {
                        return Ok(());
                    }
                    if batch.is_empty() {
                        batch_bytes = 0;
                    }
                } else {
                    // The workers get what is pending before this thread turns writer.
                    if !batch.is_empty() {
                        batch_bytes = 0;
                        if tx.send(std::mem::take(&mut batch)).is_err() {
                            return Ok(());
                        }
                    }
                    ctx_w.write_record(hdr.tag, &mut limited, &targets)?;
                    // Whatever the decoder left unread of the record (there should be nothing).
                    io::copy(&mut limited, &mut io::sink())?;
                }
            }
            Ok(())
        })();
        drop(tx);
        res
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    reader_result?;
    progress.event(Event::Done {
        files: files.load(Ordering::Relaxed),
        bytes: done_bytes.load(Ordering::Relaxed),
    });
    Ok(())
}

/// What a pack record writer needs (shared by the reader thread and the workers).
struct WriteCtx<'a> {
    root: &'a Path,
    staging: &'a Staging,
    progress: &'a dyn Progress,
    done_bytes: &'a AtomicU64,
    last_report: &'a AtomicU64,
    files: &'a AtomicU64,
}

impl WriteCtx<'_> {
    fn add_bytes(&self, n: u64) {
        let done = self.done_bytes.fetch_add(n, Ordering::Relaxed) + n;
        let last = self.last_report.load(Ordering::Relaxed);
        if done >= last + (8 << 20)
            && self
                .last_report
                .compare_exchange(last, done, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.progress.event(Event::Bytes { done });
        }
    }

    /// A record held in memory (the common case: almost every file is small). Decoded in one
    /// call with this thread's reused zstd context, hashed in one call, written with one
    /// `pwrite` per extent.
    fn write_small(&self, tag: u8, stored: &[u8], targets: &[&Entry]) -> Result<()> {
        let first = targets[0];
        let (size, hash, extents) = file_content(first);
        let plen = payload_len(size, extents);
        let bad = |why: String| {
            Error::Integrity(format!("{}: {why}", String::from_utf8_lossy(&first.path)))
        };
        DECODE.with(|cell| -> Result<()> {
            let mut guard = cell.borrow_mut();
            let (dctx, buf) = &mut *guard;
            let payload: &[u8] = match tag {
                stream::TAG_RAW => stored,
                stream::TAG_ZSTD => {
                    let dctx = match dctx {
                        Some(d) => d,
                        None => dctx.insert(zstd::bulk::Decompressor::new()?),
                    };
                    buf.clear();
                    // One byte of slack: a payload longer than the manifest says fails the
                    // length check below instead of being cut at the capacity.
                    buf.reserve(plen as usize + 1);
                    dctx.decompress_to_buffer(stored, buf)
                        .map_err(|e| bad(format!("zstd: {e}")))?;
                    &buf[..]
                }
                t => return Err(bad(format!("unknown blob encoding {t}"))),
            };
            if payload.len() as u64 != plen {
                return Err(bad(format!(
                    "content hash mismatch: payload is {} bytes, expected {plen}",
                    payload.len()
                )));
            }
            let got = *blake3::hash(payload).as_bytes();
            if got != *hash {
                return Err(bad(format!(
                    "content hash mismatch: expected {}, got {}",
                    hex(hash),
                    hex(&got)
                )));
            }
            self.add_bytes(plen);
            // Verified: now (and only now) the bytes go to disk, at every target path.
            for e in targets {
                let mut t = Target::open(self.root, self.staging, e)?;
                let res = (|| -> Result<File> {
                    let mut w = PayloadWriter::new(t.file()?, size, extents);
                    io::Write::write_all(&mut w, payload)?;
                    Ok(w.finish()?)
                })();
                t.commit(res, e)?;
                self.committed(e);
            }
            Ok(())
        })
    }

    /// A large record, streamed: decode → verify → sparse writer, with big buffers (the 8 KiB
    /// of `io::copy` meant one `pwrite` per 8 KiB).
    fn write_record(&self, tag: u8, stored: impl Read, targets: &[&Entry]) -> Result<()> {
        let first = targets[0];
        let (size, hash, extents) = file_content(first);
        let mut t = Target::open(self.root, self.staging, first)?;
        let res = (|| -> Result<File> {
            let dec = stream::decoder(tag, stored)?;
            let mut rd = Counting::new(HashVerify::new(dec, *hash), |n| self.add_bytes(n));
            let mut w = PayloadWriter::new(t.file()?, size, extents);
            copy_big(&mut rd, &mut w).map_err(|e| {
                Error::Integrity(format!("{}: {e}", String::from_utf8_lossy(&first.path)))
            })?;
            Ok(w.finish()?)
        })();
        let first_path = t.dst.clone();
        t.commit(res, first)?;
        self.committed(first);
        // Same content at other (non-hardlinked) paths: a sparse-preserving copy of the
        // verified first one.
        for e in &targets[1..] {
            let mut t = Target::open(self.root, self.staging, e)?;
            let res = (|| -> Result<File> {
                let mut r = PayloadReader::new(File::open(&first_path)?, size, extents);
                let mut w = PayloadWriter::new(t.file()?, size, extents);
                copy_big(&mut r, &mut w)?;
                Ok(w.finish()?)
            })();
            t.commit(res, e)?;
            self.committed(e);
        }
        Ok(())
    }

    fn committed(&self, e: &Entry) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.progress.event(Event::File {
            path: crate::pathenc::encode(&e.path),
        });
    }
}

thread_local! {
    /// Per-thread zstd decompression context and output buffer, reused for every record the
    /// thread decodes (a fresh context per file costs an allocation of ~100 KiB each time).
    static DECODE: std::cell::RefCell<(Option<zstd::bulk::Decompressor<'static>>, Vec<u8>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

/// Size, hash and data extents of a file entry: pack records and blobs only ever target files.
pub(crate) fn file_content(e: &Entry) -> (u64, &Hash, Option<&[(u64, u64)]>) {
    match &e.kind {
        Kind::File {
            size,
            hash,
            extents,
        } => (*size, hash, extents.as_deref()),
        _ => unreachable!("content for a non-file entry"),
    }
}

/// `io::copy` with a 256 KiB buffer.
pub(crate) fn copy_big(r: &mut impl Read, w: &mut impl io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Where one file's verified content goes. When nothing is at the final path (a fresh
/// install: nearly always), the file is written there directly — no staging name, no rename
/// across directories. The file only counts as installed once [`Target::commit`] set its
/// owner, mode, xattrs and, last, its mtime: a file killed half-written has a fresh mtime,
/// so the rerun's fast check (size + mode + owner + mtime) refetches it, and content that
/// fails its hash is unlinked before the error is returned. When something is in the way
/// (a rerun's half-written file, a directory, a symlink — `O_EXCL` never follows it), the
/// content goes to a staging name first and is renamed over it once verified, as before.
struct Target {
    dst: PathBuf,
    staged: Option<PathBuf>,
    file: Option<File>,
}

impl Target {
    fn open(root: &Path, staging: &Staging, e: &Entry) -> Result<Target> {
        use std::os::unix::fs::OpenOptionsExt;
        let dst = join(root, &e.path);
        let mut o = fs::OpenOptions::new();
        o.write(true).create_new(true).mode(0o600);
        match o.open(&dst) {
            Ok(f) => Ok(Target {
                dst,
                staged: None,
                file: Some(f),
            }),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let tmp = staging.next();
                let f = o.open(&tmp).map_err(|err| ctx(&tmp, err))?;
                Ok(Target {
                    dst,
                    staged: Some(tmp),
                    file: Some(f),
                })
            }
            Err(err) => Err(ctx(&dst, err)),
        }
    }

    /// The open file, to write through (handed back to [`Target::commit`]).
    fn file(&mut self) -> io::Result<File> {
        self.file
            .take()
            .ok_or_else(|| io::Error::other("target file taken twice"))
    }

    /// `written`: the verified file (or why it is not). Metadata by fd, mtime last; then the
    /// rename when the content was staged. On failure nothing is left at the final path.
    fn commit(mut self, written: Result<File>, e: &Entry) -> Result<()> {
        drop(self.file.take());
        let written = written.and_then(|f| {
            fsutil::apply_meta_fd(&f, e).map_err(|err| ctx(&self.dst, err))?;
            if let Kind::File { size, .. } = e.kind {
                if size >= WRITEBACK_MIN {
                    fsutil::start_writeback(&f);
                }
            }
            Ok(f)
        });
        let at = self.staged.as_ref().unwrap_or(&self.dst);
        if let Err(err) = written {
            let _ = fs::remove_file(at);
            return Err(err);
        }
        if let Some(tmp) = &self.staged {
            if fs::symlink_metadata(&self.dst)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                fs::remove_dir_all(&self.dst)?;
            }
            fs::rename(tmp, &self.dst).map_err(|err| ctx(&self.dst, err))?;
        }
        Ok(())
    }
}

/// Apply metadata to a verified staged file and rename it to its final path.
pub fn commit(staged: &Path, root: &Path, e: &Entry) -> Result<()> {
    let dst = join(root, &e.path);
    fsutil::apply_meta(staged, e).map_err(|err| ctx(&dst, err))?;
    if fs::symlink_metadata(&dst)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        fs::remove_dir_all(&dst)?;
    }
    fs::rename(staged, &dst).map_err(|err| ctx(&dst, err))
}

pub fn copy_payload(from: &Path, to: &Path, size: u64, ext: Option<&[(u64, u64)]>) -> Result<()> {
    let mut r = PayloadReader::new(File::open(from)?, size, ext);
    let mut w = PayloadWriter::new(File::create(to)?, size, ext);
    io::copy(&mut r, &mut w)?;
    w.finish()?;
    Ok(())
}

/// The hex name of a manifest hash, for messages.
pub fn short(h: &Hash) -> String {
    hex(h)[..12].to_string()
}

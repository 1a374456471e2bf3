//! Role images, `<role>-<version>.edeploy` (DESIGN §3 Trees): the whole tree as one tar stream
//! compressed with zstd, for HTTP-only or offline installs (eDeploy's `HSERV`).
//!
//! The tar is POSIX pax, written in manifest order:
//!
//! ```text
//! .edeploy-image/manifest       the stored manifest bytes (always the first member)
//! .edeploy-image/manifest.sig   its detached ed25519 signature (second member, when signed)
//! then one member per manifest entry, in manifest order (parents first, hardlink targets
//! before their links)
//! ```
//!
//! Each entry member carries a pax header with `path` (raw bytes), `mtime` with nanoseconds,
//! `SCHILY.xattr.NAME` for every xattr (GNU tar's and bsdtar's spelling, so
//! `tar --xattrs --xattrs-include='*' --numeric-owner -xpf` restores `security.capability`
//! too), `linkpath`, and `uid`/`gid`/`size` when they overflow the ustar fields. Owners are
//! numeric (empty user/group names). A sparse file uses GNU tar's pax format 1.0
//! (`GNU.sparse.major=1`, `GNU.sparse.name`, `GNU.sparse.realsize`, the map of extents as
//! decimal lines padded to 512 bytes at the start of the data), so only its data travels.
//!
//! The installer ([`install_image`]) reads the manifest first (checking its signature before
//! parsing it when a key is given), then insists that the members follow the manifest one for
//! one: a member not in the manifest, out of order, of another type, size, link target or
//! device number is refused. Metadata comes from the manifest, never from the tar headers, and
//! every file goes through the same staging → BLAKE3 check → owner, mode, xattrs, mtime →
//! rename sequence as a pack install, so the result is indistinguishable from one.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use reqwest::blocking::{Client, Response};
use reqwest::header::RANGE;
use reqwest::StatusCode;

use crate::fsutil::{self, join, PayloadReader, PayloadWriter};
use crate::install::{self, Staging};
use crate::manifest::{self, Entry, Kind, Manifest};
use crate::pathenc::encode;
use crate::progress::{Event, Progress, Quiet};
use crate::stream::HashVerify;
use crate::{Error, Result};

/// Name of the first member: the stored manifest bytes.
pub const MANIFEST_MEMBER: &str = ".edeploy-image/manifest";
/// Name of the optional second member: the manifest's detached signature.
pub const SIGNATURE_MEMBER: &str = ".edeploy-image/manifest.sig";
/// File name suffix of an image.
pub const EXTENSION: &str = "edeploy";
/// A manifest larger than this is refused before it is read into memory (a hostile image must
/// not make the initrd allocate gigabytes); real ones are ~200 KB per 7,000 entries.
const MANIFEST_MAX: u64 = 512 << 20;

/// `<role>-<version>.edeploy`, eDeploy's image name.
pub fn file_name(version: &str, role: &str) -> String {
    format!("{role}-{version}.{EXTENSION}")
}

/// How the image is compressed.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// zstd level (3: fast, and the tree is mostly binaries that gain little beyond it).
    pub level: i32,
    /// zstd worker threads (0: compress in the calling thread).
    pub threads: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// Index `tree`, sign the manifest when a key is given, and write the image to `out`.
/// Returns the manifest.
pub fn build_image<W: Write>(
    tree: &Path,
    version: &str,
    role: &str,
    key: Option<&SigningKey>,
    opts: &WriteOptions,
    out: W,
) -> Result<(Manifest, W)> {
    let m = crate::index::index_tree(tree, version, role)?;
    let bytes = m.to_bytes()?;
    let sig = key.map(|k| manifest::sign(&bytes, k));
    let out = write_image(tree, &m, &bytes, sig.as_ref().map(|s| &s[..]), opts, out)?;
    Ok((m, out))
}

/// Write the image of `tree` described by `m` (whose stored form is `manifest_bytes`) to `out`.
/// Every file's content is hash-checked against the manifest while it is read, so a tree that
/// changed since it was indexed fails here instead of producing an image no host can install.
pub fn write_image<W: Write>(
    tree: &Path,
    m: &Manifest,
    manifest_bytes: &[u8],
    signature: Option<&[u8]>,
    opts: &WriteOptions,
    out: W,
) -> Result<W> {
    let mut enc = zstd::Encoder::new(out, opts.level)?;
    // The frame checksum makes a corrupted image fail in the decoder even where the damage
    // falls in tar padding or headers that the per-file hashes do not cover.
    enc.include_checksum(true)?;
    if opts.threads > 1 {
        enc.multithread(opts.threads)?;
    }
    let mut tar = tar::Builder::new(enc);
    append_plain(&mut tar, MANIFEST_MEMBER, manifest_bytes)?;
    if let Some(sig) = signature {
        append_plain(&mut tar, SIGNATURE_MEMBER, sig)?;
    }
    for e in &m.entries {
        append_entry(&mut tar, tree, e)
            .map_err(|err| with_path(err, &String::from_utf8_lossy(&e.path)))?;
    }
    let enc = tar.into_inner()?;
    Ok(enc.finish()?)
}

fn with_path(e: Error, path: &str) -> Error {
    match e {
        Error::Io(io) => Error::Io(io::Error::new(io.kind(), format!("{path}: {io}"))),
        Error::Integrity(s) => Error::Integrity(format!("{path}: {s}")),
        e => e,
    }
}

/// A member outside the tree (the manifest, its signature).
fn append_plain<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, data)?;
    Ok(())
}

/// Raw bytes into a fixed ustar field, truncated: the pax record holds the real value, the
/// ustar field only helps a reader that ignores pax.
fn set_raw(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// The sparse map of GNU tar's pax format 1.0: entry count, then offset and length of each
/// extent, one decimal number per line, padded with NULs to a 512-byte boundary.
fn sparse_map(extents: &[(u64, u64)]) -> Vec<u8> {
    let mut s = format!("{}\n", extents.len());
    for (off, len) in extents {
        s.push_str(&format!("{off}\n{len}\n"));
    }
    let mut b = s.into_bytes();
    b.resize(b.len().div_ceil(512) * 512, 0);
    b
}

fn append_entry<W: Write>(tar: &mut tar::Builder<W>, tree: &Path, e: &Entry) -> Result<()> {
    // Values of the pax records, kept alive until the header is appended.
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut h = tar::Header::new_ustar();
    h.set_mode(e.mode);
    h.set_uid(u64::from(e.uid));
    h.set_gid(u64::from(e.gid));
    if e.uid >= 0o7777777 {
        pax.push(("uid".into(), e.uid.to_string().into_bytes()));
    }
    if e.gid >= 0o7777777 {
        pax.push(("gid".into(), e.gid.to_string().into_bytes()));
    }
    h.set_mtime(e.mtime.max(0) as u64);
    let mtime = if e.mtime >= 0 {
        format!("{}.{:09}", e.mtime, e.mtime_nsec)
    } else {
        e.mtime.to_string()
    };
    pax.push(("mtime".into(), mtime.into_bytes()));
    for (name, value) in &e.xattrs {
        // A pax key is text: an xattr name that is not UTF-8 (never seen in practice) stays
        // only in the manifest, which is what the installer applies anyway.
        if let Ok(n) = std::str::from_utf8(name) {
            pax.push((format!("SCHILY.xattr.{n}"), value.clone()));
        }
    }
    let ustar = h.as_ustar_mut().expect("a ustar header");
    set_raw(&mut ustar.name, &e.path);
    let mut body: Box<dyn Read> = Box::new(io::empty());
    let mut size = 0u64;
    let mut sparse = false;
    match &e.kind {
        Kind::File {
            size: fsize,
            hash,
            extents,
        } => {
            h.set_entry_type(tar::EntryType::Regular);
            let f = File::open(join(tree, &e.path))?;
            let payload = install::payload_len(*fsize, extents.as_deref());
            let data = HashVerify::new(PayloadReader::new(f, *fsize, extents.as_deref()), *hash);
            match extents {
                Some(x) => {
                    sparse = true;
                    let map = sparse_map(x);
                    size = map.len() as u64 + payload;
                    body = Box::new(io::Cursor::new(map).chain(data));
                    pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
                    pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
                    pax.push(("GNU.sparse.name".into(), e.path.clone()));
                    pax.push(("GNU.sparse.realsize".into(), fsize.to_string().into_bytes()));
                    // GNU tar's own placeholder name, so a reader ignoring the sparse records
                    // does not write the map + payload over the real path.
                    let base = e.path.rsplit(|&b| b == b'/').next().unwrap_or(&e.path);
                    let mut placeholder = b"GNUSparseFile.0/".to_vec();
                    placeholder.extend_from_slice(base);
                    set_raw(&mut h.as_ustar_mut().expect("ustar").name, &placeholder);
                }
                None => {
                    size = payload;
                    body = Box::new(data);
                }
            }
        }
        Kind::Dir => h.set_entry_type(tar::EntryType::Directory),
        Kind::Symlink { target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            set_raw(&mut h.as_ustar_mut().expect("ustar").linkname, target);
            pax.push(("linkpath".into(), target.clone()));
        }
        Kind::Hardlink { target } => {
            h.set_entry_type(tar::EntryType::Link);
            set_raw(&mut h.as_ustar_mut().expect("ustar").linkname, target);
            pax.push(("linkpath".into(), target.clone()));
        }
        Kind::Char { rdev } | Kind::Block { rdev } => {
            h.set_entry_type(if matches!(e.kind, Kind::Char { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let dev = *rdev as libc::dev_t;
            h.set_device_major(libc::major(dev))?;
            h.set_device_minor(libc::minor(dev))?;
        }
        Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
    }
    if !sparse {
        pax.push(("path".into(), e.path.clone()));
    }
    if size >= 0o77777777777 {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    h.set_size(size);
    h.set_cksum();
    tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), &v[..])))?;
    // tar's `append` copies until EOF without checking the length against the header; our
    // readers yield exactly `size` bytes or fail (PayloadReader on a shrunk file, HashVerify
    // on changed content), so a short or wrong member cannot be written.
    tar.append(&h, body).map_err(|err| {
        if err.kind() == io::ErrorKind::InvalidData {
            Error::Integrity(format!("changed since it was indexed: {err}"))
        } else {
            Error::Io(err)
        }
    })
}

/// What [`install_image`] checks.
#[derive(Default)]
pub struct InstallOptions<'a> {
    /// When set, the image must carry a valid signature of its manifest by this key.
    pub key: Option<&'a VerifyingKey>,
    /// When set, the manifest must be of this version and role.
    pub expect: Option<(&'a str, &'a str)>,
    /// Progress events (None: quiet).
    pub progress: Option<&'a dyn Progress>,
}

/// Install the image read from `r` into `root` (empty, or holding an interrupted install of the
/// same image). Returns the manifest and its stored bytes: record them with
/// [`crate::state::record_install`] exactly as after a pack install.
pub fn install_image(
    r: impl Read,
    root: &Path,
    opts: &InstallOptions,
) -> Result<(Manifest, Vec<u8>)> {
    let progress = opts.progress.unwrap_or(&Quiet);
    let dec = zstd::Decoder::new(r)?;
    let mut ar = tar::Archive::new(dec);
    // Raw: tar-rs's own pax parser splits records at every newline, which breaks on the
    // binary xattr values and file names we store; `Member` parses pax records itself.
    let mut members = ar.entries()?.raw(true);

    // The manifest (and signature), before anything touches the root.
    let mut first = next(&mut members)?.ok_or_else(|| Error::Format("empty image".into()))?;
    if first.path.as_slice() != MANIFEST_MEMBER.as_bytes() {
        return Err(Error::Format(format!(
            "not an edeploy image: first member is not {MANIFEST_MEMBER}"
        )));
    }
    let bytes = read_small(&mut first.entry, MANIFEST_MAX)?;
    drop(first);
    let mut pending = next(&mut members)?;
    let mut sig = None;
    if let Some(p) = pending.as_mut() {
        if p.path.as_slice() == SIGNATURE_MEMBER.as_bytes() {
            sig = Some(read_small(&mut p.entry, 1024)?);
            pending = None;
        }
    }
    if let Some(k) = opts.key {
        let sig = sig.ok_or_else(|| Error::Signature("image manifest is not signed".into()))?;
        manifest::verify_signature(&bytes, &sig, k)?;
    }
    let m = Manifest::from_bytes(&bytes)?;
    if let Some((version, role)) = opts.expect {
        if m.version != version || m.role != role {
            return Err(Error::Integrity(format!(
                "asked for {version}/{role}, image holds {}/{}",
                m.version, m.role
            )));
        }
    }
    check_structure(&m)?;

    fs::create_dir_all(root)?;
    let staging = Staging::new(root)?;
    let files = m
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .count() as u64;
    let total: u64 = m
        .entries
        .iter()
        .map(|e| match &e.kind {
            Kind::File { size, extents, .. } => install::payload_len(*size, extents.as_deref()),
            _ => 0,
        })
        .sum();
    progress.event(Event::Start {
        files,
        bytes: total,
        skipped: 0,
    });
    let mut ctx = Ctx {
        root,
        staging: &staging,
        progress,
        done: 0,
        buf: vec![0; 256 << 10],
        last: 0,
        files: 0,
    };
    for e in &m.entries {
        let mut member = match pending.take() {
            Some(p) => p,
            None => next(&mut members)?.ok_or_else(|| {
                Error::Integrity(format!(
                    "image ended before {} (truncated?)",
                    encode(&e.path)
                ))
            })?,
        };
        ctx.extract(&m, e, &mut member)?;
    }
    if let Some(extra) = next(&mut members)? {
        return Err(Error::Integrity(format!(
            "image member {} is not in the manifest",
            encode(&extra.path)
        )));
    }
    // The rest of the decoder's input (tar's end blocks, the zstd frame checksum) is read so a
    // corruption there still fails the install before it is reported done.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(|e| corrupt(&e))?;
    let (files_done, bytes_done) = (ctx.files, ctx.done);
    staging.remove()?;
    install::finish_dirs(root, m.entries.iter())?;
    progress.event(Event::Phase {
        name: "sync".into(),
    });
    fsutil::syncfs(root)?;
    progress.event(Event::Done {
        files: files_done,
        bytes: bytes_done,
    });
    Ok((m, bytes))
}

fn corrupt(e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Integrity(format!("corrupted image: {e}"))
    } else {
        Error::Io(io::Error::new(e.kind(), e.to_string()))
    }
}

/// Structural checks the pack install does not need but a stream of members does: a member's
/// parent must be a directory of the manifest (so no member is ever written through a symlink
/// the image created) and a hardlink's target a file listed before it.
fn check_structure(m: &Manifest) -> Result<()> {
    let mut seen_files: HashSet<&[u8]> = HashSet::new();
    for e in &m.entries {
        if let Some(i) = e.path.iter().rposition(|&b| b == b'/') {
            let parent = &e.path[..i];
            if !m.get(parent).is_some_and(|p| matches!(p.kind, Kind::Dir)) {
                return Err(Error::Format(format!(
                    "{}: parent is not a directory of the manifest",
                    encode(&e.path)
                )));
            }
        }
        match &e.kind {
            Kind::File { .. } => {
                seen_files.insert(&e.path);
            }
            Kind::Hardlink { target } if !seen_files.contains(target.as_slice()) => {
                return Err(Error::Format(format!(
                    "{}: hardlink target {} is not an earlier file",
                    encode(&e.path),
                    encode(target)
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One archive member with what its preceding pax header / GNU long name said about it.
struct Member<'a, R: Read> {
    entry: tar::Entry<'a, R>,
    pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// GNU.sparse.name for a sparse member, else pax `path`, GNU long name or the ustar
    /// name (with its prefix); a trailing `/` (directories of other tars) dropped.
    path: Vec<u8>,
    /// pax `linkpath`, GNU long link or the ustar link name.
    link: Option<Vec<u8>>,
}

impl<R: Read> Member<'_, R> {
    fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax
            .iter()
            .find(|(k, _)| k.as_slice() == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// Extension headers (pax records, GNU long names) are small; this bounds what a hostile
/// image can make us buffer.
const EXT_MAX: u64 = 16 << 20;

fn next<'a, R: Read>(members: &mut tar::Entries<'a, R>) -> Result<Option<Member<'a, R>>> {
    let mut pax = Vec::new();
    let mut long_name = None;
    let mut long_link = None;
    loop {
        let Some(entry) = members.next().transpose().map_err(|e| corrupt(&e))? else {
            if pax.is_empty() && long_name.is_none() && long_link.is_none() {
                return Ok(None);
            }
            return Err(Error::Integrity("image ends in an extension header".into()));
        };
        let mut entry = entry;
        let strip = |mut v: Vec<u8>| {
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        match entry.header().entry_type() {
            tar::EntryType::XHeader => pax = parse_pax(&read_small(&mut entry, EXT_MAX)?)?,
            tar::EntryType::GNULongName => {
                long_name = Some(strip(read_small(&mut entry, EXT_MAX)?))
            }
            tar::EntryType::GNULongLink => {
                long_link = Some(strip(read_small(&mut entry, EXT_MAX)?))
            }
            // Global records (archive comments and defaults): nothing we use.
            tar::EntryType::XGlobalHeader => {
                read_small(&mut entry, EXT_MAX)?;
            }
            _ => {
                let get = |k: &str| {
                    pax.iter()
                        .find(|(key, _): &&(Vec<u8>, Vec<u8>)| key.as_slice() == k.as_bytes())
                        .map(|(_, v)| v.clone())
                };
                let mut path = get("GNU.sparse.name")
                    .or_else(|| get("path"))
                    .or(long_name)
                    .unwrap_or_else(|| entry.header().path_bytes().into_owned());
                while path.len() > 1 && path.ends_with(b"/") {
                    path.pop();
                }
                let link = get("linkpath")
                    .or(long_link)
                    .or_else(|| entry.header().link_name_bytes().map(|c| c.into_owned()));
                return Ok(Some(Member {
                    entry,
                    pax,
                    path,
                    link,
                }));
            }
        }
    }
}

/// pax extended header records: `LEN KEY=VALUE\n`, LEN counting the whole record, so values
/// may hold any byte (newlines included).
fn parse_pax(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || Error::Integrity("malformed pax header".into());
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn read_small<R: Read>(member: &mut tar::Entry<R>, max: u64) -> Result<Vec<u8>> {
    if member.size() > max {
        return Err(Error::Format(format!(
            "image member of {} bytes (at most {max} expected)",
            member.size()
        )));
    }
    let mut b = Vec::with_capacity(member.size() as usize);
    member.read_to_end(&mut b).map_err(|e| corrupt(&e))?;
    Ok(b)
}

/// Parse the sparse map at the start of a pax 1.0 sparse member; returns it and the bytes it
/// took (the map, padded to 512).
fn read_sparse_map(r: &mut impl Read) -> Result<(Vec<(u64, u64)>, u64)> {
    let bad = |why: &str| Error::Integrity(format!("bad sparse map: {why}"));
    let mut consumed = 0u64;
    let mut line = || -> Result<u64> {
        let mut s = Vec::new();
        loop {
            let mut b = [0u8];
            r.read_exact(&mut b).map_err(|e| corrupt(&e))?;
            consumed += 1;
            if b[0] == b'\n' {
                break;
            }
            if s.len() > 20 {
                return Err(bad("number too long"));
            }
            s.push(b[0]);
        }
        std::str::from_utf8(&s)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("not a number"))
    };
    let n = line()?;
    // The manifest bounds it below; this only stops a hostile count from allocating.
    if n > 1 << 20 {
        return Err(bad("too many extents"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let off = line()?;
        let len = line()?;
        out.push((off, len));
    }
    let pad = consumed.div_ceil(512) * 512 - consumed;
    io::copy(&mut r.take(pad), &mut io::sink()).map_err(|e| corrupt(&e))?;
    Ok((out, consumed + pad))
}

struct Ctx<'a> {
    root: &'a Path,
    staging: &'a Staging,
    progress: &'a dyn Progress,
    /// Payload bytes written so far, and when progress was last reported.
    done: u64,
    /// Copy buffer, reused: allocating it per file would map and unmap it per file.
    buf: Vec<u8>,
    last: u64,
    files: u64,
}

impl Ctx<'_> {
    /// Check one member against its manifest entry `e` and put it in place.
    fn extract<R: Read>(&mut self, m: &Manifest, e: &Entry, mem: &mut Member<R>) -> Result<()> {
        let path = mem.path.clone();
        let shown = encode(&e.path);
        if path != e.path {
            manifest::check_rel_path(&path)?;
            return Err(Error::Integrity(if m.get(&path).is_some() {
                format!(
                    "image member {} out of order (expected {shown})",
                    encode(&path)
                )
            } else {
                format!("image member {} is not in the manifest", encode(&path))
            }));
        }
        let h = mem.entry.header();
        let t = h.entry_type();
        let link = || mem.link.clone();
        let differ = |what: &str| {
            Error::Integrity(format!(
                "image member {shown}: {what} differs from the manifest"
            ))
        };
        let ok = match &e.kind {
            Kind::File { .. } => t == tar::EntryType::Regular || t == tar::EntryType::Continuous,
            Kind::Dir => t == tar::EntryType::Directory,
            Kind::Symlink { target } => {
                if t == tar::EntryType::Symlink && link().as_deref() != Some(&target[..]) {
                    return Err(differ("symlink target"));
                }
                t == tar::EntryType::Symlink
            }
            Kind::Hardlink { target } => {
                if t == tar::EntryType::Link && link().as_deref() != Some(&target[..]) {
                    return Err(differ("hardlink target"));
                }
                t == tar::EntryType::Link
            }
            Kind::Char { rdev } | Kind::Block { rdev } => {
                let want = if matches!(e.kind, Kind::Char { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let dev = *rdev as libc::dev_t;
                if t == want
                    && (h.device_major()?.unwrap_or(0) != libc::major(dev)
                        || h.device_minor()?.unwrap_or(0) != libc::minor(dev))
                {
                    return Err(differ("device number"));
                }
                t == want
            }
            Kind::Fifo => t == tar::EntryType::Fifo,
        };
        if !ok {
            return Err(differ("type"));
        }
        let target = join(self.root, &e.path);
        match &e.kind {
            Kind::File {
                size,
                hash,
                extents,
            } => {
                let payload = install::payload_len(*size, extents.as_deref());
                let sparse = mem.pax("GNU.sparse.major").is_some();
                let mut map_len = 0;
                if sparse || extents.is_some() {
                    if !(sparse && extents.is_some()) {
                        return Err(differ("sparseness"));
                    }
                    let real = mem
                        .pax("GNU.sparse.realsize")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if real != Some(*size) {
                        return Err(differ("size"));
                    }
                    let (map, n) = read_sparse_map(&mut mem.entry)?;
                    if Some(&map) != extents.as_ref() {
                        return Err(differ("sparse map"));
                    }
                    map_len = n;
                }
                let member = &mut mem.entry;
                if member.size() != map_len + payload {
                    return Err(differ("size"));
                }
                if fsutil::file_matches_fast(&target, e) {
                    // Committed by an interrupted earlier run (mtime is set last, after the
                    // hash check): read past it, as a pack install skips its record.
                    io::copy(member, &mut io::sink()).map_err(|err| corrupt(&err))?;
                    return Ok(());
                }
                let tmp = self.staging.next();
                let mut w = PayloadWriter::new(File::create(&tmp)?, *size, extents.as_deref());
                let mut rd = HashVerify::new(member.take(payload), *hash);
                let res = (|| -> io::Result<()> {
                    loop {
                        let n = rd.read(&mut self.buf)?;
                        if n == 0 {
                            return Ok(());
                        }
                        w.write_all(&self.buf[..n])?;
                        self.done += n as u64;
                        if self.done >= self.last + (8 << 20) {
                            self.last = self.done;
                            self.progress.event(Event::Bytes { done: self.done });
                        }
                    }
                })();
                if let Err(err) = res.and_then(|_| w.finish().map(drop)) {
                    // Unverified content never reaches its final path.
                    let _ = fs::remove_file(&tmp);
                    return Err(match err.kind() {
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                            Error::Integrity(format!("{shown}: {err}"))
                        }
                        _ => install::ctx(&target, err),
                    });
                }
                install::commit(&tmp, self.root, e)?;
                self.files += 1;
                self.progress.event(Event::File { path: shown });
            }
            Kind::Hardlink { .. } => install::link_hardlinks(self.root, std::iter::once(e))?,
            // Directories get their metadata at the end, deepest first (install::finish_dirs).
            _ => install::create_non_files(self.root, std::iter::once(e))?,
        }
        Ok(())
    }
}

/// Open an image for reading: a local file, or an `http://`/`https://` URL streamed (never
/// buffered) with a 10 s connect timeout, a 60 s idle timeout, retries of the first request,
/// and resumption with `Range` requests after a dropped connection
/// ([`crate::http::Resuming`]).
pub fn open(src: &str) -> Result<Box<dyn Read + Send>> {
    if !(src.starts_with("http://") || src.starts_with("https://")) {
        let f = File::open(src)
            .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("{src}: {e}"))))?;
        return Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)));
    }
    let client = crate::http::client()?;
    let url = src.to_string();
    // The initrd opens the image right after DHCP: a server or route still coming up gets a
    // few tries with backoff (0.5, 1, 2 s), as HttpSource's small GETs do; a 404 is final.
    let mut attempt = 0;
    let first = loop {
        match get(&client, &url, 0) {
            Ok(r) => break r,
            // Connection errors and 5xx (Io) are retried; 404 and other 4xx are final.
            Err(Error::Io(_)) if attempt < 3 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            Err(e) => return Err(e),
        }
    };
    let end = first.content_length();
    let reopen =
        move |at: u64| -> Result<Box<dyn Read + Send>> { Ok(Box::new(get(&client, &url, at)?)) };
    Ok(Box::new(crate::http::Resuming::new(
        Box::new(first),
        reopen,
        0,
        end,
    )))
}

/// One GET from `offset`; a resumed request must get exactly that tail (a 206 starting at
/// `offset`), since a 200 would splice the image's start into its middle.
fn get(client: &Client, url: &str, offset: u64) -> Result<Response> {
    let net = |e: String| Error::Io(io::Error::other(format!("{url}: {e}")));
    let mut req = client.get(url);
    if offset > 0 {
        req = req.header(RANGE, format!("bytes={offset}-"));
    }
    let r = req.send().map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(&format!(": {x}"));
            src = x.source();
        }
        net(s)
    })?;
    if r.status() == StatusCode::NOT_FOUND {
        return Err(Error::NotFound(format!("image {url}")));
    }
    if r.status().is_client_error() {
        return Err(Error::Other(format!("{url}: {}", r.status())));
    }
    if !r.status().is_success() {
        return Err(net(r.status().to_string()));
    }
    if offset > 0 {
        let start = crate::http::range_start(&r);
        if r.status() != StatusCode::PARTIAL_CONTENT || start != Some(offset) {
            return Err(net(format!(
                "asked for bytes {offset}-, got {} {start:?} (no Range support?)",
                r.status()
            )));
        }
    }
    Ok(r)
}

/// Write `<role>-<version>.edeploy` for `tree` to `out_path` atomically (temp name + rename in
/// the same directory), so a web server never serves half an image.
pub fn write_image_file(
    tree: &Path,
    version: &str,
    role: &str,
    key: Option<&SigningKey>,
    opts: &WriteOptions,
    out_path: &Path,
) -> Result<Manifest> {
    let dir = out_path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = out_path
        .file_name()
        .ok_or_else(|| Error::Other(format!("{}: not a file name", out_path.display())))?;
    let mut tmp_name = OsStr::new(".").to_os_string();
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let res = (|| -> Result<Manifest> {
        let f = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let (m, w) = build_image(tree, version, role, key, opts, f)?;
        let f = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        f.sync_all()?;
        fs::rename(&tmp, out_path)?;
        Ok(m)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_map_round_trip() {
        let x = vec![(0, 10), (4096, 70_000), (1 << 31, 4)];
        let b = sparse_map(&x);
        assert_eq!(b.len() % 512, 0);
        let mut data = b.clone();
        data.extend_from_slice(b"payload");
        let mut r = &data[..];
        let (got, n) = read_sparse_map(&mut r).unwrap();
        assert_eq!((got, n), (x, b.len() as u64));
        assert_eq!(r, b"payload");
        assert!(read_sparse_map(&mut &b"x\n"[..]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(file_name("D7-H.1.0.0", "base"), "base-D7-H.1.0.0.edeploy");
    }
}

//! Upgrade between two manifests through a journal that makes the old tree come back exactly.
//!
//! Steps (each one safe to be killed in):
//! 1. **Plan**: diff installed vs target manifest; `exclude` paths (and host state) are never
//!    touched; `add_only` paths are created when absent and never replaced or deleted.
//! 2. **Stage**: every new object (file, symlink, device, fifo) is built, hash-verified and given
//!    its final metadata under `ROOT/.edeploy-journal/staging/<op>`; content whose hash the old
//!    manifest already has is copied from the local old file, the rest fetched from the
//!    source (many requests at once; large changed files as deltas, crate::delta). The tree
//!    is untouched so far.
//! 3. `pre` runs; then `plan.json` is written (the intent log begins) and the fs synced once.
//! 4. **Apply**: ops in order — `save` (rename the old object into `journal/saved/<op>`,
//!    deepest first), then `mkdir` / `place` (rename from staging) / `link`, parents first —
//!    each followed by a `d <op>` line in `journal/log`. Then new metadata for changed
//!    directories and metadata-only changes. Every op is a rename or a create, so undoing op
//!    *i* is decidable from the filesystem alone, whether or not its log line made it.
//! 5. `post` runs (exit 100 = reboot needed, other non-zero = failure ⇒ automatic rollback).
//! 6. The installed manifest and conf are switched, `committed` is logged, one syncfs.
//!
//! **Rollback** undoes ops from the last possibly-done one down to 0 (logging `u <op>`, so an
//! interrupted rollback resumes), restores the recorded pre-upgrade metadata of every touched
//! path, restores manifest and conf, and removes the journal. A journal without `committed`
//! found by a later `upgrade` or `rollback` is rolled back first: after a kill anywhere, the
//! tree ends fully old (or fully new if the kill came after `committed`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::exclude::Patterns;
use crate::fsutil::{self, join, PayloadReader, PayloadWriter};
use crate::index::stat_entry;
use crate::install::{ctx, fetch_manifest, remove_any, same_kind_meta};
use crate::manifest::{hex, unhex, Entry, Hash, Kind, Manifest};
use crate::pathenc::{decode, encode};
use crate::progress::{Event, Progress, Quiet};
use crate::source::Source;
use crate::state::{self, Conf};
use crate::stream::{self, HashVerify};
use crate::verify::is_host_state;
use crate::{Error, Result};

pub const JOURNAL: &str = ".edeploy-journal";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Move the old object at `path` to `saved/<i>`.
    Save {
        path: String,
    },
    /// Rename `staging/<i>` to `path`.
    Place {
        path: String,
    },
    Mkdir {
        path: String,
    },
    /// Hardlink `path` to `target`.
    Link {
        path: String,
        target: String,
    },
}

impl Op {
    fn path(&self) -> Result<Vec<u8>> {
        match self {
            Op::Save { path } | Op::Place { path } | Op::Mkdir { path } | Op::Link { path, .. } => {
                decode(path)
            }
        }
    }
}

/// Metadata of a path before the upgrade (restored last by a rollback).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct MetaRec {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub nsec: u32,
    pub link: bool,
    pub xattrs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Plan {
    pub from: String,
    pub to: String,
    pub role: String,
    pub ops: Vec<Op>,
    /// Paths whose metadata the upgrade sets in place (metadata-only changes, parents of
    /// changed paths), with their metadata before.
    pub before: Vec<MetaRec>,
    /// Every path whose new metadata is set after the ops (`before`'s paths plus new
    /// directories that receive children), in path order.
    pub after: Vec<String>,
    /// rsync-style itemised changes, for `test-upgrade` and logs.
    pub items: Vec<(String, String)>,
    /// Paths skipped because of `add_only` (exist already) or a non-empty removed directory.
    #[serde(default)]
    pub notes: Vec<String>,
}

pub struct Options<'a> {
    pub key: Option<&'a ed25519_dalek::VerifyingKey>,
    pub progress: &'a dyn Progress,
    /// Called at every step boundary with a step counter: tests use it to simulate a kill.
    pub step_hook: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            key: None,
            progress: &Quiet,
            step_hook: None,
        }
    }
}

/// The upgrade metadata `metadata/<from>/<role>/<to>/…` as fetched.
#[derive(Default, Clone)]
pub struct UpgradeMeta {
    pub exclude: Patterns,
    pub add_only: Patterns,
    pub pre: Option<Vec<u8>>,
    pub post: Option<Vec<u8>>,
}

impl UpgradeMeta {
    pub fn fetch(src: &dyn Source, from: &str, role: &str, to: &str) -> Result<UpgradeMeta> {
        let text = |name| -> Result<String> {
            Ok(src
                .metadata(from, role, to, name)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        };
        Ok(UpgradeMeta {
            exclude: Patterns::parse(&text("exclude")?)?,
            add_only: Patterns::parse(&text("add_only")?)?,
            pre: src.metadata(from, role, to, "pre")?,
            post: src.metadata(from, role, to, "post")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Upgraded,
    /// `post` exited 100.
    RebootNeeded,
}

fn meta_differs(a: &Entry, b: &Entry) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || (a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec)
        || a.xattrs != b.xattrs
}

/// The nine rsync attribute flags for a metadata-only change.
fn meta_flags(a: &Entry, b: &Entry) -> String {
    let f = |c: bool, l: char| if c { l } else { '.' };
    [
        '.',
        '.',
        f((a.mtime, a.mtime_nsec) != (b.mtime, b.mtime_nsec), 't'),
        f(a.mode != b.mode, 'p'),
        f(a.uid != b.uid, 'o'),
        f(a.gid != b.gid, 'g'),
        '.',
        '.',
        f(a.xattrs != b.xattrs, 'x'),
    ]
    .into_iter()
    .collect()
}

fn parent(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
}

fn rec_of(e: &Entry) -> MetaRec {
    MetaRec {
        path: encode(&e.path),
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        nsec: e.mtime_nsec,
        link: matches!(e.kind, Kind::Symlink { .. }),
        xattrs: e.xattrs.iter().map(|(k, v)| (encode(k), hex(v))).collect(),
    }
}

fn entry_of_rec(r: &MetaRec) -> Result<Entry> {
    let mut xattrs = BTreeMap::new();
    for (k, v) in &r.xattrs {
        xattrs.insert(decode(k)?, unhex(v)?);
    }
    Ok(Entry {
        path: decode(&r.path)?,
        kind: if r.link {
            Kind::Symlink { target: vec![] }
        } else {
            Kind::Dir
        },
        mode: r.mode,
        uid: r.uid,
        gid: r.gid,
        mtime: r.mtime,
        mtime_nsec: r.nsec,
        xattrs,
    })
}

/// Diff `old` (installed) against `new` given the live tree at `root`.
pub fn plan(root: &Path, old: &Manifest, new: &Manifest, meta: &UpgradeMeta) -> Result<Plan> {
    let mut paths: BTreeSet<&[u8]> = old.entries.iter().map(|e| e.path.as_slice()).collect();
    paths.extend(new.entries.iter().map(|e| e.path.as_slice()));
    let mut saves = Vec::new();
    let mut creates = Vec::new();
    let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new(); // metadata set in place
    let mut replaced: BTreeSet<&[u8]> = BTreeSet::new();
    let mut items = Vec::new();
    let mut notes = Vec::new();
    // The live state of every path, read in parallel with one `lstat` each (plus a
    // `readlink` for symlinks): this loop was three sequential `lstat`s per path, most of an
    // upgrade's time on a 15k-entry tree. `live_is_old`: the live object is still the old
    // one (fast check), else it is replaced so the upgrade converges on the target.
    let paths: Vec<&[u8]> = paths.into_iter().collect();
    let lives: Vec<Option<(fs::Metadata, bool)>> = paths
        .par_iter()
        .map(|&p| {
            if meta.exclude.matches(p) || is_host_state(p) {
                return None;
            }
            let live = fs::symlink_metadata(join(root, p)).ok()?;
            let is_old = old.get(p).is_some_and(|o| match &o.kind {
                Kind::File { .. } => fsutil::meta_matches_file(&live, o),
                Kind::Hardlink { target } => old
                    .get(target)
                    .is_some_and(|t| fsutil::meta_matches_file(&live, t)),
                _ => same_kind_meta(&join(root, p), &live, o),
            });
            Some((live, is_old))
        })
        .collect();
    for (p, lv) in paths.into_iter().zip(lives) {
        if meta.exclude.matches(p) || is_host_state(p) {
            continue;
        }
        let (live, live_is_old) = match lv {
            Some((m, old_ok)) => (Some(m), old_ok),
            None => (None, false),
        };
        let o = old.get(p);
        let n = new.get(p);
        let add_only = meta.add_only.matches(p);
        match (o, n) {
            (None, None) => unreachable!(),
            (Some(o), None) => {
                if add_only || live.is_none() {
                    continue;
                }
                saves.push((p, matches!(o.kind, Kind::Dir)));
                items.push(("*deleting".to_string(), encode(p)));
            }
            (o, Some(n)) => {
                if add_only && live.is_some() {
                    if o.is_none_or(|o| o != n) {
                        notes.push(format!("add_only, kept: {}", encode(p)));
                    }
                    continue;
                }
                let same_object = match (o.map(|o| &o.kind), &n.kind) {
                    (Some(a), b) if live.is_some() && live_is_old => match (a, b) {
                        (Kind::Hardlink { target: t1 }, Kind::Hardlink { target: t2 }) => {
                            t1 == t2 && !replaced.contains(t2.as_slice())
                        }
                        (Kind::Hardlink { .. }, _) | (_, Kind::Hardlink { .. }) => false,
                        (a, b) => a == b,
                    },
                    _ => false,
                };
                let x = match &n.kind {
                    Kind::Hardlink { .. } => 'f',
                    k => k.letter(),
                };
                if same_object {
                    let o = o.unwrap();
                    if meta_differs(o, n) && !matches!(n.kind, Kind::Hardlink { .. }) {
                        touched.insert(p.to_vec());
                        items.push((format!(".{x}{}", meta_flags(o, n)), encode(p)));
                    }
                    continue;
                }
                let both_dirs =
                    matches!(n.kind, Kind::Dir) && live.as_ref().is_some_and(|m| m.is_dir());
                if both_dirs {
                    // A directory stays a directory (its children are handled one by one).
                    touched.insert(p.to_vec());
                    if let Some(o) = o.filter(|o| meta_differs(o, n)) {
                        items.push((format!(".{x}{}", meta_flags(o, n)), encode(p)));
                    }
                    continue;
                }
                if live.is_some() {
                    saves.push((p, live.as_ref().is_some_and(|m| m.is_dir())));
                }
                replaced.insert(p);
                let y = if x == 'f' { '>' } else { 'c' };
                let flags = if o.is_some() && live.is_some() {
                    "c........"
                } else {
                    "+++++++++"
                };
                items.push((format!("{y}{x}{flags}"), encode(p)));
                creates.push(n);
            }
        }
    }
    let mut ops = Vec::new();
    // Saves deepest first: children leave a directory before it goes.
    saves.sort_by(|a, b| b.0.cmp(a.0));
    for (p, _) in &saves {
        if let Some(par) = parent(p) {
            touched.insert(par.to_vec());
        }
        ops.push(Op::Save { path: encode(p) });
    }
    for n in creates {
        if let Some(par) = parent(&n.path) {
            touched.insert(par.to_vec());
        }
        ops.push(match &n.kind {
            Kind::Dir => Op::Mkdir {
                path: encode(&n.path),
            },
            Kind::Hardlink { target } => Op::Link {
                path: encode(&n.path),
                target: encode(target),
            },
            _ => Op::Place {
                path: encode(&n.path),
            },
        });
    }
    // Record the live metadata of everything whose metadata we set in place.
    // (In parallel: thousands of paths when a new version re-touched many mtimes.)
    let touched: Vec<Vec<u8>> = touched
        .into_iter()
        .filter(|p| !meta.exclude.matches(p) && !is_host_state(p))
        .collect();
    let before: Vec<MetaRec> = touched
        .par_iter()
        .filter_map(|p| match stat_entry(root, p) {
            Ok(Some((e, _))) => Some(rec_of(&e)),
            _ => None,
        })
        .collect();
    let after: Vec<String> = touched.iter().map(|p| encode(p)).collect();
    Ok(Plan {
        from: old.version.clone(),
        to: new.version.clone(),
        role: new.role.clone(),
        ops,
        before,
        after,
        items,
        notes,
    })
}

pub fn journal_dir(root: &Path) -> PathBuf {
    root.join(JOURNAL)
}

struct Journal {
    dir: PathBuf,
    /// The log, opened (append) at its first line and kept open: an upgrade logs one line per
    /// operation (hundreds), no need for an open and a close each.
    log: std::sync::Mutex<Option<File>>,
}

impl Journal {
    fn at(root: &Path) -> Journal {
        Journal {
            dir: journal_dir(root),
            log: std::sync::Mutex::new(None),
        }
    }
    fn saved(&self, i: usize) -> PathBuf {
        self.dir.join("saved").join(i.to_string())
    }
    fn staged(&self, i: usize) -> PathBuf {
        self.dir.join("staging").join(i.to_string())
    }
    fn log(&self, line: &str) -> io::Result<()> {
        let mut guard = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let f = match &mut *guard {
            Some(f) => f,
            None => guard.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("log"))?,
            ),
        };
        // One write per line: a kill leaves whole lines, at worst a last one cut short (and a
        // cut line matches no operation).
        f.write_all(format!("{line}\n").as_bytes())
    }
    fn read_log(&self) -> io::Result<Vec<String>> {
        match fs::read_to_string(self.dir.join("log")) {
            Ok(t) => Ok(t.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(e),
        }
    }
    fn plan(&self) -> Result<Option<Plan>> {
        match fs::read(self.dir.join("plan.json")) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// State of the journal at `root`, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalState {
    None,
    /// Staging or applying was interrupted (or failed): must be rolled back.
    Incomplete {
        from: String,
        to: String,
    },
    /// An upgrade completed; `rollback` can return to `from`.
    Committed {
        from: String,
        to: String,
    },
}

pub fn journal_state(root: &Path) -> Result<JournalState> {
    let j = Journal::at(root);
    if !j.dir.exists() {
        return Ok(JournalState::None);
    }
    let Some(plan) = j.plan()? else {
        // Killed while staging: nothing was applied.
        return Ok(JournalState::Incomplete {
            from: String::new(),
            to: String::new(),
        });
    };
    let log = j.read_log()?;
    if log.iter().any(|l| l == "committed") {
        Ok(JournalState::Committed {
            from: plan.from,
            to: plan.to,
        })
    } else {
        Ok(JournalState::Incomplete {
            from: plan.from,
            to: plan.to,
        })
    }
}

/// Dry run: the plan `upgrade` would apply.
pub fn test_upgrade(src: &dyn Source, root: &Path, to: &str, opts: &Options) -> Result<Plan> {
    let (old, _) = state::read_installed(root)?;
    let (new, _, _) = fetch_manifest(src, to, &old.role, opts.key)?;
    let meta = UpgradeMeta::fetch(src, &old.version, &old.role, to)?;
    plan(root, &old, &new, &meta)
}

/// Upgrade the tree at `root` from its installed manifest to `to`. On any failure after the
/// tree started changing, rolls back before returning the error.
pub fn upgrade(src: &dyn Source, root: &Path, to: &str, opts: &Options) -> Result<Outcome> {
    match journal_state(root)? {
        JournalState::Incomplete { .. } => rollback(root)?,
        JournalState::Committed { .. } => fs::remove_dir_all(journal_dir(root))?,
        JournalState::None => {}
    }
    let (old, old_bytes) = state::read_installed(root)?;
    let (new, new_bytes, _) = fetch_manifest(src, to, &old.role, opts.key)?;
    let meta = UpgradeMeta::fetch(src, &old.version, &old.role, to)?;
    let plan = plan(root, &old, &new, &meta)?;
    let j = Journal::at(root);
    let step = std::sync::atomic::AtomicU64::new(0);
    let hook = || {
        let s = step.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = opts.step_hook {
            h(s);
        }
    };
    fs::create_dir_all(j.dir.join("staging"))?;
    fs::create_dir_all(j.dir.join("saved"))?;
    fs::write(j.dir.join("old.manifest"), &old_bytes)?;
    fs::write(j.dir.join("new.manifest"), &new_bytes)?;
    fs::write(j.dir.join("old.conf"), Conf::read(root)?.text())?;
    hook();
    let res = stage(src, root, &j, &plan, &old, &new, opts.progress, &hook);
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&j.dir);
        return Err(e);
    }
    if let Some(pre) = &meta.pre {
        opts.progress.event(Event::Phase { name: "pre".into() });
        let code = run_script(root, &j.dir, "pre", pre, &old.version, to, &old.role)?;
        if code != 0 {
            let _ = fs::remove_dir_all(&j.dir);
            return Err(Error::Other(format!(
                "pre script failed with exit code {code}"
            )));
        }
    }
    store_plan(&j, &plan)?;
    fsutil::syncfs(root)?;
    hook();
    opts.progress.event(Event::Phase {
        name: "apply".into(),
    });
    let applied = apply(root, &j, &plan, &new, &hook);
    if let Err(e) = applied {
        rollback(root)?;
        return Err(e);
    }
    let mut outcome = Outcome::Upgraded;
    if let Some(post) = &meta.post {
        opts.progress.event(Event::Phase {
            name: "post".into(),
        });
        match run_script(root, &j.dir, "post", post, &old.version, to, &old.role) {
            Ok(0) => {}
            Ok(100) => outcome = Outcome::RebootNeeded,
            Ok(code) => {
                rollback(root)?;
                return Err(Error::Other(format!(
                    "post script failed with exit code {code}; rolled back to {}",
                    old.version
                )));
            }
            Err(e) => {
                rollback(root)?;
                return Err(e);
            }
        }
    }
    hook();
    state::write_installed(root, &new_bytes)?;
    let mut conf = Conf::read(root)?;
    conf.set("VERS", to);
    conf.write(root)?;
    hook();
    j.log("committed")?;
    let _ = fs::remove_dir_all(j.dir.join("staging"));
    fsutil::syncfs(root)?;
    Ok(outcome)
}

fn store_plan(j: &Journal, plan: &Plan) -> Result<()> {
    let tmp = j.dir.join("plan.json.tmp");
    fs::write(&tmp, serde_json::to_vec(plan)?)?;
    fs::rename(tmp, j.dir.join("plan.json"))?;
    Ok(())
}

fn run_script(
    root: &Path,
    jdir: &Path,
    name: &str,
    body: &[u8],
    from: &str,
    to: &str,
    role: &str,
) -> Result<i32> {
    let p = jdir.join(name);
    fs::write(&p, body)?;
    let status = std::process::Command::new("sh")
        .arg(&p)
        .env("EDEPLOY_ROOT", root)
        .env("EDEPLOY_FROM", from)
        .env("EDEPLOY_TO", to)
        .env("EDEPLOY_ROLE", role)
        .current_dir(root)
        .status()
        .map_err(|e| Error::Other(format!("cannot run {name} script: {e}")))?;
    Ok(status.code().unwrap_or(128 + 9))
}

#[allow(clippy::too_many_arguments)]
fn stage(
    src: &dyn Source,
    root: &Path,
    j: &Journal,
    plan: &Plan,
    old: &Manifest,
    new: &Manifest,
    progress: &dyn Progress,
    hook: &(dyn Fn() + Sync),
) -> Result<()> {
    // Content the old tree has: hash → an old path holding it.
    let mut local: HashMap<Hash, &Entry> = HashMap::new();
    for e in &old.entries {
        if let Kind::File { hash, .. } = &e.kind {
            local.entry(*hash).or_insert(e);
        }
    }
    let places: Vec<(usize, &Entry)> = plan
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Place { path } => Some((i, new.get(&decode(path).ok()?)?)),
            _ => None,
        })
        .collect();
    progress.event(Event::Start {
        files: places.len() as u64,
        bytes: 0,
        skipped: 0,
    });
    let finish = |i: usize, e: &Entry| -> Result<()> {
        let dst = j.staged(i);
        fsutil::apply_meta(&dst, e).map_err(|err| ctx(&dst, err))?;
        progress.event(Event::File {
            path: encode(&e.path),
        });
        hook();
        Ok(())
    };
    // Pass 1 (local, CPU/disk-bound, one rayon thread per core): non-files, and files whose
    // content the old tree holds (copied, hash-checked). What is left must be fetched.
    let remote = std::sync::Mutex::new(Vec::new());
    places.par_iter().try_for_each(|&(i, e)| -> Result<()> {
        let dst = j.staged(i);
        match &e.kind {
            Kind::File { hash, .. } => {
                let copied = local.get(hash).is_some_and(|oe| match &oe.kind {
                    Kind::File {
                        size: os,
                        extents: ox,
                        ..
                    } => copy_verified(&join(root, &oe.path), *os, ox.as_deref(), e, &dst).is_ok(),
                    _ => false,
                });
                if !copied {
                    remote.lock().unwrap().push((i, e));
                    return Ok(());
                }
            }
            Kind::Symlink { target } => {
                std::os::unix::fs::symlink(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(target),
                    &dst,
                )?;
            }
            Kind::Char { .. } | Kind::Block { .. } | Kind::Fifo => {
                fsutil::mknod(&dst, &e.kind, e.mode)?;
            }
            Kind::Dir | Kind::Hardlink { .. } => unreachable!(),
        }
        finish(i, e)
    })?;
    // Pass 2 (network, latency-bound): the missing blobs.
    let remote = remote.into_inner().unwrap();
    fetch_remote(src, (root, old), j, &remote, &finish)?;
    progress.event(Event::Done {
        files: places.len() as u64,
        bytes: 0,
    });
    Ok(())
}

/// Concurrent requests for missing content: each costs a round trip or more of latency (the
/// server answers a small blob in well under 1 ms when idle), not CPU, so more than the cores.
const FETCHERS: usize = 16;
/// Missing delta blocks closer than this are fetched as one range. Measured on the Debian
/// benchmark's 30 MB initramfs: 64 KiB → 16.5 MB in 59 ranges, 16 KiB → 12.3 MB in 182,
/// 4 KiB → 10.6 MB in 320, 0 → 10.2 MB in 428; the ranges go in `FETCHERS` multi-range
/// requests (crate::byteranges), so their number costs little.
const DELTA_GAP: usize = 4 << 10;

/// Fetch the content of `remote` (op index, entry) into staging, `FETCHERS` contents at a
/// time. A large file whose old version is on disk at the same path and whose new blob has a
/// block signature travels as a delta (crate::delta): only the byte ranges the old copy
/// lacks. Everything else (and a delta that fails) is one blob request.
fn fetch_remote(
    src: &dyn Source,
    (root, old): (&Path, &Manifest),
    j: &Journal,
    remote: &[(usize, &Entry)],
    finish: &(dyn Fn(usize, &Entry) -> Result<()> + Sync),
) -> Result<()> {
    let mut by_hash: HashMap<Hash, Vec<(usize, &Entry)>> = HashMap::new();
    for &(i, e) in remote {
        if let Some(h) = e.file_hash() {
            by_hash.entry(*h).or_default().push((i, e));
        }
    }
    // Largest first: the longest fetch (a delta of a 30 MB initramfs, hundreds of ranges)
    // starts at once instead of whenever the hash order reaches it, and the small ones fill
    // the other fetchers meanwhile.
    let mut jobs: Vec<(&Hash, &Vec<(usize, &Entry)>)> = by_hash.iter().collect();
    jobs.sort_by_key(|(_, t)| {
        std::cmp::Reverse(match &t[0].1.kind {
            Kind::File { size, .. } => *size,
            _ => 0,
        })
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None::<Error>);
    let work = |(h, targets): (&Hash, &Vec<(usize, &Entry)>)| -> Result<()> {
        if let Some(payload) = try_delta(src, root, old, h, targets[0].1) {
            return stage_content(stream::TAG_RAW, &payload[..], targets, j, finish);
        }
        let (tag, r) = src.blob(h)?;
        stage_content(tag, r, targets, j, finish)
    };
    std::thread::scope(|scope| {
        for _ in 0..FETCHERS.min(jobs.len()) {
            scope.spawn(|| loop {
                if failed.lock().unwrap().is_some() {
                    return;
                }
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&job) = jobs.get(n) else {
                    return;
                };
                if let Err(e) = work(job) {
                    failed.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The new payload of `e` rebuilt from the old copy at the same path plus fetched ranges,
/// hash-checked; `None` when no delta applies or it failed (the caller fetches the blob).
fn try_delta(
    src: &dyn Source,
    root: &Path,
    old: &Manifest,
    h: &Hash,
    e: &Entry,
) -> Option<Vec<u8>> {
    let Kind::File { size, extents, .. } = &e.kind else {
        return None;
    };
    if crate::install::payload_len(*size, extents.as_deref()) < crate::delta::MIN_SIZE {
        return None;
    }
    let oe = old.get(&e.path)?;
    let Kind::File {
        size: os,
        extents: ox,
        ..
    } = &oe.kind
    else {
        return None;
    };
    // Old data from disk, only if the file still looks like the old version (a drifted
    // copy would still patch correctly thanks to the final hash, but likely match less).
    let p = join(root, &oe.path);
    if !fsutil::file_matches_fast(&p, oe) {
        return None;
    }
    let sig = crate::delta::Signature::parse(&src.signature(h).ok()??).ok()?;
    let mut old_bytes =
        Vec::with_capacity(crate::install::payload_len(*os, ox.as_deref()) as usize);
    PayloadReader::new(File::open(&p).ok()?, *os, ox.as_deref())
        .read_to_end(&mut old_bytes)
        .ok()?;
    // Blob byte 0 is the tag: payload offset `o` is blob offset `o + 1`.
    let (payload, _fetched) = sig
        .patch(&old_bytes, DELTA_GAP, FETCHERS, |ranges| {
            let shifted: Vec<(u64, u64)> = ranges.iter().map(|&(s, e)| (s + 1, e + 1)).collect();
            src.blob_ranges(h, &shifted)
        })
        .ok()?;
    (blake3::hash(&payload).as_bytes() == h).then_some(payload)
}

/// Decode, verify and write one content to the staging slot of every target (a copy of the
/// first for the others), each given its final metadata.
fn stage_content(
    tag: u8,
    stored: impl Read,
    targets: &[(usize, &Entry)],
    j: &Journal,
    finish: &(dyn Fn(usize, &Entry) -> Result<()> + Sync),
) -> Result<()> {
    let (i0, e0) = targets[0];
    let (size, hash, extents) = crate::install::file_content(e0);
    let dst0 = j.staged(i0);
    let mut rd = HashVerify::new(stream::decoder(tag, stored)?, *hash);
    let mut w = PayloadWriter::new(File::create(&dst0)?, size, extents);
    crate::install::copy_big(&mut rd, &mut w)
        .map_err(|err| Error::Integrity(format!("{}: {err}", encode(&e0.path))))?;
    w.finish()?;
    for &(i, e) in &targets[1..] {
        crate::install::copy_payload(&dst0, &j.staged(i), size, extents)?;
        finish(i, e)?;
    }
    finish(i0, e0)
}

/// Copy a local file's payload to `dst` laid out as `e`, checking `e`'s hash.
fn copy_verified(
    from: &Path,
    size: u64,
    ext: Option<&[(u64, u64)]>,
    e: &Entry,
    dst: &Path,
) -> Result<()> {
    let (ns, hash, nx) = crate::install::file_content(e);
    let mut r = HashVerify::new(PayloadReader::new(File::open(from)?, size, ext), *hash);
    let mut w = PayloadWriter::new(File::create(dst)?, ns, nx);
    io::copy(&mut r, &mut w)?;
    w.finish()?;
    Ok(())
}

fn apply(
    root: &Path,
    j: &Journal,
    plan: &Plan,
    new: &Manifest,
    hook: &(dyn Fn() + Sync),
) -> Result<()> {
    for (i, op) in plan.ops.iter().enumerate() {
        hook();
        let p = join(root, &op.path()?);
        match op {
            Op::Save { .. } => {
                let is_nonempty_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
                    && fs::read_dir(&p)?.next().is_some();
                // A removed directory still holding untracked or excluded files stays.
                if !is_nonempty_dir {
                    match fs::rename(&p, j.saved(i)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(ctx(&p, e)),
                    }
                }
            }
            Op::Place { .. } => fs::rename(j.staged(i), &p).map_err(|e| ctx(&p, e))?,
            Op::Mkdir { .. } => {
                let e = new.get(&op.path()?).expect("planned from the manifest");
                fs::create_dir(&p).map_err(|err| ctx(&p, err))?;
                fsutil::apply_meta(&p, e).map_err(|err| ctx(&p, err))?;
            }
            Op::Link { target, .. } => {
                let t = join(root, &decode(target)?);
                fs::hard_link(&t, &p).map_err(|e| ctx(&p, e))?;
            }
        }
        j.log(&format!("d {i}"))?;
    }
    // New metadata for metadata-only changes and changed directories: everything but
    // directories in parallel (setting a file's metadata never changes its directory's
    // mtime; ~2.4k paths on the Debian benchmark), then directories deepest first.
    let set_meta = |r: &String| -> Result<()> {
        hook();
        let path = decode(r)?;
        if let Some(e) = new.get(&path) {
            let p = join(root, &path);
            if fs::symlink_metadata(&p).is_ok() {
                fsutil::apply_meta(&p, e).map_err(|err| ctx(&p, err))?;
            }
        }
        Ok(())
    };
    let is_dir = |r: &String| {
        decode(r)
            .ok()
            .and_then(|p| new.get(&p).map(|e| matches!(e.kind, Kind::Dir)))
            .unwrap_or(false)
    };
    plan.after
        .par_iter()
        .filter(|r| !is_dir(r))
        .try_for_each(set_meta)?;
    for r in plan.after.iter().rev().filter(|r| is_dir(r)) {
        set_meta(r)?;
    }
    j.log("applied")?;
    Ok(())
}

/// Undo op `i` (idempotent; correct whether or not the op had been performed).
fn undo(root: &Path, j: &Journal, i: usize, op: &Op) -> Result<()> {
    let p = join(root, &op.path()?);
    match op {
        Op::Save { .. } => {
            let s = j.saved(i);
            if fs::symlink_metadata(&s).is_ok() {
                remove_any(&p)?;
                fs::rename(&s, &p).map_err(|e| ctx(&p, e))?;
            }
        }
        Op::Place { .. } => {
            if fs::symlink_metadata(j.staged(i)).is_err() {
                remove_any(&p)?;
            }
        }
        Op::Mkdir { .. } => match fs::remove_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(&p, e)),
        },
        Op::Link { target, .. } => {
            use std::os::unix::fs::MetadataExt;
            let t = join(root, &decode(target)?);
            if let (Ok(a), Ok(b)) = (fs::symlink_metadata(&p), fs::symlink_metadata(&t)) {
                if a.ino() == b.ino() && a.dev() == b.dev() {
                    fs::remove_file(&p)?;
                }
            }
        }
    }
    Ok(())
}

/// Roll back the journal at `root` (committed or not). Resumable if interrupted.
pub fn rollback(root: &Path) -> Result<()> {
    let j = Journal::at(root);
    if !j.dir.exists() {
        return Err(Error::NotFound("no upgrade journal to roll back".into()));
    }
    let Some(plan) = j.plan()? else {
        // Interrupted while staging: the tree was never touched.
        fs::remove_dir_all(&j.dir)?;
        return Ok(());
    };
    let log = j.read_log()?;
    let max_done = log
        .iter()
        .filter_map(|l| l.strip_prefix("d ")?.parse::<usize>().ok())
        .max();
    let min_undone = log
        .iter()
        .filter_map(|l| l.strip_prefix("u ")?.parse::<usize>().ok())
        .min();
    // The op after the last logged one may have happened without its log line.
    let mut last = match (log.iter().any(|l| l == "applied"), max_done) {
        (true, _) => plan.ops.len(),
        (false, Some(d)) => (d + 2).min(plan.ops.len()),
        (false, None) => 1.min(plan.ops.len()),
    };
    if let Some(u) = min_undone {
        last = last.min(u);
    }
    for i in (0..last).rev() {
        undo(root, &j, i, &plan.ops[i])?;
        j.log(&format!("u {i}"))?;
    }
    // Pre-upgrade metadata, deepest first (children first, then their parents' mtimes).
    for r in plan.before.iter().rev() {
        let e = entry_of_rec(r)?;
        let p = join(root, &e.path);
        if fs::symlink_metadata(&p).is_ok() {
            fsutil::apply_meta(&p, &e).map_err(|err| ctx(&p, err))?;
        }
    }
    state::write_installed(root, &fs::read(j.dir.join("old.manifest"))?)?;
    let conf = fs::read_to_string(j.dir.join("old.conf"))?;
    crate::store::write_atomic(&state::conf_path(root), conf.as_bytes())?;
    fs::remove_dir_all(&j.dir)?;
    fsutil::syncfs(root)?;
    Ok(())
}

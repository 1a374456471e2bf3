//! Crash-safe persistence of one request's writes.
//!
//! A match changes two files (state and the profile's CMDB). Each file is replaced atomically,
//! but a crash between the two renames would leave a CMDB entry marked used with the quota not
//! taken (or the reverse). So the new contents are first written as one journal file (atomically);
//! the files are then replaced and the journal removed. Every request, under the lock, first rolls
//! forward a journal left by a crash: the commit either happened entirely or not at all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use edeploy_fsutil::write_files;

pub const JOURNAL: &str = ".edeploy-journal";

/// The journal of a config directory.
pub fn journal_path(config_dir: &Path) -> PathBuf {
    config_dir.join(JOURNAL)
}

/// Replaces every `(path, content)` of `files` together, crash-safely (see the module doc),
/// and each of `loose` on its own (the batch's hardware files). Every file is written to a
/// temp file, fsynced and renamed (DESIGN §4), and the waits for the disk are shared:
/// 1. every temp file (journal, files, loose) written and fsynced at once;
/// 2. the journal renamed into place, its directory fsynced: the commit point;
/// 3. the loose files renamed; the files renamed and their directories fsynced, so an
///    answered allocation survives a power cut (else the entry could be handed out twice);
/// 4. the journal removed, its directory fsynced (a journal left behind would later roll
///    its files forward over newer ones).
///
/// A single file needs no journal (its rename is the commit): rounds 1 and 3. A loose file's
/// new name is not waited for: it is whole either way, allocates nothing, and reaches the
/// disk with the filesystem's next journal commit (a `kill -9` loses nothing: the rename is
/// done) — a batch of hardware files alone costs one wait, not two.
pub fn commit(
    config_dir: &Path,
    files: &[(PathBuf, Vec<u8>)],
    loose: &[(PathBuf, Vec<u8>)],
) -> io::Result<()> {
    let journal = (files.len() > 1).then(|| (journal_path(config_dir), journal_text(files)));
    let all: Vec<(&Path, &[u8])> = journal
        .iter()
        .chain(files)
        .chain(loose)
        .map(|(p, d)| (p.as_path(), d.as_slice()))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let mut staged = edeploy_fsutil::stage_files(&all)?;
    let first = usize::from(journal.is_some());
    let loose_at = first + files.len();
    let n = all.len();
    drop(all);
    if first == 1 {
        staged.publish(0..1)?;
    }
    staged.rename(loose_at..n)?;
    staged.publish(first..loose_at)?;
    if let Some((path, _)) = journal {
        remove(&path)?;
        fs::File::open(edeploy_fsutil::parent_dir(&path))?.sync_all()?;
    }
    Ok(())
}

/// Removes a file the server is done with (the journal), or keeps its inode for a later write
/// when the process recycles them (see `edeploy_fsutil::Spares`).
fn remove(path: &Path) -> io::Result<()> {
    match edeploy_fsutil::spares() {
        Some(sp) => sp.retire(path),
        None => fs::remove_file(path),
    }
}

/// The journal's content: `[[absolute path, content], …]`.
fn journal_text(files: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = files
        .iter()
        .map(|(p, d)| {
            // Absolute: the process that rolls the journal forward may run elsewhere (a CGI
            // under another web server, `serve` started from another directory).
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            serde_json::json!([p.to_string_lossy(), String::from_utf8_lossy(d)])
        })
        .collect();
    serde_json::Value::Array(entries).to_string().into_bytes()
}

fn apply(journal: &Path, files: &[(PathBuf, Vec<u8>)]) -> io::Result<()> {
    write_files(files)?;
    fs::remove_file(journal)?;
    fs::File::open(edeploy_fsutil::parent_dir(journal))?.sync_all()
}

/// Rolls forward a journal left by a crash; returns whether there was one.
pub fn recover(config_dir: &Path) -> io::Result<bool> {
    let journal = journal_path(config_dir);
    let text = match fs::read_to_string(&journal) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable journal");
    let entries: Vec<(String, String)> = serde_json::from_str(&text).map_err(|_| bad())?;
    let files: Vec<(PathBuf, Vec<u8>)> = entries
        .into_iter()
        .map(|(p, d)| (PathBuf::from(p), d.into_bytes()))
        .collect();
    tracing::warn!(journal = %journal.display(), "rolling forward an interrupted commit");
    apply(&journal, &files)?;
    Ok(true)
}

/// Removes temp files (`.name.tmp.PID.SEQ`) a crash may have left beside the config files — or,
/// when the process recycles inodes, takes them as spares (removing thousands at start would
/// slow every create of the next minutes on ext4 without a journal: see `edeploy_fsutil::Spares`).
pub fn clean_temps(dir: &Path) {
    if let Some(sp) = edeploy_fsutil::spares() {
        sp.adopt(dir);
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if edeploy_fsutil::is_temp_name(&e.file_name().to_string_lossy()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Saves a log upload: an older file of the same name is kept, renamed with its modification time
/// (`NAME.YYYYmmdd-HHMMSS`, UTC), as eDeploy did.
pub fn save_log(dir: &Path, name: &str, data: &[u8]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(name);
    if let Ok(meta) = fs::metadata(&path) {
        let secs = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let base = format!("{name}.{}", timestamp(secs));
        let mut old = dir.join(&base);
        let mut n = 1;
        while old.exists() {
            old = dir.join(format!("{base}.{n}"));
            n += 1;
        }
        fs::rename(&path, &old)?;
    }
    write_files(&[(path.clone(), data.to_vec())])?;
    Ok(path)
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn timestamp(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}")
}

/// `YYYY_mm_dd-HHhMM` in UTC: eDeploy's health session name when none is given.
pub fn session_stamp(secs: u64) -> String {
    let (y, m, d, hh, mm, _) = civil(secs);
    format!("{y:04}_{m:02}_{d:02}-{hh:02}h{mm:02}")
}

/// Unix seconds to a UTC calendar date (Howard Hinnant's days-from-civil, inverted).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(1_700_000_000), "20231114-221320");
        assert_eq!(session_stamp(951_782_400), "2000_02_29-00h00");
    }

    #[test]
    fn journal_rolls_forward() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let loose = d.path().join("hw").join("m.hw");
        fs::create_dir(d.path().join("hw")).unwrap();
        commit(
            d.path(),
            &[(a.clone(), b"1".to_vec()), (b.clone(), b"2".to_vec())],
            &[(loose.clone(), b"hw".to_vec())],
        )
        .unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"1");
        assert_eq!(fs::read(&b).unwrap(), b"2");
        assert_eq!(fs::read(&loose).unwrap(), b"hw");
        assert!(!journal_path(d.path()).exists());
        // Nothing but the files themselves is left (no temp files).
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 3);
        assert_eq!(fs::read_dir(d.path().join("hw")).unwrap().count(), 1);
        // A crash after the journal was written and before the files were: recovery finishes it.
        fs::write(
            journal_path(d.path()),
            serde_json::json!([[a.to_string_lossy(), "x"], [b.to_string_lossy(), "y"]]).to_string(),
        )
        .unwrap();
        assert!(recover(d.path()).unwrap());
        assert_eq!(fs::read(&a).unwrap(), b"x");
        assert_eq!(fs::read(&b).unwrap(), b"y");
        assert!(!recover(d.path()).unwrap());
    }

    #[test]
    fn log_rotation_keeps_the_old_copy() {
        let d = tempfile::tempdir().unwrap();
        save_log(d.path(), "m.log.gz", b"one").unwrap();
        save_log(d.path(), "m.log.gz", b"two").unwrap();
        save_log(d.path(), "m.log.gz", b"three").unwrap();
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(fs::read(d.path().join("m.log.gz")).unwrap(), b"three");
        let olds: Vec<Vec<u8>> = names[1..]
            .iter()
            .map(|n| fs::read(d.path().join(n)).unwrap())
            .collect();
        assert!(olds.contains(&b"one".to_vec()) && olds.contains(&b"two".to_vec()));
    }
}

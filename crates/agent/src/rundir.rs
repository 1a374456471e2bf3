//! The agent's own files (`--run-dir`, default `/var/lib/edeploy/agent`): what it reached
//! (`host_version`, JSON), what it is doing (`status`: `<time> <pid> <version> <status>`), since
//! when it lags (`out_of_sync_since`), and which packages are source checkouts (`vcs/<pkg>`).
//! The ZooKeeper host node is ephemeral, so these files are what survives a restart.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

/// One line of the status file.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub time: u64,
    pub pid: u32,
    pub version: Option<String>,
    /// `deploying`, `done` or `failed`.
    pub status: String,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_opt(path: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Temp file, fsync, rename (see `edeploy_fsutil`), creating the directory first.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    edeploy_fsutil::atomic_write(path, data)
}

fn remove_opt(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> RunDir {
        RunDir { dir: dir.into() }
    }

    pub fn host_version(&self) -> std::io::Result<Option<String>> {
        let Some(text) = read_opt(&self.dir.join("host_version"))? else {
            return Ok(None);
        };
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        Ok(crate::tree::version_text(json.get("version")))
    }

    pub fn set_host_version(&self, version: &str) -> std::io::Result<()> {
        let json = serde_json::json!({ "version": version, "time": now() });
        write_atomic(
            &self.dir.join("host_version"),
            format!("{json}\n").as_bytes(),
        )
    }

    pub fn status(&self) -> std::io::Result<Option<Status>> {
        let Some(text) = read_opt(&self.dir.join("status"))? else {
            return Ok(None);
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("bad status {text:?}"));
        let [time, pid, version, status] = words[..] else {
            return Err(bad());
        };
        Ok(Some(Status {
            time: time.parse().map_err(|_| bad())?,
            pid: pid.parse().map_err(|_| bad())?,
            version: (version != "None").then(|| version.to_string()),
            status: status.into(),
        }))
    }

    pub fn set_status(&self, version: Option<&str>, status: &str) -> std::io::Result<()> {
        let line = format!(
            "{} {} {} {status}\n",
            now(),
            std::process::id(),
            version.unwrap_or("None")
        );
        write_atomic(&self.dir.join("status"), line.as_bytes())
    }

    /// Seconds since the epoch when this host first lagged the cluster, if it lags.
    pub fn out_of_sync_since(&self) -> std::io::Result<Option<u64>> {
        Ok(read_opt(&self.dir.join("out_of_sync_since"))?.and_then(|s| s.trim().parse().ok()))
    }

    /// Records the first time only: later calls keep the original moment.
    pub fn mark_out_of_sync(&self, at: u64) -> std::io::Result<u64> {
        if let Some(since) = self.out_of_sync_since()? {
            return Ok(since);
        }
        write_atomic(
            &self.dir.join("out_of_sync_since"),
            format!("{at}\n").as_bytes(),
        )?;
        Ok(at)
    }

    pub fn mark_in_sync(&self) -> std::io::Result<()> {
        remove_opt(&self.dir.join("out_of_sync_since"))
    }

    /// Package → checked-out version.
    pub fn checkouts(&self) -> std::io::Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        let entries = match fs::read_dir(self.dir.join("vcs")) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                continue;
            }
            out.insert(name, fs::read_to_string(entry.path())?.trim().to_string());
        }
        Ok(out)
    }

    pub fn set_checkout(&self, pkg: &str, version: Option<&str>) -> std::io::Result<()> {
        let path = self.dir.join("vcs").join(pkg);
        match version {
            Some(v) => write_atomic(&path, format!("{v}\n").as_bytes()),
            None => remove_opt(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let r = RunDir::new(dir.path().join("agent"));
        assert_eq!(r.host_version().unwrap(), None);
        assert_eq!(r.status().unwrap(), None);
        r.set_host_version("1.0").unwrap();
        assert_eq!(r.host_version().unwrap(), Some("1.0".into()));
        r.set_status(Some("2.0"), "deploying").unwrap();
        let s = r.status().unwrap().unwrap();
        assert_eq!(
            (s.pid, s.version.as_deref(), s.status.as_str()),
            (std::process::id(), Some("2.0"), "deploying")
        );
        r.set_status(None, "done").unwrap();
        assert_eq!(r.status().unwrap().unwrap().version, None);
        assert_eq!(r.mark_out_of_sync(100).unwrap(), 100);
        assert_eq!(r.mark_out_of_sync(200).unwrap(), 100);
        r.mark_in_sync().unwrap();
        r.mark_in_sync().unwrap();
        assert_eq!(r.out_of_sync_since().unwrap(), None);
        r.set_checkout("app", Some("git://h/a#1")).unwrap();
        assert_eq!(r.checkouts().unwrap()["app"], "git://h/a#1");
        r.set_checkout("app", None).unwrap();
        assert!(r.checkouts().unwrap().is_empty());
    }
}

//! The tree in a text file, for one machine. Every write re-reads the file, edits it and replaces
//! it atomically (temp file, fsync, rename), so an operator's edit between two writes is kept.
//! "Another agent is running" is an `flock` on `FILE.lock`, which the kernel drops with the agent.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use edeploy_fsutil::Lock;

use super::{Store, StoreError};
use crate::tree::{join, Node, Props};
use crate::treefmt::{self, Change};

pub struct FileStore {
    path: PathBuf,
    lock: Option<Lock>,
    seen: Option<SystemTime>,
    /// How often `wait` looks at the file.
    pub poll: Duration,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            lock: None,
            seen: None,
            poll: Duration::from_millis(50),
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn write(&mut self, tree: &Node) -> Result<(), StoreError> {
        let text = treefmt::print(None, tree);
        edeploy_fsutil::atomic_write(&self.path, text.as_bytes()).map_err(|e| self.io(e))
    }

    /// Serialises read-modify-write cycles between the agent and `edeploy zk import` on the
    /// same file (the lock goes with the returned handle).
    fn write_lock(&self) -> Result<Lock, StoreError> {
        let path = PathBuf::from(format!("{}.wlock", self.path.display()));
        Lock::acquire(&path).map_err(|e| self.io(e))
    }

    fn mtime(&self) -> Option<SystemTime> {
        fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Node, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.io(e)),
        };
        treefmt::parse(&text).map_err(|source| StoreError::Format {
            path: self.path.display().to_string(),
            source,
        })
    }

    fn props(&mut self, path: &str) -> Result<Option<Props>, StoreError> {
        Ok(self.load()?.get(path).map(|n| n.props.clone()))
    }

    fn register(&mut self, id: &str, props: &Props) -> Result<(), StoreError> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        let Some(lock) = Lock::try_acquire(&lock_path).map_err(|e| self.io(e))? else {
            return Err(StoreError::AlreadyRunning(join("/hosts", id)));
        };
        self.lock = Some(lock);
        let _w = self.write_lock()?;
        let mut tree = self.load()?;
        tree.ensure(&join("/hosts", id)).props = props.clone();
        self.write(&tree)
    }

    fn update(&mut self, path: &str, edit: &mut dyn FnMut(&mut Props)) -> Result<(), StoreError> {
        let _w = self.write_lock()?;
        let mut tree = self.load()?;
        let node = tree
            .get_mut(path)
            .ok_or_else(|| StoreError::NoNode(path.into()))?;
        let before = node.props.clone();
        edit(&mut node.props);
        if node.props != before {
            self.write(&tree)?;
        }
        Ok(())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let _w = self.write_lock()?;
        let mut tree = self.load()?;
        treefmt::apply(&mut tree, changes);
        self.write(&tree)
    }

    fn lock(&mut self, _app: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn unlock(&mut self, _app: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + timeout;
        if self.seen.is_none() {
            self.seen = self.mtime();
        }
        loop {
            let now = self.mtime();
            if now != self.seen {
                self.seen = now;
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(left.min(self.poll));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn register_update_apply_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tree");
        fs::write(&file, "/hosts\n  version = '1'\n").unwrap();
        let mut s = FileStore::new(&file);
        let props = json!({"name": "h", "version": null})
            .as_object()
            .unwrap()
            .clone();
        s.register("abc", &props).unwrap();
        assert!(matches!(
            FileStore::new(&file).register("abc", &props),
            Err(StoreError::AlreadyRunning(p)) if p == "/hosts/abc"
        ));
        s.update("/hosts", &mut |p| {
            p.insert("version".into(), json!(null));
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "/hosts\n  version = None\n  /abc\n    name = 'h'\n    version = None\n"
        );
        assert!(matches!(
            s.update("/nope", &mut |_| {}),
            Err(StoreError::NoNode(p)) if p == "/nope"
        ));
        let text = treefmt::parse("/a\n  k = 1\n").unwrap();
        let changes = treefmt::import_changes(&s.load().unwrap(), "/", &text, false);
        s.apply(&changes).unwrap();
        assert_eq!(s.props("/a").unwrap().unwrap()["k"], json!(1));
        // Only the tree file and its lock: no temp file left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tree", "tree.lock", "tree.wlock"]);
    }

    #[test]
    fn wait_sees_a_change_or_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tree");
        fs::write(&file, "").unwrap();
        let mut s = FileStore::new(&file);
        let t = Instant::now();
        assert!(!s.wait(Duration::from_millis(120)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(120));
        let f2 = file.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            // A different mtime even on coarse-grained filesystems.
            let f = std::fs::File::options().write(true).open(&f2).unwrap();
            f.set_modified(SystemTime::now() + Duration::from_secs(5))
                .unwrap();
        });
        assert!(s.wait(Duration::from_secs(5)).unwrap());
        writer.join().unwrap();
    }

    #[test]
    fn missing_file_is_an_empty_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(dir.path().join("none"));
        assert_eq!(s.load().unwrap(), Node::default());
    }
}

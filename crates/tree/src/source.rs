//! Where a host gets trees from. The local-directory [`LocalSource`] reads a [`Store`] as the
//! server publishes it; an HTTP source (later) implements the same trait over the server's
//! routes, so install/upgrade code never knows the difference.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::manifest::{hex, unhex32, Hash};
use crate::store::{PackIndex, Store};
use crate::{Error, Result};

pub trait Source: Sync {
    /// Stored manifest bytes of `version`/`role`.
    fn manifest(&self, version: &str, role: &str) -> Result<Vec<u8>>;
    /// Its detached signature, if the server has one.
    fn manifest_signature(&self, version: &str, role: &str) -> Result<Option<Vec<u8>>>;
    /// Record offsets of the pack of a manifest (named by the manifest's hash).
    fn pack_index(&self, manifest: &Hash) -> Result<PackIndex>;
    /// The pack stream from byte `offset` on (HTTP: a Range request).
    fn pack(&self, manifest: &Hash, offset: u64) -> Result<Box<dyn Read + Send>>;
    /// The block signature of a large raw blob (`sigs/ab/HASH`, crate::delta); `None` when
    /// the store has none.
    fn signature(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        let _ = hash;
        Ok(None)
    }
    /// Bytes `start..end` of a stored blob (byte 0 is its tag; HTTP: a bounded `Range`).
    fn blob_range(&self, hash: &Hash, start: u64, end: u64) -> Result<Vec<u8>> {
        let (tag, r) = self.blob(hash)?;
        let mut all = vec![tag];
        r.take(end.saturating_sub(1)).read_to_end(&mut all)?;
        all.get(start as usize..end as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Integrity(format!("blob {} is shorter than {end}", hex(hash))))
    }
    /// Several ranges of one stored blob at once (HTTP: one multi-range request).
    fn blob_ranges(&self, hash: &Hash, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|&(s, e)| self.blob_range(hash, s, e))
            .collect()
    }
    /// One stored blob: `(encoding tag, stored payload)`.
    fn blob(&self, hash: &Hash) -> Result<(u8, Box<dyn Read + Send>)>;
    /// Upgrade metadata `metadata/<from>/<role>/<to>/<name>` (`exclude`, `add_only`, `pre`,
    /// `post`); `None` when absent.
    fn metadata(&self, from: &str, role: &str, to: &str, name: &str) -> Result<Option<Vec<u8>>>;
    /// Target versions with an upgrade path from `from` for `role` (`metadata/<from>/<role>/*`).
    fn upgrades(&self, from: &str, role: &str) -> Result<Vec<String>>;
    /// Human-readable description for messages and the conf file.
    fn describe(&self) -> String;
}

pub struct LocalSource {
    pub store: Store,
    /// eDeploy's METADATADIR (`<from>/<role>/<to>/…`); default `STORE/metadata`.
    pub metadata_dir: PathBuf,
}

impl LocalSource {
    pub fn new(store_dir: impl Into<PathBuf>) -> LocalSource {
        let root: PathBuf = store_dir.into();
        LocalSource {
            metadata_dir: root.join("metadata"),
            store: Store::new(root),
        }
    }
}

fn not_found(e: io::Error, what: String) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(what)
    } else {
        Error::Io(e)
    }
}

impl Source for LocalSource {
    fn manifest(&self, version: &str, role: &str) -> Result<Vec<u8>> {
        let p = self.store.manifest_path(version, role);
        std::fs::read(&p).map_err(|e| not_found(e, format!("manifest {version}/{role}")))
    }

    fn manifest_signature(&self, version: &str, role: &str) -> Result<Option<Vec<u8>>> {
        let p = self
            .store
            .manifest_path(version, role)
            .with_extension("manifest.sig");
        match std::fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn pack_index(&self, manifest: &Hash) -> Result<PackIndex> {
        let b = std::fs::read(self.store.pack_index_path(manifest))
            .map_err(|e| not_found(e, format!("pack index {}", hex(manifest))))?;
        let idx: PackIndex = serde_json::from_slice(&b)?;
        if unhex32(&idx.manifest)? != *manifest {
            return Err(Error::Integrity("pack index names another manifest".into()));
        }
        Ok(idx)
    }

    fn pack(&self, manifest: &Hash, offset: u64) -> Result<Box<dyn Read + Send>> {
        let mut f = File::open(self.store.pack_path(manifest))
            .map_err(|e| not_found(e, format!("pack {}", hex(manifest))))?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn blob(&self, hash: &Hash) -> Result<(u8, Box<dyn Read + Send>)> {
        let (tag, f) = self.store.open_blob(hash)?;
        Ok((tag, Box::new(io::BufReader::new(f))))
    }

    fn signature(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.store.sig_path(hash)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn blob_range(&self, hash: &Hash, start: u64, end: u64) -> Result<Vec<u8>> {
        let f = File::open(self.store.blob_path(hash))
            .map_err(|e| not_found(e, format!("blob {}", hex(hash))))?;
        let mut buf = vec![0u8; end.saturating_sub(start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, start)?;
        Ok(buf)
    }

    fn metadata(&self, from: &str, role: &str, to: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.metadata_dir.join(from).join(role).join(to).join(name);
        match std::fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn upgrades(&self, from: &str, role: &str) -> Result<Vec<String>> {
        let dir = self.metadata_dir.join(from).join(role);
        let mut out = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for de in rd {
                    let de = de?;
                    if de.file_type()?.is_dir() {
                        out.push(de.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        self.store.root.display().to_string()
    }
}

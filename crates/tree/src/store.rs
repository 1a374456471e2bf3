//! The server-side blob store, laid out on disk as the server will publish it:
//!
//! ```text
//! STORE/blobs/ab/abcd…(64 hex)      tag byte (0 raw, 1 zstd) + payload
//! STORE/manifests/VERSION/ROLE.manifest   stored manifest bytes (+ .sig: 64 raw bytes)
//! STORE/packs/MANIFESTHASH.pack     all blobs of a manifest, first-use order, one stream
//! STORE/packs/MANIFESTHASH.idx      JSON: record offsets, so a reader can resume mid-pack
//! STORE/sigs/ab/abcd…               block signature of a large raw blob (crate::delta)
//! ```
//!
//! Blobs are written to a temp name and renamed, so a crashed `index` never leaves a blob
//! whose name lies about its content.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::delta;
use crate::fsutil::{join, PayloadReader};
use crate::install::payload_len;
use crate::manifest::{self, hex, manifest_hash, unhex32, Hash, Kind, Manifest};
use crate::stream::{self, HashVerify, PACK_MAGIC, RECORD_HEADER, TAG_RAW, TAG_ZSTD};
use crate::{Error, Result};

pub struct Store {
    pub root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackIndex {
    pub manifest: String,
    /// Total pack length in bytes.
    pub size: u64,
    /// `(hash hex, offset of the record header, stored length)` in pack order.
    pub records: Vec<(String, u64, u64)>,
}

/// Unique file hashes of a manifest in first-use order (the pack order).
pub fn pack_order(m: &Manifest) -> Vec<(Hash, &[u8])> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in &m.entries {
        if let Kind::File { hash, .. } = &e.kind {
            if seen.insert(*hash) {
                out.push((*hash, e.path.as_slice()));
            }
        }
    }
    out
}

fn tmp_name(dir: &Path, base: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        ".{base}.tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Write `bytes` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = tmp_name(dir, "w");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn blob_path(&self, h: &Hash) -> PathBuf {
        let x = hex(h);
        self.root.join("blobs").join(&x[..2]).join(x)
    }

    pub fn manifest_path(&self, version: &str, role: &str) -> PathBuf {
        self.root
            .join("manifests")
            .join(version)
            .join(format!("{role}.manifest"))
    }

    pub fn pack_path(&self, mhash: &Hash) -> PathBuf {
        self.root.join("packs").join(format!("{}.pack", hex(mhash)))
    }

    pub fn pack_index_path(&self, mhash: &Hash) -> PathBuf {
        self.root.join("packs").join(format!("{}.idx", hex(mhash)))
    }

    /// Index `tree` as `version`/`role`: manifest (signed when a key is given), missing blobs,
    /// pack and pack index. Returns the manifest and its hash.
    pub fn index(
        &self,
        tree: &Path,
        version: &str,
        role: &str,
        key: Option<&ed25519_dalek::SigningKey>,
    ) -> Result<(Manifest, Hash)> {
        let m = crate::index::index_tree(tree, version, role)?;
        let order = pack_order(&m);
        order.par_iter().try_for_each(|(h, path)| -> Result<()> {
            let e = m.get(path).expect("path from the manifest");
            let Kind::File { size, extents, .. } = &e.kind else {
                unreachable!()
            };
            if !self.blob_path(h).exists() {
                self.write_blob(&join(tree, path), *size, extents.as_deref(), h)?;
            }
            if payload_len(*size, extents.as_deref()) >= delta::MIN_SIZE {
                self.write_signature(h)?;
            }
            Ok(())
        })?;
        let bytes = m.to_bytes()?;
        let mh = manifest_hash(&bytes);
        self.write_pack(&m, &mh)?;
        let mp = self.manifest_path(version, role);
        if let Some(k) = key {
            write_atomic(
                &mp.with_extension("manifest.sig"),
                &manifest::sign(&bytes, k),
            )?;
        } else {
            let _ = fs::remove_file(mp.with_extension("manifest.sig"));
        }
        // The manifest goes last: once it is visible, its blobs and pack are all there.
        write_atomic(&mp, &bytes)?;
        Ok((m, mh))
    }

    /// Store one file's payload, zstd-compressed when that saves at least 1/16 (else raw: no
    /// point paying decompression for incompressible data). The hash is re-checked while
    /// copying, so a file changed during indexing fails loudly instead of storing a lie.
    fn write_blob(
        &self,
        src: &Path,
        size: u64,
        ext: Option<&[(u64, u64)]>,
        h: &Hash,
    ) -> Result<()> {
        let dst = self.blob_path(h);
        let dir = dst.parent().unwrap();
        fs::create_dir_all(dir)?;
        let tmp = tmp_name(dir, "blob");
        let res = (|| -> Result<()> {
            let payload = HashVerify::new(PayloadReader::new(File::open(src)?, size, ext), *h);
            let mut out = BufWriter::new(File::create(&tmp)?);
            out.write_all(&[TAG_ZSTD])?;
            let mut enc = zstd::Encoder::new(out, 3)?;
            let mut payload = payload;
            let n = io::copy(&mut payload, &mut enc)?;
            let out = enc.finish()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            let stored = file.metadata()?.len() - 1;
            if stored + stored / 15 >= n {
                drop(file);
                let mut out = BufWriter::new(File::create(&tmp)?);
                out.write_all(&[TAG_RAW])?;
                let mut payload =
                    HashVerify::new(PayloadReader::new(File::open(src)?, size, ext), *h);
                io::copy(&mut payload, &mut out)?;
                out.flush()?;
            }
            fs::rename(&tmp, &dst)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(|e| match e {
            Error::Io(io) => Error::Io(io::Error::new(
                io.kind(),
                format!("{}: {io}", src.display()),
            )),
            e => e,
        })
    }

    pub fn sig_path(&self, h: &Hash) -> PathBuf {
        self.root.join(delta::sig_route(h))
    }

    /// The block signature of a large raw blob (docs/tree.md "Deltas"), if not there yet.
    /// Compressed blobs get none: their bytes cannot be fetched by content offset.
    fn write_signature(&self, h: &Hash) -> Result<()> {
        let dst = self.sig_path(h);
        if dst.exists() {
            return Ok(());
        }
        let (tag, f) = self.open_blob(h)?;
        if tag != TAG_RAW {
            return Ok(());
        }
        let sig = delta::signature(io::BufReader::with_capacity(1 << 20, f))?;
        Ok(write_atomic(&dst, &sig)?)
    }

    fn write_pack(&self, m: &Manifest, mh: &Hash) -> Result<()> {
        let pp = self.pack_path(mh);
        if pp.exists() && self.pack_index_path(mh).exists() {
            return Ok(());
        }
        let dir = pp.parent().unwrap();
        fs::create_dir_all(dir)?;
        let tmp = tmp_name(dir, "pack");
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(PACK_MAGIC)?;
        let mut off = PACK_MAGIC.len() as u64;
        let mut records = Vec::new();
        for (h, _) in pack_order(m) {
            let mut blob = File::open(self.blob_path(&h))?;
            let len = blob.metadata()?.len();
            let mut tag = [0u8];
            blob.read_exact(&mut tag)?;
            stream::write_record_header(&mut out, &h, tag[0], len - 1)?;
            io::copy(&mut blob, &mut out)?;
            records.push((hex(&h), off, len - 1));
            off += RECORD_HEADER + len - 1;
        }
        out.flush()?;
        drop(out);
        let idx = PackIndex {
            manifest: hex(mh),
            size: off,
            records,
        };
        write_atomic(&self.pack_index_path(mh), &serde_json::to_vec(&idx)?)?;
        fs::rename(&tmp, &pp)?;
        Ok(())
    }

    /// Open a stored blob: `(tag, reader over the stored payload)`.
    pub fn open_blob(&self, h: &Hash) -> Result<(u8, File)> {
        let mut f = File::open(self.blob_path(h))
            .map_err(|_| Error::NotFound(format!("blob {}", hex(h))))?;
        let mut tag = [0u8];
        f.read_exact(&mut tag)?;
        Ok((tag[0], f))
    }
}

impl PackIndex {
    pub fn offsets(&self) -> Result<Vec<(Hash, u64)>> {
        self.records
            .iter()
            .map(|(h, off, _)| Ok((unhex32(h)?, *off)))
            .collect()
    }
}

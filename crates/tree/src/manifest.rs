//! The manifest: the contract between the server (which indexes `install/<version>/<role>/`) and
//! hosts. Format (documented in docs/tree.md): a zstd frame (with its content checksum, so a
//! corrupted manifest never parses) holding JSON lines — one header line, then one line per entry,
//! sorted by path bytes (so a parent always precedes its children). The manifest's identity is
//! the BLAKE3 of those stored bytes; an optional detached ed25519 signature signs the same bytes.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::pathenc::{decode, encode};
use crate::{Error, Result};

pub const FORMAT: &str = "edeploy-manifest";
pub const FORMAT_VERSION: u32 = 1;

/// A BLAKE3 hash (content of a file, or of a manifest's stored bytes).
pub type Hash = [u8; 32];

pub fn hex(h: &[u8]) -> String {
    let mut s = String::with_capacity(h.len() * 2);
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if s.len() & 1 == 1 {
        return Err(Error::Format(format!("odd-length hex {s:?}")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| Error::Format(format!("bad hex {s:?}")))
        })
        .collect()
}

pub fn unhex32(s: &str) -> Result<Hash> {
    unhex(s)?
        .try_into()
        .map_err(|_| Error::Format(format!("not a 32-byte hash: {s:?}")))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file. `hash` is the BLAKE3 of its *payload*: the bytes of its data extents in order
    /// (the whole content for a dense file). `extents` is `None` for a dense file, else the
    /// `(offset, len)` data extents of a sparse file (holes read as zeros), so a 2 GB sparse
    /// file travels and hashes as its few data blocks.
    File {
        size: u64,
        hash: Hash,
        extents: Option<Vec<(u64, u64)>>,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// Another name of the regular file at `target` (the first path of the group in manifest
    /// order). Its metadata is the target's.
    Hardlink {
        target: Vec<u8>,
    },
    Char {
        rdev: u64,
    },
    Block {
        rdev: u64,
    },
    Fifo,
}

impl Kind {
    /// One letter, as in the serialised form and in rsync's itemised output.
    pub fn letter(&self) -> char {
        match self {
            Kind::File { .. } => 'f',
            Kind::Dir => 'd',
            Kind::Symlink { .. } => 'L',
            Kind::Hardlink { .. } => 'h',
            Kind::Char { .. } | Kind::Block { .. } | Kind::Fifo => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative path bytes, no leading `/`, never empty (the root itself is not an entry).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Extended attributes (name → value), security.capability included.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Entry {
    pub fn file_hash(&self) -> Option<&Hash> {
        match &self.kind {
            Kind::File { hash, .. } => Some(hash),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    pub version: String,
    pub role: String,
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    v: u32,
    version: String,
    role: String,
    entries: usize,
}

/// One serialised entry. Short keys: a 7,000-entry tree is ~1 MB of JSON, ~200 KB zstd'd.
#[derive(Serialize, Deserialize, Default)]
struct Line {
    p: String,
    t: char,
    m: u32,
    u: u32,
    g: u32,
    mt: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    ns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<Vec<(u64, u64)>>,
    /// Symlink target or hardlink target path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    x: BTreeMap<String, String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Manifest {
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// Entry lookup by path (entries are sorted).
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Serialise to the stored form (zstd'd JSON lines).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut enc = zstd::Encoder::new(Vec::new(), 9)?;
        enc.include_checksum(true)?;
        let header = Header {
            format: FORMAT.into(),
            v: FORMAT_VERSION,
            version: self.version.clone(),
            role: self.role.clone(),
            entries: self.entries.len(),
        };
        serde_json::to_writer(&mut enc, &header)?;
        enc.write_all(b"\n")?;
        for e in &self.entries {
            let mut l = Line {
                p: encode(&e.path),
                m: e.mode,
                u: e.uid,
                g: e.gid,
                mt: e.mtime,
                ns: e.mtime_nsec,
                ..Line::default()
            };
            l.t = match &e.kind {
                Kind::File {
                    size,
                    hash,
                    extents,
                } => {
                    l.s = Some(*size);
                    l.h = Some(hex(hash));
                    l.e = extents.clone();
                    'f'
                }
                Kind::Dir => 'd',
                Kind::Symlink { target } => {
                    l.l = Some(encode(target));
                    'l'
                }
                Kind::Hardlink { target } => {
                    l.l = Some(encode(target));
                    'h'
                }
                Kind::Char { rdev } => {
                    l.r = Some(*rdev);
                    'c'
                }
                Kind::Block { rdev } => {
                    l.r = Some(*rdev);
                    'b'
                }
                Kind::Fifo => 'p',
            };
            for (k, v) in &e.xattrs {
                l.x.insert(encode(k), hex(v));
            }
            serde_json::to_writer(&mut enc, &l)?;
            enc.write_all(b"\n")?;
        }
        Ok(enc.finish()?)
    }

    /// Parse the stored form. Any corruption (zstd checksum, JSON, unknown type, unsorted or
    /// duplicate paths, unsafe paths) is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest> {
        let dec = zstd::Decoder::new(bytes)?;
        let mut lines = std::io::BufReader::new(dec).lines();
        let first = lines
            .next()
            .ok_or_else(|| Error::Format("empty manifest".into()))??;
        let header: Header = serde_json::from_str(&first)?;
        if header.format != FORMAT || header.v != FORMAT_VERSION {
            return Err(Error::Format(format!(
                "not an {FORMAT} v{FORMAT_VERSION}: {} v{}",
                header.format, header.v
            )));
        }
        let mut m = Manifest {
            version: header.version,
            role: header.role,
            entries: Vec::with_capacity(header.entries),
        };
        for line in lines {
            let l: Line = serde_json::from_str(&line?)?;
            let path = decode(&l.p)?;
            check_rel_path(&path)?;
            let target = || -> Result<Vec<u8>> {
                decode(
                    l.l.as_deref()
                        .ok_or_else(|| Error::Format(format!("{}: missing link target", l.p)))?,
                )
            };
            let rdev = || {
                l.r.ok_or_else(|| Error::Format(format!("{}: missing rdev", l.p)))
            };
            let kind = match l.t {
                'f' => Kind::File {
                    size: l
                        .s
                        .ok_or_else(|| Error::Format(format!("{}: missing size", l.p)))?,
                    hash: unhex32(
                        l.h.as_deref()
                            .ok_or_else(|| Error::Format(format!("{}: missing hash", l.p)))?,
                    )?,
                    extents: l.e.clone(),
                },
                'd' => Kind::Dir,
                'l' => Kind::Symlink { target: target()? },
                'h' => {
                    let t = target()?;
                    check_rel_path(&t)?;
                    Kind::Hardlink { target: t }
                }
                'c' => Kind::Char { rdev: rdev()? },
                'b' => Kind::Block { rdev: rdev()? },
                'p' => Kind::Fifo,
                t => return Err(Error::Format(format!("{}: unknown type {t:?}", l.p))),
            };
            let mut xattrs = BTreeMap::new();
            for (k, v) in &l.x {
                xattrs.insert(decode(k)?, unhex(v)?);
            }
            if let Some(prev) = m.entries.last() {
                if prev.path >= path {
                    return Err(Error::Format(format!("{}: paths not sorted/unique", l.p)));
                }
            }
            m.entries.push(Entry {
                path,
                kind,
                mode: l.m & 0o7777,
                uid: l.u,
                gid: l.g,
                mtime: l.mt,
                mtime_nsec: l.ns,
                xattrs,
            });
        }
        if m.entries.len() != header.entries {
            return Err(Error::Format(format!(
                "manifest truncated: {} of {} entries",
                m.entries.len(),
                header.entries
            )));
        }
        Ok(m)
    }
}

/// Paths from the network must stay inside the root: relative, no `.`/`..`/empty components,
/// no NUL.
pub fn check_rel_path(p: &[u8]) -> Result<()> {
    let bad = p.is_empty()
        || p[0] == b'/'
        || p.contains(&0)
        || p.split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(Error::Format(format!(
            "unsafe path {:?}",
            String::from_utf8_lossy(p)
        )));
    }
    Ok(())
}

/// BLAKE3 of a manifest's stored bytes: its identity (names its pack).
pub fn manifest_hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// Detached ed25519 signature of a manifest's stored bytes.
pub fn sign(bytes: &[u8], key: &ed25519_dalek::SigningKey) -> [u8; 64] {
    use ed25519_dalek::Signer;
    key.sign(bytes).to_bytes()
}

pub fn verify_signature(bytes: &[u8], sig: &[u8], key: &ed25519_dalek::VerifyingKey) -> Result<()> {
    let sig = ed25519_dalek::Signature::from_slice(sig)
        .map_err(|_| Error::Signature("malformed signature".into()))?;
    key.verify_strict(bytes, &sig)
        .map_err(|_| Error::Signature("manifest signature does not verify".into()))
}

/// Keys on disk are hex text (64 chars): the 32-byte secret seed, or the 32-byte public key.
pub fn read_signing_key(path: &std::path::Path) -> Result<ed25519_dalek::SigningKey> {
    let b = unhex(std::fs::read_to_string(path)?.trim())?;
    let seed: [u8; 32] = b
        .try_into()
        .map_err(|_| Error::Signature("signing key must be 32 bytes hex".into()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

pub fn parse_verifying_key(text: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let b: [u8; 32] = unhex(text.trim())?
        .try_into()
        .map_err(|_| Error::Signature("public key must be 32 bytes hex".into()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&b)
        .map_err(|_| Error::Signature("invalid public key".into()))
}

/// A new signing key from the kernel's CSPRNG.
pub fn generate_signing_key() -> Result<ed25519_dalek::SigningKey> {
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

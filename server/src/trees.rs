//! Tree routes (DESIGN §4 "Trees, over the same HTTP server"): read-only access to the store
//! `edeploy-server index` publishes and to eDeploy's METADATADIR.
//!
//! ```text
//! GET|HEAD /trees/<path>                  STOREDIR/<path>: manifests/V/R.manifest[.sig],
//!                                         packs/H.pack (Range), packs/H.idx, blobs/ab/H,
//!                                         upgrades/FROM/ROLE
//! GET|HEAD /metadata/FROM/ROLE/TO/NAME    METADATADIR/FROM/ROLE/TO/NAME
//! ```
//!
//! `/trees/` mirrors the store layout on purpose: a static web server pointed at STOREDIR
//! serves the same URLs. This module holds the pure parts (route, path validation, `Range`
//! parsing), unit-tested; the embedded server streams the file (`http.rs`).

use std::path::{Path, PathBuf};

use edeploy_spec::conf::ServerConf;

/// Longest request path accepted on the tree routes.
const MAX_PATH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// Hostile or malformed path: 400.
    BadPath(String),
    /// Nothing (or no regular file) there: 404.
    NotFound(String),
    /// Unreadable config or I/O error: 500.
    Internal(String),
}

impl TreeError {
    pub fn status(&self) -> u16 {
        match self {
            TreeError::BadPath(_) => 400,
            TreeError::NotFound(_) => 404,
            TreeError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            TreeError::BadPath(s) | TreeError::NotFound(s) | TreeError::Internal(s) => s,
        }
    }
}

/// Which directory a tree request reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Store,
    Metadata,
}

/// Is this a tree route? (`GET`/`HEAD` on `/trees/…` or `/metadata/…`; the query is ignored.)
pub fn is_tree_request(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD")
        && (path.starts_with("/trees/") || path.starts_with("/metadata/"))
}

/// Decodes `%XX` escapes once. `None` on a malformed escape.
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            let h = std::str::from_utf8(h).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The components of a request path after its route prefix, refusing anything that could leave
/// the served directory or that no store name ever contains: `..`/`.`/empty components (so no
/// absolute path and no `//`), NUL and control characters, `\`, and a `%` left after decoding
/// (a double-encoded `%252e%252e` stays refused instead of becoming `..` in a later layer).
pub fn split_path(rel: &str) -> Result<Vec<String>, TreeError> {
    let bad = |why: &str| TreeError::BadPath(format!("bad tree path: {why}"));
    if rel.len() > MAX_PATH {
        return Err(bad("too long"));
    }
    let rel = rel.split('?').next().unwrap_or("");
    let decoded = percent_decode(rel.as_bytes()).ok_or_else(|| bad("malformed %-escape"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
    if decoded.is_empty() {
        return Err(bad("empty"));
    }
    if decoded.contains(['\\', '%']) || decoded.chars().any(char::is_control) {
        return Err(bad("backslash, %, NUL or control character"));
    }
    let comps: Vec<String> = decoded.split('/').map(str::to_string).collect();
    if comps.iter().any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("empty, `.` or `..` component (or an absolute path)"));
    }
    Ok(comps)
}

/// Maps a request path to `(area, components)`. `None`: not a tree route.
pub fn route(path: &str) -> Option<Result<(Area, Vec<String>), TreeError>> {
    let path = path.split('?').next().unwrap_or("");
    if let Some(rel) = path.strip_prefix("/trees/") {
        return Some(split_path(rel).map(|c| (Area::Store, c)));
    }
    let rel = path.strip_prefix("/metadata/")?;
    Some(split_path(rel).and_then(|c| {
        if c.len() == 4 {
            Ok((Area::Metadata, c))
        } else {
            Err(TreeError::BadPath(
                "metadata path must be /metadata/FROM/ROLE/TO/NAME".into(),
            ))
        }
    }))
}

/// Resolves a request to a regular file inside the area's directory. The canonical path must
/// stay under the canonical root, so a symlink planted in the store cannot point out of it.
pub fn resolve(conf: &ServerConf, path: &str) -> Result<PathBuf, TreeError> {
    let (area, comps) = route(path).ok_or_else(|| TreeError::NotFound(path.to_string()))??;
    let root = match area {
        Area::Store => &conf.store_dir,
        Area::Metadata => &conf.metadata_dir,
    };
    resolve_in(root, &comps)
}

pub fn resolve_in(root: &Path, comps: &[String]) -> Result<PathBuf, TreeError> {
    let shown = comps.join("/");
    let missing = || TreeError::NotFound(format!("no {shown}"));
    let root = root.canonicalize().map_err(|_| missing())?;
    let mut p = root.clone();
    p.extend(comps);
    let p = p.canonicalize().map_err(|_| missing())?;
    if !p.starts_with(&root) {
        return Err(TreeError::BadPath(format!(
            "{shown} leads out of the store"
        )));
    }
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(missing()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
        Err(e) => Err(TreeError::Internal(format!("{shown}: {e}"))),
    }
}

/// What to send of a file of `len` bytes for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 206 `multipart/byteranges` with each `(start, end)` (inclusive), in the order asked.
    Parts(Vec<(u64, u64)>),
    /// 416 (`Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Most ranges one multi-range request may ask for, and most bytes they may add up to; past
/// either the header is ignored (the whole file is sent, as the RFC allows).
pub const MAX_PARTS: usize = 256;
pub const MAX_PARTS_BYTES: u64 = 16 << 20;

/// Parses a `Range` header (RFC 9110 §14): `bytes=A-B`, `bytes=A-`, `bytes=-N`, or several of
/// them separated by commas. A malformed header, another unit or too many ranges are ignored
/// (the whole file is sent, which the RFC allows); a client that asked for an offset checks
/// for the 206. Of several ranges the unsatisfiable ones are dropped; none left is a 416.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(h) = header else {
        return ByteRange::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return ByteRange::Full;
    };
    let specs: Vec<&str> = spec.split(',').collect();
    if specs.len() > MAX_PARTS {
        return ByteRange::Full;
    }
    let mut parts = Vec::new();
    for one in specs {
        match parse_one(one, len) {
            None => return ByteRange::Full,
            Some(None) => {}
            Some(Some(r)) => parts.push(r),
        }
    }
    match parts.len() {
        0 => ByteRange::Unsatisfiable,
        1 => ByteRange::Part {
            start: parts[0].0,
            end: parts[0].1,
        },
        _ if parts
            .iter()
            .fold(0u64, |n, (s, e)| n.saturating_add(e - s + 1))
            > MAX_PARTS_BYTES =>
        {
            ByteRange::Full
        }
        _ => ByteRange::Parts(parts),
    }
}

/// One range spec: `None` malformed, `Some(None)` unsatisfiable, else `(start, end)`.
fn parse_one(spec: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let (a, b) = spec.trim().split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => None,
        // Suffix: the last N bytes.
        (true, false) => match num(b)? {
            0 => Some(None),
            _ if len == 0 => Some(None),
            n => Some(Some((len.saturating_sub(n), len - 1))),
        },
        (false, open) => {
            let start = num(a)?;
            let end = if open {
                u64::MAX
            } else {
                Some(num(b)?).filter(|&e| e >= start)?
            };
            Some((start < len).then(|| (start, end.min(len - 1))))
        }
    }
}

/// Content type by name: the upgrade lists and metadata files are text, the rest bytes.
pub fn content_type(area: Area, path: &str) -> &'static str {
    if area == Area::Metadata || path.starts_with("/trees/upgrades/") {
        "text/plain; charset=utf-8"
    } else if path.ends_with(".idx") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "/trees/../etc/passwd",
            "/trees/manifests/../../x",
            "/trees/%2e%2e/x",
            "/trees/%2E%2E/x",
            "/trees/%252e%252e/x",
            "/trees//etc/passwd",
            "/trees/a//b",
            "/trees/./a",
            "/trees/a\\..\\b",
            "/trees/a%5c..%5cb",
            "/trees/a%00b",
            "/trees/a%0ab",
            "/trees/a%zz",
            "/trees/a%2",
            "/trees/%ff",
            "/trees/",
            "/metadata/1/base/2",
            "/metadata/1/base/2/pre/x",
            "/metadata/1/../2/pre",
        ] {
            let r = route(p).expect("a tree route");
            assert!(matches!(r, Err(TreeError::BadPath(_))), "{p} gave {r:?}");
        }
        assert!(route("/upload").is_none());
        assert!(route("/treesx").is_none());
    }

    #[test]
    fn good_paths_map_to_components() {
        assert_eq!(
            route("/trees/manifests/D7-H.1.0/base.manifest?x=1")
                .unwrap()
                .unwrap(),
            (
                Area::Store,
                vec![
                    "manifests".into(),
                    "D7-H.1.0".into(),
                    "base.manifest".into()
                ]
            )
        );
        assert_eq!(
            route("/metadata/1/base/2/pre").unwrap().unwrap().0,
            Area::Metadata
        );
        assert_eq!(route("/trees/a%2db").unwrap().unwrap().1, vec!["a-b"]);
    }

    #[test]
    fn resolve_stays_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        std::fs::create_dir_all(store.join("packs")).unwrap();
        std::fs::write(store.join("packs/a.pack"), b"x").unwrap();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), store.join("packs/evil")).unwrap();
        let c = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(resolve_in(&store, &c("packs/a.pack")).is_ok());
        assert!(matches!(
            resolve_in(&store, &c("packs/evil")),
            Err(TreeError::BadPath(_))
        ));
        assert!(matches!(
            resolve_in(&store, &c("packs")),
            Err(TreeError::NotFound(_))
        ));
        assert!(matches!(
            resolve_in(&store, &c("packs/none")),
            Err(TreeError::NotFound(_))
        ));
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        let r = |h: &str, len| parse_range(Some(h), len);
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-", 10), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=4-", 10), Part { start: 4, end: 9 });
        assert_eq!(r("bytes=4-6", 10), Part { start: 4, end: 6 });
        assert_eq!(r("bytes=4-600", 10), Part { start: 4, end: 9 });
        assert_eq!(r("bytes=-3", 10), Part { start: 7, end: 9 });
        assert_eq!(r("bytes=-30", 10), Part { start: 0, end: 9 });
        assert_eq!(r(" bytes= 9 - ", 10), Part { start: 9, end: 9 });
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
        assert_eq!(r("bytes=1-2,4-5", 10), Parts(vec![(1, 2), (4, 5)]));
        // Unsatisfiable members dropped; one left is a plain part, none a 416.
        assert_eq!(r("bytes=1-2,40-50,-3", 10), Parts(vec![(1, 2), (7, 9)]));
        assert_eq!(r("bytes=40-50, 3-3", 10), Part { start: 3, end: 3 });
        assert_eq!(r("bytes=40-50,60-", 10), Unsatisfiable);
        let many = vec!["0-0"; MAX_PARTS + 1].join(",");
        let too_big = format!("bytes=0-{},0-0", MAX_PARTS_BYTES);
        // Ignored: whole file.
        for h in [
            "bytes=6-4",
            "bytes=a-",
            "bytes=-",
            "bytes=1-2,4-x",
            &format!("bytes={many}"),
            &too_big,
            "items=1-",
            "bytes=+1-",
            "bytes=1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(h, MAX_PARTS_BYTES * 2), Full, "{h}");
        }
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode(b"a%20b%2F").unwrap(), b"a b/");
        assert!(percent_decode(b"%4").is_none());
        assert!(percent_decode(b"%g0").is_none());
    }
}

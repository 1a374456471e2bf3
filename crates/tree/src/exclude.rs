//! eDeploy's `exclude` / `add_only` files: one rsync-style pattern per line (`#` comments and
//! blank lines ignored). A leading `/` anchors at the root (we always anchor: paths are
//! relative to the root); a trailing `/` is dropped; a pattern without `/` matches a name at any
//! depth (as rsync does); `*` does not cross `/`, `**` does. A path is matched when it or any of
//! its ancestors matches, so excluding a directory excludes everything under it.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Patterns {
    set: GlobSet,
    empty: bool,
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            set: GlobSet::empty(),
            empty: true,
        }
    }
}

impl Patterns {
    pub fn parse(text: &str) -> Result<Patterns> {
        let mut b = GlobSetBuilder::new();
        let mut empty = true;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let anchored = line.starts_with('/');
            let pat = line.trim_start_matches('/').trim_end_matches('/');
            if pat.is_empty() {
                continue;
            }
            let full = if !anchored && !pat.contains('/') {
                format!("{{{pat},**/{pat}}}")
            } else {
                pat.to_string()
            };
            let g = GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Other(format!("bad pattern {line:?}: {e}")))?;
            b.add(g);
            empty = false;
        }
        Ok(Patterns {
            set: b
                .build()
                .map_err(|e| Error::Other(format!("patterns: {e}")))?,
            empty,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Does the pattern set match `path` or one of its ancestors?
    pub fn matches(&self, path: &[u8]) -> bool {
        if self.empty {
            return false;
        }
        let s = String::from_utf8_lossy(path);
        let mut end = s.len();
        loop {
            if self.set.is_match(&s[..end]) {
                return true;
            }
            match s[..end].rfind('/') {
                Some(i) => end = i,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edeploy_style_patterns() {
        let p = Patterns::parse("# comment\n/etc/fstab\nvar/log/*\n*.pyc\n/srv/\n").unwrap();
        assert!(p.matches(b"etc/fstab"));
        assert!(!p.matches(b"etc/fstab2"));
        assert!(p.matches(b"var/log/syslog"));
        assert!(p.matches(b"var/log/apt/history.log"));
        assert!(!p.matches(b"var/log"));
        assert!(p.matches(b"usr/lib/x.pyc"));
        assert!(p.matches(b"srv"));
        assert!(p.matches(b"srv/www/index.html"));
        assert!(!p.matches(b"usr/bin/ls"));
        assert!(!Patterns::default().matches(b"x"));
    }
}

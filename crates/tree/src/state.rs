//! Host state under `ROOT/var/lib/edeploy/` (DESIGN §3 Host state): eDeploy's `conf`
//! (`KEY=VALUE` lines: `VERS=`, `ROLE=`, `SERV=`, `HTTP_PORT=`, …) and the stored bytes of the
//! installed manifest (`manifest`).

use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::store::write_atomic;
use crate::{Error, Result};

pub fn state_dir(root: &Path) -> PathBuf {
    root.join("var/lib/edeploy")
}

pub fn conf_path(root: &Path) -> PathBuf {
    state_dir(root).join("conf")
}

pub fn manifest_path(root: &Path) -> PathBuf {
    state_dir(root).join("manifest")
}

/// eDeploy's conf: ordered `KEY=VALUE` lines; other lines (comments) are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conf {
    lines: Vec<String>,
}

impl Conf {
    pub fn parse(text: &str) -> Conf {
        Conf {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    pub fn read(root: &Path) -> Result<Conf> {
        match std::fs::read_to_string(conf_path(root)) {
            Ok(t) => Ok(Conf::parse(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Conf::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\''))
        })
    }

    pub fn set(&mut self, key: &str, value: &str) {
        let line = format!("{key}={value}");
        match self
            .lines
            .iter_mut()
            .find(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        {
            Some(l) => *l = line,
            None => self.lines.push(line),
        }
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    pub fn write(&self, root: &Path) -> Result<()> {
        Ok(write_atomic(&conf_path(root), self.text().as_bytes())?)
    }
}

/// The installed manifest (its stored bytes and parsed form).
pub fn read_installed(root: &Path) -> Result<(Manifest, Vec<u8>)> {
    let p = manifest_path(root);
    let bytes = std::fs::read(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound(format!("no installed manifest at {}", p.display()))
        } else {
            e.into()
        }
    })?;
    Ok((Manifest::from_bytes(&bytes)?, bytes))
}

pub fn write_installed(root: &Path, bytes: &[u8]) -> Result<()> {
    Ok(write_atomic(&manifest_path(root), bytes)?)
}

/// Record a fresh install: the installed manifest and the conf. Creating `var/lib/edeploy`
/// changes the mtime of its parents; when the tree has them, their manifest metadata is put
/// back so `verify` stays clean.
pub fn record_install(root: &Path, m: &Manifest, bytes: &[u8], conf: &Conf) -> Result<()> {
    write_installed(root, bytes)?;
    conf.write(root)?;
    for p in [&b"var/lib/edeploy"[..], b"var/lib", b"var"] {
        if let Some(e) = m.get(p) {
            let full = crate::fsutil::join(root, p);
            crate::fsutil::apply_meta(&full, e).map_err(|err| crate::install::ctx(&full, err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_keeps_lines_and_order() {
        let mut c = Conf::parse("# eDeploy\nVERS=D7-H.1.0.0\nROLE=base\nSERV=10.0.0.1\n");
        assert_eq!(c.get("ROLE"), Some("base"));
        c.set("VERS", "D7-H.1.1.0");
        c.set("HTTP_PORT", "80");
        assert_eq!(
            c.text(),
            "# eDeploy\nVERS=D7-H.1.1.0\nROLE=base\nSERV=10.0.0.1\nHTTP_PORT=80\n"
        );
        assert_eq!(Conf::parse("A='x'\n").get("A"), Some("x"));
    }
}

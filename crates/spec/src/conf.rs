//! `edeploy.conf`: eDeploy's INI file, read as Python's `ConfigParser` reads it (case-insensitive
//! keys, `[DEFAULT]` fallback, `%(name)s` interpolation, `key = value` or `key: value`, indented
//! continuation lines, `#`/`;` comments).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfError {
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: no section [{section}]")]
    NoSection { file: String, section: String },
    #[error("{file}: [{section}] {key}: {message}")]
    Value {
        file: String,
        section: String,
        key: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
}

/// The parsed INI file: sections of lower-cased keys.
#[derive(Debug, Clone, Default)]
pub struct Ini {
    pub file: String,
    sections: Vec<(String, HashMap<String, String>)>,
}

impl Ini {
    pub fn parse(text: &str, file: &str) -> Result<Ini, ConfError> {
        let mut ini = Ini {
            file: file.to_string(),
            sections: Vec::new(),
        };
        let mut last_key: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                if trimmed.is_empty() {
                    last_key = None;
                }
                continue;
            }
            let syntax = |message: &str| ConfError::Syntax {
                file: file.to_string(),
                line: n + 1,
                message: message.to_string(),
            };
            if line.starts_with(char::is_whitespace) {
                if let (Some(k), Some((_, map))) = (&last_key, ini.sections.last_mut()) {
                    let v = map.get_mut(k).expect("last key exists");
                    v.push('\n');
                    v.push_str(trimmed);
                    continue;
                }
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| syntax("section header without `]`"))?;
                ini.sections.push((name.to_string(), HashMap::new()));
                last_key = None;
                continue;
            }
            let sep = trimmed
                .find(['=', ':'])
                .ok_or_else(|| syntax("expected `key = value`"))?;
            let key = trimmed[..sep].trim().to_ascii_lowercase();
            let value = trimmed[sep + 1..].trim().to_string();
            let (_, map) = ini
                .sections
                .last_mut()
                .ok_or_else(|| syntax("`key = value` before any [section]"))?;
            map.insert(key.clone(), value);
            last_key = Some(key);
        }
        Ok(ini)
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.iter().any(|(n, _)| n == section)
    }

    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        let find = |s: &str| {
            self.sections
                .iter()
                .filter(|(n, _)| n == s)
                .filter_map(|(_, m)| m.get(&key))
                .next_back()
                .map(String::as_str)
        };
        find(section).or_else(|| find("DEFAULT"))
    }

    /// A value with `%(name)s` references resolved within the section (and `[DEFAULT]`).
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, ConfError> {
        let Some(raw) = self.raw(section, key) else {
            return Ok(None);
        };
        self.interpolate(section, key, raw, 0).map(Some)
    }

    fn interpolate(
        &self,
        section: &str,
        key: &str,
        raw: &str,
        depth: usize,
    ) -> Result<String, ConfError> {
        let err = |message: String| ConfError::Value {
            file: self.file.clone(),
            section: section.to_string(),
            key: key.to_string(),
            message,
        };
        if depth > 10 {
            return Err(err("interpolation nests too deep (a loop?)".into()));
        }
        let mut out = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                out.push('%');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('(') {
                let end = r
                    .find(")s")
                    .ok_or_else(|| err(format!("bad interpolation in `{raw}`")))?;
                let name = &r[..end];
                let v = self
                    .raw(section, name)
                    .ok_or_else(|| err(format!("`%({name})s` refers to no key")))?;
                out.push_str(&self.interpolate(section, name, v, depth + 1)?);
                rest = &r[end + 2..];
            } else {
                return Err(err(format!("a lone `%` in `{raw}` (write `%%`)")));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The server settings of one section of `edeploy.conf`, with eDeploy's defaults. Relative paths
/// are taken from the directory of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConf {
    pub section: String,
    pub config_dir: PathBuf,
    pub hw_dir: PathBuf,
    pub log_dir: PathBuf,
    pub health_dir: PathBuf,
    pub lock_file: PathBuf,
    pub use_pxemngr: bool,
    pub pxemngr_url: Option<String>,
    pub metadata_url: Option<String>,
    /// eDeploy's role trees, `INSTALLDIR/<version>/<role>/` (default `CONFIGDIR/../install`).
    pub install_dir: PathBuf,
    /// Upgrade paths, `METADATADIR/<from>/<role>/<to>/` (default `CONFIGDIR/../metadata`).
    pub metadata_dir: PathBuf,
    /// Where `edeploy-server index` publishes manifests, blobs and packs and `serve` serves
    /// them under `/trees/` (ours, default `CONFIGDIR/../store`).
    pub store_dir: PathBuf,
}

/// eDeploy's default lock file.
pub const DEFAULT_LOCKFILE: &str = "/var/run/httpd/edeploy.lock";
pub const DEFAULT_SECTION: &str = "SERVER";

impl ServerConf {
    /// Reads `section` of the file at `path`.
    pub fn load(path: &Path, section: &str) -> Result<ServerConf, ConfError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self::from_ini(&Ini::parse(&text, &file)?, section, &base)
    }

    /// Settings of `section`; `base` is where relative paths start from.
    pub fn from_ini(ini: &Ini, section: &str, base: &Path) -> Result<ServerConf, ConfError> {
        if !ini.has_section(section) {
            return Err(ConfError::NoSection {
                file: ini.file.clone(),
                section: section.to_string(),
            });
        }
        let get = |k: &str| ini.get(section, k);
        let path = |v: String| -> PathBuf {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        let config_dir = get("CONFIGDIR")?.map_or_else(|| base.to_path_buf(), &path);
        let or_config = |k: &str| -> Result<PathBuf, ConfError> {
            Ok(get(k)?.map_or_else(|| config_dir.clone(), &path))
        };
        let use_pxemngr = match get("USEPXEMNGR")?.as_deref().map(str::trim) {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" | "" => false,
                _ => {
                    return Err(ConfError::Value {
                        file: ini.file.clone(),
                        section: section.to_string(),
                        key: "USEPXEMNGR".into(),
                        message: format!("expected True or False, found `{v}`"),
                    })
                }
            },
        };
        let parent = config_dir.join("..");
        Ok(ServerConf {
            section: section.to_string(),
            hw_dir: or_config("HWDIR")?,
            log_dir: or_config("LOGDIR")?,
            health_dir: or_config("HEALTHDIR")?,
            lock_file: get("LOCKFILE")?.map_or_else(|| PathBuf::from(DEFAULT_LOCKFILE), &path),
            use_pxemngr,
            pxemngr_url: get("PXEMNGRURL")?.filter(|s| !s.is_empty()),
            metadata_url: get("METADATAURL")?.filter(|s| !s.is_empty()),
            install_dir: get("INSTALLDIR")?.map_or_else(|| parent.join("install"), &path),
            metadata_dir: get("METADATADIR")?.map_or_else(|| parent.join("metadata"), &path),
            store_dir: get("STOREDIR")?.map_or_else(|| parent.join("store"), &path),
            config_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDEPLOY_CONF: &str = "[SERVER]\n\
        # eDeploy's example\n\
        HEALTHDIR=/var/lib/edeploy/health/\n\
        CONFIGDIR=/var/lib/edeploy/config/\n\
        LOGDIR=/var/lib/edeploy/config/logs\n\
        HWDIR=/var/lib/edeploy/hw/\n\
        LOCKFILE=/var/run/httpd/edeploy.lock\n\
        USEPXEMNGR=False\n\
        PXEMNGRURL=http://192.168.122.1:8000/\n\
        \n\
        [rack2]\n\
        CONFIGDIR: %(base)s/rack2\n\
        base = /srv\n\
        USEPXEMNGR = True\n";

    #[test]
    fn edeploy_example() {
        let ini = Ini::parse(EDEPLOY_CONF, "edeploy.conf").unwrap();
        let c = ServerConf::from_ini(&ini, "SERVER", Path::new("/etc")).unwrap();
        assert_eq!(c.config_dir, Path::new("/var/lib/edeploy/config/"));
        assert_eq!(c.hw_dir, Path::new("/var/lib/edeploy/hw/"));
        assert_eq!(c.lock_file, Path::new("/var/run/httpd/edeploy.lock"));
        assert!(
            !c.use_pxemngr,
            "the string False is false (eDeploy treated it as true)"
        );
        assert_eq!(c.pxemngr_url.as_deref(), Some("http://192.168.122.1:8000/"));
        assert_eq!(c.metadata_url, None);
        assert_eq!(
            c.install_dir,
            Path::new("/var/lib/edeploy/config/../install")
        );
    }

    #[test]
    fn sections_defaults_and_interpolation() {
        let ini = Ini::parse(EDEPLOY_CONF, "edeploy.conf").unwrap();
        let c = ServerConf::from_ini(&ini, "rack2", Path::new("/etc/edeploy")).unwrap();
        assert_eq!(c.config_dir, Path::new("/srv/rack2"));
        assert_eq!(c.hw_dir, c.config_dir, "HWDIR defaults to CONFIGDIR");
        assert_eq!(c.log_dir, c.config_dir);
        assert!(c.use_pxemngr);
        assert_eq!(c.lock_file, Path::new(DEFAULT_LOCKFILE));
        let e = ServerConf::from_ini(&ini, "nope", Path::new("/")).unwrap_err();
        assert_eq!(e.to_string(), "edeploy.conf: no section [nope]");
    }

    #[test]
    fn relative_paths_start_at_the_file() {
        let ini = Ini::parse("[SERVER]\nCONFIGDIR=.\nHWDIR=hw\n", "c").unwrap();
        let c = ServerConf::from_ini(&ini, "SERVER", Path::new("/repo/specs")).unwrap();
        assert_eq!(c.config_dir, Path::new("/repo/specs/."));
        assert_eq!(c.hw_dir, Path::new("/repo/specs/hw"));
        assert_eq!(c.store_dir, Path::new("/repo/specs/./../store"));
        assert_eq!(c.metadata_dir, Path::new("/repo/specs/./../metadata"));
        let ini = Ini::parse("[SERVER]\nSTOREDIR=st\nINSTALLDIR=/srv/i\n", "c").unwrap();
        let c = ServerConf::from_ini(&ini, "SERVER", Path::new("/etc/e")).unwrap();
        assert_eq!(c.store_dir, Path::new("/etc/e/st"));
        assert_eq!(c.install_dir, Path::new("/srv/i"));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            Ini::parse("[S]\nnot a pair\n", "c")
                .unwrap_err()
                .to_string(),
            "c:2: expected `key = value`"
        );
        assert!(Ini::parse("k=v\n", "c").is_err());
        assert!(Ini::parse("[S\n", "c").is_err());
        let ini = Ini::parse("[S]\na=%(a)s\nb=%(zz)s\nc=50%\n", "c").unwrap();
        assert!(ini.get("S", "a").is_err());
        assert!(ini.get("S", "b").is_err());
        assert!(ini.get("S", "c").is_err());
        let ini = Ini::parse("[S]\nUSEPXEMNGR=maybe\n", "c").unwrap();
        assert!(ServerConf::from_ini(&ini, "S", Path::new("/")).is_err());
    }

    #[test]
    fn continuation_lines() {
        let ini = Ini::parse("[S]\nk = a\n  b\n", "c").unwrap();
        assert_eq!(ini.get("S", "K").unwrap().as_deref(), Some("a\nb"));
    }
}

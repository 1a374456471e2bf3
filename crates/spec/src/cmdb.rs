//! A profile's CMDB (`<profile>.cmdb`): the entries (IP, hostname, …) machines are given.

use std::path::Path;

use edeploy_literal::{ParseError, Value};

use crate::generate::{generate_call, GenerateError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CmdbError {
    #[error(transparent)]
    Syntax(#[from] ParseError),
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {source}")]
    Generate { file: String, source: GenerateError },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    /// `$$` variables were given and no entry carries them.
    #[error("no entry matched in the CMDB {file} for {wanted}")]
    NoEntryMatched { file: String, wanted: String },
    /// Every entry is used.
    #[error("no more entry in the CMDB {file}: all {count} are used")]
    Full { file: String, count: usize },
}

/// A loaded CMDB: its entries (dicts), expanded if the file was a `generate(...)` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmdb {
    pub file: String,
    pub entries: Vec<Value>,
    /// The original text when the file was a `generate(...)` call: saved as `<file>.orig` the first
    /// time the expanded list is written back, as eDeploy did.
    pub generated_from: Option<String>,
}

impl Cmdb {
    pub fn parse(text: &str, file: &str) -> Result<Cmdb, CmdbError> {
        let value = edeploy_literal::parse_named(text, file)?;
        let invalid = |message: String| CmdbError::Invalid {
            file: file.to_string(),
            message,
        };
        let (entries, generated_from) = match value {
            Value::Call(call) if call.name == "generate" => (
                generate_call(&call.args).map_err(|source| CmdbError::Generate {
                    file: file.to_string(),
                    source,
                })?,
                Some(text.to_string()),
            ),
            Value::Call(call) => {
                let name = &call.name;
                return Err(invalid(format!(
                    "unknown call {name}(): only generate() is allowed"
                )));
            }
            Value::List(items) | Value::Tuple(items) => (items, None),
            other => {
                return Err(invalid(format!(
                    "a CMDB is a list of dicts or generate(...), not a {}",
                    other.kind()
                )))
            }
        };
        if let Some((i, e)) = entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.as_dict().is_none())
        {
            return Err(invalid(format!(
                "entry {} is a {}, not a dict",
                i + 1,
                e.kind()
            )));
        }
        Ok(Cmdb {
            file: file.to_string(),
            entries,
            generated_from,
        })
    }

    /// Reads a CMDB; `Ok(None)` when the profile has none.
    pub fn load(path: &Path) -> Result<Option<Cmdb>, CmdbError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &file).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CmdbError::Io {
                file,
                message: e.to_string(),
            }),
        }
    }

    /// The expanded file text.
    pub fn to_text(&self) -> String {
        edeploy_literal::to_python(&Value::List(self.entries.clone()))
    }

    /// Picks the entry for a machine and merges it with the machine's variables (hardware wins),
    /// marking it `used: 1`. Returns the entry's index; the CMDB is updated in memory only.
    ///
    /// The entry is the first whose keys equal all `$$` variables (all variables when there are
    /// none), so a re-installed machine gets its old entry back; otherwise, unless `$$` variables
    /// exist, the first entry without `used`. With no variables at all nothing identifies the
    /// machine, so only a fresh entry is given (eDeploy handed entry 0 to every such machine).
    pub fn select(
        &mut self,
        vars: &[(String, String)],
        pref: &[(String, String)],
    ) -> Result<usize, CmdbError> {
        let key = if pref.is_empty() { vars } else { pref };
        let carries = |e: &Value| {
            key.iter()
                .all(|(k, v)| e.get(k).and_then(Value::scalar_text).as_deref() == Some(v.as_str()))
        };
        let found = if key.is_empty() {
            None
        } else {
            self.entries.iter().position(carries)
        };
        let index = match found {
            Some(i) => i,
            None if !pref.is_empty() => {
                return Err(CmdbError::NoEntryMatched {
                    file: self.file.clone(),
                    wanted: pref
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            None => self
                .entries
                .iter()
                .position(|e| e.get("used").is_none())
                .ok_or_else(|| CmdbError::Full {
                    file: self.file.clone(),
                    count: self.entries.len(),
                })?,
        };
        let Value::Dict(entry) = &mut self.entries[index] else {
            unreachable!("entries are checked to be dicts when loaded")
        };
        for (k, v) in vars
            .iter()
            .map(|(k, v)| (k.as_str(), Value::Str(v.into())))
            .chain([("used", Value::Int(1))])
        {
            match entry.iter_mut().find(|(ek, _)| ek.as_str() == Some(k)) {
                Some((_, slot)) => *slot = v,
                None => entry.push((Value::Str(k.into()), v)),
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn text(c: &Cmdb, i: usize) -> String {
        edeploy_literal::to_python_compact(&c.entries[i])
    }

    #[test]
    fn first_free_entry_then_same_entry_on_reinstall() {
        let mut c = Cmdb::parse(
            "generate({'ip': '10.0.0.1-3', 'hostname': 'n1-3'})",
            "vm.cmdb",
        )
        .unwrap();
        assert!(c.generated_from.is_some());
        let m1 = v(&[("disk", "vda"), ("mac", "m1")]);
        assert_eq!(c.select(&m1, &[]).unwrap(), 0);
        assert_eq!(
            text(&c, 0),
            "{'ip': '10.0.0.1', 'hostname': 'n1', 'disk': 'vda', 'mac': 'm1', 'used': 1}"
        );
        let m2 = v(&[("disk", "vda"), ("mac", "m2")]);
        assert_eq!(c.select(&m2, &[]).unwrap(), 1);
        assert_eq!(
            c.select(&m1, &[]).unwrap(),
            0,
            "reinstall gets the same entry"
        );
        assert_eq!(c.entries.len(), 3);
        let reread = Cmdb::parse(&c.to_text(), "vm.cmdb").unwrap();
        assert_eq!(reread.entries, c.entries);
        assert!(reread.generated_from.is_none());
    }

    #[test]
    fn full_cmdb_is_an_error() {
        let mut c = Cmdb::parse("[{'ip': '1'}]", "f").unwrap();
        c.select(&v(&[("mac", "a")]), &[]).unwrap();
        let e = c.select(&v(&[("mac", "b")]), &[]).unwrap_err();
        assert!(matches!(e, CmdbError::Full { count: 1, .. }), "{e}");
    }

    #[test]
    fn pref_vars_pick_their_entry_or_fail() {
        let mut c = Cmdb::parse(
            "[{'mac': 'aa', 'ip': '10.0.0.1'}, {'mac': 'bb', 'ip': '10.0.0.2'}]",
            "f",
        )
        .unwrap();
        let vars = v(&[("eth", "eth0"), ("mac", "bb")]);
        assert_eq!(c.select(&vars, &v(&[("mac", "bb")])).unwrap(), 1);
        assert_eq!(
            text(&c, 1),
            "{'mac': 'bb', 'ip': '10.0.0.2', 'eth': 'eth0', 'used': 1}"
        );
        let e = c
            .select(&v(&[("mac", "cc")]), &v(&[("mac", "cc")]))
            .unwrap_err();
        assert!(matches!(e, CmdbError::NoEntryMatched { .. }), "{e}");
        // A used entry is still given back to its own machine.
        assert_eq!(c.select(&vars, &v(&[("mac", "bb")])).unwrap(), 1);
    }

    #[test]
    fn hardware_wins_over_the_entry() {
        let mut c = Cmdb::parse("[{'disk': 'sdz', 'ip': '1'}]", "f").unwrap();
        c.select(&v(&[("disk", "sda")]), &[]).unwrap();
        assert_eq!(c.entries[0].get("disk"), Some(&Value::Str("sda".into())));
    }

    #[test]
    fn no_variables_never_share_an_entry() {
        let mut c = Cmdb::parse("[{'ip': '1'}, {'ip': '2'}]", "f").unwrap();
        assert_eq!(c.select(&[], &[]).unwrap(), 0);
        assert_eq!(c.select(&[], &[]).unwrap(), 1);
        assert!(c.select(&[], &[]).is_err());
    }

    #[test]
    fn bad_files() {
        assert!(matches!(
            Cmdb::parse("[1]", "f").unwrap_err(),
            CmdbError::Invalid { .. }
        ));
        assert!(matches!(
            Cmdb::parse("os.system('x')", "f"),
            Err(CmdbError::Syntax(_))
        ));
        assert!(matches!(
            Cmdb::parse("evil({})", "f"),
            Err(CmdbError::Invalid { .. })
        ));
        assert!(matches!(
            Cmdb::parse("generate([1])", "f"),
            Err(CmdbError::Generate { .. })
        ));
    }
}

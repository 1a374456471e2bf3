//! A profile's CMDB (`<profile>.cmdb`): the entries (IP, hostname, …) machines are given.

use std::path::Path;

use edeploy_literal::{ParseError, Value};

use crate::generate::{generate_call, Column, GenerateError, Table};

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
    pub entries: Entries,
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
                Entries(Rows::Table(generate_call(&call.args).map_err(
                    |source| CmdbError::Generate {
                        file: file.to_string(),
                        source,
                    },
                )?)),
                Some(text.to_string()),
            ),
            Value::Call(call) => {
                let name = &call.name;
                return Err(invalid(format!(
                    "unknown call {name}(): only generate() is allowed"
                )));
            }
            Value::List(items) | Value::Tuple(items) => {
                if let Some((i, e)) = items
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
                (Entries(Rows::Dicts(items)), None)
            }
            other => {
                return Err(invalid(format!(
                    "a CMDB is a list of dicts or generate(...), not a {}",
                    other.kind()
                )))
            }
        };
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

    /// The expanded file text: the list of entries in the file form of
    /// [`edeploy_literal::to_python`], one entry per line.
    pub fn to_text(&self) -> String {
        self.entries.to_text()
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
        let carries = |e: Entry<'_>| {
            key.iter()
                .all(|(k, v)| e.get(k).is_some_and(|x| same_text(x, v)))
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
        let Value::Dict(entry) = &mut self.entries.dicts_mut()[index] else {
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

/// Whether a value reads as `text` (its Python `str()`), without allocating for strings: a CMDB
/// lookup compares every entry.
fn same_text(v: &Value, text: &str) -> bool {
    match v {
        Value::Str(s) => s == text,
        other => other.scalar_text().as_deref() == Some(text),
    }
}

/// The entries of a CMDB, each a dict. A `generate(...)` CMDB keeps generate()'s [`Table`] (the
/// keys and constants once, the ranged values by key) until an entry is changed: expanding
/// 10,000 entries then builds no per-entry dict, and writing the file back shares the keys' text.
#[derive(Debug, Clone)]
pub struct Entries(Rows);

#[derive(Debug, Clone)]
enum Rows {
    /// A literal list: every element a `Value::Dict` (checked when loaded).
    Dicts(Vec<Value>),
    /// generate()'s expansion, untouched.
    Table(Table),
}

impl Entries {
    pub fn len(&self) -> usize {
        match &self.0 {
            Rows::Dicts(v) => v.len(),
            Rows::Table(t) => t.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Entry<'_>> {
        (i < self.len()).then(|| self.entry(i))
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            entries: self,
            at: 0..self.len(),
        }
    }

    /// Every entry as the dict it stands for.
    pub fn to_values(&self) -> Vec<Value> {
        match &self.0 {
            Rows::Dicts(v) => v.clone(),
            Rows::Table(t) => t.to_values(),
        }
    }

    fn entry(&self, i: usize) -> Entry<'_> {
        match &self.0 {
            Rows::Dicts(v) => match &v[i] {
                Value::Dict(pairs) => Entry(EntryRef::Dict(pairs)),
                _ => unreachable!("entries are checked to be dicts when loaded"),
            },
            Rows::Table(t) => Entry(EntryRef::Row(t, i)),
        }
    }

    /// The entries as dicts, to be changed: a generated table is expanded into dicts first (once,
    /// when its first entry is given to a machine).
    fn dicts_mut(&mut self) -> &mut Vec<Value> {
        if let Rows::Table(t) = &self.0 {
            self.0 = Rows::Dicts(t.to_values());
        }
        match &mut self.0 {
            Rows::Dicts(v) => v,
            Rows::Table(_) => unreachable!("just expanded"),
        }
    }

    /// The file form of [`edeploy_literal::to_python`] for the list of entries.
    fn to_text(&self) -> String {
        let mut out = String::new();
        out.push('[');
        match &self.0 {
            Rows::Dicts(v) => {
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n ");
                    }
                    edeploy_literal::write_python_compact(e, &mut out);
                }
            }
            Rows::Table(t) => {
                // What every entry shares is written once: `'key': ` for a ranged key, the whole
                // `'key': value` for a constant one. Only the ranged values are written per entry.
                let parts: Vec<(String, Option<&[Value]>)> = t
                    .keys
                    .iter()
                    .zip(&t.columns)
                    .enumerate()
                    .map(|(j, (k, c))| {
                        let mut s = String::new();
                        if j > 0 {
                            s.push_str(", ");
                        }
                        edeploy_literal::write_python_compact(k, &mut s);
                        s.push_str(": ");
                        match c {
                            Column::Const(v) => {
                                edeploy_literal::write_python_compact(v, &mut s);
                                (s, None)
                            }
                            Column::Each(v) => (s, Some(v.as_slice())),
                        }
                    })
                    .collect();
                let shared: usize = parts.iter().map(|(s, _)| s.len()).sum();
                out.reserve(t.len * (shared + 24 * parts.len() + 4));
                for i in 0..t.len {
                    if i > 0 {
                        out.push_str(",\n ");
                    }
                    out.push('{');
                    for (s, each) in &parts {
                        out.push_str(s);
                        if let Some(v) = each {
                            edeploy_literal::write_python_compact(&v[i], &mut out);
                        }
                    }
                    out.push('}');
                }
            }
        }
        out.push_str("]\n");
        out
    }
}

/// The entries of a CMDB in order, read in place.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    entries: &'a Entries,
    at: std::ops::Range<usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        self.at.next().map(|i| self.entries.entry(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.at.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.at.next_back().map(|i| self.entries.entry(i))
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = Entry<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq for Entries {
    /// Equal when the entries are, however they are stored.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

/// One CMDB entry: a dict, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a>(EntryRef<'a>);

#[derive(Debug, Clone, Copy)]
enum EntryRef<'a> {
    Dict(&'a [(Value, Value)]),
    Row(&'a Table, usize),
}

impl<'a> Entry<'a> {
    /// The value of a string key, as [`Value::get`] finds it in a dict.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        match self.0 {
            EntryRef::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            EntryRef::Row(t, i) => t
                .keys
                .iter()
                .position(|k| k.as_str() == Some(key))
                .map(|j| t.columns[j].at(i)),
        }
    }

    /// The (key, value) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a Value, &'a Value)> + 'a {
        let (pairs, row): (&[(Value, Value)], _) = match self.0 {
            EntryRef::Dict(pairs) => (pairs, None),
            EntryRef::Row(t, i) => (&[], Some((t, i))),
        };
        pairs.iter().map(|(k, v)| (k, v)).chain(
            row.into_iter()
                .flat_map(|(t, i)| t.keys.iter().zip(t.columns.iter().map(move |c| c.at(i)))),
        )
    }

    /// The entry as a `Value::Dict`.
    pub fn to_value(&self) -> Value {
        match self.0 {
            EntryRef::Dict(pairs) => Value::Dict(pairs.to_vec()),
            EntryRef::Row(t, i) => t.row(i),
        }
    }

    /// JSON view of the entry, as [`Value::to_json`] gives it for the dict.
    pub fn to_json(&self) -> serde_json::Value {
        self.to_value().to_json()
    }
}

impl PartialEq for Entry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
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
        edeploy_literal::to_python_compact(&c.entries.get(i).unwrap().to_value())
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
    fn generated_entries_read_and_write_as_dicts() {
        let src = "generate({'ip': '10.0.0.1-3', 'host': 'n1-3', 'gw': '10.0.0.254', 'n': 1, \
                   'tags': ['a', 'b', 'c'], 'bmc': {'ip': '10.1.0.1-3'}})";
        let c = Cmdb::parse(src, "f").unwrap();
        let values = c.entries.to_values();
        assert_eq!(values.len(), 3);
        assert_eq!(
            c.to_text(),
            edeploy_literal::to_python(&Value::List(values.clone()))
        );
        for (e, v) in c.entries.iter().zip(&values) {
            assert_eq!(e.to_value(), *v);
            assert_eq!(e.to_json(), v.to_json());
            assert_eq!(e.get("gw"), v.get("gw"));
            assert_eq!(e.get("nope"), None);
        }
        // The same entries read from the written list compare equal, though stored as dicts.
        let reread = Cmdb::parse(&c.to_text(), "f").unwrap();
        assert_eq!(reread.entries, c.entries);
        assert_eq!(reread.to_text(), c.to_text());
        assert!(c.entries.get(3).is_none());
        let empty = Cmdb::parse("generate({'a': []})", "f").unwrap();
        assert!(empty.entries.is_empty());
        assert_eq!(empty.to_text(), "[]\n");
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
        assert_eq!(
            c.entries.get(0).unwrap().get("disk"),
            Some(&Value::Str("sda".into()))
        );
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

use edeploy_literal::{ParseError, Value};
use serde::{Deserialize, Serialize};

/// One line: category, item, key, value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HwLine(pub [String; 4]);

impl HwLine {
    pub fn new(category: &str, item: &str, key: &str, value: &str) -> Self {
        HwLine([category.into(), item.into(), key.into(), value.into()])
    }
    pub fn category(&self) -> &str {
        &self.0[0]
    }
    pub fn item(&self) -> &str {
        &self.0[1]
    }
    pub fn key(&self) -> &str {
        &self.0[2]
    }
    pub fn value(&self) -> &str {
        &self.0[3]
    }
}

impl std::ops::Index<usize> for HwLine {
    type Output = String;
    fn index(&self, i: usize) -> &String {
        &self.0[i]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error(transparent)]
    Syntax(#[from] ParseError),
    #[error("{file}: element {index}: {message}")]
    Shape {
        file: String,
        index: usize,
        message: String,
    },
}

/// A machine's hardware list, in detection order (order matters: matching tries lines in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HardwareList(pub Vec<HwLine>);

impl HardwareList {
    pub fn new() -> Self {
        Self::default()
    }

    /// A list from literal rows, e.g. `[["disk", "sda", "size", "20"]]` (tests, examples).
    pub fn from_rows(rows: &[[&str; 4]]) -> Self {
        rows.iter()
            .map(|r| HwLine::new(r[0], r[1], r[2], r[3]))
            .collect()
    }

    pub fn push(&mut self, category: &str, item: &str, key: &str, value: &str) {
        self.0.push(HwLine::new(category, item, key, value));
    }

    pub fn lines(&self) -> &[HwLine] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first value of `(category, item, key)`.
    pub fn get(&self, category: &str, item: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.category() == category && l.item() == item && l.key() == key)
            .map(HwLine::value)
    }

    /// Parses JSON or the eDeploy literal form; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, HwError> {
        // The common upload, a JSON list of 4 strings each, straight into lines: going through
        // two generic trees (JSON, then literal values) cost several times more. Any other shape
        // (numbers, errors to report) takes the general path below, which gives the same lines.
        if let Ok(rows) = serde_json::from_str::<Vec<[String; 4]>>(text) {
            return Ok(HardwareList(rows.into_iter().map(HwLine).collect()));
        }
        // JSON is tried first because uploads are JSON; a text that is not JSON is read as a Python
        // literal, whose parser reports line and column when it is neither.
        let value = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(j) => Value::from_json(&j),
            Err(_) => edeploy_literal::parse_named(text, file)?,
        };
        Self::from_value(&value, file)
    }

    /// Builds the list from a parsed literal: a list or tuple of 4-element sequences of scalars.
    pub fn from_value(value: &Value, file: &str) -> Result<Self, HwError> {
        let shape = |index: usize, message: String| HwError::Shape {
            file: file.to_string(),
            index,
            message,
        };
        let items = value.as_seq().ok_or_else(|| {
            shape(
                0,
                format!("expected a list of 4-tuples, found a {}", value.kind()),
            )
        })?;
        let mut lines = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let fields = item.as_seq().ok_or_else(|| {
                shape(
                    index,
                    format!("expected a 4-tuple, found a {}", item.kind()),
                )
            })?;
            if fields.len() != 4 {
                return Err(shape(
                    index,
                    format!("expected 4 fields, found {}", fields.len()),
                ));
            }
            let mut line: [String; 4] = Default::default();
            for (slot, field) in line.iter_mut().zip(fields) {
                *slot = field.scalar_text().ok_or_else(|| {
                    shape(index, format!("field is a {}, not a string", field.kind()))
                })?;
            }
            lines.push(HwLine(line));
        }
        Ok(HardwareList(lines))
    }

    /// Compact JSON, the upload form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("strings always serialise")
    }

    /// JSON with one line per hardware line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::from("[");
        for (i, l) in self.0.iter().enumerate() {
            out.push_str(if i == 0 { "\n  " } else { ",\n  " });
            out.push_str(&serde_json::to_string(&l.0).expect("strings always serialise"));
        }
        out.push_str("\n]\n");
        out
    }

    /// The literal `.hw` form eDeploy's tools read.
    pub fn to_value(&self) -> Value {
        Value::List(
            self.0
                .iter()
                .map(|l| Value::Tuple(l.0.iter().map(|s| Value::Str(s.into())).collect()))
                .collect(),
        )
    }

    pub fn to_edeploy(&self) -> String {
        edeploy_literal::to_python(&self.to_value())
    }
}

impl FromIterator<HwLine> for HardwareList {
    fn from_iter<T: IntoIterator<Item = HwLine>>(iter: T) -> Self {
        HardwareList(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_literal_forms_agree() {
        let j = HardwareList::parse(
            r#"[["disk","vda","size","10"],["cpu","logical","number",4]]"#,
            "a",
        )
        .unwrap();
        let l = HardwareList::parse(
            "[('disk', 'vda', 'size', '10'),\n ('cpu', 'logical', 'number', 4)]",
            "b",
        )
        .unwrap();
        assert_eq!(j, l);
        assert_eq!(j.get("cpu", "logical", "number"), Some("4"));
        assert_eq!(HardwareList::parse(&j.to_edeploy(), "c").unwrap(), j);
        assert_eq!(HardwareList::parse(&j.to_json(), "d").unwrap(), j);
        assert_eq!(HardwareList::parse(&j.to_json_lines(), "e").unwrap(), j);
    }

    #[test]
    fn bad_shapes_are_reported_with_their_index() {
        let e = HardwareList::parse(r#"[["a","b","c","d"],["a","b","c"]]"#, "up").unwrap_err();
        assert_eq!(e.to_string(), "up: element 1: expected 4 fields, found 3");
        let e = HardwareList::parse(r#"{"a": 1}"#, "up").unwrap_err();
        assert!(e.to_string().contains("expected a list"), "{e}");
        let e = HardwareList::parse(r#"[["a","b","c",["x"]]]"#, "up").unwrap_err();
        assert!(e.to_string().contains("not a string"), "{e}");
        let e = HardwareList::parse("[('a', 'b'", "up.hw").unwrap_err();
        assert!(e.to_string().starts_with("up.hw:1:"), "{e}");
    }
}

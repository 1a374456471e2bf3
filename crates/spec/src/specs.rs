//! A profile's `*.specs` file: a literal list of 4-tuples of elements, compiled once.

use std::collections::HashMap;
use std::path::Path;

use edeploy_literal::{ParseError, Value};

use crate::element::Element;

/// A spec file that cannot be used, located in its file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Syntax(#[from] ParseError),
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
}

/// One compiled spec line.
#[derive(Debug, Clone)]
pub struct SpecLine {
    /// The four elements as written, for messages.
    pub text: [String; 4],
    pub elements: [Element; 4],
    /// Variable ids (indices into [`Specs::vars`]) bound by each element, if any.
    pub var_ids: [Option<usize>; 4],
    /// Where the line starts in its file.
    pub line: usize,
    pub col: usize,
}

/// A compiled specs file.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    pub file: String,
    pub lines: Vec<SpecLine>,
    /// Variable names in order of first appearance; `$x` and `$$x` are one variable.
    pub vars: Vec<String>,
    /// Whether each variable was ever written `$$name` (it then selects the CMDB entry).
    pub pref: Vec<bool>,
}

impl Specs {
    /// Parses the text of a specs file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Specs, SpecError> {
        let (value, positions) = edeploy_literal::parse_located(text, file)?;
        Self::from_value(&value, &positions, file)
    }

    /// Reads and parses a specs file.
    pub fn load(path: &Path) -> Result<Specs, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    /// Compiles a parsed literal; `positions` are the scalar positions from `parse_located` (may be
    /// empty, then errors point at line 0).
    pub fn from_value(
        value: &Value,
        positions: &[(usize, usize)],
        file: &str,
    ) -> Result<Specs, SpecError> {
        let invalid = |(line, col): (usize, usize), message: String| SpecError::Invalid {
            file: file.to_string(),
            line,
            col,
            message,
        };
        let mut scalar = 0usize;
        let mut next_pos = |n: usize| -> (usize, usize) {
            let p = positions.get(scalar).copied().unwrap_or((0, 0));
            scalar += n;
            p
        };
        let items = value.as_seq().ok_or_else(|| {
            invalid(
                (1, 1),
                format!("a specs file is a list of 4-tuples, not a {}", value.kind()),
            )
        })?;
        let mut specs = Specs {
            file: file.to_string(),
            ..Specs::default()
        };
        let mut var_index: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let fields = item
                .as_seq()
                .filter(|f| f.len() == 4 && f.iter().all(|v| v.scalar_text().is_some()));
            let Some(fields) = fields else {
                let at = next_pos(0);
                return Err(invalid(
                    at,
                    format!(
                        "spec {} must be a tuple of 4 strings, found {}",
                        i + 1,
                        item
                    ),
                ));
            };
            let start = next_pos(0);
            let mut text: [String; 4] = Default::default();
            let mut elements = Vec::with_capacity(4);
            let mut var_ids = [None; 4];
            for (k, field) in fields.iter().enumerate() {
                let at = next_pos(1);
                let s = field.scalar_text().expect("checked above");
                let element = Element::parse(&s).map_err(|e| {
                    // +1 for the opening quote of the string
                    invalid((at.0, at.1 + 1 + e.offset), format!("`{s}`: {}", e.message))
                })?;
                if let Some((name, pref)) = element.var() {
                    let next = var_index.len();
                    let id = *var_index.entry(name.to_string()).or_insert(next);
                    if id == specs.vars.len() {
                        specs.vars.push(name.to_string());
                        specs.pref.push(false);
                    }
                    specs.pref[id] |= pref;
                    var_ids[k] = Some(id);
                }
                text[k] = s;
                elements.push(element);
            }
            specs.lines.push(SpecLine {
                text,
                elements: elements.try_into().expect("four elements"),
                var_ids,
                line: start.0,
                col: start.1,
            });
        }
        Ok(specs)
    }

    /// Warnings that do not stop the file from loading (unknown function names).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.lines {
            for (k, e) in l.elements.iter().enumerate() {
                let mut names = Vec::new();
                if let Element::Func(f) | Element::VarFunc { func: f, .. } = e {
                    f.unknown_names(&mut names);
                }
                for n in names {
                    out.push(format!(
                        "{}:{}:{}: unknown function `{n}` in `{}`: this spec line never matches",
                        self.file, l.line, l.col, l.text[k]
                    ));
                }
            }
        }
        out
    }

    /// Whether the line could ever match this hardware line, whatever the variables hold, and
    /// then the `(variable, value)` pairs it would bind. `None` when it cannot, or when it binds
    /// one variable twice to different values.
    pub fn line_bindings<'h>(
        &self,
        line: usize,
        hw: &'h [String; 4],
    ) -> Option<Vec<(usize, &'h str)>> {
        let spec = &self.lines[line];
        let mut out: Vec<(usize, &'h str)> = Vec::new();
        for ((value, element), var) in hw.iter().zip(&spec.elements).zip(spec.var_ids) {
            let value = value.as_str();
            if !element.test(value) {
                return None;
            }
            if let Some(id) = var {
                match out.iter().find(|(v, _)| *v == id) {
                    Some((_, prev)) if *prev != value => return None,
                    Some(_) => {}
                    None => out.push((id, value)),
                }
            }
        }
        Some(out)
    }

    /// The literal category and key of a line, if both are literals (used to index hardware).
    pub(crate) fn literal_cat_key(&self, line: usize) -> (Option<&str>, Option<&str>) {
        fn lit(e: &Element) -> Option<&str> {
            match e {
                Element::Literal(s) => Some(s.as_str()),
                _ => None,
            }
        }
        let l = &self.lines[line];
        (lit(&l.elements[0]), lit(&l.elements[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_numbers_variables() {
        let s = Specs::parse(
            "[('disk', '$disk', 'size', 'gt(4)'),\n ('network', '$eth', 'serial', '$$mac'),\n ('disk', '$disk', 'model', '$mac')]",
            "vm.specs",
        )
        .unwrap();
        assert_eq!(s.vars, ["disk", "eth", "mac"]);
        assert_eq!(s.pref, [false, false, true]);
        assert_eq!(s.lines[2].var_ids, [None, Some(0), None, Some(2)]);
        assert_eq!((s.lines[1].line, s.lines[1].col), (2, 3));
    }

    #[test]
    fn errors_point_into_the_file() {
        let e = Specs::parse("[\n  ('disk', 'sda', 'size', 'gt(x)'),\n]", "p.specs").unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.specs:2:31: `gt(x)`: gt() needs a number, not `x`"
        );
        let e = Specs::parse("[('disk', 'sda', 'size')]", "p.specs").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.specs:1:3: spec 1 must be a tuple of 4 strings"),
            "{e}"
        );
        let e = Specs::parse("[('disk', 'sda' 'size', ]", "p.specs").unwrap_err();
        assert!(matches!(e, SpecError::Syntax(_)), "{e}");
        let e = Specs::parse("{'a': 1}", "p.specs").unwrap_err();
        assert!(e.to_string().contains("list of 4-tuples"), "{e}");
    }

    #[test]
    fn numbers_in_specs_compare_as_their_text() {
        let s = Specs::parse("[('cpu', 'logical', 'number', 4)]", "f").unwrap();
        let hw = [
            "cpu".to_string(),
            "logical".into(),
            "number".into(),
            "4".into(),
        ];
        assert!(s.line_bindings(0, &hw).is_some());
    }

    #[test]
    fn warns_about_unknown_functions() {
        let s = Specs::parse("[('a', 'b', 'c', 'frob(1)')]", "f").unwrap();
        assert_eq!(s.warnings().len(), 1);
        assert!(s.warnings()[0].contains("unknown function `frob`"));
    }
}

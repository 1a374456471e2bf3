//! The `state` file: profiles in priority order with how many machines each may still take.

use std::fmt;
use std::path::Path;

use edeploy_literal::{ParseError, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Syntax(#[from] ParseError),
    #[error("{file}: entry {index}: {message}")]
    Invalid {
        file: String,
        index: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
}

/// How many more machines a profile may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Left(i64),
    Unlimited,
}

impl Count {
    pub fn available(self) -> bool {
        match self {
            Count::Left(n) => n > 0,
            Count::Unlimited => true,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Left(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub file: String,
    pub entries: Vec<(String, Count)>,
}

impl State {
    pub fn parse(text: &str, file: &str) -> Result<State, StateError> {
        let value = edeploy_literal::parse_named(text, file)?;
        let invalid = |index: usize, message: String| StateError::Invalid {
            file: file.to_string(),
            index,
            message,
        };
        let items = value.as_seq().ok_or_else(|| {
            invalid(
                0,
                format!(
                    "a state file is a list of (profile, count), not a {}",
                    value.kind()
                ),
            )
        })?;
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let index = i + 1;
            let pair = item.as_seq().filter(|p| p.len() == 2).ok_or_else(|| {
                invalid(index, format!("expected (profile, count), found {item}"))
            })?;
            let name = pair[0].as_str().ok_or_else(|| {
                invalid(
                    index,
                    format!("profile name must be a string, found {}", pair[0]),
                )
            })?;
            let count = match &pair[1] {
                Value::Int(n) => Count::Left(*n),
                Value::Str(s) if s == "*" => Count::Unlimited,
                Value::Str(s) => Count::Left(s.trim().parse().map_err(|_| {
                    invalid(index, format!("count must be a number or '*', found '{s}'"))
                })?),
                other => {
                    return Err(invalid(
                        index,
                        format!("count must be a number or '*', found {other}"),
                    ))
                }
            };
            entries.push((name.to_string(), count));
        }
        Ok(State {
            file: file.to_string(),
            entries,
        })
    }

    pub fn load(path: &Path) -> Result<State, StateError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| StateError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    /// The file text, in the literal syntax eDeploy's tools read.
    pub fn to_text(&self) -> String {
        let items = self
            .entries
            .iter()
            .map(|(name, count)| {
                let c = match count {
                    Count::Left(n) => Value::Int(*n),
                    Count::Unlimited => Value::Str("*".into()),
                };
                Value::Tuple(vec![Value::Str(name.into()), c])
            })
            .collect();
        edeploy_literal::to_python(&Value::List(items))
    }

    pub fn count(&self, profile: &str) -> Option<Count> {
        self.entries
            .iter()
            .find(|(n, _)| n == profile)
            .map(|(_, c)| *c)
    }

    /// Takes one unit of a profile's quota (no-op for `'*'`).
    pub fn decrement(&mut self, profile: &str) {
        if let Some((_, Count::Left(n))) = self.entries.iter_mut().find(|(n, _)| n == profile) {
            *n -= 1;
        }
    }

    /// A failure report gives the unit back. Returns whether the state changed (a numeric count of
    /// a known profile); `'*'` and unknown profiles change nothing.
    pub fn give_back(&mut self, profile: &str) -> bool {
        match self.entries.iter_mut().find(|(n, _)| n == profile) {
            Some((_, Count::Left(n))) => {
                *n += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_every_form() {
        let mut s = State::parse(
            "[('hp', 3), ('dell', '2'), ('vm', '*'), ('old', 0)]",
            "state",
        )
        .unwrap();
        assert_eq!(
            s.entries.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            [
                Count::Left(3),
                Count::Left(2),
                Count::Unlimited,
                Count::Left(0)
            ]
        );
        assert!(!s.count("old").unwrap().available());
        s.decrement("dell");
        s.decrement("vm");
        assert_eq!(
            s.to_text(),
            "[('hp', 3),\n ('dell', 1),\n ('vm', '*'),\n ('old', 0)]\n"
        );
        assert_eq!(State::parse(&s.to_text(), "state").unwrap(), s);
    }

    #[test]
    fn failure_reports_give_back_only_numeric_counts() {
        let mut s = State::parse("[('hp', 0), ('vm', '*')]", "state").unwrap();
        assert!(s.give_back("hp"));
        assert_eq!(s.count("hp"), Some(Count::Left(1)));
        assert!(!s.give_back("vm"));
        assert!(!s.give_back("nope"));
        assert_eq!(s.count("vm"), Some(Count::Unlimited));
    }

    #[test]
    fn bad_entries_are_located() {
        let e = State::parse("[('a', 1), ('b', 'x')]", "state").unwrap_err();
        assert_eq!(
            e.to_string(),
            "state: entry 2: count must be a number or '*', found 'x'"
        );
        assert!(State::parse("[('a',)]", "state").is_err());
        assert!(State::parse("[(1, 1)]", "state").is_err());
    }
}

use std::fmt;

/// A string value. Small strings (up to 24 bytes: names, IPs, MACs, sizes) are stored inline,
/// which matters when `generate()` expands a CMDB into tens of thousands of entries.
pub type Text = compact_str::CompactString;

/// A parsed literal. Dicts keep their file order, as Python 3.7+ dicts do.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `name(arg, ...)`: only ever interpreted by the caller (e.g. `generate`). Boxed to keep
    /// every other value small (a CMDB can hold tens of thousands of them).
    Call(Box<Call>),
}

/// A call as written, never evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Value>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Elements of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The text a scalar stands for where eDeploy compared values as strings: hardware values and
    /// spec elements written as numbers (`10`) compare like their Python `str()`.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(crate::write::python_float(*f)),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            Value::None => Some("None".to_string()),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Call(_) => "call",
        }
    }

    /// JSON view of the value: tuples become arrays, dict keys their text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.to_string()),
            Value::List(v) | Value::Tuple(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Dict(v) => J::Object(
                v.iter()
                    .map(|(k, v)| {
                        (
                            k.scalar_text()
                                .unwrap_or_else(|| crate::to_python_compact(k)),
                            v.to_json(),
                        )
                    })
                    .collect(),
            ),
            Value::Call(_) => J::String(crate::to_python_compact(self)),
        }
    }

    /// The inverse of [`Value::to_json`] (objects become dicts with string keys).
    pub fn from_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
            J::String(s) => Value::Str(s.into()),
            J::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Dict(
                o.iter()
                    .map(|(k, v)| (Value::Str(k.into()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s.into())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::to_python_compact(self))
    }
}

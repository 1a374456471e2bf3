//! The Python-literal subset that eDeploy writes its configuration in.
//!
//! eDeploy read `specs`, `cmdb`, `state` and `.hw` files with `eval` (CVE-2014-3700). Here they are
//! parsed by a grammar into a [`Value`] tree; nothing is evaluated. `generate({...})` is kept as a
//! [`Value::Call`] for the caller to interpret. [`to_python`] writes values back in the same syntax
//! so that eDeploy's tools (and Python's `ast.literal_eval`) still read what we write.

mod parse;
mod value;
mod write;

pub use parse::{parse, parse_located, parse_named, ParseError};
pub use value::{Call, Text, Value};
pub use write::{python_str, to_python, to_python_compact, write_python_compact, write_python_str};

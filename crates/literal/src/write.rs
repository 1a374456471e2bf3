use crate::Value;

/// Python's `repr()` of a string: single quotes unless the text holds `'` and no `"`.
pub fn python_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_python_str(s, &mut out);
    out
}

/// [`python_str`] appended to `out`: writing a CMDB of tens of thousands of entries should not
/// allocate a `String` per value.
pub fn write_python_str(s: &str, out: &mut String) {
    // Most values (names, IPs, MACs) are printable ASCII with no quote or backslash: their repr is
    // the text itself in single quotes, found with one pass over the bytes (without early exit
    // and branches, so that the compiler can check many bytes at once).
    let plain = s.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'\\') & (b != b'\'')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push('\'');
        out.push_str(s);
        out.push('\'');
        return;
    }
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                let v = c as u32;
                if v <= 0xff {
                    out.push_str(&format!("\\x{v:02x}"));
                } else if v <= 0xffff {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr()` of a float (always with a `.` or an exponent, so it reads back as a float).
pub(crate) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "float('nan')".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "float('inf')"
        } else {
            "float('-inf')"
        }
        .into();
    }
    let s = format!("{f:?}");
    s
}

/// One-line form, e.g. `('disk', 'sda', 'size', '100')`.
pub fn to_python_compact(v: &Value) -> String {
    let mut out = String::new();
    write_compact(v, &mut out);
    out
}

/// [`to_python_compact`] appended to `out`, for writers that assemble a file from many values.
pub fn write_python_compact(v: &Value, out: &mut String) {
    write_compact(v, out)
}

fn write_seq(open: char, close: char, items: &[Value], out: &mut String) {
    out.push(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_compact(item, out);
    }
    if open == '(' && items.len() == 1 {
        out.push(',');
    }
    out.push(close);
}

fn write_compact(v: &Value, out: &mut String) {
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => {
            use std::fmt::Write;
            let _ = write!(out, "{i}"); // writing to a String cannot fail
        }
        Value::Float(f) => out.push_str(&python_float(*f)),
        Value::Str(s) => write_python_str(s, out),
        Value::List(items) => write_seq('[', ']', items, out),
        Value::Tuple(items) => write_seq('(', ')', items, out),
        Value::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_compact(k, out);
                out.push_str(": ");
                write_compact(v, out);
            }
            out.push('}');
        }
        Value::Call(call) => {
            let crate::Call { name, args } = call.as_ref();
            out.push_str(name);
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_compact(a, out);
            }
            out.push(')');
        }
    }
}

/// File form: a top-level list or tuple puts one element per line, the way `pprint` lays out
/// eDeploy's state, cmdb and hw files, so that diffs of these files stay readable.
pub fn to_python(v: &Value) -> String {
    let mut out = match v.as_seq() {
        Some(items) if !items.is_empty() => {
            let (open, close) = if matches!(v, Value::List(_)) {
                ('[', ']')
            } else {
                ('(', ')')
            };
            let mut out = String::new();
            out.push(open);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n ");
                }
                write_compact(item, &mut out);
            }
            if close == ')' && items.len() == 1 {
                out.push(',');
            }
            out.push(close);
            out
        }
        _ => to_python_compact(v),
    };
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn repr_matches_python() {
        assert_eq!(python_str("abc"), "'abc'");
        assert_eq!(python_str("it's"), "\"it's\"");
        assert_eq!(python_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(python_str("tab\there\n"), "'tab\\there\\n'");
        assert_eq!(python_str("nul\0"), "'nul\\x00'");
        assert_eq!(python_str("back\\slash"), "'back\\\\slash'");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1200.5), "1200.5");
    }

    #[test]
    fn file_form_is_one_element_per_line_and_reads_back() {
        let v = parse("[('vm', 3), ('hw', '*')]").unwrap();
        let text = to_python(&v);
        assert_eq!(text, "[('vm', 3),\n ('hw', '*')]\n");
        assert_eq!(parse(&text).unwrap(), v);
        let single = parse("(('a', 1),)").unwrap();
        assert_eq!(parse(&to_python(&single)).unwrap(), single);
    }
}

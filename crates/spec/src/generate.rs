//! eDeploy's `generate({...})`: expand a model with ranges into a list of CMDB entries.
//!
//! Semantics of eDeploy and its successor `hardware` library:
//! - `'10.0.0.3-7'` (four dotted parts with `-` or `:`) expands each octet's range and takes the
//!   cartesian product, last octet fastest;
//! - otherwise the first `N-M` (or `N-M:P-Q...`) in a string expands in place (`host03-07` keeps its
//!   zero padding; `10-8` counts down);
//! - a list yields its elements; a nested dict expands in step with its parent;
//! - anything else is a constant;
//! - the result is as long as the shortest expanded value.
//!
//! With a `prefix` (second argument), only keys starting with it expand (the prefix is dropped
//! from the key); other values are constants.
//!
//! Two departures, both where the Python could not have meant its behaviour: a model with no
//! finite sequence at all yields one entry (Python yielded 16,387,064 copies), and with a prefix
//! and no ranges the prefix is still dropped from the keys.

use edeploy_literal::{Text, Value};

/// Why a model cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("generate() takes a dict and an optional prefix string, found {0}")]
    BadArguments(String),
    #[error("generate() would produce more than {0} entries")]
    TooLarge(usize),
}

/// The most entries one model may expand to: far beyond any real CMDB, small enough that a typo
/// like `10.0-255.0-255.0-255` is refused instead of exhausting memory.
pub const MAX_ENTRIES: usize = 1 << 20;

/// One expanded value: a finite sequence, a ranged string, a constant, or a nested model.
enum Gen {
    Seq(Vec<Value>),
    Pattern(Pattern),
    Const(Value),
    Nested(Vec<(Value, Gen)>),
}

/// A string with ranges, expanded on demand: entries are built straight from the index, without
/// an intermediate list per key.
pub enum Pattern {
    /// Four dotted parts, each a list of alternatives (the first three carry their trailing dot);
    /// the cartesian product, last part fastest.
    Ipv4([Vec<Text>; 4]),
    /// `head` + each number + `foot`.
    Ranged {
        head: Text,
        nums: Vec<Text>,
        foot: Text,
    },
}

impl Pattern {
    pub fn len(&self) -> usize {
        match self {
            // Checked against MAX_ENTRIES when built, so the product cannot overflow.
            Pattern::Ipv4(parts) => parts.iter().map(Vec::len).product(),
            Pattern::Ranged { nums, .. } => nums.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn nth(&self, mut i: usize) -> Text {
        match self {
            Pattern::Ipv4(parts) => {
                let mut pick: [&str; 4] = [""; 4];
                for k in (0..4).rev() {
                    let n = parts[k].len();
                    pick[k] = &parts[k][i % n];
                    i /= n;
                }
                concat(&pick)
            }
            Pattern::Ranged { head, nums, foot } => concat(&[head, &nums[i], foot]),
        }
    }
}

impl Gen {
    /// Length of the sequence this generator can produce (`None`: unbounded).
    fn len(&self) -> Option<usize> {
        match self {
            Gen::Seq(v) => Some(v.len()),
            Gen::Pattern(p) => Some(p.len()),
            Gen::Const(_) => None,
            Gen::Nested(items) => items.iter().filter_map(|(_, g)| g.len()).min(),
        }
    }

    fn nth(&self, i: usize) -> Value {
        match self {
            Gen::Seq(v) => v[i].clone(),
            Gen::Pattern(p) => Value::Str(p.nth(i)),
            Gen::Const(c) => c.clone(),
            Gen::Nested(items) => {
                Value::Dict(items.iter().map(|(k, g)| (k.clone(), g.nth(i))).collect())
            }
        }
    }
}

/// Expands a `generate(model[, prefix])` call's arguments.
pub fn generate_call(args: &[Value]) -> Result<Vec<Value>, GenerateError> {
    match args {
        [model @ Value::Dict(_)] => generate(model, None),
        [model @ Value::Dict(_), Value::Str(p)] => generate(model, Some(p)),
        [model @ Value::Dict(_), Value::None] => generate(model, None),
        _ => Err(GenerateError::BadArguments(
            args.iter().map(|a| a.kind()).collect::<Vec<_>>().join(", "),
        )),
    }
}

/// Expands a model (a dict) into its entries.
pub fn generate(model: &Value, prefix: Option<&str>) -> Result<Vec<Value>, GenerateError> {
    let Some(items) = model.as_dict() else {
        return Err(GenerateError::BadArguments(model.kind().to_string()));
    };
    let gen = Gen::Nested(model_items(items, prefix, true)?);
    let n = gen.len().unwrap_or(1);
    if n > MAX_ENTRIES {
        return Err(GenerateError::TooLarge(MAX_ENTRIES));
    }
    Ok((0..n).map(|i| gen.nth(i)).collect())
}

fn model_items(
    items: &[(Value, Value)],
    prefix: Option<&str>,
    top: bool,
) -> Result<Vec<(Value, Gen)>, GenerateError> {
    items
        .iter()
        .map(|(k, v)| {
            // Only the top level honours the prefix: the Python passes no prefix when it recurses.
            let prefix = if top { prefix } else { None };
            let key_text = k.as_str();
            match (prefix, key_text) {
                (Some(p), Some(text)) if text.starts_with(p) => {
                    Ok((Value::Str(text[p.len()..].into()), values(v, None)?))
                }
                (Some(_), _) => Ok((k.clone(), Gen::Const(v.clone()))),
                (None, _) => Ok((k.clone(), values(v, None)?)),
            }
        })
        .collect()
}

fn values(v: &Value, prefix: Option<&str>) -> Result<Gen, GenerateError> {
    Ok(match v {
        Value::List(items) => Gen::Seq(items.clone()),
        Value::Dict(items) => Gen::Nested(model_items(items, prefix, false)?),
        Value::Str(s) => match pattern(s)? {
            Some(p) => Gen::Pattern(p),
            None => Gen::Const(v.clone()),
        },
        other => Gen::Const(other.clone()),
    })
}

/// Expands one string; `None` when it holds no range (a constant).
pub fn expand_str(s: &str) -> Result<Option<Vec<Text>>, GenerateError> {
    Ok(pattern(s)?.map(|p| (0..p.len()).map(|i| p.nth(i)).collect()))
}

/// Reads the ranges of one string; `None` when it holds none (a constant).
pub fn pattern(s: &str) -> Result<Option<Pattern>, GenerateError> {
    let parts: Vec<&str> = s.split('.').collect();
    let ipv4_like = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ':' | '-' | '.'));
    if ipv4_like && parts.len() == 4 && (s.contains(':') || s.contains('-')) {
        let octets: [Vec<Text>; 4] = [0, 1, 2, 3].map(|k| {
            let mut alternatives = expand_range(parts[k]);
            if k < 3 {
                alternatives.iter_mut().for_each(|a| a.push('.'));
            }
            alternatives
        });
        let total = octets
            .iter()
            .try_fold(1usize, |acc, o| acc.checked_mul(o.len()));
        if total.is_none_or(|t| t > MAX_ENTRIES) {
            return Err(GenerateError::TooLarge(MAX_ENTRIES));
        }
        return Ok(Some(Pattern::Ipv4(octets)));
    }
    let Some((head, range, foot)) = find_range(s) else {
        return Ok(None);
    };
    let nums = expand_range(range);
    if nums.len() > MAX_ENTRIES {
        return Err(GenerateError::TooLarge(MAX_ENTRIES));
    }
    Ok(Some(Pattern::Ranged {
        head: head.into(),
        nums,
        foot: foot.into(),
    }))
}

/// The first `N-M(:N-M)*` of a string, as `^(.*?)(\d+-\d+(:\d+-\d+)*)(.*)$` finds it.
fn find_range(s: &str) -> Option<(&str, &str, &str)> {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    };
    // One `\d+-\d+` at i, returning its end. The regex's `\d+` is greedy but may give digits back,
    // which only matters for where the range starts: the lazy head makes the match start at the
    // first digit run that is followed by `-\d`.
    let pair = |i: usize| -> Option<usize> {
        let e = digits(i)?;
        if e < b.len() && b[e] == b'-' {
            digits(e + 1)
        } else {
            None
        }
    };
    for start in 0..b.len() {
        if !b[start].is_ascii_digit() {
            continue;
        }
        if let Some(mut end) = pair(start) {
            while end < b.len() && b[end] == b':' {
                match pair(end + 1) {
                    Some(e) => end = e,
                    None => break,
                }
            }
            return Some((&s[..start], &s[start..end], &s[end..]));
        }
    }
    None
}

/// Concatenation without the formatting machinery: generate() builds tens of thousands of these,
/// most short enough to assemble on the stack and store inline.
fn concat(parts: &[&str]) -> Text {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = [0u8; 64];
    if len > buf.len() {
        return Text::from(parts.concat());
    }
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p.as_bytes());
        at += p.len();
    }
    // SAFETY: the buffer holds whole `str`s end to end, which is valid UTF-8; skipping the check
    // matters when a CMDB expands to tens of thousands of entries.
    Text::new(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
}

/// `n` in decimal, zero-padded to `width`.
fn number(mut n: u64, width: usize) -> Text {
    let mut buf = [b'0'; 40];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    // SAFETY: ASCII digits only.
    Text::new(unsafe { std::str::from_utf8_unchecked(&buf[start..]) })
}

/// `10-12:20-22` to its numbers; a part that is not `N-M` stands for itself, and so does the
/// whole text when a bound is not a number (as eDeploy did).
fn expand_range(text: &str) -> Vec<Text> {
    let mut out = Vec::new();
    for part in text.split(':') {
        let bounds: Vec<&str> = part.split('-').collect();
        if bounds.len() != 2 {
            out.push(text.into());
            continue;
        }
        let (Ok(start), Ok(stop)) = (bounds[0].parse::<u64>(), bounds[1].parse::<u64>()) else {
            out.push(text.into());
            continue;
        };
        let width = if bounds[0].starts_with('0') {
            bounds[0].len()
        } else {
            0
        };
        let fmt = |n: u64| number(n, width);
        if stop.abs_diff(start) as usize > MAX_ENTRIES {
            // Refused by the caller's length check; keep memory bounded here.
            out.extend((0..=MAX_ENTRIES as u64).map(fmt));
        } else if stop >= start {
            out.extend((start..=stop).map(fmt));
        } else {
            out.extend((stop..=start).rev().map(fmt));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use edeploy_literal::parse;

    fn gen(src: &str) -> Vec<Value> {
        match parse(src).unwrap() {
            Value::Call(call) => generate_call(&call.args).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn strs(v: &[Value], key: &str) -> Vec<String> {
        v.iter()
            .map(|e| e.get(key).unwrap().scalar_text().unwrap())
            .collect()
    }

    #[test]
    fn ranges() {
        assert_eq!(expand_range("1-3"), ["1", "2", "3"]);
        assert_eq!(expand_range("3-1"), ["3", "2", "1"]);
        assert_eq!(expand_range("03-05"), ["03", "04", "05"]);
        assert_eq!(expand_range("10-12:20-21"), ["10", "11", "12", "20", "21"]);
        assert_eq!(expand_range("7"), ["7"]);
        assert_eq!(expand_range("5-5"), ["5"]);
        assert_eq!(expand_range("1-"), ["1-"]);
    }

    /// eDeploy's README example.
    #[test]
    fn readme_example() {
        let v = gen("generate({'ip': '192.168.122.3-5', 'hostname': 'node3-5', 'gateway': '192.168.122.1', 'netmask': '255.255.255.0'})");
        assert_eq!(
            strs(&v, "ip"),
            ["192.168.122.3", "192.168.122.4", "192.168.122.5"]
        );
        assert_eq!(strs(&v, "hostname"), ["node3", "node4", "node5"]);
        assert_eq!(strs(&v, "gateway"), ["192.168.122.1"; 3]);
        assert_eq!(
            edeploy_literal::to_python_compact(&v[0]),
            "{'ip': '192.168.122.3', 'hostname': 'node3', 'gateway': '192.168.122.1', 'netmask': '255.255.255.0'}"
        );
    }

    #[test]
    fn ip_octets_are_a_cartesian_product() {
        let v = gen("generate({'ip': '10.0.1-2.3-4'})");
        assert_eq!(
            strs(&v, "ip"),
            ["10.0.1.3", "10.0.1.4", "10.0.2.3", "10.0.2.4"]
        );
        let v = gen("generate({'ip': '10.0.0.1-2:5-6'})");
        assert_eq!(
            strs(&v, "ip"),
            ["10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn padding_descending_and_shortest_length() {
        let v = gen("generate({'hostname': 'host03-07', 'ip': '10.0.0.10-8'})");
        assert_eq!(strs(&v, "hostname"), ["host03", "host04", "host05"]);
        assert_eq!(strs(&v, "ip"), ["10.0.0.10", "10.0.0.9", "10.0.0.8"]);
        let v = gen("generate({'name': 'rack1-node01-03.example.com'})");
        assert_eq!(
            strs(&v, "name"),
            [
                "rack1-node01.example.com",
                "rack1-node02.example.com",
                "rack1-node03.example.com"
            ]
        );
        let v = gen("generate({'a': 'x1-2', 'b': 'y1-5'})");
        assert_eq!(v.len(), 2, "as long as the shortest ranged value");
    }

    #[test]
    fn lists_constants_nested_and_prefix() {
        let v = gen("generate({'ip': '10.0.0.1-3', 'role': ['a', 'b'], 'port': 22})");
        assert_eq!(strs(&v, "role"), ["a", "b"]);
        assert_eq!(v[1].get("port"), Some(&Value::Int(22)));
        let v = gen("generate({'ip': '10.0.0.1-2', 'bmc': {'ip': '10.1.0.5-9', 'user': 'root'}})");
        assert_eq!(v.len(), 2);
        assert_eq!(
            edeploy_literal::to_python_compact(v[1].get("bmc").unwrap()),
            "{'ip': '10.1.0.6', 'user': 'root'}"
        );
        let v = gen("generate({'=ip': '10.0.0.1-2', 'range': '1-5', '=name': 'n'}, '=')");
        assert_eq!(strs(&v, "ip"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            strs(&v, "range"),
            ["1-5", "1-5"],
            "keys without the prefix stay constant"
        );
        assert_eq!(strs(&v, "name"), ["n", "n"]);
    }

    #[test]
    fn models_without_ranges_give_one_entry() {
        assert_eq!(gen("generate({'a': 'b'})").len(), 1);
        assert_eq!(gen("generate({'a': 1})").len(), 1);
        assert_eq!(
            gen("generate({'=a': 'b'}, '=')")[0].get("a"),
            Some(&Value::Str("b".into()))
        );
    }

    #[test]
    fn huge_models_are_refused() {
        let e = generate(&parse("{'ip': '10.0-255.0-255.0-255'}").unwrap(), None).unwrap_err();
        assert_eq!(e, GenerateError::TooLarge(MAX_ENTRIES));
        let e = generate(&parse("{'h': 'h0-99999999999'}").unwrap(), None).unwrap_err();
        assert_eq!(e, GenerateError::TooLarge(MAX_ENTRIES));
        assert!(generate_call(&[Value::Int(1)]).is_err());
    }
}

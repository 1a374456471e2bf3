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

/// A string with ranges, expanded on demand: entries are built straight from the ranges, without
/// an intermediate list per key.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Four dotted parts, each a list of alternatives (the first three carry their trailing dot);
    /// the cartesian product, last part fastest.
    Ipv4([Vec<Text>; 4]),
    /// `head` + each number of `nums` + `foot`.
    Ranged {
        head: Text,
        nums: Vec<Run>,
        foot: Text,
    },
}

/// One `N-M` of a range, counted on demand (`host00001-10000` is 10,000 names but 1 run).
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// `start` to `stop` inclusive, either way, zero-padded to `width` digits.
    Count { start: u64, stop: u64, width: usize },
    /// A text standing for itself (eDeploy's fallback when a part is not `N-M`).
    Whole(Text),
}

impl Run {
    /// Saturating: a run longer than [`MAX_ENTRIES`] is refused by the callers anyway.
    fn len(&self) -> usize {
        match self {
            Run::Count { start, stop, .. } => {
                usize::try_from(start.abs_diff(*stop)).map_or(usize::MAX, |d| d.saturating_add(1))
            }
            Run::Whole(_) => 1,
        }
    }

    /// The `i`th number (`i < len`).
    fn value(&self, i: usize) -> u64 {
        match self {
            Run::Count { start, stop, .. } if stop >= start => start + i as u64,
            Run::Count { start, .. } => start - i as u64,
            Run::Whole(_) => unreachable!("only counts have numbers"),
        }
    }

    /// Appends the `i`th text of the run to `out`.
    fn push(&self, i: usize, out: &mut String) {
        match self {
            Run::Count { width, .. } => push_number(self.value(i), *width, out),
            Run::Whole(t) => out.push_str(t),
        }
    }
}

fn runs_len(runs: &[Run]) -> usize {
    runs.iter()
        .fold(0, |acc: usize, r| acc.saturating_add(r.len()))
}

impl Pattern {
    pub fn len(&self) -> usize {
        match self {
            // Checked against MAX_ENTRIES when built, so the product cannot overflow.
            Pattern::Ipv4(parts) => parts.iter().map(Vec::len).product(),
            Pattern::Ranged { nums, .. } => runs_len(nums),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th string, by random access (`i < len`); [`Pattern::take`] is the fast way to get
    /// them all.
    pub fn nth(&self, mut i: usize) -> Text {
        match self {
            Pattern::Ipv4(parts) => {
                let mut pick: [&str; 4] = [""; 4];
                for k in (0..4).rev() {
                    let n = parts[k].len();
                    pick[k] = &parts[k][i % n];
                    i /= n;
                }
                Text::from(pick.concat())
            }
            Pattern::Ranged { head, nums, foot } => {
                let mut out = String::from(head.as_str());
                for run in nums {
                    let n = run.len();
                    if i < n {
                        run.push(i, &mut out);
                        break;
                    }
                    i -= n;
                }
                out.push_str(foot);
                Text::from(out)
            }
        }
    }

    /// The first `n` strings (`n <= len`) as values, in order. generate() spends its time here,
    /// so consecutive strings are derived from one another: a working copy is patched where it
    /// changes (the last octet, a counter's digits) and each value is a copy of it, which for the
    /// usual short string is a plain 24-byte copy, with no allocation or formatting.
    pub fn take(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        match self {
            Pattern::Ipv4(parts) => {
                // An odometer over the four parts, last fastest.
                let mut at = [0usize; 3];
                while out.len() < n {
                    let mut cur = Text::default();
                    (0..3).for_each(|k| cur.push_str(&parts[k][at[k]]));
                    let keep = cur.len();
                    let mut last_len = usize::MAX;
                    for last in parts[3].iter().take(n - out.len()) {
                        if last.len() == last_len {
                            // SAFETY: replaces whole `str`s by `str`s of the same length.
                            let d = unsafe { &mut cur.as_mut_bytes()[keep..keep + last_len] };
                            patch(d, last.as_bytes());
                        } else {
                            cur.truncate(keep);
                            cur.push_str(last);
                            last_len = last.len();
                        }
                        out.push(Value::Str(cur.clone()));
                    }
                    // Carry into the first three parts (past the end only once `n` is reached).
                    for k in (0..3).rev() {
                        at[k] += 1;
                        if at[k] < parts[k].len() || k == 0 {
                            break;
                        }
                        at[k] = 0;
                    }
                }
            }
            Pattern::Ranged { head, nums, foot } => {
                // `head` + the `i`th text of `run` + `foot`, and where the digits are.
                let write = |run: &Run, i: usize| {
                    let mut buf = String::from(head.as_str());
                    run.push(i, &mut buf);
                    let digits = head.len()..buf.len();
                    buf.push_str(foot);
                    (Text::new(&buf), digits)
                };
                for run in nums {
                    let count = run.len().min(n - out.len());
                    if count == 0 {
                        continue;
                    }
                    let (mut cur, mut digits) = write(run, 0);
                    out.push(Value::Str(cur.clone()));
                    let Run::Count { start, stop, width } = *run else {
                        continue; // a whole text is one string
                    };
                    for i in 1..count {
                        // SAFETY: ASCII digits are replaced by ASCII digits.
                        let d = unsafe { &mut cur.as_mut_bytes()[digits.clone()] };
                        let stepped = if stop >= start {
                            increment(d)
                        } else {
                            decrement(d, width)
                        };
                        if !stepped {
                            // The number of digits changes (9 to 10, 10 to 9): written anew.
                            (cur, digits) = write(run, i);
                        }
                        out.push(Value::Str(cur.clone()));
                    }
                }
            }
        }
        out
    }
}

/// generate()'s result, by key: each key's values stored once for all entries, so that a CMDB
/// of tens of thousands of entries costs one value per ranged key and entry, with no per-entry
/// dict and no copy of the keys or of the constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The keys, in the model's order: every entry has them all, in this order.
    pub keys: Vec<Value>,
    /// One column per key.
    pub columns: Vec<Column>,
    /// The number of entries.
    pub len: usize,
}

/// One key's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// The same value in every entry.
    Const(Value),
    /// One value per entry.
    Each(Vec<Value>),
}

impl Column {
    /// The value of entry `row` (`row < len`).
    pub fn at(&self, row: usize) -> &Value {
        match self {
            Column::Const(v) => v,
            Column::Each(v) => &v[row],
        }
    }
}

impl Drop for Column {
    fn drop(&mut self) {
        // A generated column is mostly short strings stored inline, which own no memory: checking
        // that is a byte compare per value, cheaper than a call to drop each (a fifth of
        // generate()'s instructions). A column holding anything else is dropped value by value.
        if let Column::Each(v) = self {
            if v.iter()
                .all(|x| matches!(x, Value::Str(s) if !s.is_heap_allocated()))
            {
                // SAFETY: a length of 0 is always valid; the values are forgotten, not dropped,
                // and own nothing to leak.
                unsafe { v.set_len(0) };
            }
        }
    }
}

impl Table {
    /// Entry `row` as the dict it stands for.
    pub fn row(&self, row: usize) -> Value {
        Value::Dict(
            self.keys
                .iter()
                .zip(&self.columns)
                .map(|(k, c)| (k.clone(), c.at(row).clone()))
                .collect(),
        )
    }

    /// Every entry as a dict.
    pub fn to_values(&self) -> Vec<Value> {
        (0..self.len).map(|i| self.row(i)).collect()
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

    /// The first `n` values as a column (`n <= len`).
    fn column(self, n: usize) -> Column {
        match self {
            Gen::Seq(mut v) => {
                v.truncate(n);
                Column::Each(v)
            }
            Gen::Pattern(p) => Column::Each(p.take(n)),
            Gen::Const(c) => Column::Const(c),
            nested @ Gen::Nested(_) => Column::Each((0..n).map(|i| nested.nth(i)).collect()),
        }
    }
}

/// Expands a `generate(model[, prefix])` call's arguments.
pub fn generate_call(args: &[Value]) -> Result<Table, GenerateError> {
    match args {
        [model @ Value::Dict(_)] => generate_table(model, None),
        [model @ Value::Dict(_), Value::Str(p)] => generate_table(model, Some(p)),
        [model @ Value::Dict(_), Value::None] => generate_table(model, None),
        _ => Err(GenerateError::BadArguments(
            args.iter().map(|a| a.kind()).collect::<Vec<_>>().join(", "),
        )),
    }
}

/// Expands a model (a dict) into its entries.
pub fn generate(model: &Value, prefix: Option<&str>) -> Result<Vec<Value>, GenerateError> {
    Ok(generate_table(model, prefix)?.to_values())
}

/// Expands a model (a dict) into its entries, by key (see [`Table`]).
pub fn generate_table(model: &Value, prefix: Option<&str>) -> Result<Table, GenerateError> {
    let Some(items) = model.as_dict() else {
        return Err(GenerateError::BadArguments(model.kind().to_string()));
    };
    let items = model_items(items, prefix, true)?;
    let n = items.iter().filter_map(|(_, g)| g.len()).min().unwrap_or(1);
    if n > MAX_ENTRIES {
        return Err(GenerateError::TooLarge(MAX_ENTRIES));
    }
    let (keys, columns) = items.into_iter().map(|(k, g)| (k, g.column(n))).unzip();
    Ok(Table {
        keys,
        columns,
        len: n,
    })
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
    let nums = runs(range);
    if runs_len(&nums) > MAX_ENTRIES {
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

/// `dst.copy_from_slice(src)`, with the usual octet lengths as fixed-size copies: a call to
/// `memcpy` for 1 to 3 bytes would cost more than the rest of making the string.
fn patch(dst: &mut [u8], src: &[u8]) {
    match (dst, src) {
        ([d], [s]) => *d = *s,
        ([d0, d1], [s0, s1]) => (*d0, *d1) = (*s0, *s1),
        ([d0, d1, d2], [s0, s1, s2]) => (*d0, *d1, *d2) = (*s0, *s1, *s2),
        (dst, src) => dst.copy_from_slice(src),
    }
}

/// Adds one to a decimal number in place; `false` (digits undefined) when it needs one more digit.
fn increment(digits: &mut [u8]) -> bool {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return true;
        }
    }
    false
}

/// Takes one from a positive decimal number in place; `false` (digits undefined) when it should
/// now be written with fewer digits than it has (more than `width`, a leading zero).
fn decrement(digits: &mut [u8], width: usize) -> bool {
    for d in digits.iter_mut().rev() {
        if *d == b'0' {
            *d = b'9';
        } else {
            *d -= 1;
            break;
        }
    }
    !(digits.len() > width.max(1) && digits[0] == b'0')
}

/// Appends `n` in decimal, zero-padded to `width`, without the formatting machinery (generate()
/// writes tens of thousands of these).
fn push_number(mut n: u64, width: usize, out: &mut String) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // The padding stops at 40 digits, as it always has (a wider zero-padded bound is no real
    // host name; kept so that no existing CMDB expands differently).
    for _ in buf.len() - i..width.min(40) {
        out.push('0');
    }
    // SAFETY: ASCII digits only.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&buf[i..]) });
}

/// `10-12:20-22` to its runs of numbers; a part that is not `N-M` stands for the whole text, and
/// so does a part whose bound is not a number (as eDeploy did).
fn runs(text: &str) -> Vec<Run> {
    text.split(':')
        .map(|part| {
            let mut bounds = part.split('-');
            let (Some(a), Some(b), None) = (bounds.next(), bounds.next(), bounds.next()) else {
                return Run::Whole(text.into());
            };
            let (Ok(start), Ok(stop)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                return Run::Whole(text.into());
            };
            let width = if a.starts_with('0') { a.len() } else { 0 };
            Run::Count { start, stop, width }
        })
        .collect()
}

/// [`runs`], every number written out (for the octets of an IPv4 pattern, a few each).
fn expand_range(text: &str) -> Vec<Text> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for run in runs(text) {
        // A run beyond MAX_ENTRIES is refused by the caller's length check; stopping one past
        // the limit keeps memory bounded here.
        for i in 0..run.len().min(MAX_ENTRIES + 1) {
            buf.clear();
            run.push(i, &mut buf);
            out.push(Text::new(&buf));
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
            Value::Call(call) => generate_call(&call.args).unwrap().to_values(),
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

    proptest::proptest! {
        /// The sequential expansion (strings derived from one another) gives what random access
        /// gives, for counters that gain or lose digits, padded or not, up or down, and for
        /// IPv4 octets of different widths; also when cut short by a shorter key.
        #[test]
        fn take_is_nth_in_order(
            s in "[a-c]{0,2}0?[0-9]{1,3}-0?[0-9]{1,3}(:[0-9]{1,3}-[0-9]{1,3}){0,2}[a-c.]{0,2}\\
                  |([0-9]{1,2}(-[0-9]{1,2})?\\.){3}[0-9]{1,3}(-[0-9]{1,3})?(:[0-9]{1,3}-[0-9]{1,3})?",
            cut in 0usize..50,
        ) {
            // Too large models are refused, not expanded; big ones take long in a debug build.
            if let Ok(Some(p)) = pattern(&s).map(|p| p.filter(|p| p.len() <= 5_000)) {
                let all: Vec<Value> = (0..p.len()).map(|i| Value::Str(p.nth(i))).collect();
                proptest::prop_assert_eq!(&p.take(p.len()), &all);
                let n = cut.min(p.len());
                proptest::prop_assert_eq!(&p.take(n)[..], &all[..n]);
            }
        }
    }

    #[test]
    fn counters_change_width_in_place() {
        let v = gen("generate({'a': 'n8-11', 'b': 'm11-8', 'c': 'p098-101', 'd': 'q101-098'})");
        assert_eq!(strs(&v, "a"), ["n8", "n9", "n10", "n11"]);
        assert_eq!(strs(&v, "b"), ["m11", "m10", "m9", "m8"]);
        assert_eq!(strs(&v, "c"), ["p098", "p099", "p100", "p101"]);
        // Padding follows the first bound, as in eDeploy.
        assert_eq!(strs(&v, "d"), ["q101", "q100", "q99", "q98"]);
        let v = gen("generate({'ip': '10.0.8-9.98-101'})");
        assert_eq!(
            strs(&v, "ip"),
            [
                "10.0.8.98",
                "10.0.8.99",
                "10.0.8.100",
                "10.0.8.101",
                "10.0.9.98",
                "10.0.9.99",
                "10.0.9.100",
                "10.0.9.101"
            ]
        );
        // Long enough to live on the heap rather than inline.
        let v = gen("generate({'h': 'a-very-long-host-name-prefix-9-10.example.com'})");
        assert_eq!(
            strs(&v, "h"),
            [
                "a-very-long-host-name-prefix-9.example.com",
                "a-very-long-host-name-prefix-10.example.com"
            ]
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

//! One element of a spec line: a literal, a variable, a function, or a variable bound by a function.
//!
//! eDeploy recognised functions with a regular expression and `eval`; here an element is a function
//! call only when it reads `name(args)` with `name` an identifier, and arguments are split on commas
//! outside nested parentheses and quotes (so `and(gt(1), in(2, 3))` works). `regexp` takes the whole
//! text between its parentheses as the pattern, so `regexp(a{1,3})` works too.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use regex::Regex;

/// A compiled element.
#[derive(Debug, Clone)]
pub enum Element {
    /// Must equal the hardware value.
    Literal(String),
    /// `$name` / `$$name`: binds, or must equal an earlier binding.
    Var { name: String, pref: bool },
    /// `func(args)`: the hardware value must satisfy it.
    Func(Expr),
    /// `$name=func(args)`: must satisfy the function, then binds like a variable.
    VarFunc {
        name: String,
        pref: bool,
        func: Expr,
    },
}

/// A function test on one hardware value.
#[derive(Debug, Clone)]
pub enum Expr {
    Cmp(CmpOp, f64),
    In(Vec<String>),
    Network(IpNetwork),
    Regexp(Regex),
    Range(f64, f64),
    Not(Box<Arg>),
    And(Vec<Arg>),
    Or(Vec<Arg>),
    /// A name that is not a known function: never matches (eDeploy did the same); `check` warns.
    Unknown(String),
}

/// An argument of `not`, `and`, `or`: a nested function or a literal compared for equality.
#[derive(Debug, Clone)]
pub enum Arg {
    Func(Expr),
    Literal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

/// Why an element could not be compiled (the offset is in characters, within the element text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ElementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ElementError> {
    Err(ElementError {
        offset,
        message: message.into(),
    })
}

impl Element {
    pub fn parse(text: &str) -> Result<Element, ElementError> {
        if let Some(rest) = text.strip_prefix('$') {
            let (pref, rest, skip) = match rest.strip_prefix('$') {
                Some(r) => (true, r, 2),
                None => (false, rest, 1),
            };
            let (name, func) = match rest.split_once('=') {
                Some((n, f)) => (n, Some(f)),
                None => (rest, None),
            };
            if name.is_empty() {
                return err(skip, "a variable needs a name after `$`");
            }
            return Ok(match func {
                None => Element::Var {
                    name: name.to_string(),
                    pref,
                },
                Some(f) => {
                    let at = skip + name.chars().count() + 1;
                    let func = match split_call(f) {
                        Some((fname, args)) => compile_call(fname, args, at)?,
                        None => return err(at, format!("`{f}` after `=` is not a function call")),
                    };
                    Element::VarFunc {
                        name: name.to_string(),
                        pref,
                        func,
                    }
                }
            });
        }
        match split_call(text) {
            Some((name, args)) => Ok(Element::Func(compile_call(name, args, 0)?)),
            None => Ok(Element::Literal(text.to_string())),
        }
    }

    /// The variable this element binds, if any.
    pub fn var(&self) -> Option<(&str, bool)> {
        match self {
            Element::Var { name, pref } | Element::VarFunc { name, pref, .. } => {
                Some((name, *pref))
            }
            _ => None,
        }
    }

    /// The test that does not depend on variables: literal equality or the function.
    pub fn test(&self, value: &str) -> bool {
        match self {
            Element::Literal(l) => l == value,
            Element::Var { .. } => true,
            Element::Func(f) | Element::VarFunc { func: f, .. } => f.eval(value),
        }
    }
}

/// `name(inner)` with `name` an identifier and the closing parenthesis last.
fn split_call(text: &str) -> Option<(&str, &str)> {
    let open = text.find('(')?;
    let name = &text[..open];
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    let inner = text[open + 1..].strip_suffix(')')?;
    Some((name, inner))
}

/// Splits arguments on commas that are outside parentheses, brackets and quotes.
fn split_args(inner: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push((start, &inner[start..i]));
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    out.push((start, &inner[start..]));
    out.into_iter()
        .map(|(s, a)| {
            let lead = a.len() - a.trim_start().len();
            (s + lead, a.trim())
        })
        .collect()
}

/// Drops one pair of matching quotes around an argument (`in('a', "b")`).
fn unquote(a: &str) -> &str {
    for q in ['\'', '"'] {
        if a.len() >= 2 && a.starts_with(q) && a.ends_with(q) {
            return &a[1..a.len() - 1];
        }
    }
    a
}

fn number(arg: &str, at: usize, fname: &str) -> Result<f64, ElementError> {
    let a = unquote(arg);
    match a.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => err(at, format!("{fname}() needs a number, not `{arg}`")),
    }
}

fn compile_call(name: &str, inner: &str, offset: usize) -> Result<Expr, ElementError> {
    let base = offset + name.len() + 1;
    if name == "regexp" {
        let pattern = unquote(inner.trim());
        return Regex::new(pattern).map(Expr::Regexp).or_else(|e| {
            err(
                base,
                format!("bad regexp `{pattern}`: {}", first_line(&e.to_string())),
            )
        });
    }
    let args = split_args(inner);
    let arity = |n: usize| -> Result<(), ElementError> {
        let given = if inner.trim().is_empty() {
            0
        } else {
            args.len()
        };
        if given == n {
            Ok(())
        } else {
            err(
                base,
                format!(
                    "{name}() takes {n} argument{}, {given} given",
                    if n == 1 { "" } else { "s" }
                ),
            )
        }
    };
    Ok(match name {
        "gt" | "ge" | "lt" | "le" => {
            arity(1)?;
            let op = match name {
                "gt" => CmpOp::Gt,
                "ge" => CmpOp::Ge,
                "lt" => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            Expr::Cmp(op, number(args[0].1, base + args[0].0, name)?)
        }
        "range" => {
            arity(2)?;
            Expr::Range(
                number(args[0].1, base + args[0].0, name)?,
                number(args[1].1, base + args[1].0, name)?,
            )
        }
        "in" => Expr::In(args.iter().map(|(_, a)| unquote(a).to_string()).collect()),
        "network" => {
            arity(1)?;
            let cidr = unquote(args[0].1);
            match cidr.parse::<IpNetwork>() {
                Ok(n) => Expr::Network(n),
                Err(e) => return err(base + args[0].0, format!("bad network `{cidr}`: {e}")),
            }
        }
        "not" => {
            arity(1)?;
            Expr::Not(Box::new(compile_arg(args[0].1, base + args[0].0)?))
        }
        "and" | "or" => {
            if inner.trim().is_empty() {
                return err(base, format!("{name}() needs arguments"));
            }
            let list = args
                .iter()
                .map(|(at, a)| compile_arg(a, base + at))
                .collect::<Result<Vec<_>, _>>()?;
            if name == "and" {
                Expr::And(list)
            } else {
                Expr::Or(list)
            }
        }
        other => Expr::Unknown(other.to_string()),
    })
}

fn compile_arg(text: &str, offset: usize) -> Result<Arg, ElementError> {
    match split_call(text) {
        Some((name, inner)) => Ok(Arg::Func(compile_call(name, inner, offset)?)),
        None => Ok(Arg::Literal(unquote(text).to_string())),
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn as_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| !v.is_nan())
}

impl Expr {
    /// Whether a hardware value satisfies the function. A value that is not a number never
    /// satisfies a numeric comparison (eDeploy crashed on it).
    pub fn eval(&self, value: &str) -> bool {
        match self {
            Expr::Cmp(op, bound) => as_number(value).is_some_and(|v| match op {
                CmpOp::Gt => v > *bound,
                CmpOp::Ge => v >= *bound,
                CmpOp::Lt => v < *bound,
                CmpOp::Le => v <= *bound,
            }),
            Expr::Range(lo, hi) => as_number(value).is_some_and(|v| *lo <= v && v <= *hi),
            Expr::In(set) => set.iter().any(|s| s == value),
            Expr::Network(net) => value
                .trim()
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.contains(ip)),
            Expr::Regexp(re) => re.is_match(value),
            Expr::Not(a) => !a.eval(value),
            Expr::And(args) => args.iter().all(|a| a.eval(value)),
            Expr::Or(args) => args.iter().any(|a| a.eval(value)),
            Expr::Unknown(_) => false,
        }
    }

    /// Unknown function names anywhere inside, for warnings.
    pub fn unknown_names(&self, out: &mut Vec<String>) {
        match self {
            Expr::Unknown(n) => out.push(n.clone()),
            Expr::Not(a) => a.unknown_names(out),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|a| a.unknown_names(out)),
            _ => {}
        }
    }
}

impl Arg {
    fn eval(&self, value: &str) -> bool {
        match self {
            Arg::Func(f) => f.eval(value),
            Arg::Literal(l) => l == value,
        }
    }
    fn unknown_names(&self, out: &mut Vec<String>) {
        if let Arg::Func(f) = self {
            f.unknown_names(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(spec: &str, value: &str) -> bool {
        Element::parse(spec).unwrap().test(value)
    }

    #[test]
    fn literals_and_things_that_only_look_like_calls() {
        assert!(t("sda", "sda"));
        assert!(!t("sda", "sdb"));
        assert!(t(
            "ProLiant DL360p Gen8 (654081-B21)",
            "ProLiant DL360p Gen8 (654081-B21)"
        ));
        assert!(matches!(
            Element::parse("(x)").unwrap(),
            Element::Literal(_)
        ));
        assert!(matches!(
            Element::parse("a b(c)").unwrap(),
            Element::Literal(_)
        ));
        assert!(matches!(
            Element::parse("f(x) ").unwrap(),
            Element::Literal(_)
        ));
    }

    #[test]
    fn numeric_comparisons_are_floats_and_reject_non_numbers() {
        assert!(t("gt(1000)", "1200.00"));
        assert!(!t("gt(1200)", "1200.00"));
        assert!(t("ge(1200)", "1200.00"));
        assert!(t("lt(10)", "9.5"));
        assert!(t("le(10)", "10"));
        assert!(!t("gt(1)", "many"));
        assert!(!t("lt(1)", ""));
        assert!(!t("gt(1)", "nan"));
        assert!(
            t("gt('8')", "9"),
            "quoted bounds are accepted, as eDeploy stripped quotes"
        );
        assert!(t("range(10, 20)", "20"));
        assert!(t("range(10, 20)", "10"));
        assert!(!t("range(10, 20)", "20.5"));
        assert!(!t("range(10, 20)", "x"));
    }

    #[test]
    fn in_network_regexp() {
        assert!(t("in('10', '20')", "20"));
        assert!(t("in(10, 20, 30)", "30"));
        assert!(!t("in('10', '20')", "15"));
        assert!(
            t("in('a,b', 'c')", "a,b"),
            "commas inside quotes do not split"
        );
        assert!(t("network(192.168.1.0/24)", "192.168.1.42"));
        assert!(!t("network(192.168.1.0/24)", "192.168.2.1"));
        assert!(!t("network(192.168.1.0/24)", "not an ip"));
        assert!(t("network('2001:db8::/32')", "2001:db8::1"));
        assert!(!t("network(2001:db8::/32)", "2001:db9::1"));
        assert!(t("regexp(^sd[a-z]$)", "sdb"));
        assert!(
            t("regexp(Gen[89])", "ProLiant DL360p Gen8"),
            "search, not full match"
        );
        assert!(
            t("regexp(^a{1,3}$)", "aaa"),
            "the whole text is the pattern"
        );
        assert!(!t("regexp(^a{1,3}$)", "aaaa"));
        assert!(t("regexp('^x')", "xy"));
    }

    #[test]
    fn boolean_combinators_nest() {
        assert!(t("not(8)", "9"));
        assert!(!t("not(8)", "8"));
        assert!(t("not(in(1, 2))", "3"));
        assert!(t("and(gt(1), in(2, 3))", "2"));
        assert!(!t("and(gt(2), in(2, 3))", "2"));
        assert!(t("or(lt(1), regexp(^x))", "xyz"));
        assert!(t("or(lt(1), 50)", "50"));
        assert!(t("and(ge(1), not(regexp(a{1,3})))", "5"));
    }

    #[test]
    fn unknown_functions_never_match() {
        let e = Element::parse("frobnicate(1)").unwrap();
        assert!(!e.test("1"));
        let mut names = vec![];
        if let Element::Func(f) = &e {
            f.unknown_names(&mut names);
        }
        assert_eq!(names, ["frobnicate"]);
    }

    #[test]
    fn variables() {
        match Element::parse("$$disk").unwrap() {
            Element::Var { name, pref } => assert_eq!((name.as_str(), pref), ("disk", true)),
            e => panic!("{e:?}"),
        }
        match Element::parse("$size=gt(10)").unwrap() {
            Element::VarFunc { name, pref, func } => {
                assert_eq!((name.as_str(), pref), ("size", false));
                assert!(func.eval("11") && !func.eval("10"));
            }
            e => panic!("{e:?}"),
        }
        assert!(Element::parse("$").is_err());
        assert!(Element::parse("$x=oops").is_err());
    }

    #[test]
    fn bad_arguments_are_located() {
        let e = Element::parse("gt(abc)").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("number"), "{e}");
        let e = Element::parse("$x=range(1, z)").unwrap_err();
        assert_eq!(e.offset, 12);
        let e = Element::parse("network(10.0.0.0/99)").unwrap_err();
        assert!(e.message.contains("bad network"), "{e}");
        let e = Element::parse("regexp(a(b)").unwrap_err();
        assert!(e.message.contains("bad regexp"), "{e}");
        assert!(Element::parse("gt(1, 2)").is_err());
        assert!(Element::parse("not()").is_err());
    }
}

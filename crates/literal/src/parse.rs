use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

use crate::Value;

#[derive(Parser)]
#[grammar = "literal.pest"]
struct LiteralParser;

/// A syntax error, located in the file it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Nesting deeper than this is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 64;

/// Parses one literal (an anonymous source: errors say `<input>`).
pub fn parse(src: &str) -> Result<Value, ParseError> {
    parse_named(src, "<input>")
}

/// Parses one literal; `file` names the source in errors.
pub fn parse_named(src: &str, file: &str) -> Result<Value, ParseError> {
    parse_located(src, file).map(|(v, _)| v)
}

/// Like [`parse_named`], also returning the `(line, column)` of every scalar (string, number,
/// constant) in document order, so callers can point at an element of a file.
pub fn parse_located(src: &str, file: &str) -> Result<(Value, Vec<(usize, usize)>), ParseError> {
    check_depth(src, file)?;
    let mut pairs = LiteralParser::parse(Rule::document, src).map_err(|e| {
        let (line, col) = match e.line_col {
            pest::error::LineColLocation::Pos(p) => p,
            pest::error::LineColLocation::Span(p, _) => p,
        };
        ParseError {
            file: file.to_string(),
            line,
            col,
            message: describe(&e, src),
        }
    })?;
    let doc = pairs.next().expect("document rule always yields one pair");
    let value = doc.into_inner().next().expect("document holds one value");
    let mut positions = Vec::new();
    let v = build(value, file, &mut positions)?;
    offsets_to_line_col(src, &mut positions);
    Ok((v, positions))
}

/// Replaces ascending byte offsets (first field) by 1-based (line, column in characters).
fn offsets_to_line_col(src: &str, positions: &mut [(usize, usize)]) {
    let (mut line, mut col, mut at) = (1usize, 1usize, 0usize);
    let mut chars = src.char_indices().peekable();
    for p in positions.iter_mut() {
        let target = p.0;
        debug_assert!(target >= at, "offsets come in document order");
        while let Some(&(i, c)) = chars.peek() {
            if i >= target {
                break;
            }
            chars.next();
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        at = target;
        *p = (line, col);
    }
}

fn describe(e: &pest::error::Error<Rule>, src: &str) -> String {
    let at = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((p, _)) => p,
    };
    let rest = src.get(at..).unwrap_or("");
    let found = match rest.chars().next() {
        None => "end of input".to_string(),
        Some(c) if c.is_control() => format!("{c:?}"),
        Some(c) => format!("`{c}`"),
    };
    if rest.trim().is_empty() && at > 0 {
        return "unexpected end of input: a bracket, parenthesis or quote is not closed"
            .to_string();
    }
    let expected = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(|r| rule_name(*r)).collect();
            names.sort_unstable();
            names.dedup();
            if names.is_empty() {
                "unexpected input".to_string()
            } else {
                format!("expected {}", names.join(" or "))
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    format!("unexpected {found}; {expected}")
}

fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of input",
        Rule::value | Rule::call | Rule::list | Rule::tuple | Rule::dict | Rule::constant => {
            "a value"
        }
        Rule::string | Rule::string_part | Rule::sq_string | Rule::dq_string => "a string",
        Rule::number => "a number",
        Rule::pair => "a `key: value` pair",
        Rule::ident => "a name",
        _ => return None,
    })
}

/// pest's recursive descent would overflow the stack on `[[[[...` long before any limit of ours
/// applies, so count brackets up front (ignoring those in strings and comments).
fn check_depth(src: &str, file: &str) -> Result<(), ParseError> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        col += 1;
        match quote {
            Some(q) => {
                if c == '\\' {
                    col += 1;
                    if chars.next() == Some('\n') {
                        line += 1;
                        col = 0;
                    }
                } else if c == q || c == '\n' {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '#' => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                    line += 1;
                    col = 0;
                    continue;
                }
                '[' | '(' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(ParseError {
                            file: file.to_string(),
                            line,
                            col,
                            message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        });
                    }
                }
                ']' | ')' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if c == '\n' {
            line += 1;
            col = 0;
        }
    }
    Ok(())
}

fn error_at(pair: &Pair<Rule>, file: &str, message: String) -> ParseError {
    let (line, col) = pair.as_span().start_pos().line_col();
    ParseError {
        file: file.to_string(),
        line,
        col,
        message,
    }
}

type Positions = Vec<(usize, usize)>;

fn build(pair: Pair<Rule>, file: &str, pos: &mut Positions) -> Result<Value, ParseError> {
    if matches!(pair.as_rule(), Rule::constant | Rule::number | Rule::string) {
        // Byte offsets now, lines and columns in one pass at the end: pest's `line_col` scans
        // from the start of the input each time, which made parsing quadratic.
        pos.push((pair.as_span().start(), 0));
    }
    Ok(match pair.as_rule() {
        Rule::constant => match pair.as_str() {
            "True" => Value::Bool(true),
            "False" => Value::Bool(false),
            _ => Value::None,
        },
        Rule::number => parse_number(&pair, file)?,
        Rule::string => {
            let mut out = String::new();
            for part in pair.clone().into_inner() {
                unescape_part(part, file, &mut out)?;
            }
            Value::Str(out.into())
        }
        Rule::list => Value::List(build_all(pair, file, pos)?),
        Rule::tuple => {
            // `(x)` is x; `(x,)` and `(x, y)` are tuples. The grammar accepts both, so tell them
            // apart by the comma the source has after the first element.
            let text = pair.as_str();
            let mut items = build_all(pair.clone(), file, pos)?;
            if items.len() == 1 && !has_top_level_comma(text) {
                items.pop().expect("one item")
            } else {
                Value::Tuple(items)
            }
        }
        Rule::dict => {
            let mut entries = Vec::new();
            for p in pair.into_inner() {
                let mut kv = p.into_inner();
                let k = build(kv.next().expect("key"), file, pos)?;
                let v = build(kv.next().expect("value"), file, pos)?;
                entries.push((k, v));
            }
            Value::Dict(entries)
        }
        Rule::call => {
            let mut inner = pair.into_inner();
            let name = inner.next().expect("call name").as_str().to_string();
            let args = inner
                .map(|p| build(p, file, pos))
                .collect::<Result<_, _>>()?;
            Value::Call(Box::new(crate::Call { name, args }))
        }
        r => return Err(error_at(&pair, file, format!("unexpected {r:?}"))),
    })
}

fn build_all(pair: Pair<Rule>, file: &str, pos: &mut Positions) -> Result<Vec<Value>, ParseError> {
    pair.into_inner().map(|p| build(p, file, pos)).collect()
}

/// Whether the text of a parenthesised group has a comma at its own nesting level.
fn has_top_level_comma(text: &str) -> bool {
    let inner = &text[1..text.len() - 1];
    let (mut depth, mut quote, mut escaped) = (0i32, None::<char>, false);
    let mut in_comment = false;
    for c in inner.chars() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '#' => in_comment = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

fn parse_number(pair: &Pair<Rule>, file: &str) -> Result<Value, ParseError> {
    let text: String = pair.as_str().chars().filter(|&c| c != '_').collect();
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(hex) = lower.strip_prefix("0x") {
        Some(i64::from_str_radix(hex, 16))
    } else if lower.contains(['.', 'e']) {
        None
    } else {
        Some(lower.trim_end_matches('l').parse::<i64>())
    };
    match int {
        Some(Ok(i)) => Ok(Value::Int(if neg { -i } else { i })),
        Some(Err(_)) => Err(error_at(pair, file, format!("integer {text} out of range"))),
        None => {
            let f: f64 = lower
                .parse()
                .map_err(|_| error_at(pair, file, format!("bad number {text}")))?;
            Ok(Value::Float(if neg { -f } else { f }))
        }
    }
}

fn unescape_part(part: Pair<Rule>, file: &str, out: &mut String) -> Result<(), ParseError> {
    let mut raw = false;
    for p in part.into_inner() {
        match p.as_rule() {
            Rule::prefix => raw = p.as_str().eq_ignore_ascii_case("r"),
            Rule::sq_string | Rule::dq_string => {
                let inner = p.clone().into_inner().next().expect("string body");
                if raw {
                    out.push_str(inner.as_str());
                } else {
                    unescape(inner.as_str(), out).map_err(|m| error_at(&inner, file, m))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn unescape(s: &str, out: &mut String) -> Result<(), String> {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = e.to_digit(8).expect("octal digit");
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).ok_or("bad octal escape")?);
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(n).collect();
                if hex.len() != n {
                    return Err(format!("truncated \\{e} escape"));
                }
                let v = u32::from_str_radix(&hex, 16).map_err(|_| format!("bad \\{e} escape"))?;
                out.push(char::from_u32(v).ok_or_else(|| format!("bad \\{e} escape"))?);
            }
            // Python keeps unknown escapes as written.
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(())
}

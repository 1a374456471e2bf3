//! zc.zk's tree text format, and import as a list of changes.
//!
//! ```text
//! # comment
//! /hosts
//!   version = '1.0.0'
//! /cust
//!   /cms : cms web
//!     version = '2.1'
//!     providers -> /lb/pools/cms
//!     /deploy
//!       /web : role
//!         n = 2
//! ```
//!
//! `/name : type` opens a node (the type is its `type` property); a deeper indent nests. A
//! property is `name = <Python literal>`; a value whose brackets are still open continues on the
//! next lines. `name -> /path` and `name => /path` are links, kept as the property `name ->` (or
//! `name =>`) whose value is the target, as zc.zk stores them.

use std::fmt;

use serde_json::Value;
use thiserror::Error;

use crate::tree::{join, Node, Props};

#[derive(Debug, Error, PartialEq)]
#[error("line {line}: {msg}")]
pub struct FormatError {
    pub line: usize,
    pub msg: String,
}

fn err(line: usize, msg: impl Into<String>) -> FormatError {
    FormatError {
        line,
        msg: msg.into(),
    }
}

/// Parses the text into a node whose children are the text's top-level nodes (and whose
/// properties are any properties written before the first node).
pub fn parse(text: &str) -> Result<Node, FormatError> {
    let mut root = Node::default();
    // (indent, path relative to the text's root) of the open nodes.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let lineno = i + 1;
        let mut line = strip_comment(raw).trim_end().to_string();
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') || line.trim_start_matches(' ').starts_with('\t') {
            return Err(err(lineno, "indent with spaces, not tabs"));
        }
        let indent = line.len() - line.trim_start().len();
        while open_brackets(&line) > 0 {
            match lines.next() {
                Some((_, more)) => {
                    line.push(' ');
                    line.push_str(strip_comment(more).trim());
                }
                None => return Err(err(lineno, "unclosed bracket")),
            }
        }
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let parent = stack.last().map_or("/".to_string(), |(_, p)| p.clone());
        let body = line.trim();
        if let Some(rest) = body.strip_prefix('/') {
            let (name, ty) = match rest.split_once(':') {
                Some((n, t)) => (n.trim(), Some(t.trim())),
                None => (rest.trim(), None),
            };
            if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
                return Err(err(lineno, format!("bad node name {name:?}")));
            }
            let path = join(&parent, name);
            let node = root.ensure(&path);
            if let Some(ty) = ty {
                if ty.is_empty() {
                    return Err(err(lineno, "empty node type after ':'"));
                }
                node.props.insert("type".into(), Value::String(ty.into()));
            }
            stack.push((indent, path));
        } else {
            let (key, value) = parse_property(body).map_err(|m| err(lineno, m))?;
            root.ensure(&parent).props.insert(key, value);
        }
    }
    Ok(root)
}

fn parse_property(body: &str) -> Result<(String, Value), String> {
    let pos = body
        .find(['=', '-'])
        .ok_or_else(|| format!("expected `name = value`, `name -> path` or `/node`: {body:?}"))?;
    let name = body[..pos].trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!("bad property name {name:?}"));
    }
    let rest = &body[pos..];
    for arrow in ["->", "=>"] {
        if let Some(target) = rest.strip_prefix(arrow) {
            let target = target.trim();
            if target.is_empty() {
                return Err(format!("link {name} has no target"));
            }
            return Ok((format!("{name} {arrow}"), Value::String(target.into())));
        }
    }
    let literal = rest
        .strip_prefix('=')
        .ok_or_else(|| format!("expected `=` after {name}"))?
        .trim();
    let value = edeploy_literal::parse(literal)
        .map_err(|e| format!("bad value for {name}: {e}"))?
        .to_json();
    Ok((name.to_string(), value))
}

/// The line without a `#` comment (a `#` inside a quoted string is text).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn open_brackets(line: &str) -> i32 {
    let mut depth = 0;
    let mut quote = None;
    let mut escaped = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(' | '{') => depth += 1,
            (None, ']' | ')' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// The text of `node`'s properties and children, as `parse` reads it back. `name` is the node's
/// own line (`None` prints only its content, for the root).
pub fn print(name: Option<&str>, node: &Node) -> String {
    print_with(name, node, false)
}

/// Like [`print`], with ` # ephemeral` after the line of each ephemeral node when `mark`.
pub fn print_with(name: Option<&str>, node: &Node, mark: bool) -> String {
    let mut out = String::new();
    match name {
        Some(name) => print_node(&mut out, 0, name, node, mark),
        None => print_content(&mut out, 0, node, mark),
    }
    out
}

fn print_node(out: &mut String, indent: usize, name: &str, node: &Node, mark: bool) {
    out.push_str(&" ".repeat(indent));
    out.push('/');
    out.push_str(name);
    if let Some(ty) = node.node_type() {
        out.push_str(" : ");
        out.push_str(ty);
    }
    if mark && node.ephemeral {
        out.push_str(" # ephemeral");
    }
    out.push('\n');
    print_content(out, indent + 2, node, mark);
}

fn print_content(out: &mut String, indent: usize, node: &Node, mark: bool) {
    for (key, value) in &node.props {
        if key == "type" && value.is_string() {
            continue;
        }
        out.push_str(&" ".repeat(indent));
        match (key.strip_suffix(" ->").or(key.strip_suffix(" =>")), value) {
            (Some(link), Value::String(target)) => {
                let arrow = &key[key.len() - 2..];
                out.push_str(&format!("{link} {arrow} {target}"));
            }
            _ => {
                let literal = edeploy_literal::Value::from_json(value);
                out.push_str(&format!(
                    "{key} = {}",
                    edeploy_literal::to_python_compact(&literal)
                ));
            }
        }
        out.push('\n');
    }
    for (name, child) in &node.children {
        print_node(out, indent, name, child, mark);
    }
}

/// One step of an import, in an order a store can apply one by one (parents before children,
/// children deleted before their parent).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create {
        path: String,
        props: Props,
    },
    SetProps {
        path: String,
        props: Props,
    },
    Delete {
        path: String,
    },
    /// Something `--trim` would have removed but must not (a live session's node).
    Keep {
        path: String,
        why: &'static str,
    },
}

impl fmt::Display for Change {
    /// `create /a : type {k = 1; j = 'x'}`, `update /a {k = 2}`, `delete /a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, path, props) = match self {
            Change::Create { path, props } => ("create", path, props),
            Change::SetProps { path, props } => ("update", path, props),
            Change::Delete { path } => return write!(f, "delete {path}"),
            Change::Keep { path, why } => return write!(f, "Not deleting {path} because {why}."),
        };
        write!(f, "{verb} {path}")?;
        let mut node = Node::new(props.clone());
        if let Some(ty) = node.node_type() {
            write!(f, " : {ty}")?;
        }
        node.props.remove("type");
        let text = print(None, &node);
        if !text.is_empty() {
            let items: Vec<&str> = text.lines().collect();
            write!(f, " {{{}}}", items.join("; "))?;
        }
        Ok(())
    }
}

/// What importing `text` (parsed) at `base` into `current` (the whole tree) changes. Nodes of the
/// text get exactly the text's properties. With `trim`, children the text leaves out are deleted
/// below every node the text names — never the siblings of the text's top-level nodes, and never
/// an ephemeral node (nor its ancestors).
pub fn import_changes(current: &Node, base: &str, text: &Node, trim: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    let here = current.get(base);
    let differs = match here {
        Some(n) => n.props != text.props,
        None => true,
    };
    if !text.props.is_empty() && differs {
        changes.push(match here {
            Some(_) => Change::SetProps {
                path: base.into(),
                props: text.props.clone(),
            },
            None => Change::Create {
                path: base.into(),
                props: text.props.clone(),
            },
        });
    }
    for (name, child) in &text.children {
        let path = join(base, name);
        sync(
            &mut changes,
            here.and_then(|h| h.children.get(name)),
            &path,
            child,
            trim,
        );
    }
    changes
}

fn sync(changes: &mut Vec<Change>, cur: Option<&Node>, path: &str, want: &Node, trim: bool) {
    match cur {
        None => changes.push(Change::Create {
            path: path.into(),
            props: want.props.clone(),
        }),
        Some(c) if c.props != want.props => changes.push(Change::SetProps {
            path: path.into(),
            props: want.props.clone(),
        }),
        Some(_) => {}
    }
    for (name, child) in &want.children {
        sync(
            changes,
            cur.and_then(|c| c.children.get(name)),
            &join(path, name),
            child,
            trim,
        );
    }
    if let (true, Some(cur)) = (trim, cur) {
        for (name, child) in &cur.children {
            if !want.children.contains_key(name) {
                delete(changes, &join(path, name), child);
            }
        }
    }
}

/// Deletes a subtree leaves first; returns whether the node itself could go.
fn delete(changes: &mut Vec<Change>, path: &str, node: &Node) -> bool {
    if node.ephemeral {
        changes.push(Change::Keep {
            path: path.into(),
            why: "it's ephemeral",
        });
        return false;
    }
    let mut all = true;
    for (name, child) in &node.children {
        all &= delete(changes, &join(path, name), child);
    }
    if all {
        changes.push(Change::Delete { path: path.into() });
    } else {
        changes.push(Change::Keep {
            path: path.into(),
            why: "it has ephemeral descendants",
        });
    }
    all
}

/// Applies changes to an in-memory tree (the file store's import).
pub fn apply(tree: &mut Node, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Create { path, props } | Change::SetProps { path, props } => {
                tree.ensure(path).props = props.clone();
            }
            Change::Delete { path } => {
                tree.remove(path);
            }
            Change::Keep { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEXT: &str = "\
# The cluster
/hosts
  version = '1.0.0'   # the wish
/cust
  /cms : cms web
    version = '2.1'
    tags = ['a', # first
            'b#c']
    providers -> /lb/pools/cms
    alias => ../other
    /deploy
      /web
        n = 2
      /abc123
";

    #[test]
    fn parses_nodes_properties_links_comments() {
        let t = parse(TEXT).unwrap();
        assert_eq!(t.get("/hosts").unwrap().props["version"], json!("1.0.0"));
        let cms = t.get("/cust/cms").unwrap();
        assert_eq!(cms.node_type(), Some("cms web"));
        assert_eq!(cms.props["tags"], json!(["a", "b#c"]));
        assert_eq!(cms.props["providers ->"], json!("/lb/pools/cms"));
        assert_eq!(cms.props["alias =>"], json!("../other"));
        assert_eq!(t.get("/cust/cms/deploy/web").unwrap().props["n"], json!(2));
        assert!(t.get("/cust/cms/deploy/abc123").unwrap().props.is_empty());
        let paths: Vec<_> = t.walk("/").into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/cust",
                "/cust/cms",
                "/cust/cms/deploy",
                "/cust/cms/deploy/abc123",
                "/cust/cms/deploy/web",
                "/hosts"
            ]
        );
    }

    #[test]
    fn prints_what_it_parses() {
        let t = parse(TEXT).unwrap();
        let printed = print(None, &t);
        assert_eq!(
            printed,
            "\
/cust
  /cms : cms web
    version = '2.1'
    tags = ['a', 'b#c']
    providers -> /lb/pools/cms
    alias => ../other
    /deploy
      /abc123
      /web
        n = 2
/hosts
  version = '1.0.0'
"
        );
        assert_eq!(parse(&printed).unwrap(), t);
        let mut e = t.clone();
        e.ensure("/hosts/h1").ephemeral = true;
        assert_eq!(
            print_with(Some("hosts"), e.get("/hosts").unwrap(), true),
            "/hosts\n  version = '1.0.0'\n  /h1 # ephemeral\n"
        );
        assert_eq!(
            print(Some("hosts"), t.get("/hosts").unwrap()),
            "/hosts\n  version = '1.0.0'\n"
        );
    }

    #[test]
    fn literal_values() {
        let t = parse("/a\n  x = None\n  y = True\n  z = 1.5\n  d = {'k': (1, 2)}\n").unwrap();
        let a = t.get("/a").unwrap();
        assert_eq!(a.props["x"], json!(null));
        assert_eq!(a.props["y"], json!(true));
        assert_eq!(a.props["z"], json!(1.5));
        assert_eq!(a.props["d"], json!({"k": [1, 2]}));
        assert_eq!(
            print(None, &t),
            "/a\n  x = None\n  y = True\n  z = 1.5\n  d = {'k': [1, 2]}\n"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("/a\n  x == 1\n").unwrap_err().line, 2);
        assert_eq!(parse("/a\n\tx = 1\n").unwrap_err().line, 2);
        assert_eq!(parse("/a b\n").unwrap_err().msg, "bad node name \"a b\"");
        assert_eq!(
            parse("/a\n  x = [1,\n").unwrap_err().msg,
            "unclosed bracket"
        );
        assert_eq!(
            parse("/a\n  x -> \n").unwrap_err().msg,
            "link x has no target"
        );
        assert!(parse("/a\n  just words\n").is_err());
        assert_eq!(
            parse("/a :\n").unwrap_err().msg,
            "empty node type after ':'"
        );
    }

    #[test]
    fn top_level_properties_belong_to_the_import_root() {
        let t = parse("version = 3\n/a\n").unwrap();
        assert_eq!(t.props["version"], json!(3));
    }

    fn current() -> Node {
        let mut cur = parse(
            "\
/hosts
  version = '1'
  /h1
    name = 'one'
  /old
/cust
  /cms : cms
    version = '1'
    /deploy
      /web
      /gone
        /deeper
/other
",
        )
        .unwrap();
        cur.get_mut("/hosts/h1").unwrap().ephemeral = true;
        cur
    }

    #[test]
    fn import_without_trim_adds_and_updates_only() {
        let text =
            parse("/cust\n  /cms : cms\n    version = '2'\n    /deploy\n      /web\n      /db\n")
                .unwrap();
        let changes = import_changes(&current(), "/", &text, false);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "update /cust/cms : cms {version = '2'}",
                "create /cust/cms/deploy/db"
            ]
        );
        let mut cur = current();
        apply(&mut cur, &changes);
        assert_eq!(cur.get("/cust/cms").unwrap().props["version"], json!("2"));
        assert!(cur.get("/cust/cms/deploy/gone/deeper").is_some());
    }

    #[test]
    fn trim_deletes_below_named_nodes_only_and_keeps_ephemeral() {
        let text = parse("/hosts\n  version = '2'\n/cust\n  /cms : cms\n    version = '1'\n    /deploy\n      /web\n").unwrap();
        let changes = import_changes(&current(), "/", &text, true);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "delete /cust/cms/deploy/gone/deeper",
                "delete /cust/cms/deploy/gone",
                "update /hosts {version = '2'}",
                "Not deleting /hosts/h1 because it's ephemeral.",
                "delete /hosts/old",
            ]
        );
        let mut cur = current();
        apply(&mut cur, &changes);
        // /other is a sibling of the text's top-level nodes: never trimmed.
        assert!(cur.get("/other").is_some());
        assert!(cur.get("/hosts/h1").is_some());
        assert!(cur.get("/hosts/old").is_none());
        assert!(cur.get("/cust/cms/deploy/gone").is_none());
    }

    #[test]
    fn trim_keeps_ancestors_of_ephemeral_nodes() {
        let mut cur = parse("/a\n  /b\n    /c\n").unwrap();
        cur.get_mut("/a/b/c").unwrap().ephemeral = true;
        let text = parse("/a\n").unwrap();
        let changes = import_changes(&cur, "/", &text, true);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Not deleting /a/b/c because it's ephemeral.",
                "Not deleting /a/b because it has ephemeral descendants."
            ]
        );
    }

    #[test]
    fn import_below_a_base_path() {
        let text = parse("/x\n  k = 1\n").unwrap();
        let changes = import_changes(&current(), "/cust", &text, false);
        assert_eq!(
            changes,
            [Change::Create {
                path: "/cust/x".into(),
                props: json!({"k": 1}).as_object().unwrap().clone()
            }]
        );
        assert!(import_changes(&current(), "/", &parse("/other\n").unwrap(), true).is_empty());
    }
}

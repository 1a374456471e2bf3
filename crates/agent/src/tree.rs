//! The ZooKeeper tree as data: nodes with JSON properties (what zc.zk stores as node data) and
//! named children. Both stores load into and write from this shape, so the planner never sees
//! which store it came from.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Properties of a node, in file order (zc.zk stores them as one JSON object).
pub type Props = Map<String, Value>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub props: Props,
    /// Sorted, so walks and prints are deterministic whatever order the store listed them in.
    pub children: BTreeMap<String, Node>,
    /// Ephemeral nodes belong to a live session: export skips them and trim never removes them.
    pub ephemeral: bool,
}

impl Node {
    pub fn new(props: Props) -> Node {
        Node {
            props,
            ..Node::default()
        }
    }

    /// The `type` property (`/name : type` in the text format).
    pub fn node_type(&self) -> Option<&str> {
        self.props.get("type").and_then(Value::as_str)
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for name in components(path) {
            node = node.children.get(name)?;
        }
        Some(node)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = self;
        for name in components(path) {
            node = node.children.get_mut(name)?;
        }
        Some(node)
    }

    /// The node at `path`, creating it and its missing ancestors.
    pub fn ensure(&mut self, path: &str) -> &mut Node {
        let mut node = self;
        for name in components(path) {
            node = node.children.entry(name.to_string()).or_default();
        }
        node
    }

    /// Removes the node at `path` with its subtree; `false` when there was none.
    pub fn remove(&mut self, path: &str) -> bool {
        let (parent, name) = split_parent(path);
        if name.is_empty() {
            return false;
        }
        self.get_mut(parent)
            .is_some_and(|p| p.children.remove(name).is_some())
    }

    /// Every node below this one, depth first in name order, with its absolute path
    /// (`base` is this node's own path).
    pub fn walk<'a>(&'a self, base: &str) -> Vec<(String, &'a Node)> {
        let mut out = Vec::new();
        let mut stack = vec![(base.trim_end_matches('/').to_string(), self)];
        while let Some((path, node)) = stack.pop() {
            for (name, child) in node.children.iter().rev() {
                stack.push((format!("{path}/{name}"), child));
            }
            out.push((if path.is_empty() { "/".into() } else { path }, node));
        }
        out
    }

    /// A copy without ephemeral nodes (what `export` shows and `--trim` compares against).
    pub fn without_ephemeral(&self) -> Node {
        Node {
            props: self.props.clone(),
            children: self
                .children
                .iter()
                .filter(|(_, c)| !c.ephemeral)
                .map(|(n, c)| (n.clone(), c.without_ephemeral()))
                .collect(),
            ephemeral: false,
        }
    }
}

/// The names along a `/a/b/c` path (empty for `/`).
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// `/a/b/c` → (`/a/b`, `c`); `/a` → (`/`, `a`).
pub fn split_parent(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// `base` + `name` as an absolute path.
pub fn join(base: &str, name: &str) -> String {
    if base == "/" || base.is_empty() {
        format!("/{name}")
    } else {
        format!("{}/{name}", base.trim_end_matches('/'))
    }
}

/// A property as the text a version is compared by: strings as-is, numbers printed, `None` and
/// missing as `None` (zc.zk lets operators write `version = 2` as readily as `version = '2'`).
pub fn version_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Props {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ensure_get_remove_walk() {
        let mut root = Node::default();
        root.ensure("/b/y").props = props(json!({"n": 2}));
        root.ensure("/a");
        root.ensure("/b/x");
        assert_eq!(root.get("/b/y").unwrap().props["n"], json!(2));
        assert!(root.get("/c").is_none());
        let paths: Vec<_> = root.walk("/").into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/", "/a", "/b", "/b/x", "/b/y"]);
        let paths: Vec<_> = root
            .get("/b")
            .unwrap()
            .walk("/b")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(paths, ["/b", "/b/x", "/b/y"]);
        assert!(root.remove("/b"));
        assert!(!root.remove("/b"));
        assert!(!root.remove("/"));
        assert_eq!(root.children.len(), 1);
    }

    #[test]
    fn paths() {
        assert_eq!(split_parent("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split_parent("/a"), ("/", "a"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a/", "b"), "/a/b");
    }

    #[test]
    fn versions_as_text() {
        assert_eq!(version_text(Some(&json!("1.0"))), Some("1.0".into()));
        assert_eq!(version_text(Some(&json!(2))), Some("2".into()));
        assert_eq!(version_text(Some(&json!(null))), None);
        assert_eq!(version_text(None), None);
    }

    #[test]
    fn export_view_drops_ephemeral() {
        let mut root = Node::default();
        root.ensure("/hosts/abc").ephemeral = true;
        root.ensure("/hosts/def");
        let view = root.without_ephemeral();
        assert!(view.get("/hosts/abc").is_none());
        assert!(view.get("/hosts/def").is_some());
    }
}

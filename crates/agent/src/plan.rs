//! What this host should run (read from the tree) against what it runs now (read from the
//! `.deployed` markers): the ordered steps of one deploy run, computed without touching anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::tree::{version_text, Node};

/// Who this host is, as deployments name it: `deploy/<id>`, `deploy/<name>` or `deploy/<role>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The PXE MAC without colons.
    pub id: String,
    pub name: String,
    pub role: Option<String>,
}

/// One instance of an application node deployed on this host. The strings are shared between
/// the instances of a node and the nodes of a package: a plan of 10,000 deployments would
/// otherwise spend most of its time in the allocator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deployment {
    /// The application node's path.
    pub path: Arc<str>,
    pub n: u32,
    /// The package (and `/opt/<app>`, `/etc/<app>`) name.
    pub app: Arc<str>,
    pub subtype: Option<Arc<str>>,
    pub version: Arc<str>,
}

/// A deployment as the host remembers it: `/etc/<app>/<path,with,commas>.<n>.deployed`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Installed {
    pub path: String,
    pub n: u32,
    pub app: String,
}

impl Deployment {
    pub fn key(&self) -> Installed {
        Installed {
            path: self.path.to_string(),
            n: self.n,
            app: self.app.to_string(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("Inconsistent versions for {app}. {new} != {old}")]
    InconsistentVersions {
        app: String,
        new: String,
        old: String,
    },
    #[error("Conflicting deployments for {path}. Can't deploy to {name} and {id}.")]
    Conflict {
        path: String,
        name: String,
        id: String,
    },
    #[error("Found a host-based deployment at {path} but the host has a role, {role}.")]
    HostDeploymentWithRole { path: String, role: String },
    #[error("Invalid node type for {path}: {ty:?} (expected \"APP\" or \"APP SUBTYPE\")")]
    BadType { path: String, ty: String },
    #[error("No type for {path}, which has deployments")]
    NoType { path: String },
    #[error("No version for {path}")]
    NoVersion { path: String },
    #[error("Invalid n for {path}: {value} (expected a non-negative integer)")]
    BadN { path: String, value: String },
}

/// Application nodes whose `deploy` child names this host, depth first in name order. The path
/// buffer is shared so that the thousands of nodes that deploy elsewhere cost no allocation;
/// `/hosts` and `/zookeeper` never hold applications.
fn app_nodes<'a>(node: &'a Node, path: &mut String, me: &Identity, out: &mut Vec<Candidate<'a>>) {
    if let Some(deploy) = node.children.get("deploy") {
        let role = me.role.as_deref();
        let by_role = role.and_then(|r| deploy.children.get(r));
        let host_based = |key: &str| (Some(key) != role).then(|| deploy.children.get(key))?;
        let by_id = host_based(&me.id);
        let by_name = host_based(&me.name);
        if by_role.is_some() || by_id.is_some() || by_name.is_some() {
            let path: Arc<str> = if path.is_empty() {
                "/".into()
            } else {
                path.as_str().into()
            };
            out.push(Candidate {
                path,
                node,
                by_role,
                by_id,
                by_name,
            });
        }
    }
    for (name, child) in &node.children {
        if child.children.is_empty() || path.is_empty() && (name == "hosts" || name == "zookeeper")
        {
            continue;
        }
        let len = path.len();
        path.push('/');
        path.push_str(name);
        app_nodes(child, path, me, out);
        path.truncate(len);
    }
}

/// An application node and its `deploy` children that name this host.
struct Candidate<'a> {
    path: Arc<str>,
    node: &'a Node,
    by_role: Option<&'a Node>,
    by_id: Option<&'a Node>,
    by_name: Option<&'a Node>,
}

/// The deployments the tree asks of this host, sorted by (path, n).
pub fn desired(tree: &Node, me: &Identity) -> Result<Vec<Deployment>, PlanError> {
    // Package → (name, version), shared by every deployment of the package.
    let mut versions: BTreeMap<&str, (Arc<str>, Arc<str>)> = BTreeMap::new();
    let mut subtypes: BTreeMap<&str, Arc<str>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut candidates = Vec::new();
    app_nodes(tree, &mut String::new(), me, &mut candidates);
    for Candidate {
        path,
        node,
        by_role,
        by_id,
        by_name,
    } in candidates
    {
        let role = me.role.as_deref();
        if let (Some(role), true) = (role, by_id.is_some() || by_name.is_some()) {
            let key = if by_id.is_some() { &me.id } else { &me.name };
            return Err(PlanError::HostDeploymentWithRole {
                path: format!("{}/deploy/{key}", path.trim_end_matches('/')),
                role: role.into(),
            });
        }
        if by_id.is_some() && by_name.is_some() {
            return Err(PlanError::Conflict {
                path: path.to_string(),
                name: me.name.clone(),
                id: me.id.clone(),
            });
        }
        let Some(target) = by_role.or(by_id).or(by_name) else {
            continue;
        };
        let ty = node.node_type().ok_or_else(|| PlanError::NoType {
            path: path.to_string(),
        })?;
        let mut words = ty.split_whitespace();
        let (rpm, subtype) = match (words.next(), words.next(), words.next()) {
            (Some(rpm), sub, None) => (rpm, sub),
            (None, _, _) => {
                return Err(PlanError::NoType {
                    path: path.to_string(),
                })
            }
            _ => {
                return Err(PlanError::BadType {
                    path: path.to_string(),
                    ty: ty.into(),
                })
            }
        };
        let (app, version) = match split_versioned(rpm) {
            Some((app, v)) => (app, std::borrow::Cow::Borrowed(v)),
            None => (
                rpm,
                std::borrow::Cow::Owned(version_text(node.props.get("version")).ok_or_else(
                    || PlanError::NoVersion {
                        path: path.to_string(),
                    },
                )?),
            ),
        };
        let n = match target.props.get("n") {
            None => 1,
            Some(Value::Number(v)) if v.as_u64().is_some_and(|v| v <= u32::MAX as u64) => {
                v.as_u64().unwrap_or_default() as u32
            }
            Some(other) => {
                return Err(PlanError::BadN {
                    path: path.to_string(),
                    value: other.to_string(),
                })
            }
        };
        if n == 0 {
            continue;
        }
        let (app, version) = match versions.get(app) {
            Some((_, old)) if **old != *version => {
                return Err(PlanError::InconsistentVersions {
                    app: app.into(),
                    new: version.into_owned(),
                    old: old.to_string(),
                })
            }
            Some((a, v)) => (a.clone(), v.clone()),
            None => {
                let shared: (Arc<str>, Arc<str>) = (app.into(), version.as_ref().into());
                versions.insert(app, shared.clone());
                shared
            }
        };
        let subtype = subtype.map(|s| subtypes.entry(s).or_insert_with(|| s.into()).clone());
        for i in 0..n {
            out.push(Deployment {
                path: path.clone(),
                n: i,
                app: app.clone(),
                subtype: subtype.clone(),
                version: version.clone(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// `cms-1.2.3` → (`cms`, `1.2.3`): the version rides in the package name when the first `-` that
/// is followed by a digit splits it.
pub fn split_versioned(rpm: &str) -> Option<(&str, &str)> {
    let bytes = rpm.as_bytes();
    (1..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit())
        .map(|i| (&rpm[..i], &rpm[i + 1..]))
}

/// The steps of one deploy run, each list in the order it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Installed deployments the tree no longer asks for: `zookeeper-deploy -u`, then forget.
    pub remove: Vec<Installed>,
    /// Package → version, by name.
    pub packages: BTreeMap<String, String>,
    /// Every wished deployment, by (path, n): each one's script runs, new or not.
    pub deploy: Vec<Deployment>,
    /// Packages that were in use and no deployment uses any more, by name.
    pub uninstall: Vec<String>,
    /// `/etc/<app>` directories to remove if the run leaves them empty.
    pub etc_dirs: Vec<String>,
}

/// `installed_apps` adds packages installed by earlier runs that have no marker left (VCS
/// checkouts are remembered apart from the markers).
pub fn plan(
    desired: Vec<Deployment>,
    installed: &[Installed],
    installed_apps: &BTreeSet<String>,
) -> Plan {
    // Borrowed keys: 10,000 deployments must not mean 10,000 string copies.
    let wanted: std::collections::HashSet<(&str, u32, &str)> =
        desired.iter().map(|d| (&*d.path, d.n, &*d.app)).collect();
    let mut remove: Vec<Installed> = installed
        .iter()
        .filter(|i| !wanted.contains(&(i.path.as_str(), i.n, i.app.as_str())))
        .cloned()
        .collect();
    remove.sort();
    remove.dedup();
    let mut packages: BTreeMap<String, String> = BTreeMap::new();
    for d in &desired {
        if !packages.contains_key(&*d.app) {
            packages.insert(d.app.to_string(), d.version.to_string());
        }
    }
    let had: BTreeSet<&str> = installed
        .iter()
        .map(|i| i.app.as_str())
        .chain(installed_apps.iter().map(String::as_str))
        .collect();
    let uninstall = had
        .into_iter()
        .filter(|a| !packages.contains_key(*a))
        .map(String::from)
        .collect();
    let etc_dirs = remove
        .iter()
        .map(|i| i.app.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Plan {
        remove,
        packages,
        deploy: desired,
        uninstall,
        etc_dirs,
    }
}

/// The marker file name of a deployment: the path without its leading `/`, `/` → `,`, then
/// `.<n>.deployed`.
pub fn marker_name(path: &str, n: u32) -> String {
    format!(
        "{}.{n}.deployed",
        path.trim_start_matches('/').replace('/', ",")
    )
}

/// The inverse of [`marker_name`]; `None` for files that are not markers.
pub fn parse_marker(app: &str, file: &str) -> Option<Installed> {
    let stem = file.strip_suffix(".deployed")?;
    let (path, n) = stem.rsplit_once('.')?;
    if path.is_empty() {
        return None;
    }
    Some(Installed {
        path: format!("/{}", path.replace(',', "/")),
        n: n.parse().ok()?,
        app: app.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::treefmt::parse;

    fn me(role: Option<&str>) -> Identity {
        Identity {
            id: "424242424242".into(),
            name: "app.example.com".into(),
            role: role.map(Into::into),
        }
    }

    fn d(path: &str, n: u32, app: &str, sub: Option<&str>, v: &str) -> Deployment {
        Deployment {
            path: path.into(),
            n,
            app: app.into(),
            subtype: sub.map(Into::into),
            version: v.into(),
        }
    }

    fn inst(path: &str, n: u32, app: &str) -> Installed {
        Installed {
            path: path.into(),
            n,
            app: app.into(),
        }
    }

    const TREE: &str = "\
/hosts
  version = '1.0.0'
  /424242424242
    name = 'app.example.com'
/cust
  /someapp
    /cms : cms
      version = '1.0.0'
      /deploy
        /424242424242
          n = 2
        /other.example.com
  /cust2
    /someapp
      /cms : cms foo
        version = '1.0.0'
        /deploy
          /app.example.com
  /pinned : monitor-2.1.0
    version = 'ignored'
    /deploy
      /424242424242
  /none : cms
    version = '1.0.0'
    /deploy
      /424242424242
        n = 0
";

    #[test]
    fn collects_by_id_name_and_version_in_type() {
        let got = desired(&parse(TREE).unwrap(), &me(None)).unwrap();
        assert_eq!(
            got,
            [
                d("/cust/cust2/someapp/cms", 0, "cms", Some("foo"), "1.0.0"),
                d("/cust/pinned", 0, "monitor", None, "2.1.0"),
                d("/cust/someapp/cms", 0, "cms", None, "1.0.0"),
                d("/cust/someapp/cms", 1, "cms", None, "1.0.0"),
            ]
        );
    }

    #[test]
    fn role_deployments_and_role_vs_host_error() {
        let tree = parse("/a : app\n  version = '3'\n  /deploy\n    /web\n      n = 2\n    /db\n")
            .unwrap();
        assert_eq!(
            desired(&tree, &me(Some("web"))).unwrap(),
            [d("/a", 0, "app", None, "3"), d("/a", 1, "app", None, "3")]
        );
        assert_eq!(desired(&tree, &me(None)).unwrap(), []);
        let err = desired(&parse(TREE).unwrap(), &me(Some("web"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Found a host-based deployment at /cust/cust2/someapp/cms/deploy/app.example.com but the host has a role, web."
        );
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                "/a : cms\n  version = '2'\n  /deploy\n    /424242424242\n/b : cms\n  version = '1'\n  /deploy\n    /424242424242\n",
                "Inconsistent versions for cms. 1 != 2",
            ),
            (
                "/a : cms\n  version = '2'\n  /deploy\n    /424242424242\n    /app.example.com\n",
                "Conflicting deployments for /a. Can't deploy to app.example.com and 424242424242.",
            ),
            (
                "/a : cms x y\n  version = '2'\n  /deploy\n    /424242424242\n",
                "Invalid node type for /a: \"cms x y\" (expected \"APP\" or \"APP SUBTYPE\")",
            ),
            ("/a\n  /deploy\n    /424242424242\n", "No type for /a, which has deployments"),
            ("/a : cms\n  /deploy\n    /424242424242\n", "No version for /a"),
            (
                "/a : cms\n  version = 1\n  /deploy\n    /424242424242\n      n = 'two'\n",
                "Invalid n for /a: \"two\" (expected a non-negative integer)",
            ),
            (
                "/a : cms\n  version = 1\n  /deploy\n    /424242424242\n      n = -1\n",
                "Invalid n for /a: -1 (expected a non-negative integer)",
            ),
        ];
        for (text, msg) in cases {
            let err = desired(&parse(text).unwrap(), &me(None)).unwrap_err();
            assert_eq!(err.to_string(), msg, "{text}");
        }
    }

    #[test]
    fn numeric_versions_and_same_version_twice() {
        let tree = parse("/a : cms\n  version = 2\n  /deploy\n    /424242424242\n/b : cms\n  version = '2'\n  /deploy\n    /app.example.com\n").unwrap();
        let got = desired(&tree, &me(None)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|d| &*d.version == "2"));
    }

    #[test]
    fn hosts_subtree_is_not_searched() {
        let tree = parse("/hosts\n  /x : cms\n    version = 1\n    /deploy\n      /424242424242\n")
            .unwrap();
        assert_eq!(desired(&tree, &me(None)).unwrap(), []);
    }

    #[test]
    fn versioned_names() {
        assert_eq!(split_versioned("cms-1.2.3"), Some(("cms", "1.2.3")));
        assert_eq!(split_versioned("my-app-2.0-1"), Some(("my-app", "2.0-1")));
        assert_eq!(split_versioned("cms"), None);
        assert_eq!(split_versioned("cms-"), None);
        assert_eq!(split_versioned("-1"), None);
    }

    #[test]
    fn markers_round_trip() {
        assert_eq!(
            marker_name("/cust/someapp/cms", 1),
            "cust,someapp,cms.1.deployed"
        );
        assert_eq!(
            parse_marker("cms", "cust,someapp,cms.1.deployed"),
            Some(inst("/cust/someapp/cms", 1, "cms"))
        );
        assert_eq!(parse_marker("cms", "cust,someapp,cms.1.script"), None);
        assert_eq!(parse_marker("cms", "x.y.deployed"), None);
        assert_eq!(parse_marker("cms", ".1.deployed"), None);
    }

    #[test]
    fn plan_orders_every_step() {
        let want = vec![
            d("/a", 0, "cms", None, "2"),
            d("/b", 0, "db", None, "1"),
            d("/b", 1, "db", None, "1"),
        ];
        let installed = [
            inst("/b", 2, "db"),
            inst("/a", 0, "cms"),
            inst("/z", 0, "old"),
            inst("/c", 0, "cms"),
        ];
        let vcs = BTreeSet::from(["checkout".to_string()]);
        let p = plan(want.clone(), &installed, &vcs);
        assert_eq!(
            p.remove,
            [
                inst("/b", 2, "db"),
                inst("/c", 0, "cms"),
                inst("/z", 0, "old")
            ]
        );
        assert_eq!(
            p.packages,
            BTreeMap::from([("cms".into(), "2".into()), ("db".into(), "1".into())])
        );
        assert_eq!(p.deploy, want);
        assert_eq!(p.uninstall, ["checkout", "old"]);
        assert_eq!(p.etc_dirs, ["cms", "db", "old"]);
    }
}

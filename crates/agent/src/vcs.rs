//! Versions that are source checkouts instead of packages: `svn://…`, `svn+ssh://…` (given to
//! svn as they are), `svn+http(s)://…` / `svn+file://…` (svn is given the URL after `svn+`), and
//! `git://REPO#REV` / `git+SCHEME://REPO#REV`. The original agent sliced a fixed number of
//! characters off every URL, which broke all schemes but one; here the scheme decides.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkout {
    Svn { url: String },
    Git { url: String, rev: Option<String> },
}

impl Checkout {
    /// `None` for a package version.
    pub fn parse(version: &str) -> Option<Checkout> {
        let (scheme, _) = version.split_once("://")?;
        if scheme == "git" || scheme.starts_with("git+") {
            let url = version.strip_prefix("git+").unwrap_or(version);
            let (url, rev) = match url.rsplit_once('#') {
                Some((u, r)) if !r.is_empty() => (u, Some(r.to_string())),
                Some((u, _)) => (u, None),
                None => (url, None),
            };
            return Some(Checkout::Git {
                url: url.into(),
                rev,
            });
        }
        if scheme == "svn" || scheme.starts_with("svn+") {
            let url = match scheme {
                "svn+http" | "svn+https" | "svn+file" => &version[4..],
                _ => version,
            };
            return Some(Checkout::Svn { url: url.into() });
        }
        None
    }

    /// The commands that check the version out into `dir` (which does not exist yet).
    pub fn commands(&self, dir: &str) -> Vec<Vec<String>> {
        let s = |v: &str| v.to_string();
        match self {
            Checkout::Svn { url } => vec![vec![s("svn"), s("co"), s("-q"), url.clone(), s(dir)]],
            Checkout::Git { url, rev } => {
                let mut cmds = vec![vec![s("git"), s("clone"), s("-q"), url.clone(), s(dir)]];
                if let Some(rev) = rev {
                    cmds.push(vec![
                        s("git"),
                        s("-C"),
                        s(dir),
                        s("checkout"),
                        s("-q"),
                        rev.clone(),
                    ]);
                }
                cmds
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svn(u: &str) -> Option<Checkout> {
        Some(Checkout::Svn { url: u.into() })
    }

    #[test]
    fn schemes() {
        assert_eq!(Checkout::parse("1.0.0"), None);
        assert_eq!(Checkout::parse("http://x"), None);
        assert_eq!(
            Checkout::parse("svn://svn.example.com/r/app/trunk"),
            svn("svn://svn.example.com/r/app/trunk")
        );
        assert_eq!(
            Checkout::parse("svn+ssh://svn.example.com/r/app"),
            svn("svn+ssh://svn.example.com/r/app")
        );
        assert_eq!(
            Checkout::parse("svn+https://svn.example.com/r/app"),
            svn("https://svn.example.com/r/app")
        );
        assert_eq!(
            Checkout::parse("svn+file:///srv/svn/app"),
            svn("file:///srv/svn/app")
        );
        assert_eq!(
            Checkout::parse("git://github.com/x/app.git#v1.2"),
            Some(Checkout::Git {
                url: "git://github.com/x/app.git".into(),
                rev: Some("v1.2".into())
            })
        );
        assert_eq!(
            Checkout::parse("git+file:///srv/git/app#abc123"),
            Some(Checkout::Git {
                url: "file:///srv/git/app".into(),
                rev: Some("abc123".into())
            })
        );
        assert_eq!(
            Checkout::parse("git+https://example.com/app.git"),
            Some(Checkout::Git {
                url: "https://example.com/app.git".into(),
                rev: None
            })
        );
    }

    #[test]
    fn checkout_commands() {
        let g = Checkout::parse("git://h/app#v1").unwrap();
        assert_eq!(
            g.commands("/opt/app"),
            [
                vec!["git", "clone", "-q", "git://h/app", "/opt/app"],
                vec!["git", "-C", "/opt/app", "checkout", "-q", "v1"]
            ]
        );
        assert_eq!(
            svn("svn://h/app").unwrap().commands("/opt/app"),
            [vec!["svn", "co", "-q", "svn://h/app", "/opt/app"]]
        );
    }
}

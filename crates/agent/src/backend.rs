//! Package backends: the command lines that query, install, downgrade and remove a package, and
//! how a query's output gives the installed version. The yum lines are the original agent's.

use std::fmt;
use std::str::FromStr;

use crate::exec::argv;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Yum,
    Dnf,
    Apt,
    /// Packages are someone else's business: only the deploy scripts run.
    None,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yum" => Ok(Backend::Yum),
            "dnf" => Ok(Backend::Dnf),
            "apt" => Ok(Backend::Apt),
            "none" => Ok(Backend::None),
            _ => Err(format!(
                "unknown package backend {s:?} (yum, dnf, apt or none)"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Yum => "yum",
            Backend::Dnf => "dnf",
            Backend::Apt => "apt",
            Backend::None => "none",
        })
    }
}

impl Backend {
    pub fn manages_packages(self) -> bool {
        self != Backend::None
    }

    /// Exits non-zero when the package is not installed.
    pub fn query(self, pkg: &str) -> Vec<String> {
        match self {
            Backend::Yum => argv(["yum", "-q", "list", "installed", pkg]),
            Backend::Dnf => argv(["dnf", "-q", "list", "--installed", pkg]),
            Backend::Apt | Backend::None => argv(["dpkg-query", "-W", "-f=${Version}", pkg]),
        }
    }

    /// The program of the rpm backends (yum and dnf take the same arguments).
    fn rpm(self) -> &'static str {
        if self == Backend::Dnf {
            "dnf"
        } else {
            "yum"
        }
    }

    pub fn clean(self) -> Vec<String> {
        match self {
            Backend::Yum | Backend::Dnf => argv([self.rpm(), "-y", "clean", "all"]),
            Backend::Apt | Backend::None => argv(["apt-get", "update", "-q"]),
        }
    }

    pub fn install(self, pkg: &str, version: &str) -> Vec<String> {
        self.install_args(pkg, version, "install", &[])
    }

    pub fn downgrade(self, pkg: &str, version: &str) -> Vec<String> {
        self.install_args(pkg, version, "downgrade", &["--allow-downgrades"])
    }

    /// `yum -y VERB pkg-version`, or `apt-get install -y -q [APT_EXTRA] pkg=version`.
    fn install_args(
        self,
        pkg: &str,
        version: &str,
        rpm_verb: &str,
        apt_extra: &[&str],
    ) -> Vec<String> {
        match self {
            Backend::Yum | Backend::Dnf => argv([
                self.rpm().into(),
                "-y".into(),
                rpm_verb.into(),
                format!("{pkg}-{version}"),
            ]),
            Backend::Apt | Backend::None => {
                let mut args = argv(["apt-get", "install", "-y", "-q"]);
                args.extend(apt_extra.iter().map(|a| a.to_string()));
                args.push(format!("{pkg}={version}"));
                args
            }
        }
    }

    pub fn remove(self, pkg: &str) -> Vec<String> {
        match self {
            Backend::Yum | Backend::Dnf => argv([self.rpm(), "-y", "remove", pkg]),
            Backend::Apt | Backend::None => argv(["apt-get", "remove", "-y", "-q", pkg]),
        }
    }

    /// The installed version in a successful query's output.
    pub fn parse_version(self, pkg: &str, output: &str) -> Option<String> {
        match self {
            Backend::Yum | Backend::Dnf => output.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?;
                let version = words.next()?;
                let arch_less = name.rsplit_once('.').map_or(name, |(n, _)| n);
                (arch_less == pkg || name == pkg).then(|| strip_epoch(version).to_string())
            }),
            Backend::Apt | Backend::None => {
                let v = output.trim();
                (!v.is_empty()).then(|| strip_epoch(v).to_string())
            }
        }
    }
}

fn strip_epoch(v: &str) -> &str {
    v.split_once(':').map_or(v, |(_, rest)| rest)
}

/// Whether an installed `1.2-3` is the wished `1.2` (the release is the packager's, not ours).
pub fn version_matches(installed: &str, wished: &str) -> bool {
    installed == wished
        || installed
            .strip_prefix(wished)
            .is_some_and(|rest| rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yum_lines_are_the_original_agents() {
        let y = Backend::Yum;
        assert_eq!(y.query("cms").join(" "), "yum -q list installed cms");
        assert_eq!(y.clean().join(" "), "yum -y clean all");
        assert_eq!(y.install("cms", "1.0").join(" "), "yum -y install cms-1.0");
        assert_eq!(
            y.downgrade("cms", "1.0").join(" "),
            "yum -y downgrade cms-1.0"
        );
        assert_eq!(y.remove("cms").join(" "), "yum -y remove cms");
    }

    #[test]
    fn other_backends() {
        assert_eq!(
            Backend::Dnf.install("a", "1").join(" "),
            "dnf -y install a-1"
        );
        assert_eq!(
            Backend::Apt.downgrade("a", "1").join(" "),
            "apt-get install -y -q --allow-downgrades a=1"
        );
        assert_eq!("dnf".parse::<Backend>(), Ok(Backend::Dnf));
        assert!("rpm".parse::<Backend>().is_err());
        assert!(!Backend::None.manages_packages());
    }

    #[test]
    fn versions_from_queries() {
        let out = "Installed Packages\ncms.noarch          1.0.0-1          @local\n";
        assert_eq!(
            Backend::Yum.parse_version("cms", out),
            Some("1.0.0-1".into())
        );
        assert_eq!(
            Backend::Yum.parse_version("cms", "cms 2:1.0 @x\n"),
            Some("1.0".into())
        );
        assert_eq!(Backend::Yum.parse_version("cm", out), None);
        assert_eq!(
            Backend::Apt.parse_version("a", "1:2.0-1\n"),
            Some("2.0-1".into())
        );
        assert_eq!(Backend::Apt.parse_version("a", ""), None);
    }

    #[test]
    fn release_suffix_matches() {
        assert!(version_matches("1.0.0-1", "1.0.0"));
        assert!(version_matches("1.0.0", "1.0.0"));
        assert!(!version_matches("1.0.01", "1.0.0"));
        assert!(!version_matches("1.0.0", "1.0.0-1"));
    }
}

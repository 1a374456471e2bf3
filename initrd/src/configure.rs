//! Running the configure script (DESIGN §1 step 5) and reading back what its helpers wrote
//! (docs/server.md, "The configure script"): `/role`, `/vars.json`, `/grub_options`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cmdline::Params;

/// What the script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub role: String,
    pub version: String,
    /// As given to `set_role` (`sda` or `/dev/sda`).
    pub disk: String,
    /// `/vars.json` (an object; empty when the script did not write it).
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// `/grub_options` lines joined with spaces.
    pub grub_options: String,
    /// OS / OS_VER: the kernel command line wins over the script's variables.
    pub os: Option<String>,
    pub os_ver: Option<String>,
}

impl Configured {
    /// `DISK` as a device path: eDeploy accepted `sda` for `/dev/sda`.
    pub fn disk_path(&self) -> String {
        if self.disk.starts_with('/') {
            self.disk.clone()
        } else {
            format!("/dev/{}", self.disk)
        }
    }

    /// A variable of the script as text (`hostname`, …).
    pub fn var(&self, name: &str) -> Option<String> {
        match self.vars.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            v => Some(v.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("configure script failed ({0})")]
    Failed(String),
    #[error("configure script did not call set_role")]
    NoRole,
    #[error("{0}")]
    Bad(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The profile named by the script's `# EDEPLOY_PROFILE=` line (for the failure report).
pub fn profile(script: &str) -> Option<String> {
    script
        .lines()
        .take(20)
        .find_map(|l| l.strip_prefix("# EDEPLOY_PROFILE="))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

fn pipe() -> std::io::Result<(fs::File, fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own; O_CLOEXEC keeps them out of other children.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1])) })
}

/// Writes `script` to `ROOT/configure`, runs it with `/bin/sh` (`EDEPLOY_ROOT` = `edeploy_root`,
/// working directory ROOT) and sends every output line (stdout and stderr, in order) to `log`.
pub fn run(
    root: &Path,
    edeploy_root: &str,
    script: &str,
    params: &Params,
    log: &dyn Fn(&str),
) -> Result<(), ConfigureError> {
    let path = root.join("configure");
    let io = |what: &str| {
        let what = what.to_string();
        move |e| ConfigureError::Io(what, e)
    };
    // A previous attempt's answers must not be read back as this script's.
    for f in ["role", "grub_options", "vars.json"] {
        let _ = fs::remove_file(root.join(f));
    }
    fs::create_dir_all(root.join("post_rsync")).map_err(io("post_rsync"))?;
    fs::write(&path, script).map_err(io("writing configure"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io("chmod configure"))?;
    // One pipe for stdout and stderr so the log keeps the script's own interleaving.
    let (r, w) = pipe().map_err(io("pipe"))?;
    let w2 = w.try_clone().map_err(io("pipe"))?;
    let mut cmd = Command::new("/bin/sh");
    if params.verbose {
        // VERBOSE=1: eDeploy's `set -x`, every command of the script in the log.
        cmd.arg("-x");
    }
    cmd.arg(&path)
        .current_dir(root)
        .env("EDEPLOY_ROOT", edeploy_root)
        .env("SERV", &params.serv)
        .env("HTTP_PORT", params.http_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    for (k, v) in [("OS", &params.os), ("OS_VER", &params.os_ver)] {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().map_err(io("/bin/sh"))?;
    // The write ends were moved into `cmd`: drop it so EOF arrives when the script exits.
    drop(cmd);
    for line in BufReader::new(r).split(b'\n') {
        match line {
            Ok(l) => log(String::from_utf8_lossy(&l).trim_end_matches('\r')),
            Err(_) => break,
        }
    }
    let st = child.wait().map_err(io("waiting for configure"))?;
    if !st.success() {
        return Err(ConfigureError::Failed(st.to_string()));
    }
    Ok(())
}

/// Reads back `ROOT/role`, `ROOT/vars.json`, `ROOT/grub_options`.
pub fn read_back(root: &Path, params: &Params) -> Result<Configured, ConfigureError> {
    let role = match fs::read_to_string(root.join("role")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigureError::NoRole),
        Err(e) => return Err(ConfigureError::Io("reading /role".into(), e)),
    };
    let get = |k: &str| {
        role.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_string)
            .filter(|v| !v.is_empty())
    };
    let (Some(r), Some(v), Some(d)) = (get("ROLE"), get("VERS"), get("DISK")) else {
        return Err(ConfigureError::Bad(format!(
            "/role must hold ROLE=, VERS= and DISK= (set_role ROLE VERSION DISK), got {role:?}"
        )));
    };
    for (what, x) in [("role", &r), ("version", &v)] {
        if x.contains('/') || x == ".." || x == "." {
            return Err(ConfigureError::Bad(format!("set_role: bad {what} {x:?}")));
        }
    }
    let vars = match fs::read(root.join("vars.json")) {
        Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => {
                return Err(ConfigureError::Bad(
                    "/vars.json is not a JSON object".into(),
                ))
            }
            Err(e) => return Err(ConfigureError::Bad(format!("/vars.json: {e}"))),
        },
        Err(_) => serde_json::Map::new(),
    };
    let grub_options = fs::read_to_string(root.join("grub_options"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Configured {
        role: r,
        version: v,
        disk: d,
        vars,
        grub_options,
        os: None,
        os_ver: None,
    };
    c.os = params.os.clone().or_else(|| c.var("OS"));
    c.os_ver = params.os_ver.clone().or_else(|| c.var("OS_VER"));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn profile_line() {
        assert_eq!(
            profile("#!/bin/sh\n# EDEPLOY_PROFILE=vm\nset -e\n").as_deref(),
            Some("vm")
        );
        assert_eq!(profile("#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn missing_role_is_clear() {
        let d = tempfile::tempdir().unwrap();
        let e = read_back(d.path(), &Params::default()).unwrap_err();
        assert_eq!(e.to_string(), "configure script did not call set_role");
        fs::write(d.path().join("role"), "ROLE=x\n").unwrap();
        assert!(read_back(d.path(), &Params::default())
            .unwrap_err()
            .to_string()
            .contains("VERS="));
        fs::write(d.path().join("role"), "ROLE=../x\nVERS=1\nDISK=sda\n").unwrap();
        assert!(read_back(d.path(), &Params::default()).is_err());
    }

    #[test]
    fn output_is_streamed_in_order_and_failure_reported() {
        let d = tempfile::tempdir().unwrap();
        let lines = RefCell::new(Vec::new());
        let log = |l: &str| lines.borrow_mut().push(l.to_string());
        let root = d.path().to_str().unwrap();
        run(
            d.path(),
            root,
            "echo one\necho two >&2\necho \"root=$EDEPLOY_ROOT\"\n",
            &Params::default(),
            &log,
        )
        .unwrap();
        assert_eq!(*lines.borrow(), ["one", "two", &format!("root={root}")]);
        let e = run(
            d.path(),
            root,
            "echo bye\nexit 3\n",
            &Params::default(),
            &log,
        )
        .unwrap_err();
        assert!(e.to_string().contains("exit status: 3"), "{e}");
    }
}

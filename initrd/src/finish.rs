//! Hand-off into the installed tree (DESIGN §1 step 7): the configure script's `/post_rsync`
//! files, eDeploy's `var/lib/edeploy/conf` (read by `edeploy upgrade` and the agent), the
//! install log and inputs under `var/log/edeploy/`, and the host name.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use edeploy_tree::state::Conf;

use crate::cmdline::Params;
use crate::configure::Configured;

/// Copies `src` into `dst` recursively: files, directories and symlinks, modes kept (and
/// ownership, which matters for files like `/etc/shadow`); existing files are replaced.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let mut n = 0;
    if !src.is_dir() {
        return Ok(0);
    }
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let md = fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            if fs::symlink_metadata(&to).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&to)?;
            }
            n += copy_tree(&from, &to)?;
            // A post_rsync directory is created by `mkdir -p`: only set its mode on
            // directories it creates, never loosen the installed tree's own (e.g. /etc).
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)?;
            if fs::symlink_metadata(&to).is_ok() {
                fs::remove_file(&to)?;
            }
            symlink(target, &to)?;
            n += 1;
        } else if ft.is_file() {
            if fs::symlink_metadata(&to).is_ok_and(|m| m.file_type().is_symlink()) {
                // Never write through a symlink of the installed tree.
                fs::remove_file(&to)?;
            }
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            let _ = std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()));
            n += 1;
        }
    }
    Ok(n)
}

/// What finish writes besides the post_rsync copy.
pub struct Handoff<'a> {
    pub params: &'a Params,
    pub cfg: &'a Configured,
    pub sysname: Option<&'a str>,
    /// MAC of the interface the upload left by (lower-case, colons).
    pub pxemac: Option<&'a str>,
    pub hw_json: &'a str,
    pub log: &'a [u8],
}

/// The host name variable of the CMDB entry, if any (eDeploy's `hostname`).
pub fn hostname(cfg: &Configured) -> Option<String> {
    cfg.var("hostname")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\n', ' ']))
}

/// Merges the hand-off keys into `chroot/var/lib/edeploy/conf`, keeping the lines already there
/// (the tree install wrote VERS/ROLE/SERV; a key set twice is replaced, never duplicated).
pub fn write_conf(chroot: &Path, h: &Handoff) -> io::Result<()> {
    let mut conf = Conf::read(chroot).map_err(io::Error::other)?;
    let p = h.params;
    conf.set("VERS", &h.cfg.version);
    conf.set("ROLE", &h.cfg.role);
    conf.set("SERV", &p.serv);
    conf.set("HTTP_PORT", &p.http_port.to_string());
    conf.set("RSERV", &p.rserv);
    conf.set("RSERV_PORT", &p.rserv_port.to_string());
    conf.set("SECTION", &p.section);
    if let Some(s) = h.sysname {
        conf.set("SYSNAME", s);
    }
    if let Some(m) = h.pxemac {
        conf.set("PXEMAC", m);
    }
    if let Some(n) = hostname(h.cfg) {
        conf.set("HOSTNAME", &n);
    }
    conf.write(chroot).map_err(io::Error::other)
}

/// post_rsync, conf, `var/log/edeploy/{install.log,vars.json,hw.json}`, `etc/hostname`.
pub fn finish(root: &Path, chroot: &Path, h: &Handoff) -> io::Result<u64> {
    let n = copy_tree(&root.join("post_rsync"), chroot)?;
    write_conf(chroot, h)?;
    let logdir = chroot.join("var/log/edeploy");
    fs::create_dir_all(&logdir)?;
    fs::write(logdir.join("install.log"), h.log)?;
    fs::write(
        logdir.join("vars.json"),
        serde_json::to_string_pretty(&h.cfg.vars).unwrap_or_default() + "\n",
    )?;
    fs::write(logdir.join("hw.json"), h.hw_json)?;
    // Install logs hold the CMDB entry (addresses, maybe secrets): root only.
    for f in ["install.log", "vars.json", "hw.json"] {
        fs::set_permissions(logdir.join(f), fs::Permissions::from_mode(0o600))?;
    }
    if let Some(name) = hostname(h.cfg) {
        // A post_rsync /etc/hostname is the profile's explicit choice: keep it.
        if !root.join("post_rsync/etc/hostname").exists() {
            fs::create_dir_all(chroot.join("etc"))?;
            fs::write(chroot.join("etc/hostname"), format!("{name}\n"))?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: serde_json::Value) -> Configured {
        Configured {
            role: "base".into(),
            version: "1.0".into(),
            disk: "vda".into(),
            vars: vars.as_object().unwrap().clone(),
            grub_options: String::new(),
            os: None,
            os_ver: None,
        }
    }

    #[test]
    fn post_rsync_and_handoff_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let chroot = root.join("chroot");
        let pr = root.join("post_rsync");
        fs::create_dir_all(pr.join("etc/network")).unwrap();
        fs::write(pr.join("etc/network/interfaces"), "auto eth0\n").unwrap();
        fs::set_permissions(
            pr.join("etc/network/interfaces"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        symlink("/proc/mounts", pr.join("etc/mtab")).unwrap();
        fs::create_dir_all(chroot.join("var/lib/edeploy")).unwrap();
        fs::create_dir_all(chroot.join("etc")).unwrap();
        fs::write(chroot.join("etc/mtab"), "old").unwrap();
        fs::write(
            chroot.join("var/lib/edeploy/conf"),
            "# eDeploy\nVERS=1.0\nROLE=base\nSERV=10.0.0.1\nCUSTOM=x\n",
        )
        .unwrap();
        let p = Params::parse("SERV=10.0.2.2 HTTP_PORT=8080 SECTION=LAB").unwrap();
        let c = cfg(serde_json::json!({"hostname": "vm1", "disk": "vda", "n": 3}));
        let h = Handoff {
            params: &p,
            cfg: &c,
            sysname: Some("QEMU-52-54-00-12-34-56"),
            pxemac: Some("52:54:00:12:34:56"),
            hw_json: "[[\"a\",\"b\",\"c\",\"d\"]]",
            log: b"the log\n",
        };
        assert_eq!(finish(root, &chroot, &h).unwrap(), 2);
        let read = |p: &str| fs::read_to_string(chroot.join(p)).unwrap();
        assert_eq!(read("etc/network/interfaces"), "auto eth0\n");
        let md = fs::metadata(chroot.join("etc/network/interfaces")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o640);
        assert_eq!(
            fs::read_link(chroot.join("etc/mtab")).unwrap(),
            Path::new("/proc/mounts")
        );
        assert_eq!(
            read("var/lib/edeploy/conf"),
            "# eDeploy\nVERS=1.0\nROLE=base\nSERV=10.0.2.2\nCUSTOM=x\nHTTP_PORT=8080\n\
             RSERV=10.0.2.2\nRSERV_PORT=873\nSECTION=LAB\nSYSNAME=QEMU-52-54-00-12-34-56\n\
             PXEMAC=52:54:00:12:34:56\nHOSTNAME=vm1\n"
        );
        assert_eq!(read("var/log/edeploy/install.log"), "the log\n");
        assert_eq!(
            read("var/log/edeploy/hw.json"),
            "[[\"a\",\"b\",\"c\",\"d\"]]"
        );
        let vars: serde_json::Value =
            serde_json::from_str(&read("var/log/edeploy/vars.json")).unwrap();
        assert_eq!(vars["n"], 3);
        assert_eq!(read("etc/hostname"), "vm1\n");
    }

    #[test]
    fn no_hostname_no_file() {
        let d = tempfile::tempdir().unwrap();
        let chroot = d.path().join("chroot");
        let p = Params::default();
        let c = cfg(serde_json::json!({}));
        let h = Handoff {
            params: &p,
            cfg: &c,
            sysname: None,
            pxemac: None,
            hw_json: "[]",
            log: b"",
        };
        assert_eq!(finish(d.path(), &chroot, &h).unwrap(), 0);
        assert!(!chroot.join("etc/hostname").exists());
        let conf = fs::read_to_string(chroot.join("var/lib/edeploy/conf")).unwrap();
        assert!(conf.starts_with("VERS=1.0\nROLE=base\n") && !conf.contains("PXEMAC"));
    }
}

//! Installing the role tree into `ROOT/chroot` (DESIGN §1 step 6) with `edeploy-tree`: the
//! manifest (signature-checked when `PUBKEY=` is given), then the blobs, verified.

use std::path::Path;

use edeploy_tree::install::{self, Options};
use edeploy_tree::manifest::{self, Manifest};
use edeploy_tree::progress::{Event, Progress};
use edeploy_tree::source::Source;
use edeploy_tree::state::{self, Conf};

use crate::cmdline::Params;
use crate::configure::Configured;

/// The HTTP source on the provisioning server (`http://SERV:HTTP_PORT`).
pub fn http_source(params: &Params) -> Result<Box<dyn Source>, String> {
    let base = params.server_base();
    edeploy_tree::http::HttpSource::new(&base)
        .map(|s| Box::new(s) as Box<dyn Source>)
        .map_err(|e| format!("tree source {base}: {e}"))
}

/// Phase changes go to the log; per-file events would flood the console.
struct LogProgress<'a>(&'a (dyn Fn(&str) + Sync));

impl Progress for LogProgress<'_> {
    fn event(&self, e: Event) {
        match e {
            Event::Phase { name } => (self.0)(&format!("tree: {name}")),
            Event::Start {
                files,
                bytes,
                skipped,
            } => (self.0)(&format!(
                "tree: {files} files to fetch ({bytes} bytes), {skipped} already in place"
            )),
            _ => {}
        }
    }
}

/// Installs `cfg.version`/`cfg.role` into `chroot` and records it in the installed tree's
/// `var/lib/edeploy` (manifest + conf with VERS/ROLE/SERV, merged with the conf the role ships).
pub fn install(
    src: &dyn Source,
    cfg: &Configured,
    params: &Params,
    chroot: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Manifest, String> {
    if let Some(h) = &params.hserv {
        return Err(format!(
            "HSERV={h}: image installs (role-version.edeploy over HTTP) are not supported yet; \
             remove HSERV= to install the tree from SERV"
        ));
    }
    let key = params
        .pubkey
        .as_deref()
        .map(manifest::parse_verifying_key)
        .transpose()
        .map_err(|e| format!("PUBKEY: {e}"))?;
    let progress = LogProgress(log);
    let opts = Options {
        key: key.as_ref(),
        progress: &progress,
    };
    log(&format!(
        "installing {}/{} from {}{}",
        cfg.version,
        cfg.role,
        src.describe(),
        if key.is_some() {
            " (signed manifest required)"
        } else {
            ""
        }
    ));
    let (m, bytes) = install::install(src, &cfg.version, &cfg.role, chroot, &opts)
        .map_err(|e| format!("installing {}/{}: {e}", cfg.version, cfg.role))?;
    let mut conf = Conf::read(chroot).map_err(|e| format!("reading the role's conf: {e}"))?;
    conf.set("VERS", &cfg.version);
    conf.set("ROLE", &cfg.role);
    conf.set("SERV", &params.serv);
    state::record_install(chroot, &m, &bytes, &conf)
        .map_err(|e| format!("recording the install: {e}"))?;
    log(&format!("{} entries installed", m.entries.len()));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edeploy_tree::source::LocalSource;
    use edeploy_tree::store::Store;
    use std::fs;

    fn cfg() -> Configured {
        Configured {
            role: "base".into(),
            version: "1.0".into(),
            disk: "vda".into(),
            vars: Default::default(),
            grub_options: String::new(),
            os: None,
            os_ver: None,
        }
    }

    fn store(d: &Path, key: Option<&manifest::SigningKey>) -> LocalSource {
        let tree = d.join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::create_dir_all(tree.join("var/lib/edeploy")).unwrap();
        fs::write(tree.join("etc/motd"), "Role base\n").unwrap();
        fs::write(
            tree.join("var/lib/edeploy/conf"),
            "# role conf\nROLE=old\nRSERV_PORT=873\n",
        )
        .unwrap();
        Store::new(d.join("store"))
            .index(&tree, "1.0", "base", key)
            .unwrap();
        LocalSource::new(d.join("store"))
    }

    #[test]
    fn installs_and_records_conf() {
        let d = tempfile::tempdir().unwrap();
        let src = store(d.path(), None);
        let chroot = d.path().join("chroot");
        let p = Params::default();
        let m = install(&src, &cfg(), &p, &chroot, &|_| {}).unwrap();
        assert!(!m.entries.is_empty());
        assert_eq!(
            fs::read_to_string(chroot.join("etc/motd")).unwrap(),
            "Role base\n"
        );
        assert_eq!(
            fs::read_to_string(chroot.join("var/lib/edeploy/conf")).unwrap(),
            "# role conf\nROLE=base\nRSERV_PORT=873\nVERS=1.0\nSERV=10.0.0.1\n"
        );
        assert!(chroot.join("var/lib/edeploy/manifest").exists());
    }

    #[test]
    fn pubkey_enforces_signature_and_hserv_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = store(d.path(), None);
        let k = manifest::generate_signing_key().unwrap();
        let p = Params {
            pubkey: Some(manifest::hex(k.verifying_key().as_bytes())),
            ..Params::default()
        };
        let e = install(&src, &cfg(), &p, &d.path().join("c1"), &|_| {}).unwrap_err();
        assert!(e.contains("not signed"), "{e}");

        let d2 = tempfile::tempdir().unwrap();
        let src = store(d2.path(), Some(&k));
        install(&src, &cfg(), &p, &d2.path().join("c2"), &|_| {}).unwrap();

        let p = Params {
            hserv: Some("h".into()),
            ..Params::default()
        };
        let e = install(&src, &cfg(), &p, &d.path().join("c3"), &|_| {}).unwrap_err();
        assert!(e.contains("HSERV=h") && e.contains("not supported"), "{e}");
    }
}

//! Installing the role tree into `ROOT/chroot` (DESIGN §1 step 6) with `edeploy-tree`: the
//! manifest (signature-checked when `PUBKEY=` is given), then the blobs, verified. With
//! `HSERV=` (eDeploy's image server) the tree comes instead as one role image,
//! `http://HSERV:HSERV_PORT/HPATH/<role>-<version>.edeploy` (tar + zstd, see
//! crates/tree/src/image.rs), streamed and verified file by file against its manifest.

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
    let key = params
        .pubkey
        .as_deref()
        .map(manifest::parse_verifying_key)
        .transpose()
        .map_err(|e| format!("PUBKEY: {e}"))?;
    let progress = LogProgress(log);
    if params.hserv.is_some() {
        // `src` (SERV's store) is not used: HSERV serves the whole tree as one image.
        let url = image_url(params, &cfg.version, &cfg.role)?;
        return install_from_image(&url, cfg, params, chroot, key.as_ref(), &progress, log);
    }
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
    record(cfg, params, chroot, m, &bytes, log)
}

/// Records the install in the tree's `var/lib/edeploy` (manifest, conf VERS/ROLE/SERV merged
/// into the conf the role ships): the same whichever way the tree came.
fn record(
    cfg: &Configured,
    params: &Params,
    chroot: &Path,
    m: Manifest,
    bytes: &[u8],
    log: &(dyn Fn(&str) + Sync),
) -> Result<Manifest, String> {
    let mut conf = Conf::read(chroot).map_err(|e| format!("reading the role's conf: {e}"))?;
    conf.set("VERS", &cfg.version);
    conf.set("ROLE", &cfg.role);
    conf.set("SERV", &params.serv);
    state::record_install(chroot, &m, bytes, &conf)
        .map_err(|e| format!("recording the install: {e}"))?;
    log(&format!("{} entries installed", m.entries.len()));
    Ok(m)
}

/// eDeploy's image URL: `http://HSERV:HSERV_PORT/HPATH/<role>-<version>.edeploy`. HPATH's
/// slashes are normalised (`install`, `/install/` are the same); an empty HPATH is the web
/// root. With `edeploy-server serve` (or a web server over STOREDIR at `/trees/`) the images
/// are at `HPATH=trees/images`.
pub fn image_url(params: &Params, version: &str, role: &str) -> Result<String, String> {
    let Some(h) = &params.hserv else {
        return Err("no HSERV= given".into());
    };
    // Names from the configure script go into the URL as they are: refuse what would need
    // escaping rather than guess an encoding the web server may not share.
    for (what, n) in [("version", version), ("role", role)] {
        let ok = !n.is_empty()
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+~@:=,".contains(&b));
        if !ok {
            return Err(format!("{what} {n:?} cannot be used in an image URL"));
        }
    }
    // A bare IPv6 address needs brackets in a URL.
    let host = if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.clone()
    };
    let path: Vec<&str> = params.hpath.split('/').filter(|c| !c.is_empty()).collect();
    let mut url = format!("http://{host}:{}/", params.hserv_port);
    for c in path {
        url.push_str(c);
        url.push('/');
    }
    url.push_str(&edeploy_tree::image::file_name(version, role));
    Ok(url)
}

/// Streams the image at `url` into `chroot` (never buffered whole: the initrd's RAM is the
/// limit) and records the install.
pub fn install_from_image(
    url: &str,
    cfg: &Configured,
    params: &Params,
    chroot: &Path,
    key: Option<&manifest::VerifyingKey>,
    progress: &dyn Progress,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Manifest, String> {
    log(&format!(
        "installing {}/{} from image {url}{}",
        cfg.version,
        cfg.role,
        if key.is_some() {
            " (signed manifest required)"
        } else {
            ""
        }
    ));
    let reader = edeploy_tree::image::open(url).map_err(|e| format!("image {url}: {e}"))?;
    let opts = edeploy_tree::image::InstallOptions {
        key,
        expect: Some((&cfg.version, &cfg.role)),
        progress: Some(progress),
    };
    let (m, bytes) = edeploy_tree::image::install_image(reader, chroot, &opts)
        .map_err(|e| format!("installing image {url}: {e}"))?;
    record(cfg, params, chroot, m, &bytes, log)
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
    fn pubkey_enforces_signature() {
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
    }

    #[test]
    fn image_urls() {
        let p = |hserv: &str, port: u16, hpath: &str| Params {
            hserv: Some(hserv.into()),
            hserv_port: port,
            hpath: hpath.into(),
            ..Params::default()
        };
        let u = |p: &Params| image_url(p, "D7-H.1.0.0", "base").unwrap();
        // eDeploy's defaults: HSERV_PORT=80, HPATH=install.
        assert_eq!(
            u(&p("10.0.0.2", 80, "install")),
            "http://10.0.0.2:80/install/base-D7-H.1.0.0.edeploy"
        );
        assert_eq!(
            u(&p("h", 8080, "/trees/images/")),
            "http://h:8080/trees/images/base-D7-H.1.0.0.edeploy"
        );
        assert_eq!(u(&p("h", 81, "")), "http://h:81/base-D7-H.1.0.0.edeploy");
        assert_eq!(u(&p("h", 81, "/")), "http://h:81/base-D7-H.1.0.0.edeploy");
        assert_eq!(
            u(&p("fd00::1", 80, "a//b")),
            "http://[fd00::1]:80/a/b/base-D7-H.1.0.0.edeploy"
        );
        assert!(image_url(&Params::default(), "1", "base").is_err());
        assert!(image_url(&p("h", 80, "x"), "1 0", "base").is_err());
        assert!(image_url(&p("h", 80, "x"), "1", "../base").is_err());
        assert!(image_url(&p("h", 80, "x"), "1", "").is_err());
    }

    #[test]
    fn hserv_installs_the_image_and_records_conf() {
        let d = tempfile::tempdir().unwrap();
        let src = store(d.path(), None);
        // The image of the same tree, read from a local file: the HTTP path is in tests/.
        let img = d.path().join("base-1.0.edeploy");
        edeploy_tree::image::write_image_file(
            &d.path().join("tree"),
            "1.0",
            "base",
            None,
            &Default::default(),
            &img,
        )
        .unwrap();
        let chroot = d.path().join("chroot");
        let m = install_from_image(
            img.to_str().unwrap(),
            &cfg(),
            &Params::default(),
            &chroot,
            None,
            &LogProgress(&|_| {}),
            &|_| {},
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(chroot.join("var/lib/edeploy/conf")).unwrap(),
            "# role conf\nROLE=base\nRSERV_PORT=873\nVERS=1.0\nSERV=10.0.0.1\n"
        );
        let (installed, _) = state::read_installed(&chroot).unwrap();
        assert_eq!(installed, m);
        // An unreachable HSERV fails the step with the URL in the message.
        let p = Params {
            hserv: Some("127.0.0.1".into()),
            hserv_port: 9,
            ..Params::default()
        };
        let e = install(&src, &cfg(), &p, &d.path().join("c2"), &|_| {}).unwrap_err();
        assert!(
            e.contains("http://127.0.0.1:9/install/base-1.0.edeploy"),
            "{e}"
        );
    }
}

//! `edeploy install VERSION ROLE --image URL|FILE`: a fresh install from one role image
//! (`<role>-<version>.edeploy`, tar + zstd: crates/tree/src/image.rs), for hosts that reach the
//! server only through a plain web server, or have the image on local media. The result and
//! the recorded state are those of a pack install, so `verify` and `upgrade` work the same.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result};
use edeploy_tree::image::{self, InstallOptions};
use edeploy_tree::manifest::{hex, VerifyingKey};
use edeploy_tree::progress::{Event, Progress};
use edeploy_tree::state::{self, Conf};

/// JSON lines on stdout with `--json`, nothing otherwise (the image streams at disk speed; the
/// summary line says what was done).
struct Json(Option<Mutex<std::io::Stdout>>);

impl Json {
    fn line(&self, v: &impl serde::Serialize) {
        if let Some(Ok(mut o)) = self.0.as_ref().map(Mutex::lock) {
            let _ = serde_json::to_writer(&mut *o, v);
            let _ = o.write_all(b"\n");
        }
    }
}

impl Progress for Json {
    fn event(&self, e: Event) {
        self.line(&e);
    }
}

/// Install the image at `src` (a file, or an `http://`/`https://` URL, streamed) into `root`
/// and record it in `root/var/lib/edeploy` (manifest; conf `VERS`, `ROLE`, `PUBKEY` when a key
/// was required, and `SERV` when `server` names one for later upgrades).
pub fn cmd_install(
    root: &Path,
    version: &str,
    role: &str,
    src: &str,
    server: Option<&str>,
    key: Option<&VerifyingKey>,
    json: bool,
) -> Result<ExitCode> {
    let progress = Json(json.then(|| Mutex::new(std::io::stdout())));
    let reader = image::open(src).with_context(|| format!("opening image {src}"))?;
    let opts = InstallOptions {
        key,
        expect: Some((version, role)),
        progress: Some(&progress),
    };
    let (m, bytes) = image::install_image(reader, root, &opts)
        .with_context(|| format!("installing image {src} into {}", root.display()))?;
    let mut conf = Conf::read(root)?;
    conf.set("VERS", version);
    conf.set("ROLE", role);
    if let Some(s) = server {
        conf.set("SERV", s);
    }
    if let Some(k) = key {
        conf.set("PUBKEY", &hex(k.as_bytes()));
    }
    state::record_install(root, &m, &bytes, &conf)?;
    if json {
        progress.line(&serde_json::json!({"event": "installed", "version": version, "role": role, "entries": m.entries.len(), "image": src}));
    } else {
        eprintln!(
            "installed {version}/{role} ({} entries) from image {src} into {}",
            m.entries.len(),
            root.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_from_a_file_and_records_state() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/motd"), "hi\n").unwrap();
        let img = d.path().join("base-1.0.edeploy");
        let k = edeploy_tree::manifest::generate_signing_key().unwrap();
        image::write_image_file(&tree, "1.0", "base", Some(&k), &Default::default(), &img).unwrap();
        let root = d.path().join("root");
        let vk = k.verifying_key();
        let src = img.to_str().unwrap();
        cmd_install(
            &root,
            "1.0",
            "base",
            src,
            Some("http://s:8080"),
            Some(&vk),
            true,
        )
        .unwrap();
        let conf = Conf::read(&root).unwrap();
        assert_eq!(conf.get("VERS"), Some("1.0"));
        assert_eq!(conf.get("SERV"), Some("http://s:8080"));
        assert_eq!(conf.get("PUBKEY"), Some(&*hex(vk.as_bytes())));
        let (m, _) = state::read_installed(&root).unwrap();
        assert_eq!(m.role, "base");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            "hi\n"
        );
        // The image must be the version asked for.
        let e = cmd_install(&d.path().join("r2"), "2.0", "base", src, None, None, false);
        assert!(format!("{:#}", e.unwrap_err()).contains("asked for 2.0/base"));
    }
}

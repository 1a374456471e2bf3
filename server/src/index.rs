//! `edeploy-server index`: publish eDeploy's role trees (`INSTALLDIR/<version>/<role>/`) into
//! STOREDIR as manifests, blobs and packs (crates/tree), and write the upgrade lists
//! `STOREDIR/upgrades/FROM/ROLE` from METADATADIR, so every tree route is a plain file a static
//! web server can serve too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use edeploy_spec::conf::{ServerConf, DEFAULT_SECTION};
use edeploy_spec::config::safe_name;
use edeploy_tree::manifest::{read_signing_key, Kind, SigningKey};
use edeploy_tree::store::{write_atomic, Store};

/// What `index` and `image` both read: the config, its section, the optional signing key.
#[derive(clap::Args)]
pub struct TreeConfArgs {
    /// edeploy.conf whose INSTALLDIR holds the trees (and STOREDIR receives the output).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Section of the config to read.
    #[arg(long, default_value = DEFAULT_SECTION)]
    section: String,
    /// ed25519 secret key file (64 hex characters) to sign the manifests with.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl TreeConfArgs {
    pub fn load(&self) -> Result<(ServerConf, Option<SigningKey>)> {
        let conf = ServerConf::load(&self.config, &self.section)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let key = self
            .key
            .as_deref()
            .map(read_signing_key)
            .transpose()
            .context("reading the signing key")?;
        Ok((conf, key))
    }
}

/// `INSTALLDIR/VERSION/ROLE`, after checking both names: they become a URL path component and a
/// file name.
pub fn tree_dir(conf: &ServerConf, version: &str, role: &str) -> Result<PathBuf> {
    for n in [version, role] {
        if !safe_name(n) || n.contains(['\\', '%', ' ']) || n.starts_with('.') {
            bail!("invalid version or role name {n:?}");
        }
    }
    let tree = conf.install_dir.join(version).join(role);
    if !tree.is_dir() {
        bail!("no tree {}", tree.display());
    }
    Ok(tree)
}

#[derive(clap::Args)]
#[command(
    after_help = "Reads INSTALLDIR, METADATADIR and STOREDIR from the config \
    (defaults CONFIGDIR/../install, ../metadata, ../store). Prints one line per tree: \
    entries, bytes of file content, pack size, time."
)]
pub struct IndexArgs {
    #[command(flatten)]
    conf: TreeConfArgs,
    /// Index only this version (with ROLE); default: every INSTALLDIR/<version>/<role>/.
    #[arg(requires = "role")]
    version: Option<String>,
    /// Index only this role of VERSION.
    role: Option<String>,
}

/// Sub-directories of `dir` with names safe to publish, sorted; hidden ones skipped.
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for de in rd {
        let de = de?;
        let name = de.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !de.file_type()?.is_dir() {
            continue;
        }
        if !safe_name(&name) || name.contains(['\\', '%', ' ']) {
            eprintln!(
                "edeploy-server: skipping {} (name unusable in a URL)",
                de.path().display()
            );
            continue;
        }
        out.push(name);
    }
    out.sort();
    Ok(out)
}

pub fn run(a: IndexArgs) -> Result<ExitCode> {
    let (conf, key) = a.conf.load()?;
    let trees: Vec<(String, String)> = match (&a.version, &a.role) {
        (Some(v), Some(r)) => {
            tree_dir(&conf, v, r)?;
            vec![(v.clone(), r.clone())]
        }
        _ => {
            let mut all = Vec::new();
            for v in subdirs(&conf.install_dir)? {
                for r in subdirs(&conf.install_dir.join(&v))? {
                    all.push((v.clone(), r));
                }
            }
            all
        }
    };
    if trees.is_empty() {
        eprintln!(
            "edeploy-server: no tree under {} (expected <version>/<role>/)",
            conf.install_dir.display()
        );
    }
    let store = Store::new(&conf.store_dir);
    fs::create_dir_all(&conf.store_dir)
        .with_context(|| format!("creating {}", conf.store_dir.display()))?;
    for (v, r) in &trees {
        let t0 = Instant::now();
        let tree = conf.install_dir.join(v).join(r);
        let (m, mh) = store
            .index(&tree, v, r, key.as_ref())
            .with_context(|| format!("indexing {}", tree.display()))?;
        let bytes: u64 = m
            .entries
            .iter()
            .map(|e| match &e.kind {
                Kind::File { size, .. } => *size,
                _ => 0,
            })
            .sum();
        let pack = fs::metadata(store.pack_path(&mh)).map_or(0, |m| m.len());
        println!(
            "{v}/{r}: {} entries, {bytes} bytes, pack {pack} bytes, {:.2} s{}",
            m.entries.len(),
            t0.elapsed().as_secs_f64(),
            if key.is_some() { ", signed" } else { "" }
        );
    }
    let n = write_upgrades(&conf.metadata_dir, &conf.store_dir)?;
    println!(
        "upgrades: {n} list(s) from {} in {}",
        conf.metadata_dir.display(),
        conf.store_dir.join("upgrades").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `STORE/upgrades/FROM/ROLE` (one target version per line) for every
/// `METADATADIR/FROM/ROLE/TO/`, and removes lists whose metadata is gone. Returns how many
/// lists exist.
pub fn write_upgrades(metadata: &Path, store: &Path) -> Result<usize> {
    let out = store.join("upgrades");
    let mut written = std::collections::HashSet::new();
    for from in subdirs(metadata)? {
        for role in subdirs(&metadata.join(&from))? {
            let targets = subdirs(&metadata.join(&from).join(&role))?;
            let p = out.join(&from).join(&role);
            let mut text = String::new();
            for t in &targets {
                text.push_str(t);
                text.push('\n');
            }
            write_atomic(&p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
            written.insert(p);
        }
    }
    // Stale lists (metadata removed since the last index) would offer upgrades with no path.
    for from in subdirs(&out)? {
        let dir = out.join(&from);
        for de in fs::read_dir(&dir)? {
            let p = de?.path();
            if p.is_file() && !written.contains(&p) {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        let _ = fs::remove_dir(&dir); // only when empty
    }
    Ok(written.len())
}

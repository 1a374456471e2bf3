//! `edeploy-server image`: write the role image `<role>-<version>.edeploy` (tar + zstd, format
//! in crates/tree/src/image.rs and docs/tree.md) of `INSTALLDIR/VERSION/ROLE`, by default into
//! `STOREDIR/images/`, which `serve` (and any static web server over STOREDIR) publishes as
//! `GET /trees/images/<role>-<version>.edeploy`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use edeploy_tree::image::{self, WriteOptions};

use crate::index::{tree_dir, TreeConfArgs};

#[derive(clap::Args)]
#[command(
    after_help = "Reads INSTALLDIR and STOREDIR from the config (defaults CONFIGDIR/../install, \
    ../store). Hosts install the image with `edeploy install VERSION ROLE --image URL|FILE`, \
    the initrd with HSERV=, HSERV_PORT=, HPATH=trees/images."
)]
pub struct ImageArgs {
    #[command(flatten)]
    conf: TreeConfArgs,
    /// Where to write the image. Default: STOREDIR/images/<role>-<version>.edeploy.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    version: String,
    role: String,
}

pub fn run(a: ImageArgs) -> Result<ExitCode> {
    let (conf, key) = a.conf.load()?;
    let tree = tree_dir(&conf, &a.version, &a.role)?;
    let out = a.output.unwrap_or_else(|| {
        conf.store_dir
            .join("images")
            .join(image::file_name(&a.version, &a.role))
    });
    let t0 = Instant::now();
    let opts = WriteOptions {
        level: a.level,
        ..WriteOptions::default()
    };
    let m = image::write_image_file(&tree, &a.version, &a.role, key.as_ref(), &opts, &out)
        .with_context(|| format!("writing the image of {}", tree.display()))?;
    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
    println!(
        "{}: {}/{} {} entries, {size} bytes, {:.2} s{}",
        out.display(),
        a.version,
        a.role,
        m.entries.len(),
        t0.elapsed().as_secs_f64(),
        if key.is_some() { ", signed" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

//! `edeploy detect`: print this machine's hardware list (what the initrd uploads).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use edeploy_hw::HardwareList;

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    /// JSON array of [category, item, key, value], one line per entry (the upload form).
    #[default]
    Json,
    /// eDeploy's `.hw` Python-literal form.
    Edeploy,
    /// An aligned table for people.
    Human,
}

/// Options of `edeploy detect`.
#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let hw = edeploy_hw::detect(root).context("hardware detection")?;
    let text = match args.format {
        Format::Json => hw.to_json_lines(),
        Format::Edeploy => hw.to_edeploy(),
        Format::Human => human(&hw),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Columns padded to their widest entry; values are never cut (flags lines are long).
fn human(hw: &HardwareList) -> String {
    let width = |i: usize| {
        hw.lines()
            .iter()
            .map(|l| l[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut s = String::new();
    for l in hw.lines() {
        s.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            l[0], l[1], l[2], l[3]
        ));
    }
    s
}

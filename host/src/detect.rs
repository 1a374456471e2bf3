use std::path::Path;
use std::process::ExitCode;

/// Options of `edeploy detect`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_root: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("hardware detection is not implemented yet")
}

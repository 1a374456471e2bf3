//! `edeploy`: the command run on a host (or in the initrd). Thin: every command is one module that
//! parses its arguments and calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod detect;
mod image;
mod tree;
mod zk;

#[derive(Parser)]
#[command(
    name = "edeploy",
    version,
    about = "Host side of edeploy: inspect this machine, keep it on its tree version"
)]
struct Cli {
    /// Root of the system to work on (tests and chroots pass a directory).
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print this machine's hardware list (what the initrd uploads).
    Detect(detect::Args),
    /// Keep this host's applications at the cluster's version (ZooKeeper or a tree file).
    Agent(agent::Args),
    /// Import, export and print the deployment tree in zc.zk's text format.
    Zk(zk::Args),
    #[command(flatten)]
    Tree(tree::TreeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    edeploy_logs::init(edeploy_logs::level(cli.verbose));
    let result = match cli.command {
        Command::Detect(args) => detect::run(&cli.root, args),
        Command::Agent(args) => agent::run(&cli.root, cli.verbose, args),
        Command::Zk(args) => zk::run(args),
        Command::Tree(c) => tree::run(&cli.root, c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edeploy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

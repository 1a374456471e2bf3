//! `edeploy zk import|export|print`: the tree in zc.zk's text format, from and to either store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};

use edeploy_agent::store::file::FileStore;
use edeploy_agent::store::zk::ZkStore;
use edeploy_agent::store::Store;
use edeploy_agent::tree::split_parent;
use edeploy_agent::treefmt;

/// Where the tree lives; shared by `edeploy agent` and `edeploy zk`.
#[derive(ClapArgs, Debug, Clone)]
pub struct StoreArgs {
    /// ZooKeeper to use.
    #[arg(long, value_name = "HOST:PORT", default_value = "zookeeper:2181")]
    pub zookeeper: String,
    /// Use a tree text file instead of ZooKeeper (one machine, no cluster).
    #[arg(long, value_name = "FILE")]
    pub tree_file: Option<PathBuf>,
}

impl StoreArgs {
    /// `deadline` bounds how long a call retries while ZooKeeper is unreachable.
    pub fn open(&self, deadline: Duration) -> Result<Box<dyn Store>> {
        Ok(match &self.tree_file {
            Some(f) => Box::new(FileStore::new(f)),
            None => {
                let mut s = ZkStore::new(&self.zookeeper)?;
                s.op_deadline = deadline;
                Box::new(s)
            }
        })
    }
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Create and update the nodes of a tree file (`-` for stdin).
    Import {
        file: PathBuf,
        /// Below every node of the file, delete children the file leaves out (never top-level
        /// siblings, never ephemeral nodes).
        #[arg(long)]
        trim: bool,
        /// Print the changes without making them.
        #[arg(long)]
        dry_run: bool,
        /// Import below this node instead of `/`.
        #[arg(long, default_value = "/")]
        path: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a subtree in the text format, without ephemeral nodes (what `import` reads back).
    Export {
        #[arg(default_value = "/")]
        path: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the whole tree, ephemeral nodes (live agents) included and marked.
    Print {
        #[arg(default_value = "/")]
        path: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn read_input(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("reading stdin");
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

fn show(store: &StoreArgs, path: &str, ephemeral: bool) -> Result<ExitCode> {
    let tree = store.open(Duration::from_secs(30))?.load()?;
    let Some(node) = tree.get(path) else {
        bail!("no node {path}");
    };
    let node = if ephemeral {
        node.clone()
    } else {
        node.without_ephemeral()
    };
    let name = split_parent(path).1;
    let text = if name.is_empty() {
        treefmt::print_with(None, &node, ephemeral)
    } else {
        treefmt::print_with(Some(name), &node, ephemeral)
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Sub::Import {
            file,
            trim,
            dry_run,
            path,
            store,
        } => {
            let text = treefmt::parse(&read_input(&file)?)
                .with_context(|| format!("{}", file.display()))?;
            let mut store = store.open(Duration::from_secs(30))?;
            let changes = treefmt::import_changes(&store.load()?, &path, &text, trim);
            for change in &changes {
                if dry_run {
                    println!("{change}");
                } else if matches!(change, treefmt::Change::Keep { .. }) {
                    eprintln!("{change}");
                } else {
                    tracing::info!("{change}");
                }
            }
            if !dry_run {
                store.apply(&changes)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Export { path, store } => show(&store, &path, false),
        Sub::Print { path, store } => show(&store, &path, true),
    }
}

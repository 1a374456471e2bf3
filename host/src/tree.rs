//! Role-tree commands: `install`, `list`, `upgrade`, `test-upgrade`, `verify`, `rollback`,
//! `version`, `role`. Thin over `edeploy-tree`; the tree source is `--server SRC` or the
//! conf's `SERV` (+ `HTTP_PORT`, default 80): an `http://`/`https://` server (the routes of
//! `edeploy-server serve`, or a static web server over its store) or a local store directory
//! (as `edeploy-server index` publishes it).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use edeploy_tree::exclude::Patterns;
use edeploy_tree::http::HttpSource;
use edeploy_tree::manifest::{parse_verifying_key, VerifyingKey};
use edeploy_tree::progress::{Event, Progress};
use edeploy_tree::source::{LocalSource, Source};
use edeploy_tree::state::{self, Conf};
use edeploy_tree::upgrade::{self, JournalState, Outcome};
use edeploy_tree::{install, verify};

#[derive(Subcommand)]
pub enum TreeCommand {
    /// Fresh install of VERSION/ROLE into an empty --root (the initrd's code path).
    Install(InstallArgs),
    /// List the versions this host can upgrade to.
    List(SourceArgs),
    /// Upgrade the tree to VERSION (exit 100: done, reboot needed).
    Upgrade(UpgradeArgs),
    /// Show what `upgrade VERSION` would change, itemised, without changing anything.
    TestUpgrade(UpgradeArgs),
    /// Compare the live tree with the installed manifest (exit 0 clean, 1 drift, 2 error).
    Verify(VerifyArgs),
    /// Undo the last upgrade exactly (or finish undoing an interrupted one).
    Rollback,
    /// Print the installed version (conf VERS).
    Version,
    /// Print the installed role (conf ROLE).
    Role,
}

#[derive(Args)]
pub struct SourceArgs {
    /// Tree source: http://HOST[:PORT][/PATH] (edeploy-server, or a static server with the
    /// store under /trees/), or a local store directory. Default: the conf's SERV, as
    /// http://SERV:HTTP_PORT (HTTP_PORT default 80) unless it is an absolute path or a URL.
    #[arg(long, value_name = "SRC")]
    server: Option<String>,
    /// Require manifests signed by this ed25519 public key (64 hex chars, or a file holding
    /// them). Default: the conf's PUBKEY, which a signed install records.
    #[arg(long, value_name = "KEY")]
    pubkey: Option<String>,
    /// Progress and results as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct InstallArgs {
    version: String,
    role: String,
    #[command(flatten)]
    src: SourceArgs,
    /// Install from the role image <role>-<version>.edeploy (a file, or an http(s) URL such
    /// as http://SERVER/trees/images/base-1.0.edeploy) instead of the tree store; --server
    /// is then only recorded as SERV for later upgrades.
    #[arg(long, value_name = "URL_OR_FILE")]
    image: Option<String>,
}

#[derive(Args)]
pub struct UpgradeArgs {
    /// Target version.
    to: String,
    #[command(flatten)]
    src: SourceArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Also compare file contents (BLAKE3, multi-threaded).
    #[arg(long)]
    full: bool,
    /// JSON output (one object with the drift list).
    #[arg(long)]
    json: bool,
    /// Extra exclude file (rsync-style patterns); the last upgrade's `exclude` is always used.
    #[arg(long, value_name = "FILE")]
    exclude: Option<PathBuf>,
}

pub fn run(root: &Path, cmd: TreeCommand) -> Result<ExitCode> {
    match cmd {
        TreeCommand::Install(a) => cmd_install(root, a),
        TreeCommand::List(a) => cmd_list(root, a),
        TreeCommand::Upgrade(a) => cmd_upgrade(root, a),
        TreeCommand::TestUpgrade(a) => cmd_test_upgrade(root, a),
        TreeCommand::Verify(a) => cmd_verify(root, a),
        TreeCommand::Rollback => cmd_rollback(root),
        TreeCommand::Version => print_conf(root, "VERS"),
        TreeCommand::Role => print_conf(root, "ROLE"),
    }
}

/// Where the exclude patterns of the last upgrade are kept (verify honours them).
fn exclude_path(root: &Path) -> PathBuf {
    state::state_dir(root).join("exclude")
}

fn source(root: &Path, a: &SourceArgs) -> Result<(Box<dyn Source>, String)> {
    let conf = Conf::read(root)?;
    let spec = match &a.server {
        Some(s) => s.clone(),
        None => match conf.get("SERV") {
            Some(s)
                if s.starts_with('/') || s.starts_with("http://") || s.starts_with("https://") =>
            {
                s.to_string()
            }
            Some(s) => {
                let port = conf.get("HTTP_PORT").unwrap_or("80");
                // A bare IPv6 address needs brackets in a URL.
                if s.contains(':') && !s.starts_with('[') {
                    format!("http://[{s}]:{port}")
                } else {
                    format!("http://{s}:{port}")
                }
            }
            None => bail!(
                "no --server given and no SERV in {}",
                state::conf_path(root).display()
            ),
        },
    };
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let src = HttpSource::new(&spec)?;
        let desc = src.describe();
        return Ok((Box::new(src), desc));
    }
    let p = std::fs::canonicalize(&spec).with_context(|| format!("tree source {spec}"))?;
    Ok((Box::new(LocalSource::new(&p)), p.display().to_string()))
}

/// The manifest public key: `--pubkey`, else the conf's `PUBKEY` (recorded by a signed
/// install, so later upgrades keep enforcing signatures).
fn pubkey(root: &Path, a: &SourceArgs) -> Result<Option<VerifyingKey>> {
    let conf = Conf::read(root)?;
    let Some(k) = a
        .pubkey
        .clone()
        .or_else(|| conf.get("PUBKEY").map(str::to_string))
    else {
        return Ok(None);
    };
    let k = &k;
    let text = if Path::new(k).exists() {
        std::fs::read_to_string(k).with_context(|| format!("reading {k}"))?
    } else {
        k.clone()
    };
    Ok(Some(parse_verifying_key(&text)?))
}

/// Renders progress: an indicatif bar on a terminal, JSON lines with `--json`, else nothing.
struct Reporter {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    out: Mutex<std::io::Stdout>,
}

impl Reporter {
    fn new(json: bool) -> Reporter {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("static template"),
            );
            b
        });
        Reporter {
            json,
            bar,
            out: Mutex::new(std::io::stdout()),
        }
    }

    fn json_line(&self, v: &impl serde::Serialize) {
        if let Ok(mut o) = self.out.lock() {
            let _ = serde_json::to_writer(&mut *o, v);
            let _ = o.write_all(b"\n");
        }
    }
}

impl Progress for Reporter {
    fn event(&self, e: Event) {
        if self.json {
            self.json_line(&e);
        }
        if let Some(b) = &self.bar {
            match e {
                Event::Start { bytes, .. } => b.set_length(bytes),
                Event::Bytes { done } => b.set_position(done),
                Event::Phase { name } => b.set_message(name),
                Event::Done { .. } => b.finish_and_clear(),
                Event::File { .. } => {}
            }
        }
    }
}

fn cmd_install(root: &Path, a: InstallArgs) -> Result<ExitCode> {
    if let Some(img) = &a.image {
        let key = pubkey(root, &a.src)?;
        let (v, r, serv) = (&a.version, &a.role, a.src.server.as_deref());
        return crate::image::cmd_install(root, v, r, img, serv, key.as_ref(), a.src.json);
    }
    let (src, desc) = source(root, &a.src)?;
    let key = pubkey(root, &a.src)?;
    let rep = Reporter::new(a.src.json);
    let opts = install::Options {
        key: key.as_ref(),
        progress: &rep,
    };
    let (m, bytes) = install::install(src.as_ref(), &a.version, &a.role, root, &opts)?;
    let mut conf = Conf::read(root)?;
    conf.set("VERS", &a.version);
    conf.set("ROLE", &a.role);
    conf.set("SERV", &desc);
    if let Some(k) = &key {
        conf.set("PUBKEY", &edeploy_tree::manifest::hex(k.as_bytes()));
    }
    state::record_install(root, &m, &bytes, &conf)?;
    if a.src.json {
        rep.json_line(&serde_json::json!({"event": "installed", "version": a.version, "role": a.role, "entries": m.entries.len()}));
    } else {
        eprintln!(
            "installed {}/{} ({} entries) into {}",
            a.version,
            a.role,
            m.entries.len(),
            root.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn installed(root: &Path) -> Result<(String, String)> {
    let conf = Conf::read(root)?;
    let (m, _) = state::read_installed(root)?;
    let vers = conf.get("VERS").unwrap_or(&m.version).to_string();
    Ok((vers, conf.get("ROLE").unwrap_or(&m.role).to_string()))
}

fn cmd_list(root: &Path, a: SourceArgs) -> Result<ExitCode> {
    let (src, _) = source(root, &a)?;
    let (vers, role) = installed(root)?;
    let list = src.upgrades(&vers, &role)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"version": vers, "role": role, "upgrades": list})
        );
    } else {
        for v in list {
            println!("{v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Test hook for kill tests: `EDEPLOY_TREE_KILL_AT_STEP=N` sends SIGKILL to this process at
/// upgrade step N (a real kill, no cleanup runs).
fn kill_hook(step: u64) {
    if let Ok(v) = std::env::var("EDEPLOY_TREE_KILL_AT_STEP") {
        if v.parse::<u64>().ok() == Some(step) {
            // SAFETY: kill(2) on our own pid; nothing is borrowed across it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

fn cmd_upgrade(root: &Path, a: UpgradeArgs) -> Result<ExitCode> {
    let (src, _) = source(root, &a.src)?;
    let key = pubkey(root, &a.src)?;
    let rep = Reporter::new(a.src.json);
    let (from, role) = installed(root)?;
    let opts = upgrade::Options {
        key: key.as_ref(),
        progress: &rep,
        step_hook: Some(&kill_hook),
    };
    let outcome = upgrade::upgrade(src.as_ref(), root, &a.to, &opts)?;
    let exclude = src
        .metadata(&from, &role, &a.to, "exclude")?
        .unwrap_or_default();
    std::fs::write(exclude_path(root), exclude)?;
    let reboot = outcome == Outcome::RebootNeeded;
    if a.src.json {
        rep.json_line(
            &serde_json::json!({"event": "upgraded", "from": from, "to": a.to, "reboot": reboot}),
        );
    } else {
        eprintln!(
            "upgraded {from} -> {}{}",
            a.to,
            if reboot { " (reboot needed)" } else { "" }
        );
    }
    Ok(if reboot {
        ExitCode::from(100)
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_test_upgrade(root: &Path, a: UpgradeArgs) -> Result<ExitCode> {
    let (src, _) = source(root, &a.src)?;
    let key = pubkey(root, &a.src)?;
    let opts = upgrade::Options {
        key: key.as_ref(),
        ..Default::default()
    };
    let plan = upgrade::test_upgrade(src.as_ref(), root, &a.to, &opts)?;
    if a.src.json {
        let items: Vec<_> = plan
            .items
            .iter()
            .map(|(i, p)| serde_json::json!({"item": i, "path": p}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"from": plan.from, "to": plan.to, "items": items, "notes": plan.notes})
        );
    } else {
        for (i, p) in &plan.items {
            println!("{i:<11} {p}");
        }
        for n in &plan.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_verify(root: &Path, a: VerifyArgs) -> Result<ExitCode> {
    let (m, _) = state::read_installed(root)?;
    let mut text = std::fs::read_to_string(exclude_path(root)).unwrap_or_default();
    if let Some(f) = &a.exclude {
        text.push('\n');
        text.push_str(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        );
    }
    let opts = verify::Options {
        full: a.full,
        exclude: Patterns::parse(&text)?,
    };
    let drift = verify::verify(root, &m, &opts)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"version": m.version, "role": m.role, "full": a.full, "clean": drift.is_empty(), "drift": drift})
        );
    } else {
        for d in &drift {
            println!("{d}");
        }
    }
    Ok(if drift.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_rollback(root: &Path) -> Result<ExitCode> {
    let st = upgrade::journal_state(root)?;
    upgrade::rollback(root)?;
    match st {
        JournalState::Committed { from, to } | JournalState::Incomplete { from, to }
            if !from.is_empty() =>
        {
            let _ = std::fs::remove_file(exclude_path(root));
            eprintln!("rolled back {to} -> {from}");
        }
        _ => eprintln!("discarded an interrupted upgrade (tree untouched)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_conf(root: &Path, key: &str) -> Result<ExitCode> {
    match Conf::read(root)?.get(key) {
        Some(v) => {
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("no {key} in {}", state::conf_path(root).display()),
    }
}

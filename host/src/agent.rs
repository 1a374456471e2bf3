//! `edeploy agent` (keep this host's applications at the cluster's version) and
//! `edeploy agent check` (the Nagios check).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};

use edeploy_agent::backend::Backend;
use edeploy_agent::check::{evaluate, Level, Observed};
use edeploy_agent::exec::Runner;
use edeploy_agent::plan::Identity;
use edeploy_agent::run::{Agent, AgentError, Config, Outcome};
use edeploy_agent::rundir::{now, RunDir};
use edeploy_agent::store::StoreError;
use edeploy_agent::tree::version_text;

use crate::zk::StoreArgs;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn stop_handler(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGTERM/SIGINT end the agent between runs (never in the middle of one), so its session is
/// closed cleanly and the ephemeral host node goes at once.
fn on_sigterm_stop() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, stop_handler as *const () as libc::sighandler_t);
        }
    }
}

#[derive(ClapArgs, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    check: Option<Box<Sub>>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    who: Box<WhoArgs>,
    /// Package manager: yum, dnf, apt or none.
    #[arg(long, default_value = "yum")]
    backend: Backend,
    /// Shell command run after each successful deploy.
    #[arg(long, value_name = "CMD")]
    after: Option<String>,
    /// One look at the cluster version (and one deploy if it moved), then exit: 0 done or
    /// nothing to do, 1 the deploy failed.
    #[arg(long)]
    run_once: bool,
    /// When this host's node is already registered, wait this long (a crashed agent's session
    /// times out) and try once more before concluding another agent runs.
    #[arg(long, default_value_t = 12, value_name = "SECS")]
    register_wait: u64,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Nagios-style: OK in sync, WARNING out of sync, CRITICAL out of sync for longer than
    /// --max-lag or the last deploy failed.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        who: WhoArgs,
        /// Minutes out of sync before CRITICAL.
        #[arg(long, default_value_t = 15)]
        max_lag: u64,
    },
}

#[derive(ClapArgs, Debug)]
struct WhoArgs {
    /// This host's id (the PXE MAC without colons); default from the hand-off file.
    #[arg(long)]
    host_id: Option<String>,
    /// This host's name; default its FQDN.
    #[arg(long)]
    host_name: Option<String>,
    /// Deploy role-based deployments for this role; default from the hand-off file.
    #[arg(long)]
    role: Option<String>,
    /// The installer's hand-off file (`KEY=VALUE` lines: HOST_ID or PXEMAC, AGENT_ROLE), under
    /// --root.
    #[arg(long, default_value = "/var/lib/edeploy/conf", value_name = "FILE")]
    handoff: PathBuf,
    /// The agent's own files (host_version, status), under --root.
    #[arg(long, default_value = "/var/lib/edeploy/agent", value_name = "DIR")]
    run_dir: PathBuf,
}

fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// `KEY=VALUE` lines, values optionally quoted.
fn handoff_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

fn fqdn() -> String {
    let out = std::process::Command::new("hostname")
        .arg("--fqdn")
        .output();
    match out {
        Ok(o) if o.status.success() && !o.stdout.trim_ascii().is_empty() => {
            String::from_utf8_lossy(o.stdout.trim_ascii()).into_owned()
        }
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
    }
}

impl WhoArgs {
    fn identity(&self, root: &Path) -> Result<Identity> {
        let handoff = std::fs::read_to_string(under(root, &self.handoff)).unwrap_or_default();
        let id = match &self.host_id {
            Some(id) => id.clone(),
            None => match handoff_value(&handoff, "HOST_ID") {
                Some(id) => id,
                None => match handoff_value(&handoff, "PXEMAC") {
                    Some(mac) => mac.replace(':', "").to_lowercase(),
                    None => bail!(
                        "no host id: pass --host-id, or HOST_ID= / PXEMAC= in {}",
                        under(root, &self.handoff).display()
                    ),
                },
            },
        };
        if id.is_empty() || id.contains('/') {
            bail!("bad host id {id:?}");
        }
        Ok(Identity {
            id,
            name: self.host_name.clone().unwrap_or_else(fqdn),
            role: self
                .role
                .clone()
                .or_else(|| handoff_value(&handoff, "AGENT_ROLE"))
                .filter(|r| !r.is_empty()),
        })
    }
}

pub fn run(root: &Path, verbose: u8, args: Args) -> Result<ExitCode> {
    if let Some(sub) = &args.check {
        let Sub::Check {
            store,
            who,
            max_lag,
        } = &**sub;
        return check(root, store, who, *max_lag);
    }
    let me = args.who.identity(root)?;
    let store = args.store.open(Duration::from_secs(60))?;
    let cfg = Config {
        root: root.into(),
        run_dir: under(root, &args.who.run_dir),
        me,
        backend: args.backend,
        runner: Runner {
            verbose: verbose > 0,
            ..Runner::default()
        },
        after: args.after.clone(),
    };
    let mut agent = match Agent::start(cfg, store) {
        Err(AgentError::Store(StoreError::AlreadyRunning(node))) if args.register_wait > 0 => {
            tracing::warn!(
                "{node} is registered; waiting {} s for a stale session to expire",
                args.register_wait
            );
            std::thread::sleep(Duration::from_secs(args.register_wait));
            let cfg = Config {
                root: root.into(),
                run_dir: under(root, &args.who.run_dir),
                me: args.who.identity(root)?,
                backend: args.backend,
                runner: Runner {
                    verbose: verbose > 0,
                    ..Runner::default()
                },
                after: args.after.clone(),
            };
            Agent::start(cfg, args.store.open(Duration::from_secs(60))?)
        }
        other => other,
    }
    .context("registering")?;
    if args.run_once {
        return Ok(match agent.step()? {
            Outcome::Failed { .. } => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        });
    }
    on_sigterm_stop();
    agent.serve(&|| STOP.load(Ordering::Relaxed))?;
    tracing::info!("stopping");
    Ok(ExitCode::SUCCESS)
}

fn check(root: &Path, store: &StoreArgs, who: &WhoArgs, max_lag: u64) -> Result<ExitCode> {
    let run_dir = RunDir::new(under(root, &who.run_dir));
    let (level, msg) = match observe(&run_dir, store, max_lag) {
        Ok(v) => v,
        Err(e) => (Level::Unknown, format!("{e:#}")),
    };
    println!("{} {msg}", level.name());
    Ok(ExitCode::from(level.code()))
}

fn observe(run_dir: &RunDir, store: &StoreArgs, max_lag: u64) -> Result<(Level, String)> {
    let cluster = version_text(
        store
            .open(Duration::from_secs(10))?
            .props("/hosts")?
            .unwrap_or_default()
            .get("version"),
    );
    let host = run_dir.host_version()?;
    let status = run_dir.status()?;
    let now = now();
    let since = if cluster.is_some() && cluster != host {
        // The first check (or agent) to see the lag records when it began; a read-only run
        // directory only loses that memory.
        Some(
            run_dir
                .mark_out_of_sync(now)
                .or_else(|_| run_dir.out_of_sync_since().map(|s| s.unwrap_or(now)))?,
        )
    } else {
        if cluster.is_some() {
            let _ = run_dir.mark_in_sync();
        }
        None
    };
    Ok(evaluate(&Observed {
        now,
        cluster: cluster.as_deref(),
        host: host.as_deref(),
        status: status.as_ref(),
        since,
        max_lag_secs: max_lag * 60,
    }))
}

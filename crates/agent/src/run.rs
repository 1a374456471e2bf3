//! The agent: registration, the loop over `/hosts` changes, and one deploy run in the order of
//! zc.zkdeployment 1.0 — remove stale deployments, install packages, run every deploy script,
//! uninstall unused packages, tidy `/etc`, write the host version, run the `after` hook.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;

use crate::backend::{version_matches, Backend};
use crate::exec::{ExecError, Runner};
use crate::plan::{self, marker_name, parse_marker, Deployment, Identity, Installed, PlanError};
use crate::rundir::RunDir;
use crate::store::{Store, StoreError};
use crate::tree::{join, version_text, Props};
use crate::vcs::Checkout;

pub struct Config {
    /// Every `/opt`, `/etc` path is taken under it.
    pub root: PathBuf,
    /// Already under `root`.
    pub run_dir: PathBuf,
    pub me: Identity,
    pub backend: Backend,
    pub runner: Runner,
    /// A shell command run after each successful deploy.
    pub after: Option<String>,
}

/// Why a deploy run failed: the message goes to the host node's `error`.
#[derive(Debug, Error)]
pub enum DeployError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
    #[error("Failed to install {pkg}-{version} (installed: {installed})")]
    Install {
        pkg: String,
        version: String,
        installed: String,
    },
}

/// The agent itself could not go on (its store or its run directory failed).
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: the cluster's version is `None` or the one this host has.
    Skipped,
    Deployed(String),
    Failed {
        version: String,
        error: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeployError + '_ {
    move |e| DeployError::Io(format!("{}: {e}", path.display()))
}

pub struct Agent<S: Store> {
    pub cfg: Config,
    pub store: S,
    run_dir: RunDir,
    host_version: Option<String>,
}

impl<S: Store> Agent<S> {
    /// Reads the version this host reached and registers `/hosts/<id>`.
    pub fn start(cfg: Config, mut store: S) -> Result<Agent<S>, AgentError> {
        let run_dir = RunDir::new(&cfg.run_dir);
        let host_version = run_dir.host_version().map_err(|source| AgentError::Io {
            path: cfg.run_dir.join("host_version").display().to_string(),
            source,
        })?;
        store.register(&cfg.me.id, &host_props(&cfg.me, host_version.as_deref()))?;
        tracing::info!(
            "registered /hosts/{} ({}) at version {}",
            cfg.me.id,
            cfg.me.name,
            host_version.as_deref().unwrap_or("None")
        );
        Ok(Agent {
            cfg,
            store,
            run_dir,
            host_version,
        })
    }

    pub fn host_version(&self) -> Option<&str> {
        self.host_version.as_deref()
    }

    /// Registers again after the store lost the ephemeral node (a new ZooKeeper session).
    pub fn reregister(&mut self) -> Result<(), AgentError> {
        let props = host_props(&self.cfg.me, self.host_version.as_deref());
        self.store.register(&self.cfg.me.id, &props)?;
        Ok(())
    }

    /// Runs deploys as `/hosts` changes, one at a time, until `stop` says so. Changes that arrive
    /// during a run coalesce into the next check.
    pub fn serve(&mut self, stop: &dyn Fn() -> bool) -> Result<(), AgentError> {
        while !stop() {
            // The store already retried for a while: log, pause, and look again rather than
            // exit, so a long ZooKeeper outage ends in a deploy, not in a dead agent.
            if let Err(e) = self.step() {
                tracing::error!("{e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            if let Err(e) = self.store.wait(Duration::from_millis(500)) {
                tracing::error!("{e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Ok(())
    }

    /// One look at the cluster version, and a deploy run if it moved.
    pub fn step(&mut self) -> Result<Outcome, AgentError> {
        let hosts = self.store.props("/hosts")?.unwrap_or_default();
        let Some(version) = version_text(hosts.get("version")) else {
            return Ok(Outcome::Skipped);
        };
        if Some(&version) == self.host_version.as_ref() {
            let _ = self.run_dir.mark_in_sync();
            return Ok(Outcome::Skipped);
        }
        let dir = self.cfg.run_dir.display().to_string();
        let rd = |source| AgentError::Io {
            path: dir.clone(),
            source,
        };
        self.run_dir
            .mark_out_of_sync(crate::rundir::now())
            .map_err(rd)?;
        self.run_dir
            .set_status(Some(&version), "deploying")
            .map_err(rd)?;
        tracing::info!("deploying version {version}");
        match self.deploy(&version) {
            Ok(()) => {
                self.run_dir.set_host_version(&version).map_err(rd)?;
                self.host_version = Some(version.clone());
                let id = join("/hosts", &self.cfg.me.id);
                self.store.update(&id, &mut |p| {
                    p.insert("version".into(), json!(version));
                    p.remove("error");
                })?;
                self.run_dir
                    .set_status(Some(&version), "done")
                    .map_err(rd)?;
                self.run_dir.mark_in_sync().map_err(rd)?;
                tracing::info!("done deploying version {version}");
                if let Some(after) = &self.cfg.after {
                    if let Err(e) = self.cfg.runner.run(&crate::exec::argv(["sh", "-c", after])) {
                        tracing::error!("after hook: {e}");
                    }
                }
                Ok(Outcome::Deployed(version))
            }
            Err(DeployError::Store(e)) => {
                // The tree could not be read or a lock taken: not this version's fault, so no
                // all-stop; the next look retries.
                self.run_dir
                    .set_status(Some(&version), "deploying")
                    .map_err(rd)?;
                Err(AgentError::Store(e))
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!("{error}");
                // All stop: no other host starts this version until an operator looks.
                self.store.update("/hosts", &mut |p| {
                    p.insert("version".into(), Value::Null);
                })?;
                let id = join("/hosts", &self.cfg.me.id);
                self.store.update(&id, &mut |p| {
                    p.insert("error".into(), json!(error));
                })?;
                self.run_dir
                    .set_status(Some(&version), "failed")
                    .map_err(rd)?;
                tracing::error!("CRITICAL FAILED deploying version {version}");
                Ok(Outcome::Failed { version, error })
            }
        }
    }

    fn under_root(&self, abs: &str) -> PathBuf {
        self.cfg.root.join(abs.trim_start_matches('/'))
    }

    fn script(&self, app: &str) -> PathBuf {
        self.under_root(&format!("/opt/{app}/bin/zookeeper-deploy"))
    }

    fn deploy(&mut self, version: &str) -> Result<(), DeployError> {
        let tree = self.store.load()?;
        let desired = plan::desired(&tree, &self.cfg.me)?;
        let etc = self.under_root("/etc");
        let installed = scan_installed(&etc).map_err(io_err(&etc))?;
        let checkouts = self
            .run_dir
            .checkouts()
            .map_err(io_err(&self.cfg.run_dir))?;
        let had: BTreeSet<String> = checkouts.keys().cloned().collect();
        let plan = plan::plan(desired, &installed, &had);
        tracing::debug!("version {version}: {plan:?}");

        for stale in &plan.remove {
            let script = self.script(&stale.app);
            if script.exists() {
                let argv = vec![
                    script.display().to_string(),
                    "-u".into(),
                    stale.path.clone(),
                    stale.n.to_string(),
                ];
                self.cfg.runner.run(&argv)?;
            } else {
                tracing::warn!(
                    "{} is gone: forgetting {} {} without running it",
                    script.display(),
                    stale.path,
                    stale.n
                );
            }
            self.forget(stale)?;
        }

        let mut cleaned = false;
        for (pkg, wished) in &plan.packages {
            let co = Checkout::parse(wished);
            if co.is_none() && checkouts.contains_key(pkg) {
                // From a checkout back to a package: the package must not land in the checkout.
                self.drop_checkout(pkg)?;
            }
            match co {
                Some(co) => self.check_out(pkg, wished, &co, &checkouts)?,
                None if self.cfg.backend.manages_packages() => {
                    self.install(pkg, wished, &mut cleaned)?
                }
                None => {}
            }
        }

        for d in &plan.deploy {
            self.store.lock(&d.app)?;
            let result = self.run_script(d);
            self.store.unlock(&d.app)?;
            result?;
        }

        for pkg in &plan.uninstall {
            if checkouts.contains_key(pkg) {
                self.drop_checkout(pkg)?;
            } else if self.cfg.backend.manages_packages() {
                self.cfg.runner.run(&self.cfg.backend.remove(pkg))?;
            }
        }

        for app in &plan.etc_dirs {
            let dir = etc.join(app);
            // Only an empty directory goes: the application may keep its own files there.
            if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
                fs::remove_dir(&dir).map_err(io_err(&dir))?;
            }
        }
        Ok(())
    }

    fn drop_checkout(&self, pkg: &str) -> Result<(), DeployError> {
        let dir = self.under_root(&format!("/opt/{pkg}"));
        tracing::info!("removing checkout {}", dir.display());
        remove_dir(&dir).map_err(io_err(&dir))?;
        self.run_dir
            .set_checkout(pkg, None)
            .map_err(io_err(&self.cfg.run_dir))
    }

    fn forget(&self, d: &Installed) -> Result<(), DeployError> {
        let dir = self.under_root(&format!("/etc/{}", d.app));
        let marker = dir.join(marker_name(&d.path, d.n));
        let script = marker.with_extension("script");
        for f in [marker, script] {
            match fs::remove_file(&f) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err(&f)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    fn run_script(&self, d: &Deployment) -> Result<(), DeployError> {
        let mut argv = vec![self.script(&d.app).display().to_string()];
        if let Some(sub) = &d.subtype {
            argv.extend(["-r".into(), sub.to_string()]);
        }
        argv.extend([d.path.to_string(), d.n.to_string()]);
        self.cfg.runner.run(&argv)?;
        let dir = self.under_root(&format!("/etc/{}", d.app));
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let marker = dir.join(marker_name(&d.path, d.n));
        if !marker.exists() {
            fs::write(&marker, format!("{}\n", d.version)).map_err(io_err(&marker))?;
        }
        Ok(())
    }

    fn installed_version(&self, pkg: &str) -> Result<Option<String>, DeployError> {
        let out = self.cfg.runner.probe(&self.cfg.backend.query(pkg))?;
        Ok(if out.success {
            self.cfg.backend.parse_version(pkg, &out.text)
        } else {
            None
        })
    }

    /// Query; if not the wished version: clean (once per run), install, verify, downgrade when
    /// the install could not go back, verify again.
    fn install(&self, pkg: &str, wished: &str, cleaned: &mut bool) -> Result<(), DeployError> {
        let b = self.cfg.backend;
        let r = &self.cfg.runner;
        if self
            .installed_version(pkg)?
            .is_some_and(|v| version_matches(&v, wished))
        {
            return Ok(());
        }
        if !*cleaned {
            r.run(&b.clean())?;
            *cleaned = true;
        }
        r.run(&b.install(pkg, wished))?;
        let mut now = self.installed_version(pkg)?;
        if !now.as_deref().is_some_and(|v| version_matches(v, wished)) {
            r.run(&b.downgrade(pkg, wished))?;
            now = self.installed_version(pkg)?;
        }
        match now {
            Some(v) if version_matches(&v, wished) => Ok(()),
            other => Err(DeployError::Install {
                pkg: pkg.into(),
                version: wished.into(),
                installed: other.unwrap_or_else(|| "None".into()),
            }),
        }
    }

    fn check_out(
        &self,
        pkg: &str,
        wished: &str,
        co: &Checkout,
        had: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), DeployError> {
        let dir = self.under_root(&format!("/opt/{pkg}"));
        if had.get(pkg).map(String::as_str) == Some(wished) && dir.exists() {
            return Ok(());
        }
        // From a package to a checkout: the package manager must forget the files we replace.
        if !had.contains_key(pkg)
            && self.cfg.backend.manages_packages()
            && self.installed_version(pkg)?.is_some()
        {
            self.cfg.runner.run(&self.cfg.backend.remove(pkg))?;
        }
        remove_dir(&dir).map_err(io_err(&dir))?;
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        for argv in co.commands(&dir.display().to_string()) {
            self.cfg.runner.run(&argv)?;
        }
        let build = dir.join("stage-build");
        if build.exists() {
            let runner = Runner {
                cwd: Some(dir.clone()),
                ..self.cfg.runner.clone()
            };
            runner.run(&[build.display().to_string()])?;
        }
        self.run_dir
            .set_checkout(pkg, Some(wished))
            .map_err(io_err(&self.cfg.run_dir))?;
        Ok(())
    }
}

fn host_props(me: &Identity, version: Option<&str>) -> Props {
    let mut p = Props::new();
    p.insert("name".into(), json!(me.name));
    p.insert("version".into(), json!(version));
    if let Some(role) = &me.role {
        p.insert("role".into(), json!(role));
    }
    p
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The `.deployed` markers under `etc` (`<etc>/<app>/<marker>`), sorted. Unreadable
/// directories of other programs are not ours to judge: skipped.
pub fn scan_installed(etc: &Path) -> std::io::Result<Vec<Installed>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(etc) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let app = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = fs::read_dir(entry.path()) else {
            continue;
        };
        for f in files.flatten() {
            if let Some(i) = parse_marker(&app, &f.file_name().to_string_lossy()) {
                out.push(i);
            }
        }
    }
    out.sort();
    Ok(out)
}

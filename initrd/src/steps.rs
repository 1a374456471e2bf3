//! The install sequence (DESIGN §1): each step is timed and framed by the console markers the
//! QEMU harness parses:
//!
//! ```text
//! edeploy-init: step NAME start
//! edeploy-init: step NAME ok (MS ms)
//! edeploy-init: step NAME FAILED: REASON
//! edeploy-init: installed in MS ms
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edeploy_hw::HardwareList;

use crate::cmdline::Params;
use crate::configure::{self, Configured};
use crate::grub;
use crate::modules;
use crate::net;
use crate::upload::{self, Retry};
use crate::{finish, install};

/// Console (stdout of PID 1 is /dev/console) and `/log`, one line at a time.
pub struct Log {
    file: Mutex<Option<File>>,
    pub path: PathBuf,
    console: bool,
}

impl Log {
    pub fn new(path: &Path, console: bool) -> Log {
        let f = OpenOptions::new().create(true).append(true).open(path).ok();
        Log {
            file: Mutex::new(f),
            path: path.to_path_buf(),
            console,
        }
    }

    pub fn line(&self, s: &str) {
        if self.console {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
            let _ = out.flush();
        }
        if let Ok(mut g) = self.file.lock() {
            if let Some(f) = g.as_mut() {
                let _ = writeln!(f, "{s}");
            }
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap_or_default()
    }
}

/// A failed step.
#[derive(Debug)]
pub struct Failure {
    pub step: &'static str,
    pub reason: String,
}

/// Where things are and what was learnt so far.
pub struct Ctx {
    /// The initrd's root: `/` for real, a temp dir in tests.
    pub root: PathBuf,
    /// `$EDEPLOY_ROOT` for the configure script: empty for real (its paths are then at `/`).
    pub edeploy_root: String,
    pub log: Log,
    pub params: Params,
    pub retry: Retry,
    pub hw: Option<HardwareList>,
    pub hw_json: String,
    pub script: Option<String>,
    pub profile: Option<String>,
    pub cfg: Option<Configured>,
    pub boot: Option<grub::Installed>,
    pub pxemac: Option<String>,
    pub started: Instant,
}

pub const CHROOT: &str = "/chroot";

impl Ctx {
    pub fn new(root: &Path, edeploy_root: &str, log: Log, params: Params) -> Ctx {
        Ctx {
            root: root.to_path_buf(),
            edeploy_root: edeploy_root.to_string(),
            log,
            params,
            retry: Retry::default(),
            hw: None,
            hw_json: String::new(),
            script: None,
            profile: None,
            cfg: None,
            boot: None,
            pxemac: None,
            started: Instant::now(),
        }
    }

    pub fn say(&self, s: &str) {
        self.log.line(s);
    }

    pub fn chroot(&self) -> PathBuf {
        self.root.join(CHROOT.trim_start_matches('/'))
    }

    pub fn sysname(&self) -> String {
        self.hw
            .as_ref()
            .and_then(edeploy_hw::sysname)
            .unwrap_or_else(|| "edeploy-unknown".into())
    }

    /// Runs one step between its markers.
    pub fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Ctx) -> Result<T, String>,
    ) -> Result<T, Failure> {
        self.say(&format!("edeploy-init: step {name} start"));
        let t = Instant::now();
        match f(self) {
            Ok(v) => {
                self.say(&format!(
                    "edeploy-init: step {name} ok ({} ms)",
                    t.elapsed().as_millis()
                ));
                Ok(v)
            }
            Err(reason) => {
                // One line: the harness and the operator read it at a glance.
                let reason = reason.replace('\n', " ");
                self.say(&format!("edeploy-init: step {name} FAILED: {reason}"));
                Err(Failure { step: name, reason })
            }
        }
    }
}

pub fn step_modules(c: &mut Ctx) -> Result<(), String> {
    let Some(rel) = modules::kernel_release(&c.root) else {
        return Err("cannot tell the kernel release".into());
    };
    let dir = c.root.join("lib/modules").join(&rel);
    let db = match modules::Db::load(&dir) {
        Ok(db) => db,
        Err(e) => {
            // A kernel with every driver built in needs no modules: go on, say why.
            c.say(&format!(
                "no module database in {} ({e}): skipping",
                dir.display()
            ));
            return Ok(());
        }
    };
    let r = modules::load_for_hardware(&c.root, &db, &mut modules::finit_module);
    c.say(&format!("modules loaded: {}", r.loaded.join(" ")));
    for (m, e) in &r.failed {
        c.say(&format!("module {m}: {e}"));
    }
    Ok(())
}

pub fn step_detect(c: &mut Ctx) -> Result<(), String> {
    let hw = edeploy_hw::detect(&c.root).map_err(|e| e.to_string())?;
    c.hw_json = hw.to_json();
    let _ = fs::write(c.root.join("hw.json"), hw.to_json_lines());
    c.say(&format!(
        "{} hardware lines, sysname {}",
        hw.len(),
        edeploy_hw::sysname(&hw).unwrap_or_else(|| "(none)".into())
    ));
    c.hw = Some(hw);
    Ok(())
}

pub fn step_network(c: &mut Ctx) -> Result<(), String> {
    let log = |s: &str| c.log.line(s);
    // eDeploy tried three rounds before giving up: a DHCP server or a switch port (STP) may
    // take a while after power-on.
    let mut round = 1;
    let done = loop {
        match net::execute(
            &c.root,
            &c.params.ip,
            Duration::from_secs(c.params.link_up_timeout),
            &log,
        ) {
            Ok(d) => break d,
            Err(e) if round < 3 && e.starts_with(net::NO_ADDRESS) => {
                log(&format!("{e}: round {round}/3, trying again in 5 s"));
                std::thread::sleep(Duration::from_secs(5));
                round += 1;
            }
            Err(e) => return Err(e),
        }
    };
    c.say(&format!("configured: {}", done.join(" ")));
    Ok(())
}

pub fn step_upload(c: &mut Ctx) -> Result<(), String> {
    // The first detection ran before the network was up; specs match on the addresses too
    // (`('network', '$eth', 'ipv4', 'network(10.0.2.0/24)')`), as eDeploy's detection ran after
    // DHCP: read the hardware again now (a few ms), keeping the first list if that fails.
    match edeploy_hw::detect(&c.root) {
        Ok(hw) => {
            c.hw_json = hw.to_json();
            let _ = fs::write(c.root.join("hw.json"), hw.to_json_lines());
            c.hw = Some(hw);
        }
        Err(e) => c.say(&format!(
            "hardware re-read failed ({e}): sending the first list"
        )),
    }
    let url = c.params.upload_url();
    c.say(&format!("POST {url} (section {})", c.params.section));
    let log = |s: &str| c.log.line(s);
    let script = upload::upload_hw(&url, &c.params.section, &c.hw_json, c.retry, &log)
        .map_err(|e| e.to_string())?;
    c.profile = configure::profile(&script);
    c.say(&format!(
        "configure script received ({} bytes, profile {})",
        script.len(),
        c.profile.as_deref().unwrap_or("?")
    ));
    c.pxemac = net::route_iface(&c.root, &c.params.serv).and_then(|i| net::mac(&c.root, &i));
    c.script = Some(script);
    Ok(())
}

pub fn step_configure(c: &mut Ctx) -> Result<(), String> {
    let script = c.script.clone().unwrap_or_default();
    fs::create_dir_all(c.chroot()).map_err(|e| format!("{CHROOT}: {e}"))?;
    let log = |s: &str| c.log.line(s);
    configure::run(&c.root, &c.edeploy_root, &script, &c.params, &log)
        .map_err(|e| e.to_string())?;
    let cfg = configure::read_back(&c.root, &c.params).map_err(|e| e.to_string())?;
    c.say(&format!(
        "role {} version {} disk {}",
        cfg.role, cfg.version, cfg.disk
    ));
    c.cfg = Some(cfg);
    Ok(())
}

pub fn step_install(c: &mut Ctx) -> Result<(), String> {
    let cfg = c.cfg.clone().ok_or("no configuration")?;
    let src = install::http_source(&c.params)?;
    let chroot = c.chroot();
    let log = |s: &str| c.log.line(s);
    install::install(src.as_ref(), &cfg, &c.params, &chroot, &log)?;
    Ok(())
}

/// Bind mounts of the initrd's /dev /proc /sys /run into the chroot (for a role's grub-install).
fn bind_mounts(c: &Ctx) -> Result<Vec<PathBuf>, String> {
    let mut done = Vec::new();
    for d in ["dev", "proc", "sys", "run"] {
        let src = c.root.join(d);
        let dst = c.chroot().join(d);
        fs::create_dir_all(&dst).map_err(|e| format!("{}: {e}", dst.display()))?;
        crate::sys::mount(&src, &dst, None, libc::MS_BIND, None)
            .map_err(|e| format!("bind {} on {}: {e}", src.display(), dst.display()))?;
        done.push(dst);
    }
    Ok(done)
}

fn run_logged(c: &Ctx, cmd: &[String]) -> Result<(), String> {
    c.say(&format!("run: {}", cmd.join(" ")));
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        c.say(&format!("  {l}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({})", cmd.join(" "), out.status))
    }
}

fn role_grub(c: &Ctx, cfg: &Configured) -> Result<(), String> {
    let chroot = c.chroot();
    let dg = chroot.join("etc/default/grub");
    let args = format!("{} {}", c.params.boot_args, cfg.grub_options);
    if !args.trim().is_empty() {
        let old = fs::read_to_string(&dg).unwrap_or_default();
        fs::write(&dg, grub::default_grub(&old, &args))
            .map_err(|e| format!("{}: {e}", dg.display()))?;
    }
    let mounted = bind_mounts(c)?;
    let r = grub::role_grub_commands(CHROOT, &chroot, &cfg.disk_path())
        .iter()
        .try_for_each(|cmd| run_logged(c, cmd));
    for m in mounted.iter().rev() {
        let _ = crate::sys::umount(m);
    }
    r
}

pub fn step_finish(c: &mut Ctx) -> Result<(), String> {
    let cfg = c.cfg.clone().ok_or("no configuration")?;
    let chroot = c.chroot();
    let sysname = c.hw.as_ref().and_then(edeploy_hw::sysname);
    // The boot loader first, so its lines are in the log copied into the tree.
    if grub::role_has_grub(&chroot) {
        role_grub(c, &cfg)?;
    } else {
        let title = format!("edeploy {} {}", cfg.role, cfg.version);
        let disk = cfg.disk_path();
        let s = grub::BootSetup {
            root: &c.root,
            chroot_point: CHROOT,
            disk: &disk,
            title: &title,
            boot_args: &c.params.boot_args,
            grub_options: &cfg.grub_options,
            kexec_kernel: c.params.kexec_kernel.as_deref(),
        };
        let log = |s: &str| c.log.line(s);
        let inst = grub::setup(&s, &log).map_err(|e| e.to_string())?;
        c.boot = Some(inst);
    }
    if let Some(url) = cfg.var("PXEMNGR_URL").filter(|u| !u.is_empty()) {
        // eDeploy: ask pxemngr to boot this machine from its disk from now on.
        let u = format!("{url}localboot/");
        match reqwest::blocking::Client::new()
            .get(&u)
            .timeout(Duration::from_secs(30))
            .send()
        {
            Ok(r) => c.say(&format!("GET {u}: {}", r.status())),
            Err(e) => c.say(&format!("warning: GET {u}: {e}")),
        }
    }
    let log = c.log.contents();
    let h = finish::Handoff {
        params: &c.params,
        cfg: &cfg,
        sysname: sysname.as_deref(),
        pxemac: c.pxemac.as_deref(),
        hw_json: &c.hw_json,
        log: &log,
    };
    let n = finish::finish(&c.root, &chroot, &h).map_err(|e| format!("hand-off: {e}"))?;
    c.say(&format!("{n} post_rsync entries copied, hand-off written"));
    Ok(())
}

/// The whole install after `boot`. On failure: which step and why.
pub fn install_sequence(c: &mut Ctx) -> Result<(), Failure> {
    c.step("modules", step_modules)?;
    c.step("detect", step_detect)?;
    c.step("network", step_network)?;
    c.step("upload", step_upload)?;
    c.step("configure", step_configure)?;
    c.step("install", step_install)?;
    c.step("finish", step_finish)?;
    Ok(())
}

/// The log as uploaded: eDeploy appended the command line and the configure script, so the
/// server-side copy explains a failure without a console.
pub fn log_for_upload(c: &Ctx) -> Vec<u8> {
    let mut b = c.log.contents();
    let cmdline = fs::read_to_string(c.root.join("proc/cmdline")).unwrap_or_default();
    b.extend_from_slice(b"\n##### Kernel command line #####\n");
    b.extend_from_slice(cmdline.as_bytes());
    if let Some(s) = &c.script {
        b.extend_from_slice(b"\n##### Content of /configure #####\n");
        b.extend_from_slice(s.as_bytes());
    }
    b
}

/// UPLOAD_LOG=1: send the log; a failure here is only reported.
pub fn maybe_upload_log(c: &Ctx) {
    if !c.params.upload_log {
        return;
    }
    let name = c.sysname();
    c.say(&format!("uploading the log as {name}.log.gz"));
    let retry = Retry {
        total: Duration::from_secs(30),
        ..c.retry
    };
    let log = |s: &str| c.log.line(s);
    if let Err(e) = upload::upload_log(
        &c.params.upload_url(),
        &c.params.section,
        &name,
        &log_for_upload(c),
        retry,
        &log,
    ) {
        c.say(&format!("log upload failed: {e}"));
    }
}

/// After a failed step: the failure report (when the profile is known) and the log.
pub fn report_failure(c: &Ctx, f: &Failure) {
    c.say(&format!(
        "edeploy-init: install failed at step {}: {}",
        f.step, f.reason
    ));
    if let Some(p) = &c.profile {
        let retry = Retry {
            total: Duration::from_secs(30),
            ..c.retry
        };
        let log = |s: &str| c.log.line(s);
        match upload::report_failure(
            &c.params.upload_url(),
            &c.params.section,
            p,
            &c.hw_json,
            retry,
            &log,
        ) {
            Ok(_) => c.say(&format!("failure of profile {p} reported to the server")),
            Err(e) => c.say(&format!("failure report failed: {e}")),
        }
    }
    maybe_upload_log(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::new(&d.path().join("log"), false);
        let mut c = Ctx::new(d.path(), "", log, Params::default());
        c.step("detect", |_| Ok(())).unwrap();
        let f = c
            .step("upload", |_| {
                Err::<(), _>("server refused (404): no\nmatch".into())
            })
            .unwrap_err();
        assert_eq!(f.step, "upload");
        let text = String::from_utf8(c.log.contents()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "edeploy-init: step detect start");
        assert!(
            lines[1].starts_with("edeploy-init: step detect ok (") && lines[1].ends_with(" ms)")
        );
        assert_eq!(lines[2], "edeploy-init: step upload start");
        assert_eq!(
            lines[3],
            "edeploy-init: step upload FAILED: server refused (404): no match"
        );
        assert_eq!(c.sysname(), "edeploy-unknown");
    }
}

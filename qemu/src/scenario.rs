//! The end-to-end scenarios: a VM installed from the example specs and booted from its disk, and
//! the failure path (no profile matches). Each check is a named assertion on something real: the
//! guest's console, the server's files, its `/nodes` time line.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::console::{parse_line, Marker, Timeline};
use crate::server::{self, Layout, Server};
use crate::vm::{self, Accel, Direct, Machine};

/// The installing machine's NIC: its sysname ends with it (`…-52-54-00-12-34-56`).
pub const MAC: &str = "52:54:00:12:34:56";
const DISK_BYTES: u64 = 5_000_000_000;

pub struct Ctx {
    pub layout: Layout,
    pub qemu: String,
    pub accel: Accel,
    /// `vmlinuz` and `initrd.pxe`.
    pub build: PathBuf,
    /// Scenario work directories go under here (wiped at the start of each scenario).
    pub work: PathBuf,
    /// Print every console line (demo `--console`), not just the step markers.
    pub echo_console: bool,
    pub install_timeout: Duration,
    pub boot_timeout: Duration,
}

#[derive(Default)]
pub struct Checks {
    pub results: Vec<(String, bool, String)>,
}

impl Checks {
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!(
            "  {} {name}{}",
            if ok { "ok  " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
        self.results.push((name.to_string(), ok, detail));
    }

    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.1).count()
    }
}

fn fresh_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p)?;
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Boots a machine, echoing step markers (and every line with `echo_console`).
fn boot(ctx: &Ctx, m: &Machine, log: &Path, timeout: Duration) -> Result<(vm::Outcome, Timeline)> {
    let mut t = Timeline::default();
    let echo = ctx.echo_console;
    let o = m.run(log, timeout, |at, line| {
        let mk = parse_line(line);
        if echo {
            println!("  [{:6.1}] {line}", at.as_secs_f64());
        } else if let Some(m) = &mk {
            match m {
                Marker::StepStart(_) => {}
                _ => println!("  [{:6.1}] {}", at.as_secs_f64(), line.trim()),
            }
        }
        if let Some(m) = mk {
            t.push(at, m);
        }
    })?;
    Ok((o, t))
}

fn machine(ctx: &Ctx, disk: &Path, direct: Option<Direct>) -> Machine {
    Machine {
        qemu: ctx.qemu.clone(),
        accel: ctx.accel,
        memory_mb: 1024,
        cpus: 2,
        disk: Some(disk.to_path_buf()),
        mac: MAC.into(),
        direct,
    }
}

fn pxe(ctx: &Ctx, server: &Server, extra: &str) -> Direct {
    Direct {
        kernel: ctx.build.join("vmlinuz"),
        initrd: Some(ctx.build.join("initrd.pxe")),
        append: format!(
            "console=ttyS0 SERV=10.0.2.2 HTTP_PORT={} UPLOAD_LOG=1 {extra} |console=ttyS0|",
            server.addr.port()
        ),
    }
}

/// The one node the scenario's machine created, with its events as `(event, detail)`.
fn node_events(server: &Server) -> Result<(String, Vec<(String, String)>)> {
    let nodes = server.nodes()?;
    let obj = nodes.as_object().context("/nodes is not an object")?;
    let want = MAC.replace(':', "-");
    let Some((name, events)) = obj.iter().find(|(k, _)| k.ends_with(&want)) else {
        bail!("no node ending in {want} in /nodes: {nodes}");
    };
    let list = events
        .as_array()
        .context("node events are not a list")?
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_string(),
                e["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    Ok((name.clone(), list))
}

fn gunzip(p: &Path) -> Result<String> {
    let f = std::fs::File::open(p)?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(f).read_to_string(&mut s)?;
    Ok(s)
}

/// CMDB entries marked `used` in `<config>/vm.cmdb`, as `hostname`s.
fn used_entries(cmdb: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(cmdb)?;
    let v = edeploy_literal::parse_named(&text, &cmdb.display().to_string())?;
    let list = v
        .as_seq()
        .context("the CMDB is not a list after first use")?;
    Ok(list
        .iter()
        .filter(|e| e.get("used").is_some())
        .map(|e| {
            e.get("hostname")
                .and_then(|h| h.scalar_text())
                .unwrap_or_default()
        })
        .collect())
}

fn disk_head_is_blank(disk: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(disk)?;
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf)?;
    Ok(buf.iter().all(|b| *b == 0))
}

/// Install a VM from the example specs, then boot its disk. Returns the checks and the time from
/// power-on to the boot report.
pub fn install(ctx: &Ctx) -> Result<(Checks, Option<Duration>)> {
    let work = ctx.work.join("install");
    fresh_dir(&work)?;
    let mut c = Checks::default();
    println!("== scenario: install a VM from the example specs, then boot its disk");
    let conf = server::prepare_config(&ctx.layout, &work, None)?;
    let t = Instant::now();
    let summary = server::index(&ctx.layout, &conf)?;
    println!(
        "  [server] indexed role trees in {}: {}",
        secs(t.elapsed()),
        summary.trim().replace('\n', "; ")
    );
    let server = Server::start(&ctx.layout, &conf, &work.join("server.log"))?;
    println!(
        "  [server] listening on {} (guest: 10.0.2.2:{})",
        server.addr,
        server.addr.port()
    );
    let disk = work.join("disk.img");
    vm::create_disk(&disk, DISK_BYTES)?;

    println!("-- boot 1: PXE (kernel + initrd.pxe), install");
    let power_on = Instant::now();
    let m1 = machine(
        ctx,
        &disk,
        Some(pxe(ctx, &server, "ONSUCCESS=reboot ONFAILURE=halt")),
    );
    let (o1, t1) = boot(
        ctx,
        &m1,
        &work.join("console-install.log"),
        ctx.install_timeout,
    )?;
    let installed = t1.find(|m| matches!(m, Marker::Installed(_)));
    c.check(
        "the initrd installed the machine",
        installed.is_some() && t1.failed().is_none(),
        match (t1.failed(), installed) {
            (Some((s, r)), _) => format!("step {s} failed: {r}"),
            (None, Some((at, _))) => format!("at {}", secs(at)),
            (None, None) => format!(
                "no 'installed' marker; see {}",
                work.join("console-install.log").display()
            ),
        },
    );
    c.check(
        "the guest rebooted by itself (ONSUCCESS=reboot)",
        o1.success,
        if o1.timed_out {
            format!("killed after {}", secs(o1.elapsed))
        } else {
            format!("after {}; {}", secs(o1.elapsed), o1.stderr.trim())
        },
    );

    let (sysname, events) = node_events(&server)?;
    let has = |ev: &str, detail: &str| {
        events
            .iter()
            .any(|(e, d)| e == ev && (detail.is_empty() || d.contains(detail)))
    };
    c.check(
        "the upload matched profile vm",
        has("match", "vm"),
        &sysname,
    );
    let used = used_entries(&work.join("config/vm.cmdb")).unwrap_or_default();
    c.check(
        "exactly one CMDB entry was used",
        used.len() == 1,
        format!("used: {used:?}"),
    );
    c.check(
        "vm.cmdb.orig kept the generate() original",
        work.join("config/vm.cmdb.orig").is_file(),
        "",
    );
    let log = work.join("logs").join(format!("{sysname}.log.gz"));
    let log_text = gunzip(&log).unwrap_or_default();
    c.check(
        "the install log was uploaded",
        has("log", "") && log_text.contains("edeploy-init: step install ok"),
        log.display().to_string(),
    );

    println!("-- boot 2: from the disk (BIOS → GRUB → installed kernel)");
    let m2 = machine(ctx, &disk, None);
    let (o2, t2) = boot(ctx, &m2, &work.join("console-disk.log"), ctx.boot_timeout)?;
    let booted = t2.find(|m| matches!(m, Marker::RoleBooted(_)));
    c.check(
        "GRUB booted the installed system from the disk",
        booted.is_some(),
        match booted {
            Some((at, Marker::RoleBooted(n))) => format!("{n} at {}", secs(at)),
            _ => format!("see {}", work.join("console-disk.log").display()),
        },
    );
    let sent = t2.find(|m| matches!(m, Marker::ReportSent));
    let to_report = sent.map(|_| power_on.elapsed() - (o2.elapsed - sent.unwrap().0));
    let (_, events) = node_events(&server)?;
    c.check(
        "the boot report reached the server",
        events
            .iter()
            .any(|(e, d)| e == "report" && d.contains("booted")),
        format!("{:?}", events.last()),
    );
    c.check(
        "the installed system powered off",
        o2.success,
        secs(o2.elapsed),
    );

    println!("-- timings (as /init measured them)");
    for (step, ms) in t1.steps() {
        println!("  {step:<10} {:>7.2} s", ms as f64 / 1000.0);
    }
    if let Some((_, Marker::Installed(ms))) = installed {
        println!("  {:<10} {:>7.2} s", "total", *ms as f64 / 1000.0);
    }
    println!("  boot 1 (power-on → reboot)   {}", secs(o1.elapsed));
    if let Some((at, _)) = booted {
        println!("  boot 2 (power-on → booted)   {}", secs(at));
    }
    if let Some(d) = to_report {
        println!(
            "  power-on → installed-system boot report: {} (goal < 60 s, {:?})",
            secs(d),
            ctx.accel
        );
    }
    Ok((c, to_report))
}

/// No profile matches: the failure is reported, the log uploaded, the machine halts, the disk and
/// the config are untouched.
pub fn no_match(ctx: &Ctx) -> Result<Checks> {
    let work = ctx.work.join("no-match");
    fresh_dir(&work)?;
    let mut c = Checks::default();
    println!("== scenario: no profile matches (ONFAILURE=halt)");
    // Only the hp-compute profile is open: a VM matches none.
    let state = "[('hp-compute', 10)]\n";
    let conf = server::prepare_config(&ctx.layout, &work, Some(state))?;
    server::index(&ctx.layout, &conf)?;
    let server = Server::start(&ctx.layout, &conf, &work.join("server.log"))?;
    let disk = work.join("disk.img");
    vm::create_disk(&disk, DISK_BYTES)?;
    let m = machine(
        ctx,
        &disk,
        Some(pxe(ctx, &server, "ONSUCCESS=reboot ONFAILURE=halt")),
    );
    let (o, t) = boot(ctx, &m, &work.join("console.log"), ctx.install_timeout)?;
    let failed = t.failed().map(|(s, r)| (s.to_string(), r.to_string()));
    c.check(
        "the console names the failed step and why",
        matches!(&failed, Some((s, r)) if s == "upload" && r.contains("404")),
        format!("{failed:?}"),
    );
    c.check(
        "the guest halted by itself (ONFAILURE=halt)",
        o.success,
        secs(o.elapsed),
    );
    let (sysname, events) = node_events(&server)?;
    c.check(
        "the server refused the upload",
        events.iter().any(|(e, _)| e == "refused"),
        format!("{events:?}"),
    );
    let log = work.join("logs").join(format!("{sysname}.log.gz"));
    let text = gunzip(&log).unwrap_or_default();
    c.check(
        "the log was uploaded and names the failure",
        text.contains("step upload FAILED"),
        log.display().to_string(),
    );
    c.check(
        "the state file is unchanged",
        std::fs::read_to_string(work.join("config/state"))? == state,
        "",
    );
    c.check(
        "the CMDB was not expanded or used",
        !work.join("config/vm.cmdb.orig").exists(),
        "",
    );
    c.check(
        "the disk was not touched",
        disk_head_is_blank(&disk)?,
        "first MiB all zero",
    );
    Ok(c)
}

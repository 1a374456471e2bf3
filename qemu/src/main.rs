//! `edeploy-qemu`: installs a virtual machine end to end with the real pieces — `edeploy-server`
//! serving the example specs and the tiny role, QEMU booting `vmlinuz` + `initrd.pxe`, then the
//! installed disk through GRUB — and checks what happened. `make qemu-test` runs `test`,
//! `make demo` runs `demo`.

mod console;
mod scenario;
mod server;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edeploy-qemu",
    about = "Install a QEMU VM end to end with edeploy and check the result",
    after_help = "Needs `make initrd role-tiny` (BUILD/vmlinuz, BUILD/initrd.pxe, \
        BUILD/install/1.0/tiny) and edeploy-server built beside this binary. \
        Acceleration: TCG unless a short KVM probe boot succeeds; EDEPLOY_QEMU_ACCEL=tcg|kvm \
        overrides. Console logs, server logs and disks stay under --work for inspection."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Where `make initrd role-tiny` put vmlinuz, initrd.pxe and install/.
    #[arg(long, global = true, default_value = "build")]
    build: PathBuf,
    /// Scenario work directories (default BUILD/qemu).
    #[arg(long, global = true)]
    work: Option<PathBuf>,
    /// Print every console line, not only edeploy's step markers.
    #[arg(long, global = true)]
    console: bool,
    /// QEMU binary.
    #[arg(long, global = true, default_value = "qemu-system-x86_64")]
    qemu: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Both scenarios (install + boot from disk; no matching profile), with checks.
    /// Exit 0 when every check holds, 1 when one fails, 2 when the harness could not run.
    Test,
    /// The install scenario, narrated step by step with timings.
    Demo,
}

fn exe_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("no directory for this binary")?
        .to_path_buf())
}

fn specs_dir() -> Result<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    [built, PathBuf::from("specs")]
        .into_iter()
        .find(|p| p.join("edeploy.conf").is_file())
        .context("no specs/ directory (the example config) found")
}

fn context(cli: &Cli) -> Result<scenario::Ctx> {
    for (p, hint) in [
        (cli.build.join("vmlinuz"), "make initrd"),
        (cli.build.join("initrd.pxe"), "make initrd"),
        (cli.build.join("install/1.0/tiny"), "make role-tiny"),
    ] {
        if !p.exists() {
            bail!("{} is missing: run `{hint}` first", p.display());
        }
    }
    let server_bin = exe_dir()?.join("edeploy-server");
    if !server_bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p edeploy-server` first",
            server_bin.display()
        );
    }
    let work = cli.work.clone().unwrap_or_else(|| cli.build.join("qemu"));
    std::fs::create_dir_all(&work)?;
    let (accel, why) = vm::choose_accel(&cli.qemu, &cli.build.join("vmlinuz"), &work)?;
    println!("edeploy-qemu: accelerator {accel:?} ({why})");
    let slow = accel == vm::Accel::Tcg;
    Ok(scenario::Ctx {
        layout: server::Layout {
            server_bin,
            specs: specs_dir()?,
            install: cli.build.join("install"),
        },
        qemu: cli.qemu.clone(),
        accel,
        build: cli.build.clone(),
        work,
        echo_console: cli.console,
        install_timeout: Duration::from_secs(if slow { 420 } else { 180 }),
        boot_timeout: Duration::from_secs(if slow { 240 } else { 90 }),
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = context(&cli)?;
    let mut failed = 0;
    match cli.cmd {
        Cmd::Demo => {
            let (c, _) = scenario::install(&ctx)?;
            failed += c.failed();
            println!(
                "\nConsole logs, server log, config and disk: {}",
                ctx.work.join("install").display()
            );
        }
        Cmd::Test => {
            let (c, _) = scenario::install(&ctx)?;
            failed += c.failed();
            let c = scenario::no_match(&ctx)?;
            failed += c.failed();
        }
    }
    if failed > 0 {
        println!(
            "\nedeploy-qemu: {failed} check(s) FAILED (logs under {})",
            ctx.work.display()
        );
        Ok(ExitCode::from(1))
    } else {
        println!("\nedeploy-qemu: all checks passed");
        Ok(ExitCode::SUCCESS)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edeploy-qemu: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

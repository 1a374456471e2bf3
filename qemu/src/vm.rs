//! One QEMU machine: the command line (pure, tested), and a run that streams the serial console
//! line by line with the time since power-on, under a deadline.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Network boot (the PXE stage: QEMU loads kernel and initrd as a PXE ROM would hand them over).
#[derive(Debug, Clone)]
pub struct Direct {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub qemu: String,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub disk: Option<PathBuf>,
    pub mac: String,
    /// `None`: boot from the disk (BIOS → GRUB from the MBR).
    pub direct: Option<Direct>,
}

impl Machine {
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-accel".into(),
            self.accel.name().into(),
            "-m".into(),
            self.memory_mb.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            // The serial console on stdout, no monitor, no window; a guest reboot ends QEMU, so
            // "installed, rebooting" and "halted" are both a clean exit the harness can see.
            "-display".into(),
            "none".into(),
            "-vga".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-monitor".into(),
            "none".into(),
            "-no-reboot".into(),
            "-nic".into(),
            format!("user,model=virtio-net-pci,mac={}", self.mac),
        ];
        if let Some(d) = &self.disk {
            a.push("-drive".into());
            a.push(format!("file={},format=raw,if=virtio", d.display()));
        }
        if let Some(d) = &self.direct {
            a.push("-kernel".into());
            a.push(d.kernel.display().to_string());
            if let Some(i) = &d.initrd {
                a.push("-initrd".into());
                a.push(i.display().to_string());
            }
            a.push("-append".into());
            a.push(d.append.clone());
        }
        a
    }

    /// Runs the machine until it powers off / reboots or `timeout` passes (then it is killed).
    /// Every console line goes to `log` and to `on_line` with the time since start.
    pub fn run(
        &self,
        log: &Path,
        timeout: Duration,
        mut on_line: impl FnMut(Duration, &str),
    ) -> Result<Outcome> {
        let mut logf = std::fs::File::create(log)
            .with_context(|| format!("creating console log {}", log.display()))?;
        let start = Instant::now();
        let mut child = Command::new(&self.qemu)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.qemu))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let out = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            // Lines, not strings: a console may carry bytes that are not UTF-8.
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(buf).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let deadline = start + timeout;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(line) => {
                    let _ = logf.write_all(&line);
                    let text = String::from_utf8_lossy(&line);
                    on_line(start.elapsed(), text.trim_end_matches(['\r', '\n']));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if timed_out {
            let _ = child.kill();
        }
        let status = child.wait().context("waiting for qemu")?;
        let _ = reader.join();
        let stderr = err_reader.join().unwrap_or_default();
        Ok(Outcome {
            elapsed: start.elapsed(),
            timed_out,
            success: status.success() && !timed_out,
            stderr,
        })
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub elapsed: Duration,
    pub timed_out: bool,
    /// QEMU exited 0 by itself (guest powered off or rebooted under `-no-reboot`).
    pub success: bool,
    pub stderr: String,
}

/// TCG unless KVM proves itself: `/dev/kvm` exists on machines where it hangs a stock kernel, so
/// a short boot (kernel only; it panics on the missing root and `-no-reboot` ends QEMU) must
/// finish in time. `EDEPLOY_QEMU_ACCEL=tcg|kvm` overrides the probe.
pub fn choose_accel(qemu: &str, kernel: &Path, work: &Path) -> Result<(Accel, String)> {
    match std::env::var("EDEPLOY_QEMU_ACCEL").ok().as_deref() {
        Some("tcg") => return Ok((Accel::Tcg, "EDEPLOY_QEMU_ACCEL=tcg".into())),
        Some("kvm") => return Ok((Accel::Kvm, "EDEPLOY_QEMU_ACCEL=kvm".into())),
        Some(other) if !other.is_empty() && other != "auto" => {
            bail!("EDEPLOY_QEMU_ACCEL must be tcg, kvm or auto, not {other:?}")
        }
        _ => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok((Accel::Tcg, "no usable /dev/kvm".into()));
    }
    let probe = Machine {
        qemu: qemu.to_string(),
        accel: Accel::Kvm,
        memory_mb: 256,
        cpus: 1,
        disk: None,
        mac: "52:54:00:00:00:01".into(),
        direct: Some(Direct {
            kernel: kernel.to_path_buf(),
            initrd: None,
            append: "console=ttyS0 panic=-1".into(),
        }),
    };
    let mut panicked = false;
    let o = probe.run(
        &work.join("kvm-probe.log"),
        Duration::from_secs(15),
        |_, l| panicked |= l.contains("Kernel panic"),
    )?;
    if o.success && panicked {
        Ok((
            Accel::Kvm,
            format!("KVM probe booted in {:.1} s", o.elapsed.as_secs_f64()),
        ))
    } else if o.timed_out {
        Ok((Accel::Tcg, "KVM probe hung for 15 s".into()))
    } else {
        Ok((Accel::Tcg, "KVM probe failed".into()))
    }
}

/// A sparse raw disk of `bytes` (a 5 GB disk costs nothing until written).
pub fn create_disk(path: &Path, bytes: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mb: 1024,
            cpus: 2,
            disk: Some("/tmp/d.img".into()),
            mac: "52:54:00:12:34:56".into(),
            direct: None,
        }
    }

    #[test]
    fn disk_boot_has_no_kernel() {
        let a = machine().args();
        assert!(!a.iter().any(|x| x == "-kernel"));
        assert!(a.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg"));
        assert!(a.contains(&"file=/tmp/d.img,format=raw,if=virtio".to_string()));
        assert!(a.contains(&"user,model=virtio-net-pci,mac=52:54:00:12:34:56".to_string()));
        assert!(a.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn direct_boot_passes_kernel_initrd_append() {
        let mut m = machine();
        m.direct = Some(Direct {
            kernel: "/b/vmlinuz".into(),
            initrd: Some("/b/initrd.pxe".into()),
            append: "console=ttyS0 SERV=10.0.2.2".into(),
        });
        let a = m.args();
        let pos = |k: &str| a.iter().position(|x| x == k).unwrap();
        assert_eq!(a[pos("-kernel") + 1], "/b/vmlinuz");
        assert_eq!(a[pos("-initrd") + 1], "/b/initrd.pxe");
        assert_eq!(a[pos("-append") + 1], "console=ttyS0 SERV=10.0.2.2");
    }

    #[test]
    fn sparse_disk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.img");
        create_disk(&p, 5_000_000_000).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), 5_000_000_000);
        use std::os::unix::fs::MetadataExt;
        assert!(md.blocks() < 16, "a fresh disk must be sparse");
    }
}

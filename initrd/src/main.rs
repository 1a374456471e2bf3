//! edeploy's `/init`: runs as PID 1 in the busybox initramfs and installs the machine (DESIGN §1):
//! boot, modules, detect, network, upload, configure, install, finish, then ONSUCCESS; on any
//! failure the failure report, the log and ONFAILURE. Kernel variables: initrd/README.md.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use edeploy_initrd::cmdline::{Action, Params};
use edeploy_initrd::steps::{self, Ctx, Failure, Log, CHROOT};
use edeploy_initrd::{grub, sys};

const USAGE: &str = "\
edeploy /init: the initrd's PID 1. Boots, loads modules, detects the hardware, brings the network
up, uploads the hardware list to http://SERV:HTTP_PORT{HTTP_PATH}upload.py, runs the configure
script it gets back, installs the role tree into /chroot, makes the disk bootable, then does
ONSUCCESS (reboot|halt|kexec|console); on failure ONFAILURE.

Everything is read from the kernel command line: SERV HTTP_PORT HTTP_PATH SECTION RSERV RSERV_PORT
RPATH HSERV HSERV_PORT HPATH ONSUCCESS ONFAILURE DEBUG VERBOSE UPLOAD_LOG IP LINK_UP_TIMEOUT
KEXEC_KERNEL OS OS_VER PUBKEY, and '| args |' for the installed system. See initrd/README.md.

It refuses to run unless it is PID 1.";

/// ONFAILURE as seen by the panic hook (0 reboot, 1 halt, 2 kexec, 3 console).
static ON_FAILURE: AtomicU8 = AtomicU8::new(1);

fn action_code(a: Action) -> u8 {
    match a {
        Action::Reboot => 0,
        Action::Halt => 1,
        Action::Kexec => 2,
        Action::Console => 3,
    }
}

fn say(s: &str) {
    Log::new(Path::new("/log"), true).line(s);
}

/// The kernel gives PID 1 /dev/console as fds 0-2 only when the initramfs has that node: with
/// devtmpfs mounted, make sure the console output has somewhere to go.
fn ensure_console() {
    // SAFETY: fcntl on a possibly closed fd only reports EBADF.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } != -1 {
        return;
    }
    // SAFETY: a NUL-terminated path; dup2 onto the standard fds.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd >= 0 {
            for n in 0..3 {
                libc::dup2(fd, n);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn step_boot(c: &mut Ctx) -> Result<(), String> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID};
    for d in ["proc", "sys", "dev", "run", "tmp", "chroot"] {
        let _ = fs::create_dir_all(c.root.join(d));
    }
    let mounts: [(&str, &str, &str, libc::c_ulong, Option<&str>); 5] = [
        (
            "proc",
            "proc",
            "proc",
            MS_NODEV | MS_NOEXEC | MS_NOSUID,
            None,
        ),
        (
            "sysfs",
            "sys",
            "sysfs",
            MS_NODEV | MS_NOEXEC | MS_NOSUID,
            None,
        ),
        ("devtmpfs", "dev", "devtmpfs", MS_NOSUID, Some("mode=0755")),
        (
            "devpts",
            "dev/pts",
            "devpts",
            MS_NOEXEC | MS_NOSUID,
            Some("gid=5,mode=0620"),
        ),
        (
            "tmpfs",
            "run",
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            Some("mode=0755"),
        ),
    ];
    for (src, dst, fstype, flags, data) in mounts {
        let p = c.root.join(dst);
        let _ = fs::create_dir_all(&p);
        match sys::mount(Path::new(src), &p, Some(fstype), flags, data) {
            Ok(()) => {}
            // Already there (a kernel with CONFIG_DEVTMPFS_MOUNT mounts /dev itself).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("mount {fstype} on /{dst}: {e}")),
        }
    }
    ensure_console();
    // Tools of the configure script (mkfs, mount) look for mounted filesystems in /etc/mtab.
    let mtab = c.root.join("etc/mtab");
    if fs::symlink_metadata(&mtab).is_err() {
        let _ = fs::create_dir_all(c.root.join("etc"));
        let _ = std::os::unix::fs::symlink("/proc/mounts", &mtab);
    }
    // EDEPLOY_INIT_CMDLINE replaces /proc/cmdline: the namespace smoke test
    // (tests/smoke-netns.sh) cannot change the host kernel's command line.
    let text = match std::env::var("EDEPLOY_INIT_CMDLINE") {
        Ok(t) => t,
        Err(_) => fs::read_to_string(c.root.join("proc/cmdline"))
            .map_err(|e| format!("/proc/cmdline: {e}"))?,
    };
    c.say(&format!("cmdline: {}", text.trim()));
    c.params = Params::parse(&text).map_err(|e| format!("kernel command line: {e}"))?;
    ON_FAILURE.store(action_code(c.params.onfailure), Ordering::SeqCst);
    c.say(&format!(
        "server {} section {} ONSUCCESS={} ONFAILURE={}",
        c.params.upload_url(),
        c.params.section,
        c.params.onsuccess,
        c.params.onfailure
    ));
    Ok(())
}

/// Unmounts /chroot and everything under it, deepest first, then syncs.
fn unmount_chroot(log: &dyn Fn(&str)) {
    let mut points: Vec<String> = grub::mounts(Path::new("/"))
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p == CHROOT || p.starts_with(&format!("{CHROOT}/")))
        .collect();
    // /proc/mounts lists in mount order: undo in reverse.
    points.reverse();
    points.dedup();
    for p in points {
        if let Err(e) = sys::umount(Path::new(&p)) {
            log(&format!("umount {p}: {e}"));
        }
    }
    sys::sync();
}

/// Runs the final action; never returns (PID 1 must not exit).
fn final_action(action: Action, kexec: Option<&grub::Installed>, log: &dyn Fn(&str)) -> ! {
    log(&format!("edeploy-init: {action}"));
    match action {
        Action::Console => console(log),
        Action::Kexec => {
            match kexec {
                Some(k) => match sys::kexec_load(&k.kernel, k.initrd.as_deref(), &k.cmdline) {
                    Ok(()) => {
                        // Loaded into memory: the tree can go away now.
                        unmount_chroot(log);
                        let e = sys::reboot(libc::LINUX_REBOOT_CMD_KEXEC);
                        log(&format!("kexec: {e}; rebooting instead"));
                    }
                    Err(e) => log(&format!(
                        "kexec_file_load {}: {e}; rebooting instead",
                        k.kernel.display()
                    )),
                },
                None => log("kexec: no kernel was set up by this install; rebooting instead"),
            }
            unmount_chroot(log);
            let e = sys::reboot(libc::RB_AUTOBOOT);
            log(&format!("reboot: {e}"));
        }
        Action::Reboot | Action::Halt => {
            unmount_chroot(log);
            let cmd = if action == Action::Reboot {
                libc::RB_AUTOBOOT
            } else {
                libc::RB_POWER_OFF
            };
            let e = sys::reboot(cmd);
            log(&format!("{action}: {e}"));
        }
    }
    console(log)
}

/// A shell on the console, started again whenever it exits (PID 1 exiting panics the kernel);
/// without a shell, sleep forever.
fn console(log: &dyn Fn(&str)) -> ! {
    loop {
        match std::process::Command::new("/bin/sh").status() {
            Ok(_) => continue,
            Err(e) => {
                log(&format!("/bin/sh: {e}; sleeping forever"));
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if std::process::id() != 1 {
        eprintln!("init: not PID 1: this is the initrd's /init and would reconfigure this machine (see --help)");
        std::process::exit(2);
    }
    // SAFETY: single-threaded at this point.
    unsafe { libc::umask(0o022) };
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/");
    // A panic must not kill PID 1 silently: the hook runs before the abort and never returns.
    std::panic::set_hook(Box::new(|info| {
        say(&format!("edeploy-init: PANIC: {info}"));
        let action = match ON_FAILURE.load(Ordering::SeqCst) {
            // kexec needs a set-up kernel the hook does not know about: reboot instead.
            0 | 2 => Action::Reboot,
            1 => Action::Halt,
            _ => Action::Console,
        };
        final_action(action, None, &say);
    }));
    let root = Path::new("/");
    let mut c = Ctx::new(
        root,
        "",
        Log::new(Path::new("/log"), true),
        Params::default(),
    );
    let r: Result<(), Failure> = c
        .step("boot", step_boot)
        .and_then(|_| steps::install_sequence(&mut c));
    let log = |s: &str| c.log.line(s);
    match r {
        Ok(()) => {
            log(&format!(
                "edeploy-init: installed in {} ms",
                c.started.elapsed().as_millis()
            ));
            steps::maybe_upload_log(&c);
            final_action(c.params.onsuccess, c.boot.as_ref(), &log)
        }
        Err(f) => {
            steps::report_failure(&c, &f);
            let kexec = c.boot.as_ref();
            final_action(c.params.onfailure, kexec, &log)
        }
    }
}

//! Thin wrappers over the system calls PID 1 needs (no mount/reboot binaries required).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn mount(
    src: &Path,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = cstr(src)?;
    let d = cstr(dst)?;
    let t = fstype.map(|t| CString::new(t).unwrap_or_default());
    let o = data.map(|t| CString::new(t).unwrap_or_default());
    // SAFETY: NUL-terminated strings (or NULL) live across the call.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            o.as_ref()
                .map_or(std::ptr::null(), |o| o.as_ptr() as *const libc::c_void),
        )
    })
}

/// Unmounts `p`; when busy, detaches it lazily so the reboot can still proceed.
pub fn umount(p: &Path) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Err(io::Error::new(
            first.kind(),
            format!("{first} (detached lazily instead)"),
        ));
    }
    Err(first)
}

pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// reboot(2) with `cmd` (RB_AUTOBOOT, RB_POWER_OFF, LINUX_REBOOT_CMD_KEXEC); returns only on error.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes a plain command number.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// Loads a kernel for kexec with kexec_file_load(2) (the kernel verifies and parses the
/// image itself: no userspace kexec-tools needed).
pub fn kexec_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> io::Result<()> {
    let k = std::fs::File::open(kernel)?;
    let i = initrd.map(std::fs::File::open).transpose()?;
    let c = CString::new(cmdline).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 4;
    let flags = if i.is_none() {
        KEXEC_FILE_NO_INITRAMFS
    } else {
        0
    };
    // SAFETY: valid fds, and a NUL-terminated command line whose length includes the NUL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_ref().map_or(-1, |f| f.as_raw_fd()),
            c.as_bytes_with_nul().len() as libc::c_ulong,
            c.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

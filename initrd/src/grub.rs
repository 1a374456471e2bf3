//! Making the installed disk bootable without running `grub-install` (the initrd has no grub
//! tools): the image builder ships a prebuilt `boot.img` + `core.img` (i386-pc, with an early
//! config that searches for `/boot/grub/grub.cfg`), and this module writes them the way
//! `grub-bios-setup` does, then writes the `grub.cfg` itself. A role that ships its own
//! `grub-install` gets eDeploy's way instead (chroot, grub-install, update-grub).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const GRUB_DIR: &str = "usr/lib/edeploy/grub";
const SECTOR: u64 = 512;
/// Where boot.img keeps the LBA of core.img's first sector (`kernel_sector`, u64 LE).
const KERNEL_SECTOR: usize = 0x5c;
/// The BIOS parameter block of boot.img (kept from the disk, as grub-bios-setup does).
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// Offset, in core.img's first sector (diskboot.img), of the first blocklist's start LBA.
const BLOCKLIST_START: usize = 512 - 12;
/// "Hah!IdontNeedEFI": the BIOS boot partition type GUID as stored on disk.
const BIOS_BOOT_GUID: [u8; 16] = *b"Hah!IdontNeedEFI";

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> GrubError {
    let w = what.into();
    move |e| GrubError::Io(w, e)
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}

fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

/// Where core.img goes on this disk.
#[derive(Debug, PartialEq, Eq)]
pub enum Layout {
    /// msdos label: in the gap after the MBR, before `first_partition`.
    Msdos { first_partition: u64 },
    /// GPT: the BIOS boot partition `[start, end]` (inclusive LBAs).
    Gpt { start: u64, end: u64 },
}

fn read_at(f: &mut File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut b)?;
    Ok(b)
}

/// Reads the partition table of `disk` (512-byte sectors).
pub fn layout(f: &mut File) -> Result<Layout, GrubError> {
    let mbr = read_at(f, 0, 512).map_err(ioe("reading the MBR"))?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(GrubError::Refused(
            "the disk has no partition table (no 0x55AA signature): partition it first".into(),
        ));
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (e[4], u32le(e, 8) as u64, u32le(e, 12) as u64)
        })
        .filter(|e| e.0 != 0 && e.2 != 0)
        .collect();
    if entries.iter().any(|e| e.0 == 0xee) {
        return gpt(f);
    }
    let first =
        entries.iter().map(|e| e.1).min().ok_or_else(|| {
            GrubError::Refused("the msdos partition table has no partition".into())
        })?;
    Ok(Layout::Msdos {
        first_partition: first,
    })
}

fn gpt(f: &mut File) -> Result<Layout, GrubError> {
    let hdr = read_at(f, SECTOR, 512).map_err(ioe("reading the GPT header"))?;
    if &hdr[0..8] != b"EFI PART" {
        return Err(GrubError::Refused(
            "protective MBR but no GPT header at LBA 1".into(),
        ));
    }
    let lba = u64le(&hdr, 72);
    let n = u32le(&hdr, 80).min(1024) as usize;
    let size = u32le(&hdr, 84) as usize;
    if size < 128 {
        return Err(GrubError::Refused(format!("GPT entry size {size} < 128")));
    }
    let table = read_at(f, lba * SECTOR, n * size).map_err(ioe("reading the GPT entries"))?;
    for i in 0..n {
        let e = &table[i * size..(i + 1) * size];
        if e[0..16] == BIOS_BOOT_GUID {
            return Ok(Layout::Gpt {
                start: u64le(e, 32),
                end: u64le(e, 40),
            });
        }
    }
    Err(GrubError::Refused(
        "GPT disk without a BIOS boot partition (type 21686148-6449-6E6F-744E-656564454649, \
         1 MiB is plenty): add one in the configure script, e.g. `sgdisk -n 0:0:+1M -t 0:ef02`"
            .into(),
    ))
}

/// Writes boot.img and core.img to `disk` like grub-bios-setup: boot code over MBR bytes
/// 0..440 keeping the disk's BPB (0x03..0x5A) and bytes 440..512 (disk signature, partition
/// table, 0x55AA); core.img after the MBR (msdos) or in the BIOS boot partition (GPT).
pub fn install_bios(disk: &Path, boot_img: &[u8], core_img: &[u8]) -> Result<Layout, GrubError> {
    if boot_img.len() != 512 {
        return Err(GrubError::Refused(format!(
            "boot.img is {} bytes, expected 512",
            boot_img.len()
        )));
    }
    if core_img.len() < 512 {
        return Err(GrubError::Refused(
            "core.img is smaller than one sector".into(),
        ));
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(ioe(disk.display().to_string()))?;
    let lay = layout(&mut f)?;
    let sectors = (core_img.len() as u64).div_ceil(SECTOR);
    let at = match lay {
        Layout::Msdos { first_partition } => {
            if 1 + sectors > first_partition {
                return Err(GrubError::Refused(format!(
                    "core.img needs sectors 1-{} but the first partition starts at sector \
                     {first_partition}: start it at 1 MiB (sector 2048)",
                    sectors
                )));
            }
            1
        }
        Layout::Gpt { start, end } => {
            if end < start || end - start + 1 < sectors {
                return Err(GrubError::Refused(format!(
                    "the BIOS boot partition ({} sectors) is smaller than core.img ({sectors} sectors)",
                    end.saturating_sub(start) + 1
                )));
            }
            start
        }
    };
    let old = read_at(&mut f, 0, 512).map_err(ioe("reading the MBR"))?;
    let mut mbr = boot_img.to_vec();
    mbr[BPB].copy_from_slice(&old[BPB]);
    mbr[440..512].copy_from_slice(&old[440..512]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&at.to_le_bytes());
    let mut core = core_img.to_vec();
    // The rest of core.img follows its first sector contiguously.
    core[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&(at + 1).to_le_bytes());
    let w = |f: &mut File, off: u64, b: &[u8]| -> io::Result<()> {
        f.seek(SeekFrom::Start(off))?;
        f.write_all(b)
    };
    // core.img first: a crash in between leaves the old boot code pointing at nothing new.
    w(&mut f, at * SECTOR, &core).map_err(ioe("writing core.img"))?;
    w(&mut f, 0, &mbr).map_err(ioe("writing the MBR"))?;
    f.sync_all().map_err(ioe("syncing the disk"))?;
    Ok(lay)
}

/// One `/proc/mounts` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub point: String,
    pub fstype: String,
}

/// `ROOT/proc/mounts` (octal escapes such as `\040` decoded).
pub fn mounts(root: &Path) -> Vec<Mount> {
    let unescape = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    fs::read_to_string(root.join("proc/mounts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| Mount {
                device: unescape(f[0]),
                point: unescape(f[1]),
                fstype: f[2].to_string(),
            })
        })
        .collect()
}

/// The last mount on `point` (the visible one).
pub fn mount_of<'a>(ms: &'a [Mount], point: &str) -> Option<&'a Mount> {
    ms.iter().rev().find(|m| m.point == point)
}

/// Compares kernel versions numerically piecewise (`6.1.0-10` > `6.1.0-9`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<Result<u64, String>> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// The kernel to boot: `(kernel, initrd)` paths relative to the chroot (`boot/vmlinuz-KVER`,
/// `boot/initrd.img-KVER`). The newest `vmlinuz-*` unless `want` names a version; else the
/// `vmlinuz`/`initrd.img` symlinks (in /boot or /).
pub fn find_kernel(chroot: &Path, want: Option<&str>) -> Option<(String, Option<String>)> {
    let boot = chroot.join("boot");
    let mut vers: Vec<String> = fs::read_dir(&boot)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("vmlinuz-")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    vers.sort_by(|a, b| version_cmp(a, b));
    let kver = match want {
        Some(w) => vers
            .iter()
            .find(|v| v.as_str() == w)
            .or_else(|| vers.iter().find(|v| v.contains(w))),
        None => vers.last(),
    };
    if let Some(k) = kver {
        let initrd = [
            format!("boot/initrd.img-{k}"),
            format!("boot/initramfs-{k}.img"),
        ]
        .into_iter()
        .find(|p| chroot.join(p).exists());
        return Some((format!("boot/vmlinuz-{k}"), initrd));
    }
    for dir in ["boot/", ""] {
        if chroot.join(format!("{dir}vmlinuz")).exists() {
            let i = format!("{dir}initrd.img");
            let initrd = chroot.join(&i).exists().then_some(i);
            return Some((format!("{dir}vmlinuz"), initrd));
        }
    }
    None
}

/// The kernel command line of the installed system.
pub fn kernel_args(root_dev: &str, boot_args: &str, grub_options: &str) -> String {
    let mut s = format!("root={root_dev} ro");
    for a in [boot_args, grub_options] {
        if !a.trim().is_empty() {
            s.push(' ');
            s.push_str(a.trim());
        }
    }
    s
}

/// Path as grub sees it on the filesystem holding it: drop `boot/` when /boot is its own mount.
pub fn grub_path(rel: &str, boot_separate: bool) -> String {
    match rel.strip_prefix("boot/") {
        Some(r) if boot_separate => format!("/{r}"),
        _ => format!("/{rel}"),
    }
}

/// grub.cfg with one menu entry.
pub fn render_cfg(title: &str, kernel: &str, initrd: Option<&str>, args: &str) -> String {
    let title = title.replace(['\'', '\n'], " ");
    let mut s = String::from("# Written by edeploy's /init.\nset default=0\nset timeout=5\n\n");
    s.push_str(&format!("menuentry '{title}' {{\n"));
    s.push_str(&format!("\tlinux {kernel} {args}\n"));
    if let Some(i) = initrd {
        s.push_str(&format!("\tinitrd {i}\n"));
    }
    s.push_str("}\n");
    s
}

/// Everything the boot-loader step needs to know.
pub struct BootSetup<'a> {
    /// The initrd's root (`/` for real).
    pub root: &'a Path,
    /// Where the tree is mounted, as seen in `/proc/mounts` (`/chroot`).
    pub chroot_point: &'a str,
    /// The disk (`/dev/vda`), relative to `root`.
    pub disk: &'a str,
    pub title: &'a str,
    pub boot_args: &'a str,
    pub grub_options: &'a str,
    pub kexec_kernel: Option<&'a str>,
}

/// What [`setup`] did (for the log and for kexec).
#[derive(Debug)]
pub struct Installed {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub uefi: bool,
}

fn chroot_dir(s: &BootSetup) -> PathBuf {
    s.root.join(s.chroot_point.trim_start_matches('/'))
}

/// Writes boot.img/core.img to the disk, grub.cfg into the tree, and BOOTX64.EFI when the tree
/// has an EFI system partition mounted.
pub fn setup(s: &BootSetup, log: &dyn Fn(&str)) -> Result<Installed, GrubError> {
    let chroot = chroot_dir(s);
    let ms = mounts(s.root);
    let root_dev = mount_of(&ms, s.chroot_point)
        .map(|m| m.device.clone())
        .ok_or_else(|| {
            GrubError::Refused(format!(
                "{} is not a mount point: the configure script must mount the root filesystem there",
                s.chroot_point
            ))
        })?;
    let boot_separate = mount_of(&ms, &format!("{}/boot", s.chroot_point)).is_some();
    let (kernel, initrd) = find_kernel(&chroot, s.kexec_kernel).ok_or_else(|| {
        GrubError::Refused(format!(
            "no kernel in {}/boot (vmlinuz-* or a vmlinuz symlink)",
            s.chroot_point
        ))
    })?;
    let args = kernel_args(&root_dev, s.boot_args, s.grub_options);
    let cfg = render_cfg(
        s.title,
        &grub_path(&kernel, boot_separate),
        initrd
            .as_deref()
            .map(|i| grub_path(i, boot_separate))
            .as_deref(),
        &args,
    );
    let grub_dir = chroot.join("boot/grub");
    fs::create_dir_all(&grub_dir).map_err(ioe("creating boot/grub"))?;
    fs::write(grub_dir.join("grub.cfg"), &cfg).map_err(ioe("writing grub.cfg"))?;
    log(&format!(
        "grub.cfg: linux {} {args}",
        grub_path(&kernel, boot_separate)
    ));

    let images = s.root.join(GRUB_DIR);
    let boot_img = fs::read(images.join("i386-pc/boot.img"))
        .map_err(ioe(format!("/{GRUB_DIR}/i386-pc/boot.img")))?;
    let core_img = fs::read(images.join("i386-pc/core.img"))
        .map_err(ioe(format!("/{GRUB_DIR}/i386-pc/core.img")))?;
    let disk = s.root.join(s.disk.trim_start_matches('/'));
    let lay = install_bios(&disk, &boot_img, &core_img)?;
    log(&format!("BIOS boot code written to {} ({lay:?})", s.disk));

    let esp_point = format!("{}/boot/efi", s.chroot_point);
    let uefi = mount_of(&ms, &esp_point).is_some();
    if uefi {
        let src = images.join("x86_64-efi/BOOTX64.EFI");
        let dst = chroot.join("boot/efi/EFI/BOOT");
        fs::create_dir_all(&dst).map_err(ioe("creating EFI/BOOT"))?;
        fs::copy(&src, dst.join("BOOTX64.EFI")).map_err(ioe(src.display().to_string()))?;
        log(&format!("{esp_point}/EFI/BOOT/BOOTX64.EFI written"));
    }
    Ok(Installed {
        kernel: chroot.join(&kernel),
        initrd: initrd.map(|i| chroot.join(i)),
        cmdline: args,
        uefi,
    })
}

/// The role brings its own grub: eDeploy's way.
pub fn role_has_grub(chroot: &Path) -> bool {
    ["usr/sbin/grub-install", "usr/sbin/grub2-install"]
        .iter()
        .any(|p| chroot.join(p).exists())
}

/// Adds the boot arguments to `etc/default/grub` (GRUB_CMDLINE_LINUX_DEFAULT), as eDeploy did,
/// so grub-mkconfig puts them on every entry. Returns the new text.
pub fn default_grub(old: &str, args: &str) -> String {
    let args = args.trim();
    if args.is_empty() {
        return old.to_string();
    }
    let mut out = String::new();
    let mut done = false;
    for l in old.lines() {
        if let Some(v) = l.strip_prefix("GRUB_CMDLINE_LINUX_DEFAULT=") {
            let v = v.trim().trim_matches('"');
            let v = if v.is_empty() {
                args.to_string()
            } else {
                format!("{v} {args}")
            };
            out.push_str(&format!("GRUB_CMDLINE_LINUX_DEFAULT=\"{v}\"\n"));
            done = true;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("GRUB_CMDLINE_LINUX_DEFAULT=\"{args}\"\n"));
    }
    out
}

/// The commands eDeploy ran for a role with grub: `(program, args)`, run from the initrd.
pub fn role_grub_commands(chroot_point: &str, chroot: &Path, disk: &str) -> Vec<Vec<String>> {
    let v = if chroot.join("usr/sbin/grub2-install").exists() {
        "2"
    } else {
        ""
    };
    let s = |x: &str| x.to_string();
    let mut out = vec![vec![
        s("chroot"),
        s(chroot_point),
        format!("/usr/sbin/grub{v}-install"),
        s(disk),
    ]];
    if v.is_empty() && chroot.join("usr/sbin/update-grub").exists() {
        out.push(vec![
            s("chroot"),
            s(chroot_point),
            s("/usr/sbin/update-grub"),
        ]);
    } else {
        out.push(vec![
            s("chroot"),
            s(chroot_point),
            format!("/usr/sbin/grub{v}-mkconfig"),
            s("-o"),
            format!("/boot/grub{v}/grub.cfg"),
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b = vec![0xb0u8; 512];
        b[0] = 0xeb;
        b[1] = 0x63;
        b[2] = 0x90;
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    fn core_img(sectors: usize) -> Vec<u8> {
        let mut c = vec![0xc0u8; sectors * 512];
        c[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&2u64.to_le_bytes());
        c
    }

    /// A 2 MiB disk with an msdos label: one partition at `first`.
    fn msdos_disk(path: &Path, first: u32) {
        let mut d = vec![0u8; 2 << 20];
        for (i, b) in d[..440].iter_mut().enumerate() {
            *b = i as u8;
        }
        d[440..444].copy_from_slice(&0xdeadbeefu32.to_le_bytes());
        let e = &mut d[446..462];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&(4096 - first).to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        fs::write(path, d).unwrap();
    }

    #[test]
    fn msdos_mbr_patching() {
        let t = tempfile::tempdir().unwrap();
        let disk = t.path().join("disk");
        msdos_disk(&disk, 2048);
        let before = fs::read(&disk).unwrap();
        let lay = install_bios(&disk, &boot_img(), &core_img(60)).unwrap();
        assert_eq!(
            lay,
            Layout::Msdos {
                first_partition: 2048
            }
        );
        let after = fs::read(&disk).unwrap();
        // Boot code written (jump + code), BPB and 440..512 kept.
        assert_eq!(&after[0..3], &[0xeb, 0x63, 0x90]);
        assert_eq!(&after[BPB], &before[BPB]);
        assert!(after[0x5a..KERNEL_SECTOR].iter().all(|b| *b == 0xb0));
        assert_eq!(u64le(&after, KERNEL_SECTOR), 1);
        assert!(after[KERNEL_SECTOR + 8..440].iter().all(|b| *b == 0xb0));
        assert_eq!(&after[440..512], &before[440..512]);
        // core.img at LBA 1, its blocklist pointing at LBA 2; the rest untouched.
        assert_eq!(after[512], 0xc0);
        assert_eq!(u64le(&after, 512 + BLOCKLIST_START), 2);
        assert!(after[1024..61 * 512].iter().all(|b| *b == 0xc0));
        assert_eq!(&after[61 * 512..], &before[61 * 512..]);
    }

    #[test]
    fn gap_too_small_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let disk = t.path().join("disk");
        msdos_disk(&disk, 63);
        let before = fs::read(&disk).unwrap();
        let e = install_bios(&disk, &boot_img(), &core_img(70)).unwrap_err();
        assert!(
            e.to_string()
                .contains("first partition starts at sector 63"),
            "{e}"
        );
        assert_eq!(fs::read(&disk).unwrap(), before);
        // No table at all.
        fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let e = install_bios(&disk, &boot_img(), &core_img(1)).unwrap_err();
        assert!(e.to_string().contains("no partition table"), "{e}");
    }

    fn gpt_disk(path: &Path, bios_boot: Option<(u64, u64)>) {
        let mut d = vec![0u8; 2 << 20];
        d[440..444].copy_from_slice(&0x12345678u32.to_le_bytes());
        let e = &mut d[446..462];
        e[4] = 0xee;
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&4095u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        let h = &mut d[512..1024];
        h[0..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        // Entry 0: a Linux filesystem; entry 1: BIOS boot (when asked).
        let linux = [
            0xafu8, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        let e0 = 1024;
        d[e0..e0 + 16].copy_from_slice(&linux);
        d[e0 + 32..e0 + 40].copy_from_slice(&4096u64.to_le_bytes());
        d[e0 + 40..e0 + 48].copy_from_slice(&8191u64.to_le_bytes());
        if let Some((s, end)) = bios_boot {
            let e1 = 1024 + 128;
            d[e1..e1 + 16].copy_from_slice(&BIOS_BOOT_GUID);
            d[e1 + 32..e1 + 40].copy_from_slice(&s.to_le_bytes());
            d[e1 + 40..e1 + 48].copy_from_slice(&end.to_le_bytes());
        }
        fs::write(path, d).unwrap();
    }

    #[test]
    fn gpt_bios_boot_partition() {
        let t = tempfile::tempdir().unwrap();
        let disk = t.path().join("disk");
        gpt_disk(&disk, Some((2048, 4095)));
        let before = fs::read(&disk).unwrap();
        let lay = install_bios(&disk, &boot_img(), &core_img(60)).unwrap();
        assert_eq!(
            lay,
            Layout::Gpt {
                start: 2048,
                end: 4095
            }
        );
        let after = fs::read(&disk).unwrap();
        assert_eq!(u64le(&after, KERNEL_SECTOR), 2048);
        assert_eq!(&after[440..512], &before[440..512]);
        // GPT header and entries untouched; core.img in the partition.
        assert_eq!(&after[512..2048 * 512], &before[512..2048 * 512]);
        assert_eq!(after[2048 * 512], 0xc0);
        assert_eq!(u64le(&after, 2048 * 512 + BLOCKLIST_START), 2049);

        gpt_disk(&disk, None);
        let e = install_bios(&disk, &boot_img(), &core_img(60)).unwrap_err();
        assert!(e.to_string().contains("BIOS boot partition"), "{e}");
        gpt_disk(&disk, Some((2048, 2050)));
        let e = install_bios(&disk, &boot_img(), &core_img(60)).unwrap_err();
        assert!(e.to_string().contains("smaller than core.img"), "{e}");
    }

    #[test]
    fn cfg_rendering() {
        let args = kernel_args("/dev/vda1", "console=ttyS0", "quiet  nomodeset");
        assert_eq!(args, "root=/dev/vda1 ro console=ttyS0 quiet  nomodeset");
        assert_eq!(kernel_args("/dev/sda2", "", " "), "root=/dev/sda2 ro");
        let c = render_cfg(
            "edeploy base 1.0",
            "/boot/vmlinuz-6.1.0-9-amd64",
            Some("/boot/initrd.img-6.1.0-9-amd64"),
            &args,
        );
        assert_eq!(
            c,
            "# Written by edeploy's /init.\nset default=0\nset timeout=5\n\n\
             menuentry 'edeploy base 1.0' {\n\
             \tlinux /boot/vmlinuz-6.1.0-9-amd64 root=/dev/vda1 ro console=ttyS0 quiet  nomodeset\n\
             \tinitrd /boot/initrd.img-6.1.0-9-amd64\n}\n"
        );
        assert_eq!(grub_path("boot/vmlinuz-1", true), "/vmlinuz-1");
        assert_eq!(grub_path("boot/vmlinuz-1", false), "/boot/vmlinuz-1");
        assert_eq!(grub_path("vmlinuz", true), "/vmlinuz");
    }

    #[test]
    fn kernels() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path();
        assert_eq!(find_kernel(c, None), None);
        fs::create_dir_all(c.join("boot")).unwrap();
        fs::write(c.join("vmlinuz"), "").unwrap();
        assert_eq!(find_kernel(c, None), Some(("vmlinuz".into(), None)));
        for k in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "initrd.img-6.1.0-9-amd64",
        ] {
            fs::write(c.join("boot").join(k), "").unwrap();
        }
        assert_eq!(
            find_kernel(c, None),
            Some((
                "boot/vmlinuz-6.1.0-10-amd64".into(),
                Some("boot/initrd.img-6.1.0-10-amd64".into())
            ))
        );
        assert_eq!(
            find_kernel(c, Some("6.1.0-9-amd64")).unwrap().0,
            "boot/vmlinuz-6.1.0-9-amd64"
        );
    }

    #[test]
    fn full_setup_on_a_fixture_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("dev")).unwrap();
        msdos_disk(&root.join("dev/vda"), 2048);
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::write(
            root.join("proc/mounts"),
            "proc /proc proc rw 0 0\n/dev/vda1 /chroot ext4 rw 0 0\n/dev/vda2 /chroot/boot/efi vfat rw 0 0\n",
        )
        .unwrap();
        let g = root.join(GRUB_DIR);
        fs::create_dir_all(g.join("i386-pc")).unwrap();
        fs::create_dir_all(g.join("x86_64-efi")).unwrap();
        fs::write(g.join("i386-pc/boot.img"), boot_img()).unwrap();
        fs::write(g.join("i386-pc/core.img"), core_img(40)).unwrap();
        fs::write(g.join("x86_64-efi/BOOTX64.EFI"), "MZ efi").unwrap();
        fs::create_dir_all(root.join("chroot/boot")).unwrap();
        fs::write(root.join("chroot/boot/vmlinuz-6.1"), "k").unwrap();
        fs::write(root.join("chroot/boot/initrd.img-6.1"), "i").unwrap();
        let s = BootSetup {
            root,
            chroot_point: "/chroot",
            disk: "/dev/vda",
            title: "edeploy base 1.0",
            boot_args: "console=ttyS0",
            grub_options: "",
            kexec_kernel: None,
        };
        let r = setup(&s, &|_| {}).unwrap();
        assert!(r.uefi);
        assert_eq!(r.cmdline, "root=/dev/vda1 ro console=ttyS0");
        assert_eq!(r.kernel, root.join("chroot/boot/vmlinuz-6.1"));
        let cfg = fs::read_to_string(root.join("chroot/boot/grub/grub.cfg")).unwrap();
        assert!(cfg.contains("\tlinux /boot/vmlinuz-6.1 root=/dev/vda1 ro console=ttyS0\n"));
        assert!(cfg.contains("\tinitrd /boot/initrd.img-6.1\n"));
        assert_eq!(
            fs::read(root.join("chroot/boot/efi/EFI/BOOT/BOOTX64.EFI")).unwrap(),
            b"MZ efi"
        );
        assert_eq!(
            &fs::read(root.join("dev/vda")).unwrap()[0..3],
            &[0xeb, 0x63, 0x90]
        );

        // Not mounted: clear error.
        fs::write(root.join("proc/mounts"), "proc /proc proc rw 0 0\n").unwrap();
        assert!(setup(&s, &|_| {})
            .unwrap_err()
            .to_string()
            .contains("/chroot is not a mount point"));
    }

    #[test]
    fn role_grub() {
        assert_eq!(
            default_grub(
                "A=1\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
                "console=ttyS0"
            ),
            "A=1\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet console=ttyS0\"\n"
        );
        assert_eq!(default_grub("", "x"), "GRUB_CMDLINE_LINUX_DEFAULT=\"x\"\n");
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("usr/sbin")).unwrap();
        fs::write(t.path().join("usr/sbin/grub-install"), "").unwrap();
        fs::write(t.path().join("usr/sbin/update-grub"), "").unwrap();
        assert!(role_has_grub(t.path()));
        let c: Vec<String> = role_grub_commands("/chroot", t.path(), "/dev/sda")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            c,
            [
                "chroot /chroot /usr/sbin/grub-install /dev/sda",
                "chroot /chroot /usr/sbin/update-grub"
            ]
        );
    }

    #[test]
    fn mounts_unescape() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("proc")).unwrap();
        fs::write(
            t.path().join("proc/mounts"),
            "/dev/sda1 /mnt/a\\040b ext4 rw 0 0\n",
        )
        .unwrap();
        let m = mounts(t.path());
        assert_eq!(m[0].point, "/mnt/a b");
    }
}

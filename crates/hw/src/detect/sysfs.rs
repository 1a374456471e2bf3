//! Small readers over a root directory. Every miss is logged at debug level and returns `None`:
//! detection reports what it can read and never fails on one attribute.

use std::path::{Path, PathBuf};

/// The path of `rel` (an absolute-looking path like `/sys/block`) under `root`.
pub(super) fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// A text attribute, trimmed; `None` when unreadable or empty (sysfs uses empty files for "unset").
pub(super) fn read(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if text.is_empty() {
                tracing::debug!(path = %path.display(), "empty attribute skipped");
                None
            } else {
                Some(text.to_string())
            }
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "attribute skipped");
            None
        }
    }
}

/// A whole file as text (procfs tables), `None` when unreadable.
pub(super) fn read_all(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "file skipped");
            None
        }
    }
}

/// A decimal attribute.
pub(super) fn read_u64(path: &Path) -> Option<u64> {
    let text = read(path)?;
    match text.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::debug!(path = %path.display(), value = %text, "not a number, skipped");
            None
        }
    }
}

/// The last component of a symlink's target (a driver link, a `/dev/disk/by-*` link).
pub(super) fn link_name(path: &Path) -> Option<String> {
    match std::fs::read_link(path) {
        Ok(target) => target.file_name().map(|n| n.to_string_lossy().into_owned()),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "link skipped");
            None
        }
    }
}

/// The names in a directory, sorted so that detection order never depends on the filesystem.
pub(super) fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "directory skipped");
            Vec::new()
        }
    };
    names.sort_by(|a, b| device_order(a, b));
    names
}

/// Orders device names the way the kernel numbers them: by their letter prefix, then shorter names
/// first (`sdz` before `sdaa`, `nvme2n1` before `nvme10n1`), then by text.
pub(super) fn device_order(a: &str, b: &str) -> std::cmp::Ordering {
    // Only the family prefix counts as a group, so `sd` and `sdb` are one family; within a family
    // the length then text order gives kernel order.
    fn family(s: &str) -> &str {
        for f in ["xvd", "sd", "vd", "hd", "nvme", "mmcblk"] {
            if s.starts_with(f) {
                return f;
            }
        }
        let end = s
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len());
        &s[..end]
    }
    (family(a), a.len(), a).cmp(&(family(b), b.len(), b))
}

/// Hex attribute (`0x8086`) as lower-case digits without the prefix, padded to `width`.
pub(super) fn hex_id(path: &Path, width: usize) -> Option<String> {
    let text = read(path)?;
    let digits = text.trim_start_matches("0x").to_ascii_lowercase();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        tracing::debug!(path = %path.display(), value = %text, "not a hex id, skipped");
        return None;
    }
    Some(format!("{digits:0>width$}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_order() {
        let mut names = vec![
            "sdaa", "sdb", "nvme10n1", "sda", "nvme2n1", "vda", "sdz", "eth10", "eth2", "eno1",
        ];
        names.sort_by(|a, b| super::device_order(a, b));
        assert_eq!(
            names,
            ["eno1", "eth2", "eth10", "nvme2n1", "nvme10n1", "sda", "sdb", "sdz", "sdaa", "vda"]
        );
    }
}

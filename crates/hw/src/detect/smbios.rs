//! A bounds-checked walk over the raw SMBIOS structure table (`/sys/firmware/dmi/tables/DMI`).
//!
//! The table is firmware data and treated as hostile: every read is checked, a truncated or
//! malformed structure ends the walk, and nothing here can panic on any input.

use std::path::Path;

use super::sysfs;

/// SMBIOS structure type that ends the table.
const END_OF_TABLE: u8 = 127;

/// One structure: its formatted area (header included, so offsets are the specification's) and
/// its string set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub formatted: &'a [u8],
    pub strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    pub fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }

    pub fn word(&self, offset: usize) -> Option<u16> {
        let b = self.formatted.get(offset..offset.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn dword(&self, offset: usize) -> Option<u32> {
        let b = self.formatted.get(offset..offset.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The string whose 1-based index is stored at `offset`, trimmed; `None` for index 0 (no
    /// string), a dangling index, or only blanks.
    pub fn string(&self, offset: usize) -> Option<String> {
        let index = usize::from(self.byte(offset)?);
        let raw = self.strings.get(index.checked_sub(1)?)?;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }
}

/// Reads the table under `root`, `None` when absent or unreadable (non-root users cannot read it).
pub(super) fn read_table(root: &Path) -> Option<Vec<u8>> {
    let path = sysfs::under(root, "/sys/firmware/dmi/tables/DMI");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no SMBIOS table");
            None
        }
    }
}

/// Splits a raw table into structures, stopping at the end-of-table structure or at the first
/// structure that does not fit.
pub fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = table.get(pos..pos.saturating_add(4)) {
        let kind = header[0];
        let length = usize::from(header[1]);
        if length < 4 {
            tracing::debug!(
                pos,
                length,
                "SMBIOS structure shorter than its header, walk stopped"
            );
            break;
        }
        let Some(formatted) = table.get(pos..pos.saturating_add(length)) else {
            tracing::debug!(pos, length, "truncated SMBIOS structure, walk stopped");
            break;
        };
        // The string set follows the formatted area and ends with two NULs (even when empty).
        let strings_start = pos + length;
        let rest = table.get(strings_start..).unwrap_or(&[]);
        let Some(end) = rest.windows(2).position(|w| w == [0, 0]) else {
            tracing::debug!(pos, "SMBIOS string set without terminator, walk stopped");
            break;
        };
        let strings = if end == 0 {
            Vec::new()
        } else {
            rest[..end].split(|&b| b == 0).collect()
        };
        out.push(Structure {
            kind,
            formatted,
            strings,
        });
        if kind == END_OF_TABLE {
            break;
        }
        pos = strings_start + end + 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<u8> {
        let mut t = vec![1, 8, 0, 1, 1, 2, 0, 0];
        t.extend_from_slice(b"Vendor\0Name\0\0");
        t.extend_from_slice(&[127, 4, 0xff, 0xff, 0, 0]);
        t
    }

    #[test]
    fn walks_structures_and_strings() {
        let t = table();
        let s = structures(&t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, 1);
        assert_eq!(s[0].string(4).as_deref(), Some("Vendor"));
        assert_eq!(s[0].string(5).as_deref(), Some("Name"));
        assert_eq!(s[0].string(6), None, "index 0 is no string");
        assert_eq!(s[0].string(60), None, "offset out of the structure");
        assert_eq!(s[0].word(2), Some(0x0100));
        assert_eq!(s[0].dword(6), None);
        assert_eq!(s[1].kind, 127);
        assert!(s[1].strings.is_empty());
    }

    #[test]
    fn dangling_string_index_is_none() {
        let t = [1u8, 5, 0, 0, 9, b'a', 0, 0];
        let s = structures(&t);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].string(4), None);
    }

    #[test]
    fn truncated_and_garbage_tables_never_panic() {
        let t = table();
        for cut in 0..t.len() {
            let s = structures(&t[..cut]);
            for st in &s {
                for off in 0..40 {
                    let _ = (st.byte(off), st.word(off), st.dword(off), st.string(off));
                }
            }
        }
        // Deterministic pseudo-random garbage, including zero and huge lengths.
        let mut x: u32 = 0x1234_5678;
        for round in 0..2000 {
            let len = round % 97;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            for st in structures(&bytes) {
                for off in [0, 4, 0x0c, 0x10, 0x1c, usize::MAX - 1, usize::MAX] {
                    let _ = (st.byte(off), st.word(off), st.dword(off), st.string(off));
                }
            }
        }
        assert!(structures(&[]).is_empty());
        assert!(
            structures(&[17, 0, 0, 0, 0, 0]).is_empty(),
            "length 0 stops"
        );
        assert!(
            structures(&[17, 40, 0, 0, 0, 0]).is_empty(),
            "overlong stops"
        );
    }
}

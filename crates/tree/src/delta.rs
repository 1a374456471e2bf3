//! Deltas for large changed files without server-side computation (the zsync direction of the
//! rsync algorithm, DESIGN §3 "large changed files may travel as rsync deltas").
//!
//! At index time the store publishes, next to every large *raw* blob, a block signature of
//! its content: `STORE/sigs/ab/HASH` = `EDSIG1\n`, block size (u32 LE), payload length (u64
//! LE), then per block a rolling checksum (u32 LE) and the first 16 bytes of its BLAKE3. An
//! upgrading host rolls the checksum over its own old copy of the file, takes every block it
//! finds there, and fetches only the missing byte ranges of the raw blob (`Range` requests on
//! `/trees/blobs/…`, which any static server supports). The result is checked against the
//! file's full BLAKE3 like any other content, so a weak-checksum collision or a stale
//! signature can only make the delta fail (and the plain blob be fetched), never install
//! wrong bytes. Compressed blobs get no signature: their bytes are not addressable by content
//! offset. Large incompressible files (initramfs images, compressed archives) are exactly the
//! ones raw in the store and the ones that change between versions.

use std::collections::HashMap;
use std::io::Read;

use crate::manifest::Hash;
use crate::{Error, Result};

pub const SIG_MAGIC: &[u8; 7] = b"EDSIG1\n";
/// Files from this size on get a signature (below it the whole blob is one cheap request).
pub const MIN_SIZE: u64 = 1 << 20;
/// Block size: 30 MB → 7.5k blocks, a 150 KB signature.
pub const BLOCK: usize = 4096;
const STRONG: usize = 16;

/// rsync's rolling checksum of a block: `a` = sum of bytes, `b` = sum of `a` prefixes.
#[derive(Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    fn new(block: &[u8]) -> Rolling {
        let mut a = 0u32;
        let mut b = 0u32;
        for &x in block {
            a = a.wrapping_add(x as u32);
            b = b.wrapping_add(a);
        }
        Rolling {
            a,
            b,
            len: block.len() as u32,
        }
    }
    fn digest(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
    /// Slide one byte: `out` leaves at the front, `inp` enters at the back.
    fn roll(&mut self, out: u8, inp: u8) {
        self.a = self.a.wrapping_sub(out as u32).wrapping_add(inp as u32);
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(out as u32))
            .wrapping_add(self.a);
    }
}

fn strong(block: &[u8]) -> [u8; STRONG] {
    blake3::hash(block).as_bytes()[..STRONG].try_into().unwrap()
}

/// The signature of `payload` (read to its end).
pub fn signature(mut payload: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = SIG_MAGIC.to_vec();
    out.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    let len_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < BLOCK {
            match payload.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&Rolling::new(&buf[..n]).digest().to_le_bytes());
        out.extend_from_slice(&strong(&buf[..n]));
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    out[len_at..len_at + 8].copy_from_slice(&total.to_le_bytes());
    Ok(out)
}

pub struct Signature {
    block: usize,
    len: u64,
    blocks: Vec<(u32, [u8; STRONG])>,
}

impl Signature {
    pub fn parse(b: &[u8]) -> Result<Signature> {
        let bad = || Error::Format("bad block signature".into());
        let rest = b.strip_prefix(&SIG_MAGIC[..]).ok_or_else(bad)?;
        if rest.len() < 12 {
            return Err(bad());
        }
        let block = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(rest[4..12].try_into().unwrap());
        let body = &rest[12..];
        if block == 0 || block > 1 << 20 || body.len() % (4 + STRONG) != 0 {
            return Err(bad());
        }
        let blocks: Vec<_> = body
            .chunks_exact(4 + STRONG)
            .map(|c| {
                (
                    u32::from_le_bytes(c[..4].try_into().unwrap()),
                    c[4..].try_into().unwrap(),
                )
            })
            .collect();
        if blocks.len() as u64 != len.div_ceil(block as u64) {
            return Err(bad());
        }
        Ok(Signature { block, len, blocks })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn block_range(&self, i: usize) -> (usize, usize) {
        let s = i * self.block;
        (s, (s + self.block).min(self.len as usize))
    }

    /// Rebuild the new payload from `old` plus fetched ranges: `fetch(start, end)` returns
    /// the new payload's bytes `start..end` (the caller maps them onto the blob); it is called
    /// from up to `par` threads at once (each range is a round trip). Missing blocks closer
    /// than `gap` are fetched as one range. Returns the payload and how many bytes were
    /// fetched; the caller checks the payload's hash.
    pub fn patch(
        &self,
        old: &[u8],
        gap: usize,
        par: usize,
        fetch: impl Fn(u64, u64) -> Result<Vec<u8>> + Sync,
    ) -> Result<(Vec<u8>, u64)> {
        let found = self.find(old);
        let ranges = self.missing(&found, gap);
        let got: Vec<std::sync::Mutex<Option<Result<Vec<u8>>>>> =
            ranges.iter().map(|_| Default::default()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..par.clamp(1, ranges.len().max(1)) {
                scope.spawn(|| loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(s, e)) = ranges.get(n) else {
                        return;
                    };
                    let r = fetch(s as u64, e as u64);
                    let failed = r.is_err();
                    *got[n].lock().unwrap() = Some(r);
                    if failed {
                        // Stop the others early: one failure sends the caller to the blob.
                        next.store(ranges.len(), std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        let mut out = vec![0u8; self.len as usize];
        for (i, at) in found.iter().enumerate() {
            if let Some(at) = at {
                let (s, e) = self.block_range(i);
                out[s..e].copy_from_slice(&old[*at..*at + (e - s)]);
            }
        }
        let mut fetched = 0u64;
        for (&(s, e), g) in ranges.iter().zip(got) {
            let bytes = g
                .into_inner()
                .unwrap()
                .unwrap_or_else(|| Err(Error::Other("delta range not fetched".into())))?;
            if bytes.len() != e - s {
                return Err(Error::Integrity("short delta range".into()));
            }
            out[s..e].copy_from_slice(&bytes);
            fetched += (e - s) as u64;
        }
        Ok((out, fetched))
    }

    /// For every block of the new payload, an offset in `old` holding the same bytes.
    fn find(&self, old: &[u8]) -> Vec<Option<usize>> {
        let n = self.blocks.len();
        let mut found: Vec<Option<usize>> = vec![None; n];
        let mut by_weak: HashMap<u32, Vec<usize>> = HashMap::new();
        let bs = self.block;
        for (i, (w, _)) in self.blocks.iter().enumerate() {
            // Full-size blocks only: the short tail is cheaper to fetch than to search.
            let (s, e) = self.block_range(i);
            if e - s == bs {
                by_weak.entry(*w).or_default().push(i);
            }
        }
        if old.len() < bs || by_weak.is_empty() {
            return found;
        }
        let mut pos = 0;
        let mut r = Rolling::new(&old[..bs]);
        loop {
            let mut jumped = false;
            if let Some(cands) = by_weak.get(&r.digest()) {
                let s = strong(&old[pos..pos + bs]);
                let mut hit = false;
                for &i in cands {
                    if found[i].is_none() && self.blocks[i].1 == s {
                        found[i] = Some(pos);
                        hit = true;
                    }
                }
                if hit && pos + 2 * bs <= old.len() {
                    pos += bs;
                    r = Rolling::new(&old[pos..pos + bs]);
                    jumped = true;
                } else if hit {
                    break;
                }
            }
            if !jumped {
                if pos + bs >= old.len() {
                    break;
                }
                r.roll(old[pos], old[pos + bs]);
                pos += 1;
            }
        }
        found
    }

    /// Byte ranges of the new payload to fetch: runs of missing blocks, joined across runs of
    /// found blocks shorter than `gap` bytes.
    fn missing(&self, found: &[Option<usize>], gap: usize) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (i, f) in found.iter().enumerate() {
            if f.is_some() {
                continue;
            }
            let (s, e) = self.block_range(i);
            match out.last_mut() {
                Some(last) if s <= last.1 + gap => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// Store path component of a signature: `sigs/ab/HASH`.
pub fn sig_route(h: &Hash) -> String {
    let x = crate::manifest::hex(h);
    format!("sigs/{}/{x}", &x[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn rolling_equals_fresh() {
        let d = noise(10_000, 7);
        let mut r = Rolling::new(&d[..BLOCK]);
        for p in 0..1000 {
            r.roll(d[p], d[p + BLOCK]);
            assert_eq!(r.digest(), Rolling::new(&d[p + 1..p + 1 + BLOCK]).digest());
        }
    }

    #[test]
    fn patch_rebuilds_with_shifted_and_changed_content() {
        let old = noise(300_000, 1);
        // New: an insertion at the front (shifts everything), a changed middle, a new tail.
        let mut new = noise(777, 2);
        new.extend_from_slice(&old[..150_000]);
        new.extend_from_slice(&noise(20_000, 3));
        new.extend_from_slice(&old[170_000..]);
        new.extend_from_slice(&noise(1234, 4));
        let sig = Signature::parse(&signature(&new[..]).unwrap()).unwrap();
        assert_eq!(sig.len(), new.len() as u64);
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let (out, fetched) = sig
            .patch(&old, 16 << 10, 4, |s, e| {
                asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(new[s as usize..e as usize].to_vec())
            })
            .unwrap();
        assert_eq!(out, new);
        assert!(fetched < 40_000, "fetched {fetched}");
        let asked = asked.into_inner();
        assert!(asked <= 4, "{asked} requests");
        // Nothing in common: everything fetched, still right.
        let (out, fetched) = sig
            .patch(&noise(50_000, 9), 0, 4, |s, e| {
                Ok(new[s as usize..e as usize].to_vec())
            })
            .unwrap();
        assert_eq!(out, new);
        assert_eq!(fetched, new.len() as u64);
    }

    #[test]
    fn bad_signatures_are_refused() {
        assert!(Signature::parse(b"nope").is_err());
        let mut s = signature(&noise(10_000, 5)[..]).unwrap();
        s.pop();
        assert!(Signature::parse(&s).is_err());
    }
}
